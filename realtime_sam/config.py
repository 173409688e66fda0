"""Configuration: YAML parsed once into frozen dataclasses, one section per stage.

The bundled preset ``default`` (``realtime_sam/configs/default.yaml``, package
data read through :mod:`importlib.resources`) documents every key; ``cpu`` and
``gpu`` are the other presets. A section maps to the config
dataclass of the stage that owns it (``source`` -> :class:`SourceConfig`,
``tracker`` -> :class:`TrackerConfig`, ...), so each stage receives only its
own part. Unknown keys, wrong types and out-of-range values are a
:class:`ConfigError` whose one line names the valid choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import os
import re
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import yaml

from realtime_sam.app.budget import StreamsConfig
from realtime_sam.app.pipeline import PipelineConfig
from realtime_sam.capture.base import SourceConfig
from realtime_sam.config_types import integral_hint, not_finite
from realtime_sam.errors import ConfigError
from realtime_sam.model.config import ModelConfig
from realtime_sam.output.render import RenderConfig
from realtime_sam.output.sink_base import SinkConfig
from realtime_sam.tracking.detection import DetectConfig
from realtime_sam.tracking.discovery import DiscoveryConfig
from realtime_sam.tracking.engine import EngineConfig
from realtime_sam.tracking.propagation import PropagationConfig
from realtime_sam.tracking.tracks import TrackerConfig
from realtime_sam.yaml_loader import UniqueKeyLoader, base_60_hint, integer_in_text, number_in_text, yes_no_hint

__all__ = ["ModelConfig", "Config", "PRESETS", "preset_text", "load_config", "parse_config", "read_yaml"]

PRESETS = ("default", "cpu", "gpu")
"""Names of the bundled presets (``realtime_sam/configs/NAME.yaml``), accepted by :func:`load_config`."""


@dataclass(frozen=True)
class Config:
    """The whole configuration; each attribute is one stage's section."""

    model: ModelConfig = field(default_factory=ModelConfig)
    source: SourceConfig = field(default_factory=SourceConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    output: SinkConfig = field(default_factory=SinkConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    streams: StreamsConfig = field(default_factory=StreamsConfig)

    def __post_init__(self) -> None:
        """Each section is its stage's config object; one given as a mapping (``Config(engine={...})``)
        is parsed as a file's section would be.

        A section built in Python (``EngineConfig(reencode_every=2.5)``) has its values checked by
        type here, as a file's are: its own range checks let 2.5, NaN or ``True`` through where an
        integer is wanted (2.5 >= 1), and the stage would misread them. Its numeric keys were checked
        already as it was built, by type and a float key for a finite value
        (:func:`realtime_sam.config_types.check_numbers`); here every key is checked again, strictly,
        which adds the switches and text keys (``RenderConfig(show_labels=1)``, ``ModelConfig(weights=5)``).

        Raises:
            ConfigError: one line naming the section or ``section.key`` and what it takes.
        """
        for name, cls in _section_types().items():
            value = getattr(self, name)
            if isinstance(value, Mapping):
                object.__setattr__(self, name, _build_section(name, cls, value, cls()))
            elif not isinstance(value, cls):
                raise ConfigError(
                    f"Config.{name} must be given as {cls.__name__}(...) or a mapping of its keys, not {type(value).__name__}"
                )
            else:
                _check_section(name, value)


@functools.cache
def _section_types() -> dict[str, type]:
    """``{section name: its config class}``, in order. Cached, as :func:`_field_types`: resolving
    the annotations took most of a parse (a Config is checked each time one is made)."""
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """``{key: its annotation}`` of the config class ``cls``."""
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str, strict: bool = False) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats.

    Not ``strict`` (values read from YAML), a number in text (``"5"``, ``1e-3``) is read as the number.
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, where, strict)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where} has an invalid value {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, typing.get_args(tp)))}, not {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}{yes_no_hint(value)}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where, strict) for v in value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        quoted = isinstance(value, str) and value.strip().lower() in _SWITCH_WORDS
        raise ConfigError(f"{where} must be true or false, not {value!r}{'; write it without quotes' if quoted else ''}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # Text that is a whole number (017 and 08, which the loader keeps as written; "5" quoted) is
        # read as that number, as float keys read "0.5" and prompts files read both.
        number = integer_in_text(value) if isinstance(value, str) and not strict else None
        if number is not None:
            return number
        raise ConfigError(f"{where} must be an integer, not {value!r}{base_60_hint(value) or integral_hint(value)}")
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an int past float's range (a 400-digit number): refused below
                number = math.inf
        elif isinstance(value, str) and not strict:
            # PyYAML (YAML 1.1) reads 1e9 and 1e-3 as strings; they are numbers to anyone writing them.
            # So is "0.5" quoted.
            number = number_in_text(value)
        if number is None:
            raise ConfigError(f"{where} must be a number, not {value!r}{base_60_hint(value)}")
        # No setting means anything by NaN or infinity (.nan, .inf, 1e400, "nan"); NaN would pass
        # every `x < limit` range check, and OpenCV and thread waits fail or crash on either.
        if not math.isfinite(number):
            raise ConfigError(not_finite(where, value))
        return number
    if tp is str:
        # No text key means anything by "" (a path, a device, a name): an empty one is most often an
        # unset variable in a script (`weights: $W`), and `weights: ""` or `detect.model: ""` ran on
        # as if the key were left out (the weights cache, no detector) without a word.
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{where} is given an empty string; give a value, or leave the key out for its default")
        if isinstance(value, str) or (strict and isinstance(value, os.PathLike)):  # Python may give a Path
            return value
        raise ConfigError(f"{where} must be a string, not {value!r}{yes_no_hint(value)}")
    return value


_SWITCH_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})
"""Words a bool key takes unquoted; quoted they are text."""


