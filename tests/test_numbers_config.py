"""Float keys refuse NaN and infinities the same way on every path: a section built alone in Python,
``Config(section=...)``, ``Config(section={...})``, a config file and ``--set``.

Before, a section built alone took ``inf`` for nine keys whose range check is only a lower bound
(``PropagationConfig(fb_tolerance=inf)``, ``StreamsConfig(min_fps=inf)``, ...), while a file's ``.inf``
was refused; and NaN was refused in the section's own words on one path and as "must be a finite
number" on the other.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from pathlib import Path

import pytest

from realtime_sam.config import Config, load_config
from realtime_sam.errors import ConfigError


def _float_keys() -> list[tuple[str, type, str]]:
    """``(section name, its class, key)`` for every init key annotated ``float`` or ``float | None``."""
    out = []
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            if f.init and (tp is float or tp == typing.Optional[float]):
                out.append((section.name, cls, f.name))
    return out


FLOAT_KEYS = _float_keys()
BAD = [math.nan, math.inf, -math.inf, 10**400]  # the last: an int past float's range


UNBOUNDED_ABOVE = {
    "tracker.max_area_change", "streams.frame_budget", "streams.min_fps", "propagation.fb_tolerance",
    "propagation.rigid_tolerance", "propagation.fb_max_error", "propagation.ransac_thresh",
    "propagation.max_scale_change", "propagation.min_deformation",
}
"""The keys whose range check is a lower bound only: a section built alone took ``inf`` for them."""


def test_the_introspection_finds_the_keys_that_took_infinity():
    found = {f"{s}.{k}" for s, _, k in FLOAT_KEYS}
    assert UNBOUNDED_ABOVE <= found
    assert len(found) >= 30  # 40 when written


@pytest.mark.parametrize("section, cls, key", FLOAT_KEYS, ids=[f"{s}.{k}" for s, _, k in FLOAT_KEYS])
@pytest.mark.parametrize("value", BAD, ids=["nan", "inf", "-inf", "1e400-int"])
def test_a_float_key_refuses_non_finite_values_alike_on_every_path(section, cls, key, value, tmp_path: Path):
    expected = f"{section}.{key} must be a finite number, not {value!r}"
    messages = []
    with pytest.raises(ConfigError) as alone:
        cls(**{key: value})
    messages.append(str(alone.value))
    with pytest.raises(ConfigError) as mapping:
        Config(**{section: {key: value}})
    messages.append(str(mapping.value))
    assert messages == [expected, expected]
    # A file and --set read the text; the number it is shown as is the text written.
    text = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}.get(repr(value), repr(value))
    f = tmp_path / "c.yaml"
    f.write_text(f"{section}:\n  {key}: {text}\n")
    for args in ((f, []), (None, [f"{section}.{key}={text}"])):
        with pytest.raises(ConfigError, match=rf"^{section}\.{key} must be a finite number, not ") as exc:
            load_config(*args)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize("section, cls, key", FLOAT_KEYS, ids=[f"{s}.{k}" for s, _, k in FLOAT_KEYS])
def test_a_finite_value_in_range_is_still_taken_alone_and_in_config(section, cls, key):
    # A large finite value stays a user's choice where the range has no upper bound.
    value = 1e6 if f"{section}.{key}" in UNBOUNDED_ABOVE else getattr(cls(), key)
    built = cls(**{key: value})
    assert getattr(Config(**{section: built}), section) == built


def test_an_integer_key_given_nan_still_says_integer():
    from realtime_sam.tracking.engine import EngineConfig

    with pytest.raises(ConfigError, match=r"^engine.reencode_every must be an integer, not nan$"):
        EngineConfig(reencode_every=math.nan)
    with pytest.raises(ConfigError, match=r"^engine.reencode_every must be an integer, not inf$"):
        EngineConfig(reencode_every=math.inf)
