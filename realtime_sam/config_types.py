"""Type checks of a configuration section's numeric keys, run first in each section's ``__post_init__``.

A section built in Python (``EngineConfig(reencode_every="5")``) reached its range checks with a value of
another type: ``"5" < 1`` raised a bare ``TypeError`` naming no key, and ``2.5`` or ``True`` passed
(``2.5 >= 1``) to be misread by the stage; ``inf`` passed every ``> 0`` or ``>= 1`` range check
(``PropagationConfig(fb_tolerance=inf)``) that a config file's ``.inf`` does not reach. :func:`check_numbers`
refuses them with the one line a config file's value gets (:mod:`realtime_sam.config`). It imports nothing
of the package but its errors, so every stage's module can use it (``realtime_sam.config`` imports them all).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any

from realtime_sam.errors import ConfigError

__all__ = ["check_numbers", "integral_hint", "not_finite"]


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


def not_finite(where: str, value: Any) -> str:
    """The one line for a float key given NaN, an infinity or an int past float's range (``10**400``):
    ``"where must be a finite number, not VALUE"``. One wording for every path a value takes (a config
    file, ``--set``, a mapping, ``Config(...)``, a section built alone)."""
    return f"{where} must be a finite number, not {value!r}"


def _is_finite(value: int | float) -> bool:
    """Whether ``value`` is a finite float, or an int that fits in one (``10**400`` does not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def check_numbers(section: Any, name: str) -> None:
    """Check each numeric key of the config dataclass ``section`` by type, as :mod:`realtime_sam.config`
    checks a Python-built section: an ``int`` key takes an int (not a bool, not 2.0), a ``float`` key an int
    or a float (not a bool, not text), an optional one ``None`` too. A ``float`` key takes a finite value
    only: no setting means anything by NaN or infinity (none documents ``inf`` as "never" or "no limit";
    0 or ``null`` say that), NaN passes every ``x < limit`` check and ``inf`` every ``x > 0`` one.

    Args:
        section: a config dataclass instance.
        name: its section's name in a config file (``"engine"``), for the message.

    Raises:
        ConfigError: ``name.key must be an integer|a number|a finite number, not VALUE``.
    """
    for key, kind, optional in _numeric_fields(type(section)):
        value = getattr(section, key)
        if value is None and optional:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            if kind is int:
                raise ConfigError(f"{name}.{key} must be an integer, not {value!r}{integral_hint(value)}")
            raise ConfigError(f"{name}.{key} must be a number, not {value!r}")
        if kind is float and not _is_finite(value):
            raise ConfigError(not_finite(f"{name}.{key}", value))
