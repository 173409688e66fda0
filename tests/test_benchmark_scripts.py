"""The smaller scripts: bad input (streams, sinks, annotate, CUDA graphs) is one ``error:`` line and exit 2;
Ctrl-C loses nothing already done (benchmark_streams' rows, make_demo's and make_hard_scene's files).

Every bad-input case is refused before a model loads or a worker starts, and the Ctrl-C cases stand
in for the workers or raise the interrupt from the scene, so none needs a GPU or takes long.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from script_loader import SCRIPTS, load_script

streams = load_script("benchmark_streams")
sinks = load_script("benchmark_sinks")
annotate = load_script("benchmark_annotate")

NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")
MISSING = "/nonexistent/weights.pt"


def _exit_code(main, args) -> int:
    try:
        return main(args)
    except SystemExit as exc:  # argparse's own errors
        return exc.code


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("error: "), err
    return err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--streams", "0"], "--streams needs values of K >= 1"),
        (["--streams", "1", "-2"], "--streams needs values of K >= 1"),
        (["--seconds", "-1"], "--seconds must be > 0"),
        (["--seconds", "0"], "--seconds must be > 0"),
        (["--config", "/nonexistent/c.yaml"], "config file not found"),
        (["--set", "engine.nope=1"], "unknown key engine.nope"),
        (["--weights", MISSING], f"weights file not found: {MISSING}"),
        pytest.param(["--device", "cuda"], "device 'cuda' is not available here", marks=NO_CUDA),
    ],
)
def test_streams_bad_input_before_any_worker(args, message, capsys, monkeypatch):
    monkeypatch.setattr(streams, "run_inner", lambda *a, **k: pytest.fail("a worker was started"))
    assert _exit_code(streams.main, args) == 2
    assert message in _one_error_line(capsys)


def test_streams_passes_a_workers_one_line_error_on(capsys):
    def worker(code: str) -> subprocess.Popen:
        log = tempfile.TemporaryFile(mode="w+")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=log, text=True)
        proc.stderr_log = log
        return proc

    bad = "import sys; print('warming up', file=sys.stderr); print('error: stream s0: no such graph', file=sys.stderr); sys.exit(2)"
    slow = "import time; time.sleep(60)"
    procs = [worker(bad), worker(slow)]
    with pytest.raises(streams.WorkerError, match="^stream s0: no such graph$"):
        streams.collect(procs)
    assert all(p.poll() is not None for p in procs)  # the other worker was stopped, not left running
    ok = worker("import json; print(json.dumps({'fps': [1.0]}))")
    assert streams.collect([ok]) == [{"fps": [1.0]}]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--outputs", "video,mp4"], "unknown --outputs mp4; give one or more of video, jsonl, png, mots"),
        (["--outputs", ""], "--outputs names no output"),
        (["--outputs", ","], "--outputs names no output"),
        (["--frames", "3"], "--frames must be >= 4"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--model-ms", "-5"], "--model-ms must be >= 0"),
    ],
)
def test_sinks_bad_input(args, message, capsys, monkeypatch):
    monkeypatch.setattr(sinks, "standard_scene", lambda *a, **k: pytest.fail("the clip was rendered"))
    assert _exit_code(sinks.main, args) == 2
    assert message in _one_error_line(capsys)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--boxes", "-2"], "--boxes needs box counts >= 1"),
        (["--boxes", "4", "0"], "--boxes needs box counts >= 1"),
        (["--repeats", "0"], "--repeats must be >= 1"),
        (["--size", "0", "0"], "--size needs a width and height of at least 64"),  # was a ZeroDivisionError traceback
        (["--size", "640", "-480"], "--size needs a width and height of at least 64"),
        (["--weights", MISSING], f"weights file not found: {MISSING}"),
        pytest.param(["--device", "cuda"], "device 'cuda' is not available here", marks=NO_CUDA),
    ],
)
def test_annotate_bad_input_before_the_model_loads(args, message, capsys, monkeypatch):
    monkeypatch.setattr(annotate, "load_inference_model", lambda *a, **k: pytest.fail("a model was loaded"))
    assert _exit_code(annotate.main, args) == 2
    assert message in _one_error_line(capsys)


@NO_CUDA
def test_cuda_graphs_without_cuda_is_one_line(capsys):
    graphs = load_script("benchmark_cuda_graphs")
    assert _exit_code(graphs.main, []) == 2  # the default device, cuda, is not here
    assert "device 'cuda' is not available here" in _one_error_line(capsys)
    assert _exit_code(graphs.main, ["--device", "cpu"]) == 2
    assert "CUDA graphs need a CUDA device" in capsys.readouterr().err


class _Interrupted:
    """A scene that is stopped (Ctrl-C) while its frames are being encoded."""

    def __init__(self, scene, at: int) -> None:
        self._scene, self._at = scene, at

    def render(self, i):
        if i == self._at:
            raise KeyboardInterrupt
        return self._scene.render(i)

    def __getattr__(self, name):
        return getattr(self._scene, name)


def test_an_interrupted_make_demo_keeps_the_clip_it_had(tmp_path, monkeypatch):
    # The default --out is the package's own demo folder: an interrupted run used to leave there a
    # clip cut short at the frame it was stopped on, which played as if whole.
    demo = load_script("make_demo")
    first = tmp_path / "first"
    assert demo.main(["--out", str(first)]) == 0
    made = demo.hard_scene
    monkeypatch.setattr(demo, "hard_scene", lambda *a, **k: _Interrupted(made(*a, **k), at=100))
    out = tmp_path / "demo"
    out.mkdir()
    (out / "clip.mp4").write_bytes((first / "clip.mp4").read_bytes())
    with pytest.raises(KeyboardInterrupt):
        demo.main(["--out", str(out)])
    assert (out / "clip.mp4").read_bytes() == (first / "clip.mp4").read_bytes()
    assert sorted(p.name for p in out.iterdir()) == ["clip.mp4"]  # no partial file left behind
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        demo.main(["--out", str(fresh)])
    assert list(fresh.iterdir()) == []  # nothing that looks like a clip


def test_an_interrupted_make_hard_scene_keeps_the_sequence_it_had(tmp_path, monkeypatch):
    # It used to delete the old labels first and leave a clip cut short (which played as if whole)
    # beside the labels of the frames written so far.
    scene_script = load_script("make_hard_scene")
    small = ["--size", "160x120", "--name", "hard"]
    assert scene_script.main([str(tmp_path), "--seconds", "1", "--seed", "1", *small]) == 0
    labels = tmp_path / "Annotations" / "480p" / "hard"

    def snapshot():
        files = sorted(labels.iterdir())
        return (tmp_path / "hard.mp4").read_bytes(), [(p.name, p.read_bytes()) for p in files]

    before = snapshot()
    assert len(before[1]) == 30
    made = scene_script.hard_scene
    monkeypatch.setattr(scene_script, "hard_scene", lambda *a, **k: _Interrupted(made(*a, **k), at=55))
    with pytest.raises(KeyboardInterrupt):
        scene_script.main([str(tmp_path), "--seconds", "2", "--seed", "2", *small])
    assert snapshot() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Annotations", "hard.mp4"]
    assert [p.name for p in (tmp_path / "Annotations" / "480p").iterdir()] == ["hard"]


def test_streams_ctrl_c_prints_the_k_already_measured(capsys, monkeypatch):
    # Each K takes minutes (one process, then K processes); Ctrl-C used to end in a traceback that
    # threw away the rows already measured.
    figures = {"fps": [27.0], "age": [2.0], "rss_mb": 800.0, "cap": None, "capped": 0.0}
    calls = []

    def collect(procs):
        calls.append(len(procs))
        if len(calls) > 2:  # K = 1 measured both ways; stopped during K = 2
            raise KeyboardInterrupt
        return [dict(figures) for _ in procs]

    monkeypatch.setattr(streams, "run_inner", lambda k, args, weights: object())
    monkeypatch.setattr(streams, "collect", collect)
    monkeypatch.setattr(streams, "weights_or_random", lambda weights, scratch: "w.pt")
    monkeypatch.setattr(streams, "check_model_args", lambda *a, **k: None)
    assert streams.main(["--streams", "1", "2", "--seconds", "1"]) == 130
    out, err = capsys.readouterr()
    assert "interrupted: the table has the K measured before it (1)" in err and "Traceback" not in err
    rows = [line.split()[:2] for line in out.splitlines() if line[:2].strip().isdigit()]
    assert rows == [["1", "together"], ["1", "apart"]]


def test_every_script_gives_its_help_under_python_oo():
    # python -OO (or PYTHONOPTIMIZE=2) strips docstrings: each parser's description was
    # __doc__.split(...), so every script's --help (and any run) ended in AttributeError on None.
    names = sorted(p.stem for p in SCRIPTS.glob("*.py") if not p.stem.startswith("_"))
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from script_loader import load_script\n"
        "for name in sys.argv[2:]:\n"
        "    try:\n"
        "        load_script(name).main(['--help'])\n"
        "    except SystemExit as exc:\n"
        "        assert exc.code == 0, (name, exc.code)\n"
        "    print('ok', name)\n"
    )
    tests = str(Path(__file__).resolve().parent)
    proc = subprocess.run([sys.executable, "-OO", "-c", code, tests, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("ok ")] == names
