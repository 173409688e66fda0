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
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from realtime_sam.app.budget import StreamsConfig
from realtime_sam.app.pipeline import PipelineConfig
from realtime_sam.capture.base import SourceConfig
from realtime_sam.errors import ConfigError
from realtime_sam.model.config import ModelConfig
from realtime_sam.output.render import RenderConfig
from realtime_sam.output.sink_base import SinkConfig
from realtime_sam.tracking.detection import DetectConfig
from realtime_sam.tracking.discovery import DiscoveryConfig
from realtime_sam.tracking.engine import EngineConfig
from realtime_sam.tracking.propagation import PropagationConfig
from realtime_sam.tracking.tracks import TrackerConfig

__all__ = ["ModelConfig", "Config", "PRESETS", "preset_text", "load_config", "parse_config"]

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


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted for floats."""
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
                return _coerce(value, a, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where} has an invalid value {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise ConfigError(f"{where} must be one of {', '.join(map(repr, typing.get_args(tp)))}, not {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, not {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return tuple(_coerce(v, inner, where) for v in value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, not {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads 1e9 and 1e-3 as strings; they are numbers to anyone writing them.
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where} must be a number, not {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, not {value!r}")
    return value


def _build_section(name: str, cls: type, values: Mapping[str, Any], base: Any) -> Any:
    hints = typing.get_type_hints(cls)
    valid = [f.name for f in fields(cls) if f.init]
    kwargs = {}
    for key, value in values.items():
        if key not in valid:
            raise ConfigError(f"unknown key {name}.{key}; valid keys in {name}: {', '.join(valid)}")
        kwargs[key] = _coerce(value, hints[key], f"{name}.{key}")
    try:
        return dataclasses.replace(base, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid value in section {name}: {exc}") from None


def parse_config(data: Mapping[str, Any] | None, base: Config | None = None) -> Config:
    """Build a :class:`Config` from a nested mapping (as read from YAML), on top of ``base``."""
    base = base or Config()
    if data is None:
        return base
    if not isinstance(data, Mapping):
        raise ConfigError("a config file must hold a mapping of sections (model:, source:, engine:, ...)")
    sections = _section_types()
    updates = {}
    for name, values in data.items():
        if name not in sections:
            raise ConfigError(f"unknown config section {name!r}; valid sections: {', '.join(sections)}")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"config section {name!r} must be a mapping of keys, not {type(values).__name__}")
        updates[name] = _build_section(name, sections[name], values, getattr(base, name))
    return dataclasses.replace(base, **updates)


def parse_overrides(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["engine.reencode_every=5", ...]`` -> ``{"engine": {"reencode_every": 5}}`` (values parsed as YAML scalars)."""
    nested: dict[str, dict[str, Any]] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not section or not name:
            raise ConfigError(f"--set expects section.key=value (e.g. engine.reencode_every=5), got {item!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
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


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``overrides`` (``section.key=value``).

    ``path`` may also name a bundled preset: ``"cpu"``, ``"gpu"`` or ``"default"``
    (an existing file of that name wins).
    """
    config = Config()
    if path is not None:
        p = Path(path)
        if p.exists():
            where, text = str(p), p.read_text(encoding="utf-8")
        elif str(path) in PRESETS:
            where, text = f"preset {path}", preset_text(str(path))
        else:
            raise ConfigError(
                f"config file not found: {p} (give a YAML file or a preset: {', '.join(PRESETS)})"
            )
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "syntax error"
            raise ConfigError(f"config file {where} is not valid YAML: {first}") from None
        config = parse_config(data, config)
    if overrides:
        config = parse_config(parse_overrides(overrides), config)
    return config
