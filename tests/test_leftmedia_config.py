"""Config sections built in Python: every numeric key refuses a value of another type with one line naming it.

The keys are found by introspection (the sections of :class:`realtime_sam.config.Config` and their
fields' annotations), so a key added later is checked too.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import pytest

from realtime_sam.config import Config
from realtime_sam.errors import ConfigError


def _numeric_keys() -> list[tuple[str, type, str, type]]:
    """``(section name, its class, key, int or float)`` for every key annotated ``int``/``float`` (or ``| None``)."""
    hints = typing.get_type_hints(Config)
    found = []
    for section in dataclasses.fields(Config):
        cls = hints[section.name]
        for key, tp in typing.get_type_hints(cls).items():
            if typing.get_origin(tp) in (typing.Union, types.UnionType):
                others = [a for a in typing.get_args(tp) if a is not type(None)]
                tp = others[0] if len(others) == 1 else None
            if tp in (int, float):
                found.append((section.name, cls, key, tp))
    return found


_KEYS = _numeric_keys()


def test_the_introspection_finds_the_numeric_keys() -> None:
    names = {f"{s}.{k}" for s, _, k, _ in _KEYS}
    assert {"engine.reencode_every", "source.image_fps", "tracker.max_lost_frames", "render.font_scale"} <= names
    assert len(_KEYS) >= 60


@pytest.mark.parametrize("section, cls, key, kind", _KEYS, ids=[f"{s}.{k}" for s, _, k, _ in _KEYS])
def test_a_numeric_key_of_the_wrong_type_is_one_line_naming_it(section: str, cls: type, key: str, kind: type) -> None:
    # EngineConfig(reencode_every="5") raised TypeError: '<' not supported between instances of 'str' and 'int';
    # 2.5 or True passed the section's own range checks where built without a Config around it.
    wrong = ["5", True, False, None, [1], b"1"] + ([2.5, 3.0] if kind is int else ["0.5"])
    for value in wrong:
        if value is None and type(None) in typing.get_args(typing.get_type_hints(cls)[key]):
            continue  # it takes null
        with pytest.raises(ConfigError) as caught:
            cls(**{key: value})
        message = str(caught.value)
        assert message.startswith(f"{section}.{key} must be "), message
        assert "\n" not in message and repr(value) in message


def test_a_right_value_still_meets_the_range_check_after_the_type_check() -> None:
    from realtime_sam.tracking.engine import EngineConfig

    assert EngineConfig(reencode_every=3).reencode_every == 3
    with pytest.raises(ConfigError, match=r"^engine\.reencode_every must be >= 1, got 0$"):
        EngineConfig(reencode_every=0)
    hints = typing.get_type_hints(Config)
    for section in dataclasses.fields(Config):
        hints[section.name]()  # every default passes
