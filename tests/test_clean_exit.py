"""The process exits cleanly while a background encode is still running.

With ``--config cpu`` the encoder runs on the pipeline's encode thread. A
short clip ends long before an encode does, and when ``close()`` gave up
on that thread (``pipeline.join_timeout_s``) the interpreter finalized
under it: the encode's next torch call, coming back, ended the thread with
``pthread_exit``, whose unwinding through torch's C++ frames aborted the
process ("terminate called without an active exception", exit status 134
instead of 0). It happened when an encode outlasted the timeout (a busy
machine); here a runner whose ``embed`` keeps calling into torch until told
to stop makes that happen on every run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from concurrent.futures import CancelledError
from pathlib import Path

import av
import pytest
from fixtures_app import app_env, frame_lines, run_app  # noqa: F401

from realtime_sam.app.pipeline import SerialWorker, wait_for_lingering

BOXES = ("--box", "10,60,70,120", "--box", "250,70,310,120")
FINALIZED = "interpreter finalized"

# Runs the command (realtime_sam.app.cli.entry) or the track() API with the real
# model, whose background encode stays inside torch until ``release`` is set.
_DRIVER = textwrap.dedent(
    """
    import atexit, sys, threading, time
    # Registered first, so it runs last (after the pipeline's own exit handler), and
    # only when the interpreter finalizes: an exit that skips finalizing skips it.
    atexit.register(lambda: print("{finalized}", file=sys.stderr, flush=True))
    import torch
    from realtime_sam.model.runners import InferenceRunner

    looping, release = threading.Event(), threading.Event()
    real_embed = InferenceRunner.embed

    def embed(self, image):
        out = real_embed(self, image)
        a = torch.rand(256, 256)
        looping.set()
        # An encode that lasts, always inside a torch call: until released, then 0.3 s more
        # (the rest of the encode: it is still running when the process begins to exit).
        while not release.is_set() or time.monotonic() < ends_at[0]:
            a = torch.tanh(a @ a)
        return out

    ends_at = [0.0]

    def end_the_encode():
        looping.wait()  # (the real encode before the loop can take seconds on a busy machine)
        ends_at[0] = time.monotonic() + 0.3
        release.set()

    InferenceRunner.embed = embed
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "api":
        from realtime_sam import track
        from realtime_sam.types import ObjectPrompt

        clip, weights, jsonl = args
        from realtime_sam.output.sinks import SinkSpec, open_sinks
        from realtime_sam.output.render import Renderer
        from realtime_sam.config import load_config

        cfg = load_config("cpu", ["pipeline.join_timeout_s=1.0", "model.weights=" + weights, "tracker.min_score=0"])
        sinks = open_sinks([SinkSpec("jsonl", jsonl)], fps=25.0, config=cfg.output, renderer=Renderer(cfg.render), source_name=clip)
        n = sum(1 for _ in track(clip, prompts=[ObjectPrompt(box=(10, 60, 70, 120))], config=cfg, sinks=[sinks]))
        print(f"frames {{n}}", file=sys.stderr, flush=True)
        end_the_encode()  # after close() gave up on it: it ends while the process exits
    else:
        from realtime_sam.app import cli

        run = cli.main

        def main():
            code = run(args)
            if mode == "ends":
                end_the_encode()  # after close() gave up on it: it ends while the process exits
            return code

        cli.main = main
        cli.entry()
    """
).format(finalized=FINALIZED)


def _drive(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, env=app_env(), cwd=tmp_path
    )


def _decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _assert_complete(tmp_path: Path, frames: int = 10) -> None:
    assert [r["frame"] for r in frame_lines(tmp_path / "x.jsonl")] == list(range(frames))
    assert _decoded_frames(tmp_path / "x.mp4") == frames


@pytest.mark.parametrize("mode", ["ends", "hangs"])
def test_command_exits_0_when_an_encode_outlasts_the_run(mode, tmp_path, random_checkpoint, small_clip):
    """``ends``: the encode ends after ``close()`` gave up on it; ``hangs``: it never ends."""
    proc = _drive(
        tmp_path, mode, "--source", str(small_clip), "--headless", "--weights", str(random_checkpoint),
        "--config", "cpu", *BOXES, "--set", "tracker.min_score=0", "--set", "pipeline.join_timeout_s=1.0",
        "--save-masks", "x.jsonl", "--output", "x.mp4", "--quiet",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "terminate called" not in proc.stderr
    _assert_complete(tmp_path)
    # An encode that ends is waited for and the interpreter finalizes normally; a hung one
    # cannot be waited for, so the process ends without finalizing (which would abort).
    assert (FINALIZED in proc.stderr) == (mode == "ends"), proc.stderr


def test_track_api_waits_at_exit_for_an_encode_that_outlasted_close(tmp_path, random_checkpoint, small_clip):
    proc = _drive(tmp_path, "api", str(small_clip), str(random_checkpoint), str(tmp_path / "x.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "frames 10" in proc.stderr and FINALIZED in proc.stderr, proc.stderr
    assert [r["frame"] for r in frame_lines(tmp_path / "x.jsonl")] == list(range(10))


@pytest.mark.parametrize("run", range(2))
def test_cpu_preset_with_two_tracks_exits_0_with_complete_outputs(run, tmp_path, random_checkpoint, small_clip):
    """The reported command, unmodified (the encode of the two boxes is in flight when the clip ends)."""
    proc = run_app(
        "--source", str(small_clip), "--headless", "--weights", str(random_checkpoint), "--config", "cpu",
        *BOXES, "--set", "tracker.min_score=0", "--save-masks", "x.jsonl", "--output", "x.mp4", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "terminate called" not in proc.stderr
    _assert_complete(tmp_path)


def test_serial_worker_close_cancels_calls_not_started_and_the_exit_waits_for_the_running_one():
    started, release = threading.Event(), threading.Event()
    ran: list[str] = []

    def busy():
        started.set()
        release.wait()
        ran.append("busy")
        return "done"

    worker = SerialWorker("test-worker", exit_wait_s=10)
    first = worker.submit(busy)
    second = worker.submit(ran.append, "second")
    assert started.wait(10)
    assert worker.close(0.05) is False  # still busy: left running ...
    assert wait_for_lingering(timeout=0.05) is False  # ... and still waited for
    threading.Timer(0.3, release.set).start()
    wait_for_lingering()  # waits (up to exit_wait_s) until the call ends
    assert not worker.thread.is_alive()
    assert first.result(0) == "done"
    with pytest.raises(CancelledError):
        second.result(0)
    assert ran == ["busy"]


def test_ctrl_c_while_the_command_loads_is_one_line_and_exit_130(tmp_path):
    """A Ctrl-C in the first few tenths of a second (the command's modules still importing:
    OpenCV, NumPy) printed a Python traceback. Here the import of the command is made to meet
    the KeyboardInterrupt a Ctrl-C raises, deterministically, as ``python -m realtime_sam`` runs."""
    code = textwrap.dedent(
        """
        import runpy, sys

        class CtrlC:  # the Ctrl-C arrives while realtime_sam.app.cli is being imported
            def find_spec(self, name, path=None, target=None):
                if name == "realtime_sam.app.cli":
                    raise KeyboardInterrupt
                return None

        sys.meta_path.insert(0, CtrlC())
        sys.argv = ["realtime-sam", "--help"]
        runpy.run_module("realtime_sam", run_name="__main__")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr == "error: interrupted\n" and proc.stdout == ""


