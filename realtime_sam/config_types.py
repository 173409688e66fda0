"""Type checks of a configuration section's numeric keys, run first in each section's ``__post_init__``.

A section built in Python (``EngineConfig(reencode_every="5")``) reached its range checks with a value of
another type: ``"5" < 1`` raised a bare ``TypeError`` naming no key, and ``2.5`` or ``True`` passed
(``2.5 >= 1``) to be misread by the stage. :func:`check_numbers` refuses them with the one line a config
file's value gets (:mod:`realtime_sam.config`). It imports nothing of the package but its errors, so every
stage's module can use it (``realtime_sam.config`` imports them all).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from realtime_sam.errors import ConfigError

__all__ = ["check_numbers", "integral_hint"]


@functools.cache
def _numeric_fields(cls: type) -> tuple[tuple[str, type, bool], ...]:
    """``(key, int or float, takes None)`` for each init field of the dataclass ``cls`` annotated ``int``,
    ``float`` or either ``| None``. Cached: resolving the annotations is the costly part."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        tp, optional = hints[f.name], False
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            others = [a for a in args if a is not type(None)]
            if len(others) != 1:
                continue
            tp, optional = others[0], len(others) < len(args)
        if tp is int or tp is float:
            found.append((f.name, tp, optional))
    return tuple(found)


def integral_hint(value: Any) -> str:
    """For ``1e3`` (text to YAML 1.1) or ``1000.0`` where an integer is wanted: ``"; write 1000"``, else ``""``."""
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError, OverflowError):
        return ""
    return f"; write {int(number)}" if math.isfinite(number) and number.is_integer() else ""


def check_numbers(section: Any, name: str) -> None:
    """Check each numeric key of the config dataclass ``section`` by type, as :mod:`realtime_sam.config`
    checks a Python-built section: an ``int`` key takes an int (not a bool, not 2.0), a ``float`` key an int
    or a float (not a bool, not text), an optional one ``None`` too. NaN and infinities are a float's values:
    the section's range checks refuse them in its own words (and :class:`~realtime_sam.config.Config`).

    Args:
        section: a config dataclass instance.
        name: its section's name in a config file (``"engine"``), for the message.

    Raises:
        ConfigError: ``name.key must be an integer|a number, not VALUE``.
    """
    for key, kind, optional in _numeric_fields(type(section)):
        value = getattr(section, key)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            if kind is int:
                raise ConfigError(f"{name}.{key} must be an integer, not {value!r}{integral_hint(value)}")
            raise ConfigError(f"{name}.{key} must be a number, not {value!r}")