def _did_you_mean(name: str, valid: Sequence[str]) -> str:
    """``" (did you mean X?)"`` for a misspelt ``name``, else ``""``."""
    close = difflib.get_close_matches(str(name).lower(), valid, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _build_section(name: str, cls: type, values: Mapping[str, Any], base: Any) -> Any:
    hints = _field_types(cls)
    valid = [f.name for f in fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(
                f"unknown key {name}.{key}{_did_you_mean(key, valid)}; valid keys in {name}: {', '.join(valid)}"
            )
        kwargs[key] = _coerce(value, hints[key], f"{name}.{key}")
    try:
        return dataclasses.replace(base, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value in section {name}: {exc}") from None


def _check_section(name: str, section: Any) -> None:
    """Check each value of the config object ``section`` against its field's type, strictly (no text for numbers).

    Raises:
        ConfigError: ``name.key must be ..., not VALUE``.
    """
    hints = _field_types(type(section))
    for f in fields(section):
        if f.init:
            value = getattr(section, f.name)
            _coerce(value, hints[f.name], f"{name}.{f.name}", strict=True)


def parse_config(data: Mapping[str, Any] | None, base: Config | None = None) -> Config:
    """Build a :class:`Config` from a nested mapping (as read from YAML), on top of ``base``."""
    base = base or Config()
    if data is None:
        return base
    sections = _section_types()
    updates = {
        name: _build_section(name, sections[name], values, getattr(base, name))
        for name, values in _sections(data)
        if values is not None
    }
    return dataclasses.replace(base, **updates)


def _sections(data: Any) -> Iterator[tuple[str, Mapping[str, Any] | None]]:
    """``data``'s ``(section name, its keys or None)``, in order.

    Raises:
        ConfigError: ``data`` is not a mapping, names an unknown section, or gives one as a scalar.
    """
    if not isinstance(data, Mapping):
        raise ConfigError("a config file must hold a mapping of sections (model:, source:, engine:, ...)")
    sections = _section_types()
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(
                f"unknown config section {name!r}{_did_you_mean(name, list(sections))}; "
                f"valid sections: {', '.join(sections)}"
            )
        if values is not None and not isinstance(values, Mapping):
            raise ConfigError(f"config section {name!r} must be a mapping of keys, not {type(values).__name__}")
        yield name, values


def _takes_null(section: str, name: str) -> bool:
    """Whether the key ``section.name`` exists and takes ``null`` (``model.weights``, ``render.font_scale``, ...)."""
    cls = _section_types().get(section)
    tp = _field_types(cls).get(name) if cls is not None else None
    return tp is not None and type(None) in typing.get_args(tp)


def parse_overrides(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["engine.reencode_every=5", ...]`` -> ``{"engine": {"reencode_every": 5}}`` (values parsed as YAML scalars)."""
    # One string is not a list of them: its characters were taken one by one ("got 'e'").
    if isinstance(overrides, (str, bytes)) or not isinstance(overrides, Sequence):
        raise ConfigError(
            f"overrides must be a list of section.key=value strings, such as ['engine.reencode_every=5'], not {overrides!r}"
        )
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if not isinstance(item, str):
            raise ConfigError(f"--set expects section.key=value text (e.g. engine.reencode_every=5), got {item!r}")
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set expects section.key=value (e.g. engine.reencode_every=5), got {item!r}")
        if not raw.strip():
            # An unset variable in a script (`--set model.weights=$W`) left the key at its default
            # (the weights cache, for this one) without a word; null is written out.
            key = key.strip()
            other = f"{key}=null (its default)" if _takes_null(section, name) else "leave the --set out for the default"
            raise ConfigError(f"--set {key}= has no value; give one, or {other}")
        try:
            value = yaml.load(raw, Loader=UniqueKeyLoader)
        except yaml.YAMLError:
            value = raw
        nested.setdefault(section, {})[name] = value
    return nested


def preset_text(name: str) -> str:
    """The YAML text of the bundled preset ``name`` (one of :data:`PRESETS`).

    Raises:
        ConfigError: ``name`` is not a preset.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    return resources.files(__package__).joinpath("configs", f"{name}.yaml").read_text(encoding="utf-8")


def read_yaml(text: str, where: str) -> Any:
    """``text`` parsed as YAML (safe), a key given twice in one mapping refused.

    ``where`` names the text in the error (``"config file x.yaml"``).

    Raises:
        ConfigError: one line naming ``where``, the line and column, and what is wrong there.
    """
    try:
        return yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["syntax error"])[0]
        at = f" line {mark.line + 1}, column {mark.column + 1}:" if mark is not None else ""
        # A tab where YAML wants indentation: the problem names the character ('\t'); "tab" alone
        # matched "unacceptable character" (a NUL byte) too.
        hint = " (indent with spaces, not tabs)" if "'\\t'" in problem or re.search(r"\btabs?\b", problem) else ""
        if mark is None and getattr(exc, "position", None) is not None:  # a character YAML does not read (NUL, ...)
            at = f" line {text[: exc.position].count(chr(10)) + 1}:"
        raise ConfigError(f"{where} is not valid YAML:{at} {problem}{hint}") from None


def _read_file(path: str | Path) -> tuple[str, str]:
    """``(where, text)`` of the config file or bundled preset ``path``."""
    p = Path(path)
    if p.exists():
        try:
            return str(p), p.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            line = exc.object[: exc.start].count(b"\n") + 1
            raise ConfigError(f"config file {p} is not UTF-8 text (line {line}); save it as UTF-8") from None
        except OSError as exc:  # a directory, no permission, ...
            reason = exc.strerror or type(exc).__name__
            raise ConfigError(f"cannot read config file {p}: {reason}; give a YAML file or a preset: {', '.join(PRESETS)}") from None
    if str(path) in PRESETS:
        return f"preset {path}", preset_text(str(path))
    raise ConfigError(f"config file not found: {p} (give a YAML file or a preset: {', '.join(PRESETS)})")


def _merge(layers: Sequence[Mapping[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """The layers' ``{section: {key: value}}`` merged key by key, later winning.

    The sections are built once from the merged values, so that keys checked
    together (``streams.lift_duty`` below ``engage_duty``, ``source.backoff_max_s``
    above ``backoff_initial_s``, ...) are checked as the run will use them, not
    with one of them still at its default while a later layer sets it.
    """
    merged: dict[str, dict[str, Any]] = {}
    for data in layers:
        if data is not None:
            for name, values in _sections(data):
                merged.setdefault(name, {}).update(values or {})
    return merged


def load_config(
    path: Config | Mapping[str, Any] | str | os.PathLike | None = None,
    overrides: Sequence[str] = (),
    updates: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (``section.key=value``),
    then ``updates`` (``{section: {key: value}}``, e.g. the CLI's dedicated flags).

    ``path`` may also name a bundled preset: ``"cpu"``, ``"gpu"`` or ``"default"``
    (an existing file of that name wins), or be what a file holds, as a mapping
    (``{"engine": {"reencode_every": 3}}``), or a :class:`Config` to start from
    instead of the defaults. The layers are merged key by key before
    the sections are built and checked (see :func:`_merge`).

    Raises:
        ConfigError: one line naming the file, section or key and what is allowed.
    """
    base = None
    data: Any = None
    if isinstance(path, Config):
        base = path
    elif isinstance(path, Mapping):
        data = path
    elif isinstance(path, (str, os.PathLike)):
        where, text = _read_file(path)
        data = read_yaml(text, f"config file {where}")
    elif path is not None:
        raise ConfigError(
            "config must be a YAML file path, a preset name (" + ", ".join(PRESETS) + "), a mapping of sections"
            f" such as {{'engine': {{'reencode_every': 5}}}}, or a Config; not {type(path).__name__}"
        )
    return parse_config(_merge([data, parse_overrides(overrides), updates]), base)