def test_the_console_script_starts_at_the_light_launcher():
    """The installed ``realtime-sam`` runs :func:`realtime_sam.launcher.main`, the one that catches that
    Ctrl-C, and the launcher itself imports nothing heavy."""
    text = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    assert 'realtime-sam = "realtime_sam.launcher:main"' in text.splitlines()  # tomllib is Python 3.11 on
    proc = subprocess.run(
        [sys.executable, "-c", "import sys, realtime_sam.launcher; print(sorted(m for m in ('cv2', 'numpy', 'torch') if m in sys.modules))"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.stdout.strip() == "[]", proc.stderr



_SLOW_ENCODES = textwrap.dedent(
    """
    import sys, threading, time
    import torch
    from realtime_sam.model.runners import InferenceRunner

    real_encode, calls, second = InferenceRunner.encode, [0], threading.Event()

    def encode(self, image):  # every encode 1.5 s, always inside torch, as a big model's on a CPU
        calls[0] += 1
        if calls[0] == 2:
            second.set()
        a, ends = torch.rand(128, 128), time.monotonic() + 1.5
        while time.monotonic() < ends:
            a = torch.tanh(a @ a)
        return real_encode(self, image)

    InferenceRunner.encode = encode
    from realtime_sam import make_sink, track
    from realtime_sam.types import ObjectPrompt

    clip, weights = sys.argv[1:]
    sinks = [make_sink("jsonl", "x.jsonl"), make_sink("video", "x.mp4")]
    overrides = ["model.weights=" + weights, "tracker.min_score=0", "pipeline.join_timeout_s=0.5", "engine.reencode_every=5"]
    for result in track(clip, prompts=[ObjectPrompt(box=(10, 60, 70, 120))], overrides=overrides, sinks=sinks):
        # Frame 0 comes at once; 1-4 are held by two-way for the encode at frame 5: leave while it runs.
        assert second.wait(60)
        break
    print("left the loop", file=sys.stderr, flush=True)
    """
)


@pytest.mark.slow
def test_breaking_out_waits_for_an_encode_slower_than_join_timeout_and_finishes_the_outputs(tmp_path, random_checkpoint, small_clip):
    """A big model's encode on a CPU (SAM ViT-H: 10 s and more) is slow, not hung. A loop left
    while one ran gave up on it after ``join_timeout_s`` (0.5 s here), and at exit once more:
    the frames two-way held for it were never written, nor the video finished. ``close()`` now
    also waits one and a half of the slowest step the run measured."""
    script = tmp_path / "slow.py"
    script.write_text(_SLOW_ENCODES)
    proc = subprocess.run(
        [sys.executable, str(script), str(small_clip), str(random_checkpoint)],
        capture_output=True, text=True, timeout=120, env=app_env(), cwd=tmp_path,
    )
    assert proc.returncode == 0 and "left the loop" in proc.stderr, proc.stderr
    assert "terminate called" not in proc.stderr
    written = [r["frame"] for r in frame_lines(tmp_path / "x.jsonl")]
    assert written == list(range(len(written))) and len(written) >= 6, written
    assert _decoded_frames(tmp_path / "x.mp4") == len(written)
