"""Configuration: YAML with a comment on every key, parsed once into frozen dataclasses."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from realtime_sam.config import (
    PRESETS,
    Config,
    load_config,
    parse_config,
    parse_overrides,
    preset_text,
)
from realtime_sam.errors import ConfigError


def test_default_yaml_is_exactly_the_built_in_defaults():
    assert load_config("default") == Config()


def test_default_yaml_covers_every_key_and_comments_each_one():
    text = preset_text("default").splitlines()
    data = yaml.safe_load("\n".join(text))
    cfg = Config()
    for section in dataclasses.fields(cfg):
        keys = {f.name for f in dataclasses.fields(getattr(cfg, section.name))}
        assert set(data[section.name]) == keys, section.name
    for i, line in enumerate(text):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and ":" in stripped:
            assert text[i - 1].strip().startswith("#"), f"no comment above line {i + 1}: {line!r}"


@pytest.mark.parametrize("preset", ["cpu", "gpu"])
def test_presets_parse_and_differ_from_defaults(preset, tmp_path: Path):
    cfg = load_config(preset)
    copy = tmp_path / f"{preset}.yaml"
    copy.write_text(preset_text(preset))
    assert cfg == load_config(copy)
    assert cfg != Config()
    lines = preset_text(preset).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("  ") and not line.strip().startswith("#"):
            assert lines[i - 1].strip().startswith("#"), f"{preset}.yaml line {i + 1} has no comment"


def test_cpu_preset_encodes_less_often_than_gpu():
    assert load_config("cpu").engine.reencode_every > load_config("gpu").engine.reencode_every
    assert load_config("cpu").engine.background_encode and not load_config("gpu").engine.background_encode
    assert load_config("cpu").model.device == "cpu"


def test_config_objects_are_frozen():
    cfg = Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.engine.reencode_every = 3  # type: ignore[misc]


def test_overrides_are_typed_and_applied_last(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("engine:\n  reencode_every: 3\ntracker:\n  min_score: 0.25\n")
    cfg = load_config(f, ["engine.reencode_every=7", "model.device=cpu", "source.reconnect=false"])
    assert cfg.engine.reencode_every == 7
    assert cfg.tracker.min_score == 0.25
    assert cfg.model.device == "cpu"
    assert cfg.source.reconnect is False


def test_int_is_accepted_for_float_but_not_bool_for_int():
    assert parse_config({"tracker": {"min_score": 1}}).tracker.min_score == 1.0
    # YAML 1.1 reads exponent notation without a dot as a string.
    assert load_config(None, ["tracker.max_area_change=1e9"]).tracker.max_area_change == 1e9
    with pytest.raises(ConfigError, match="tracker.min_score must be a number, not 'high'"):
        parse_config({"tracker": {"min_score": "high"}})
    with pytest.raises(ConfigError, match="engine.reencode_every must be an integer"):
        parse_config({"engine": {"reencode_every": True}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"engine": {"reencode_evry": 5}}, r"unknown key engine.reencode_evry; valid keys in engine: reencode_every"),
        ({"engin": {}}, r"unknown config section 'engin'; valid sections: model, source"),
        ({"engine": {"reencode_every": "five"}}, r"engine.reencode_every must be an integer, not 'five'"),
        ({"engine": {"reencode_every": 0}}, r"reencode_every must be >= 1"),
        ({"model": {"device": "tpu"}}, r"model.device must be one of auto, cpu, cuda, mps"),
        ({"source": {"reconnect": "maybe"}}, r"source.reconnect must be true or false"),
        ({"engine": [1, 2]}, r"section 'engine' must be a mapping"),
        ([1, 2], r"must hold a mapping of sections"),
    ],
)
def test_bad_config_is_one_clear_line(data, message):
    with pytest.raises(ConfigError, match=message) as exc:
        parse_config(data)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("item", ["reencode_every=5", "engine.=5", "=5", "engine.reencode_every"])
def test_bad_override_syntax(item):
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_overrides([item])


def test_presets_are_package_data_and_files_win_over_them(tmp_path: Path, monkeypatch):
    from importlib import resources

    bundled = resources.files("realtime_sam").joinpath("configs")
    assert sorted(p.name for p in bundled.iterdir() if p.name.endswith(".yaml")) == sorted(f"{n}.yaml" for n in PRESETS)
    with pytest.raises(ConfigError, match="unknown preset 'laptop'; the presets are default, cpu, gpu"):
        preset_text("laptop")
    # A file called like a preset in the working folder is the user's file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cpu").write_text("engine:\n  reencode_every: 13\n")
    assert load_config("cpu").engine.reencode_every == 13


def test_missing_and_invalid_files(tmp_path: Path):
    with pytest.raises(ConfigError, match="config file not found.*a preset: default, cpu, gpu"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("engine: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(bad)


def test_cuda_graphs_is_a_gpu_preset_setting_and_a_strict_boolean(tmp_path: Path):
    from realtime_sam.model.runtime import ModelConfig

    assert load_config("gpu").model.cuda_graphs and not load_config("cpu").model.cuda_graphs
    assert not Config().model.cuda_graphs
    with pytest.raises(ConfigError, match="model.cuda_graphs must be true or false"):
        load_config(None, ["model.cuda_graphs=sometimes"])
    with pytest.raises(ConfigError, match="cuda_graphs"):
        ModelConfig(cuda_graphs="yes")  # type: ignore[arg-type]


def test_cuda_graphs_are_ignored_off_cuda():
    """The gpu preset moved to the CPU (``--device cpu``) runs as before: graphs are CUDA's alone."""
    import torch

    from realtime_sam.model.runtime import ModelConfig, load_inference_model
    from realtime_sam.model.runtime.cuda_graphs import GraphCache

    model = load_inference_model(None, ModelConfig(device="cpu", cuda_graphs=True))
    assert model.graphs is None
    with pytest.raises(ValueError, match="CUDA device"):
        GraphCache(torch.device("cpu"))
