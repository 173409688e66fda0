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
        ({"engine": {"reencode_evry": 5}},
         r"unknown key engine.reencode_evry \(did you mean reencode_every\?\); valid keys in engine: reencode_every"),
        ({"engin": {}}, r"unknown config section 'engin' \(did you mean engine\?\); valid sections: model, source"),
        ({"render": {"opacity": 1}}, r"unknown key render.opacity; valid keys in render: alpha"),
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


def _keys_of_type(tp) -> list[str]:
    import typing

    cfg = Config()
    out = []
    for section in dataclasses.fields(cfg):
        hints = typing.get_type_hints(type(getattr(cfg, section.name)))
        out += [f"{section.name}.{f.name}" for f in dataclasses.fields(getattr(cfg, section.name)) if tp in (hints[f.name], typing.Optional[tp])]
    return out


@pytest.mark.parametrize("key", _keys_of_type(float))
@pytest.mark.parametrize("value", [".nan", "nan", ".inf", "-.inf", "1e400", "1" + "0" * 400])  # the last: an int past float
def test_no_number_setting_takes_nan_or_infinity(key, value, tmp_path: Path):
    """NaN passes every `x < limit` check, and OpenCV or a thread wait fails on either mid-run."""
    section, name = key.split(".")
    f = tmp_path / "c.yaml"
    f.write_text(f"{section}:\n  {name}: {value}\n")
    for args in ((None, [f"{key}={value}"]), (f, [])):
        with pytest.raises(ConfigError, match=rf"{section}.{name} must be a finite number") as exc:
            load_config(*args)
        assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "item, message",
    [
        # Thread waits overflow past about 9.2e9 s: an OverflowError in the capture thread or at close.
        ("source.read_timeout_s=1e11", r"source.read_timeout_s must be a number > 0 and <= 86400"),
        ("source.backoff_max_s=1e11", r"source.backoff_max_s must be a number >= 0 and <= 86400"),
        ("pipeline.join_timeout_s=1e11", r"pipeline.join_timeout_s must be > 0 and <= 86400"),
        # cv2.goodFeaturesToTrack segfaults; cv2.calcOpticalFlowPyrLK runs out of memory.
        ("propagation.min_distance=1e10", r"min_distance must be in \[0, 10000\]"),
        ("propagation.win_size=100001", r"win_size must be in 5..255"),
        ("propagation.max_points=99999999999", r"max_points must be <= 10000"),
        ("propagation.edge_margin=1000000", r"edge_margin must be in 0..100"),
        # Parts after a colon were not checked: these failed only when the model loaded.
        ("model.device=cpu:0", r"model.device must be one of auto, cpu, cuda, mps \(or cuda:N\), not 'cpu:0'"),
        ("model.device=cuda:abc", r"not 'cuda:abc'"),
        ("model.device=auto:1", r"not 'auto:1'"),
    ],
)
def test_values_that_would_fail_mid_run_are_refused_up_front(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [item])


def test_huge_but_workable_values_and_cuda_n_are_accepted():
    cfg = load_config(None, ["model.device=cuda:1", "source.read_timeout_s=3600", "propagation.win_size=31"])
    assert (cfg.model.device, cfg.source.read_timeout_s, cfg.propagation.win_size) == ("cuda:1", 3600.0, 31)


def test_keys_checked_together_are_checked_after_every_layer(tmp_path: Path):
    """A file's value and a later --set of its partner key: the pair the run uses is checked, not a
    half-built one with the partner still at its default."""
    f = tmp_path / "c.yaml"
    f.write_text("streams:\n  engage_duty: 0.5\nsource:\n  backoff_initial_s: 20\n")
    cfg = load_config(f, ["streams.lift_duty=0.3", "source.backoff_max_s=60"])
    assert (cfg.streams.engage_duty, cfg.streams.lift_duty) == (0.5, 0.3)
    assert (cfg.source.backoff_initial_s, cfg.source.backoff_max_s) == (20.0, 60.0)
    cfg = load_config("cpu", ["tracker.min_area_frac=0.95"], {"tracker": {"max_area_frac": 0.99}})
    assert (cfg.tracker.min_area_frac, cfg.tracker.max_area_frac) == (0.95, 0.99)
    # The merged result is still checked, and the later layer still wins.
    with pytest.raises(ConfigError, match="lift_duty must be > 0 and below streams.engage_duty"):
        load_config(f, ["streams.lift_duty=0.7", "source.backoff_max_s=60"])
    later = load_config(f, ["streams.engage_duty=0.8", "source.backoff_max_s=60"], {"streams": {"engage_duty": 0.7}})
    assert later.streams.engage_duty == 0.7


