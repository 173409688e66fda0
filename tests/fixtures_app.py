"""Helpers shared by the CLI and window tests: tiny synthetic clips and running the app."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 320, 240


# What opencv-python-headless's namedWindow raises (measured with 5.1.0.95; 4.8.0.74's is the same
# but for the line number and 'cvNamedWindow').
HEADLESS_NAMED_WINDOW_ERROR = (
    "OpenCV(5.1.0) /io/opencv/modules/highgui/src/window.cpp:1241: error: (-2:Unspecified error) The function "
    "is not implemented. Rebuild the library with Windows, GTK+ 2.x or Cocoa support. If you are on Ubuntu or "
    "Debian, install libgtk2.0-dev and pkg-config, then re-run cmake or configure script in function "
    "'namedWindowImpl'\n"
)


def headless_named_window(*args: object) -> None:
    """``cv2.namedWindow`` as opencv-python-headless has it (the test suite runs with opencv-python)."""
    import cv2

    raise cv2.error(HEADLESS_NAMED_WINDOW_ERROR)


def skip_unless_x11() -> None:
    """Skip where windows need no X server (Windows, macOS: a display is always assumed there)."""
    if sys.platform in ("win32", "darwin"):
        pytest.skip("a display is always assumed on this platform")


def free_x_display_number() -> int:
    """A display number no X server answers at here: no lock file, no socket file, no
    abstract socket (``/proc/net/unix``) and nothing on its TCP port. Skips off X11 platforms."""
    skip_unless_x11()
    listed = Path("/proc/net/unix").read_text() if Path("/proc/net/unix").exists() else ""
    rng = random.Random()
    for _ in range(50):
        n = rng.randrange(5000, 5999)
        path = f"/tmp/.X11-unix/X{n}"
        if Path(f"/tmp/.X{n}-lock").exists() or Path(path).exists() or f"@{path}\n" in listed:
            continue
        try:
            socket.create_connection(("localhost", 6000 + n), timeout=1).close()
        except OSError:
            return n
    pytest.skip("no free X display number found")


@pytest.fixture(scope="session")
def small_clip(tmp_path_factory) -> Path:
    """A 10-frame 320x240 synthetic clip (3 objects) at 25 fps."""
    from realtime_sam.testing.synthetic import standard_scene, write_video

    path = tmp_path_factory.mktemp("clips") / "small.mp4"
    return write_video(standard_scene(width=WIDTH, height=HEIGHT, num_frames=10), path)


def app_env(**extra: str) -> dict[str, str]:
    """The environment for running ``python -m realtime_sam`` from any folder."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra)
    return env


def app_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "realtime_sam", *args]


def run_app(*args: str, timeout: float = 120, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess and wait for it."""
    return subprocess.run(
        app_command(*args), capture_output=True, text=True, timeout=timeout, env=app_env(**env), cwd=cwd
    )


def frame_lines(path: Path) -> list[dict]:
    """The frame records of a JSONL output, complete lines only."""
    if not path.exists():
        return []
    text = path.read_text()
    lines = text.split("\n")[:-1]  # the last item is empty or a line still being written
    out = []
    for line in lines:
        obj = json.loads(line)
        if "frame" in obj:
            out.append(obj)
    return out


def wait_for_frames(path: Path, n: int, proc: subprocess.Popen, timeout: float) -> int:
    """Wait until the JSONL output ``path`` of the running app ``proc`` holds ``n`` frame records; returns how many.

    Raises AssertionError when the app ends first (with its stderr, when piped) or after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = len(frame_lines(path))
        if got >= n:
            return got
        if proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise AssertionError(f"the app ended early ({proc.returncode}) before {n} frames in {path}: {err}")
        time.sleep(0.1)
    raise AssertionError(f"fewer than {n} frames in {path} after {timeout} s")


@contextmanager
def running_app(cwd: Path, *args: str) -> Iterator[tuple[subprocess.Popen, Path]]:
    """Run the app with ``args`` in ``cwd``, its stderr going to ``cwd / "err.txt"``; yields the process and that path.

    On leaving the block (an assertion, a failed wait included) the app is killed if it still runs.
    """
    err_path = cwd / "err.txt"
    with open(err_path, "w") as err:
        proc = subprocess.Popen(app_command(*args), cwd=cwd, env=app_env(), stdout=subprocess.DEVNULL, stderr=err)
    try:
        yield proc, err_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@contextmanager
def app_losing_its_stream(
    cwd: Path, *args: str, server, jsonl: Path, frames: int, timeout: float
) -> Iterator[tuple[subprocess.Popen, Path]]:
    """:func:`running_app` on a stream of ``server`` (an ``RtspServer`` of ``fixtures_rtsp``), killed mid-run.

    Once the JSONL output ``jsonl`` holds ``frames`` frame records (:func:`wait_for_frames`, with
    ``timeout``), the server is killed and the block runs: it waits for the app to reconnect or to exit.
    """
    with running_app(cwd, *args) as (proc, err_path):
        wait_for_frames(jsonl, frames, proc, timeout)
        server.kill()
        yield proc, err_path


@pytest.fixture
def run(checkpoint_path, tmp_path, monkeypatch):
    """The CLI's ``main`` with the test checkpoint, CPU, a huge re-encode interval, in a temp folder
    (the CLI tests' and the image-folder tests')."""
    from realtime_sam.app import cli

    monkeypatch.chdir(tmp_path)

    def go(*args: str) -> int:
        return cli.main(["--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "1000", *args])

    return go
