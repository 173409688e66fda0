"""Configuration input audit: every key of default.yaml given bad values, YAML files of every odd
shape, and the Python entry points (``load_config``, ``Config``, ``track``, ``Engine.from_config``).

Each bad value is either read with its documented meaning or refused by a one-line
:class:`ConfigError` naming the key; the real CLI turns that line into exit status 2.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from fixtures_app import run_app
from realtime_sam.config import Config, load_config, parse_config, parse_overrides, preset_text
from realtime_sam.errors import ConfigError

DEFAULTS = yaml.safe_load(preset_text("default"))
KEYS = [f"{section}.{key}" for section, keys in DEFAULTS.items() for key in keys]

# Values of every kind a user gets wrong: text for a number, a list or a mapping for a scalar, a number
# or a YAML switch word for a switch, negatives, zero, tiny and huge numbers, NaN and infinities, null.
BAD_VALUES = [
    "abc", "[1, 2]", "{a: 1}", "2", "yes", "-1", "0", "-0.5", ".nan", ".inf", "-.inf", "2.5", "1e400",
    "99999999999999999999999", "null", "''", "' '", "1e-9", "'5'",
]


def test_the_audit_covers_every_key_of_default_yaml():
    cfg = Config()
    expected = {f"{s.name}.{f.name}" for s in dataclasses.fields(cfg) for f in dataclasses.fields(getattr(cfg, s.name))}
    assert set(KEYS) == expected and len(KEYS) > 80


@pytest.mark.parametrize("key", KEYS)
def test_every_bad_value_of_every_key_is_read_as_written_or_one_line_naming_the_key(key):
    section, name = key.split(".")
    for raw in BAD_VALUES:
        try:
            cfg = load_config(None, [f"{key}={raw}"])
        except ConfigError as exc:
            message = str(exc)
            assert "\n" not in message, (raw, message)
            assert key in message or (section in message and name in message), (raw, message)
            continue
        value = getattr(getattr(cfg, section), name)
        written = yaml.safe_load(raw)
        # Accepted: the value the YAML says (ints for floats, "5" quoted for a number, 1e-9 as text
        # that YAML 1.1 leaves unread), never a string where a number or switch was meant.
        if isinstance(value, bool):
            assert written is value, (raw, value)
        elif isinstance(value, (int, float)):
            assert float(value) == float(str(written).strip("'")), (raw, value)
        elif value is None:
            assert written is None, raw
        elif isinstance(value, tuple):
            assert list(value) == [str(w) for w in written], (raw, value)
        else:
            assert value == written and str(value).strip(), (raw, value)


# ------------------------------------------------------------------ empty text


@pytest.mark.parametrize(
    "data, key",
    [
        ({"model": {"weights": ""}}, "model.weights"),  # ran with the weights cache's file, without a word
        ({"model": {"weights": "  "}}, "model.weights"),
        ({"detect": {"model": ""}}, "detect.model"),  # ran with no detector, exit 0
        ({"detect": {"model": "", "classes": ["person"]}}, "detect.model"),
        ({"detect": {"classes": ["person", ""]}}, "detect.classes"),  # a class named ''
        ({"output": {"video_codec": ""}}, "output.video_codec"),
        ({"source": {"rtsp_transport": ""}}, "source.rtsp_transport"),
    ],
)
def test_empty_text_is_refused_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=rf"^{key} is given an empty string; give a value, or leave the key out") as exc:
        parse_config(data)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    "item, then",
    [
        ("model.weights=", "or model.weights=null (its default)"),
        ("model.weights= ", "or model.weights=null (its default)"),
        ("tracker.max_lost_frames=", "or tracker.max_lost_frames=null (its default)"),
        ("engine.reencode_every=", "or leave the --set out for the default"),
        ("engine.reencode_evry=", "or leave the --set out for the default"),
    ],
)
def test_a_set_without_a_value_is_refused_not_taken_for_null(item, then):
    # `--set model.weights=$W` with W unset ran on the weights cache's file.
    key = item.split("=")[0]
    with pytest.raises(ConfigError) as exc:
        parse_overrides([item])
    assert str(exc.value) == f"--set {key}= has no value; give one, {then}"


def test_null_written_out_still_means_the_default():
    cfg = load_config(None, ["model.weights=null", "tracker.max_lost_frames=null", "render.font_scale=~"])
    assert cfg.model.weights is None and cfg.tracker.max_lost_frames is None and cfg.render.font_scale is None


# ------------------------------------------------------------------ YAML files of every shape


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", {}),
        (b"# nothing but a comment\n", {}),
        (b"\xef\xbb\xbfengine:\n  reencode_every: 3\n", {"engine.reencode_every": 3}),  # a UTF-8 BOM
        (b"tracker:\n", {}),  # a section left empty
        (b"engine:\n  reencode_every: &n 3\ndiscovery:\n  every_k_frames: *n\n",
         {"engine.reencode_every": 3, "discovery.every_k_frames": 3}),  # an alias
        (b"discovery:\n  <<: {every_k_frames: 7}\n  batch_size: 8\n",
         {"discovery.every_k_frames": 7, "discovery.batch_size": 8}),  # a merge key
        (b"engine:\n  reencode_every: 0x10\n", {"engine.reencode_every": 16}),
    ],
)
def test_yaml_files_that_are_read(tmp_path: Path, content: bytes, expected: dict):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    cfg = load_config(path)
    for key, value in expected.items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == value


@pytest.mark.parametrize(
    "content, message",
    [
        (b"- engine\n- 5\n", r"must hold a mapping of sections"),
        (b"5\n", r"must hold a mapping of sections"),
        (b"tracker: 5\n", r"config section 'tracker' must be a mapping of keys, not int"),
        (b"tracker: [1, 2]\n", r"config section 'tracker' must be a mapping of keys, not list"),
        (b"engine:\n  reencode_every: 3\n  reencode_every: 4\n", r"line 3, column 3: 'reencode_every' is given twice"),
        (b"engine:\n  auto: true\nengine:\n  reencode_every: 4\n", r"'engine' is given twice \(lines 1 and 3\)"),
        (b"engine:\n\treencode_every: 3\n", r"line 2, column 1: .*\(indent with spaces, not tabs\)"),
        (b"engine:\n  reencode_every: 3 # \xe9t\xe9\n", r"is not UTF-8 text \(line 2\); save it as UTF-8"),
        (b"engine:\n  reencode_every: 1" + b"0" * 400 + b"\n", None),  # read as written: checked below
        (b"tracker:\n  max_lost_s: 1" + b"0" * 400 + b"\n", r"tracker.max_lost_s must be a finite number"),
        (b"engine:\n  reencode_evry: 3\n", r"unknown key engine.reencode_evry \(did you mean reencode_every\?\)"),
        (b"Engine:\n  reencode_every: 3\n", r"unknown config section 'Engine' \(did you mean engine\?\)"),
        (b"---\nengine: {}\n---\nengine: {}\n", r"line 3, column 1: but found another document"),
        (b"!!python/object:os.system {}\n", r"could not determine a constructor"),
    ],
)
def test_yaml_files_that_are_refused_in_one_line(tmp_path: Path, content: bytes, message: str | None):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    if message is None:
        assert load_config(path).engine.reencode_every == 10**400  # Python's int: every use is exact
        return
    with pytest.raises(ConfigError, match=message) as exc:
        load_config(path)
    assert "\n" not in str(exc.value)


def test_a_nul_byte_names_its_line_and_is_not_called_a_tab(tmp_path: Path):
    # "unacceptable character" contains "tab": the hint said to indent with spaces, and no line was named.
    path = tmp_path / "c.yaml"
    path.write_bytes(b"engine:\n  reencode_every: 3\n\x00\n")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert message.startswith(f"config file {path} is not valid YAML: line 3: unacceptable character #x0000")
    assert "tab" not in message.replace("unacceptable", "")


# ------------------------------------------------------------------ Python entry points


def test_load_config_takes_a_mapping_and_a_config_as_well_as_a_path():
    assert load_config({"engine": {"reencode_every": 3}}, ["tracker.min_hits=2"]).engine.reencode_every == 3
    cpu = load_config("cpu")
    cfg = load_config(cpu, ["engine.reencode_every=3"])
    assert cfg.engine.reencode_every == 3 and cfg.propagation == cpu.propagation
    with pytest.raises(ConfigError, match=r"engine.reencode_every must be >= 1, got 0"):
        load_config({"engine": {"reencode_every": 0}})


@pytest.mark.parametrize("config", [5, b"cpu", ["engine.reencode_every=3"], 2.5])
def test_a_config_of_another_kind_is_one_line(config):
    # Path(config) raised "TypeError: expected str, bytes or os.PathLike object, not int".
    with pytest.raises(ConfigError, match=r"^config must be a YAML file path, a preset name \(default, cpu, gpu\), a mapping"):
        load_config(config)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ("engine.reencode_every=3", r"overrides must be a list of section.key=value strings"),  # was "got 'e'"
        ([("engine.reencode_every", 3)], r"--set expects section.key=value text"),  # was AttributeError
    ],
)
def test_overrides_of_another_kind_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)


def test_config_sections_given_in_python_are_checked_by_type():
    from realtime_sam.model.config import ModelConfig
    from realtime_sam.output.render import RenderConfig
    from realtime_sam.tracking.engine import EngineConfig
    from realtime_sam.tracking.tracks import TrackerConfig

    # Passed EngineConfig's own `>= 1` check, and the engine would encode on frames 2.5 apart.
    for bad, shown in ((2.5, "2.5"), (float("nan"), "nan"), (True, "True")):
        with pytest.raises(ConfigError, match=rf"^engine.reencode_every must be an integer, not {shown}$"):
            Config(engine=EngineConfig(reencode_every=bad))
    with pytest.raises(ConfigError, match=r"^render.contour_thickness must be an integer, not 2.5$"):
        Config(render=RenderConfig(contour_thickness=2.5))  # inside its [0, 20]; cv2 refuses it when drawing
    with pytest.raises(ConfigError, match=r"^Config.engine must be given as EngineConfig\(...\) or a mapping of its keys, not int$"):
        Config(engine=5)
    assert Config(engine={"reencode_every": 3}).engine == EngineConfig(reencode_every=3)
    with pytest.raises(ConfigError, match=r"unknown key engine.reencode_evry"):
        Config(engine={"reencode_evry": 3})
    # What Python code rightly gives stays accepted: an int for a float, a Path for a path.
    assert Config(tracker=TrackerConfig(max_lost_s=10)).tracker.max_lost_s == 10
    assert Config(model=ModelConfig(weights=Path("w.pt"))).model.weights == Path("w.pt")


def test_engine_from_config_takes_what_load_config_takes():
    from realtime_sam.testing.fakes import BoxRunner
    from realtime_sam.tracking.engine import Engine

    # A dict was "AttributeError: 'dict' object has no attribute 'detect'".
    engine = Engine.from_config({"engine": {"reencode_every": 3}}, runner=BoxRunner())
    assert engine.config.reencode_every == 3
    assert Engine.from_config("cpu", runner=BoxRunner()).config.background_encode
    with pytest.raises(ConfigError, match=r"^tracker: min_score must be in \[0, 1\], got 2.0$"):
        Engine.from_config({"tracker": {"min_score": 2}}, runner=BoxRunner())


def test_track_runs_with_a_dict_config_and_refuses_a_bad_one_at_the_call(small_clip: Path):
    from realtime_sam import track
    from realtime_sam.testing.fakes import BoxRunner
    from realtime_sam.tracking.engine import Engine
    from realtime_sam.types import ObjectPrompt

    engine = Engine.from_config(Config(), runner=BoxRunner())
    results = list(track(str(small_clip), prompts=[ObjectPrompt(box=(40, 40, 120, 120))],
                         config={"pipeline": {"max_frames": 3, "two_way": False}}, engine=engine))
    assert len(results) == 3 and all(len(r.tracks) == 1 for r in results)
    with pytest.raises(ConfigError, match=r"^pipeline.max_frames must be an integer, not 'x'$"):
        track(str(small_clip), config={"pipeline": {"max_frames": "x"}}, engine=engine)


# ------------------------------------------------------------------ the real CLI


@pytest.mark.parametrize(
    "file_text, extra, fragment",
    [
        (None, ["--set", "model.weights="], "--set model.weights= has no value"),
        ('model:\n  weights: ""\n', [], "model.weights is given an empty string"),
        ('detect:\n  model: ""\n', [], "detect.model is given an empty string"),
        ("engine:\n  reencode_every: 3\n\x00\n", [], "line 3: unacceptable character #x0000"),
    ],
)
def test_the_cli_says_it_in_one_line_with_exit_2(tmp_path: Path, small_clip: Path, file_text, extra, fragment):
    args = ["--source", str(small_clip), "--headless", "--output", str(tmp_path / "out.mp4"), "--box", "40,40,120,120", *extra]
    if file_text is not None:
        (tmp_path / "c.yaml").write_text(file_text)
        args += ["--config", str(tmp_path / "c.yaml")]
    out = run_app(*args, cwd=tmp_path, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and fragment in lines[0], out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "out.mp4").exists()


def test_config_given_twice_is_refused_not_the_first_dropped(capsys, tmp_path: Path):
    # argparse kept the last --config silently: `--config cpu --config mine.yaml` ran without the cpu preset.
    from realtime_sam.app import cli

    mine = tmp_path / "mine.yaml"
    mine.write_text("engine:\n  reencode_every: 3\n")
    assert cli.main(["--source", "x.mp4", "--headless", "--config", "cpu", "--config", str(mine)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f"--config is given twice (cpu and {mine}); give one" in lines[0]