@pytest.mark.parametrize(
    "content, message",
    [
        (b"engine:\n\treencode_every: 3\n", r"is not valid YAML: line 2, column 1: .*\(indent with spaces, not tabs\)"),
        (b"engine:\n  decode_batch: [1,\n", r"is not valid YAML: line 3, column 1: "),
        (b"engine:\n  reencode_every: 3 # caf\xe9\n", r"is not UTF-8 text \(line 2\); save it as UTF-8"),
        # PyYAML keeps the last silently: the first engine section's keys were dropped.
        (b"engine:\n  reencode_every: 3\nengine:\n  decode_batch: 3\n", r"'engine' is given twice \(lines 1 and 3\)"),
        (b"engine:\n  reencode_every: 3\n  reencode_every: 4\n", r"'reencode_every' is given twice \(lines 2 and 3\)"),
    ],
)
def test_file_problems_are_one_line_with_the_file_and_line(content, message, tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(f)
    assert "\n" not in str(exc.value) and "c.yaml" in str(exc.value)


def test_a_folder_given_as_the_config_file_is_one_line(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"cannot read config file .*: Is a directory; give a YAML file or a preset"):
        load_config(tmp_path)


@pytest.mark.parametrize("content", ["", "# only a comment\n", "engine:\n"])
def test_empty_files_and_sections_are_the_defaults(content, tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text(content)
    assert load_config(f) == Config()



def test_yaml_merge_keys_load_as_before(tmp_path: Path):
    # `<<: *anchor` is YAML's merge key, which yaml.safe_load takes: settings written once and
    # merged where they are wanted again, a key after the merge overriding the merged one.
    # Such a file loaded before keys given twice were refused; a merge is no key given twice.
    f = tmp_path / "c.yaml"
    f.write_text(
        "discovery: &every\n  every_k_frames: 30\n"
        "detect:\n  <<: *every\n"
        "engine:\n  <<: {reencode_every: 3, decode_batch: 4}\n  decode_batch: 6\n"
    )
    cfg = load_config(f)
    assert (cfg.discovery.every_k_frames, cfg.detect.every_k_frames) == (30, 30)
    assert (cfg.engine.reencode_every, cfg.engine.decode_batch) == (3, 6)


def test_a_key_given_twice_on_one_line_is_refused(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("engine: {reencode_every: 3, reencode_every: 4}\n")
    with pytest.raises(ConfigError, match=r"'reencode_every' is given twice \(line 1\)"):
        load_config(f)


# -- YAML 1.1's surprises ------------------------------------------------------------------


@pytest.mark.parametrize(
    "key, raw, said",
    [
        ("source.backoff_initial_s", "1:30", "1:30 is 90"),  # PyYAML: 90 seconds, silently
        ("pipeline.max_frames", "12:30:00", "12:30:00 is 45000"),
        ("source.read_timeout_s", "-1:30.5", "-1:30.5 is -90.5"),
    ],
)
def test_a_base_60_number_is_refused_with_what_to_write(tmp_path: Path, key, raw, said):
    section, name = key.split(".")
    f = tmp_path / "c.yaml"
    f.write_text(f"{section}:\n  {name}: {raw}\n")
    for given in (dict(path=f), dict(overrides=[f"{key}={raw}"])):
        with pytest.raises(ConfigError) as exc:
            load_config(**given)
        msg = str(exc.value)
        assert msg.startswith(f"{key} must be a") and f"not '{raw}'" in msg and said in msg and "\n" not in msg


def test_yaml_1_1_integers_read_as_written(tmp_path: Path):
    # 017 was octal 15 and 0o17 text; 08 was text (refused).
    assert [load_config(None, [f"output.video_crf={v}"]).output.video_crf for v in ("017", "08", "0o17", "0x10", "1_0")] == [17, 8, 15, 16, 10]
    f = tmp_path / "c.yaml"
    f.write_text("output:\n  video_crf: 017\npipeline:\n  max_frames: 1_000\nsource:\n  backoff_initial_s: .5\n  backoff_max_s: 1e3\n")
    cfg = load_config(f)
    assert (cfg.output.video_crf, cfg.pipeline.max_frames, cfg.source.backoff_initial_s, cfg.source.backoff_max_s) == (17, 1000, 0.5, 1000.0)
    with pytest.raises(ConfigError, match=r"^pipeline\.max_frames must be an integer, not '1e3'; write 1000$"):
        load_config(None, ["pipeline.max_frames=1e3"])


def test_a_quoted_number_is_read_alike_by_integer_and_float_keys(tmp_path: Path):
    # A number in quotes is text to YAML; integer and float keys both read it as the number
    # (README: Configuration). Before, float keys took " 5 " and Arabic-Indic digits, integer keys neither.
    f = tmp_path / "c.yaml"
    for quoted, number in (('"5"', 5), ("'017'", 17), ('" 5 "', 5), ('"1_000"', 1000), ('"+3"', 3)):
        f.write_text(f"engine:\n  reencode_every: {quoted}\nsource:\n  backoff_max_s: {quoted}\n")
        for cfg in (load_config(f), load_config(None, [f"engine.reencode_every={quoted}", f"source.backoff_max_s={quoted}"])):
            assert (cfg.engine.reencode_every, cfg.source.backoff_max_s) == (number, float(number)), quoted
            assert type(cfg.engine.reencode_every) is int and type(cfg.source.backoff_max_s) is float
    for key, kind in (("engine.reencode_every", "an integer"), ("source.backoff_max_s", "a number")):
        with pytest.raises(ConfigError, match=rf"^{key} must be {kind}, not '\u0661\u0662'"):
            load_config(None, [f"{key}=\"\u0661\u0662\""])
    # A switch in quotes is text, not a switch: the error says to write it without quotes.
    with pytest.raises(ConfigError, match=r"^source\.reconnect must be true or false, not 'false'; write it without quotes$"):
        load_config(None, ["source.reconnect='false'"])


def test_yes_no_on_off_are_switches_and_text_where_text_is_wanted_says_to_quote(tmp_path: Path):
    cfg = load_config(None, ["pipeline.realtime=yes", "pipeline.two_way=off", "engine.auto=on"])
    assert (cfg.pipeline.realtime, cfg.pipeline.two_way, cfg.engine.auto) == (True, False, True)
    with pytest.raises(ConfigError, match=r"^detect\.classes must be a string, not False \(.*quote the word, e\.g\. 'no'\)$"):
        load_config(None, ["detect.model=y.pt", "detect.classes=[person, no]"])
    assert load_config(None, ["detect.model=y.pt", "detect.classes=[person, 'no']"]).detect.classes == ("person", "no")
    assert load_config(None, ["output.video_codec=2024-05-01"]).output.video_codec == "2024-05-01"  # not a date


def test_streams_and_prompts_files_read_yaml_1_1_surprises_as_written(tmp_path: Path):
    from realtime_sam.app.streams import load_streams_file
    from realtime_sam.errors import PromptError
    from realtime_sam.tracking.prompts import load_prompts_file

    (tmp_path / "a.mp4").write_bytes(b"")
    f = tmp_path / "s.yaml"
    f.write_text("- {source: a.mp4, name: 01}\n- {source: a.mp4, name: 2024-05-01}\n")
    assert [s.name for s in load_streams_file(f)] == ["01", "2024-05-01"]  # were 1 (octal) and a date: refused
    for entry, said in (("name: no", "name False must be"), ("save_masks: off", "save_masks must be a file path, not False")):
        f.write_text(f"- {{source: a.mp4, {entry}}}\n")
        with pytest.raises(ConfigError, match="quote the word") as exc:
            load_streams_file(f)
        assert said in str(exc.value)

    p = tmp_path / "p.yaml"
    p.write_text("- {box: [010, 20, 100, 200], start_frame: 017, label: 007}\n")
    (prompt,) = load_prompts_file(p)
    assert (prompt.box, prompt.start_frame, prompt.label) == ((10.0, 20.0, 100.0, 200.0), 17, "007")  # were 8, 15, "7"
    p.write_text("- {box: [10, 20, 100, 200], start_frame: 1:30}\n")  # was frame 90
    with pytest.raises(PromptError, match=r"start_frame must be an integer >= 0, got '1:30'; write one number .*1:30 is 90\)$"):
        load_prompts_file(p)
    p.write_text("- {box: [10, 20, 100, 200], label: yes}\n")
    with pytest.raises(PromptError, match="quote the word, e.g. 'yes'"):
        load_prompts_file(p)
