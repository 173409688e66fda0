"""Helpers shared by the real-window tests: a private Xvfb, the app started on it, xdotool and screenshots.

A test starts the app with :func:`launch` (a context manager that kills it if the test ends
first), finds its window, drives it through the :class:`WindowApp` it gets and reads what the
window shows with ImageMagick's ``import``.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

TITLE = "realtime-sam"


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (apt-get install xvfb xdotool imagemagick)")


def start_xvfb(screen: str = "1280x720") -> tuple[subprocess.Popen, str]:
    """A private X server with a ``screen`` (``WxH``) screen that takes clients: ``(its process, its DISPLAY name)``."""
    _need("Xvfb", "xdotool", "import")
    gui = re.search(r"GUI:\s*(\S+)", cv2.getBuildInformation())
    if gui is None or gui.group(1).upper() == "NONE":
        pytest.skip("this OpenCV has no GUI backend (opencv-python-headless?); install opencv-python")
    # A random high display number (low ones are what other X servers on the
    # machine use); Xvfb takes its lock file atomically and exits if the number
    # is taken, and -displayfd reports when it accepts connections.
    # REALTIME_SAM_TEST_XVFB_DISPLAYS=71-79 keeps them to those numbers (a machine whose users share out ranges).
    low, high = 200, 4999
    wanted = os.environ.get("REALTIME_SAM_TEST_XVFB_DISPLAYS", "")
    if wanted:
        m = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", wanted)
        if m is None or int(m[1]) > int(m[2]):
            raise AssertionError(f"REALTIME_SAM_TEST_XVFB_DISPLAYS must be LOW-HIGH (e.g. 71-79), got {wanted!r}")
        low, high = int(m[1]), int(m[2])
    rng = random.Random()
    for _ in range(20):
        number = rng.randrange(low, high + 1)
        read_fd, write_fd = os.pipe()
        server = subprocess.Popen(
            # -noreset: by default an X server resets when its last client leaves, and a client
            # connecting just then is cut off (Qt: "could not connect to display", then abort). The
            # tests poll with xdotool, a client that comes and goes, while the app starts: with a
            # loop of xdotool, 16 of 159 Qt windows failed to open here; with -noreset 0 of 168.
            ["Xvfb", f":{number}", "-displayfd", str(write_fd), "-screen", "0", f"{screen}x24", "-nolisten", "tcp", "-noreset"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(write_fd,),
        )
        os.close(write_fd)
        with os.fdopen(read_fd, "r") as reader:
            ready = reader.readline().strip() == str(number)  # empty when the server exited instead
        if ready and server.poll() is None:
            break
        server.wait()
    else:
        pytest.skip("could not start Xvfb on a free display")
    # Ready by -displayfd should mean clients can connect; once under heavy load an
    # app still could not, so wait until a real client (xdotool) gets through.
    deadline = time.monotonic() + 30
    while subprocess.run(
        ["xdotool", "getdisplaygeometry"], capture_output=True, timeout=10, env={**os.environ, "DISPLAY": f":{number}"}
    ).returncode != 0:
        if time.monotonic() > deadline or server.poll() is not None:
            stop_xvfb(server)
            raise AssertionError(f"Xvfb :{number} reported ready but accepts no client")
        time.sleep(0.2)
    return server, f":{number}"


def stop_xvfb(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


@contextmanager
def private_display(screen: str = "1280x720") -> Iterator[str]:
    """A private X server with a ``screen`` (``WxH``) screen for the block; gives its DISPLAY name and
    fails if it died meanwhile."""
    server, display = start_xvfb(screen)
    try:
        yield display
        assert server.poll() is None, "Xvfb died during the test"
    finally:
        stop_xvfb(server)


@pytest.fixture
def xvfb_display():
    """A private X server; yields its DISPLAY name."""
    with private_display() as display:
        yield display


def xdo(display: str, *args: str) -> str:
    """Run ``xdotool ARGS`` on ``display``; its stdout."""
    out = subprocess.run(["xdotool", *args], capture_output=True, text=True, timeout=10, env={**os.environ, "DISPLAY": display})
    return out.stdout


def wait_for(condition: Callable[[], Any], timeout: float, what: str, app: subprocess.Popen, err_path: Path):
    """Poll ``condition`` until it gives a true value and return that; fail with the app's stderr
    (``err_path``) if ``app`` exits first or after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if app.poll() is not None:
            raise AssertionError(f"the app exited ({app.returncode}) while waiting for {what}: {err_path.read_text()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}: {err_path.read_text()[-2000:]}")


def geometry(display: str, wid: str) -> tuple[int, int]:
    """The window's size as the X server has it."""
    m = re.search(r"Geometry: (\d+)x(\d+)", xdo(display, "getwindowgeometry", wid))
    assert m is not None
    return int(m[1]), int(m[2])


def screenshot(display: str, wid: str, path: Path) -> np.ndarray:
    """The window's pixels (``HxWx3 uint8`` BGR) as the X server has them (saved to ``path``)."""
    subprocess.run(["import", "-display", display, "-window", wid, str(path)], check=True, timeout=30)
    shot = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if shot.max() == 0:
        # Qt on a bare X server (no window manager) now and then never paints a new
        # window at all (about 1 launch in 10 here, with a plain imshow loop too), nor
        # a resized one; mapping it again delivers the Expose event it missed.
        xdo(display, "windowunmap", "--sync", wid)
        xdo(display, "windowmap", "--sync", wid)
        time.sleep(0.5)
        subprocess.run(["import", "-display", display, "-window", wid, str(path)], check=True, timeout=30)
        shot = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return shot


@dataclass
class WindowApp:
    """A running app with a window on ``display``: its process, its stderr file (and stdout file,
    when kept) and, once :meth:`find_window` found it, its window id."""

    display: str
    proc: subprocess.Popen
    err_path: Path
    out_path: Path | None = None
    wid: str = ""

    def wait(self, condition: Callable[[], Any], timeout: float, what: str):
        """:func:`wait_for` on this app."""
        return wait_for(condition, timeout, what, self.proc, self.err_path)

    def find_window(self, timeout: float) -> str:
        """Wait up to ``timeout`` seconds for the window titled :data:`TITLE`; its id."""
        self.wid = self.wait(lambda: xdo(self.display, "search", "--name", f"^{TITLE}$").split()[:1], timeout, "the window")[0]
        return self.wid

    def xdo(self, *args: str) -> str:
        return xdo(self.display, *args)

    def key(self, *keys: str) -> None:
        """Press ``keys`` in turn with the window focused."""
        self.xdo("key", "--window", self.wid, *keys)

    def click(self, x: float, y: float, button: str = "1") -> None:
        """Move the pointer to window pixel (``x``, ``y``), rounded, and click ``button``."""
        self.xdo("mousemove", "--window", self.wid, str(round(x)), str(round(y)), "click", button)

    def geometry(self) -> tuple[int, int]:
        return geometry(self.display, self.wid)

    def wait_geometry(self, size: str, timeout: float, what: str) -> None:
        """Wait until the window is ``size`` (``WxH``)."""
        self.wait(lambda: f"Geometry: {size}" in self.xdo("getwindowgeometry", self.wid), timeout, what)

    def screenshot(self, path: Path) -> np.ndarray:
        return screenshot(self.display, self.wid, path)

    def stderr(self) -> str:
        return self.err_path.read_text()

    def quit(self, timeout: float, *, err_tail: int | None = 2000) -> None:
        """Press q and check the app exits 0 within ``timeout`` seconds (failing with the last
        ``err_tail`` characters of its stderr, all of it with None)."""
        self.key("q")
        assert self.proc.wait(timeout=timeout) == 0, self.stderr()[-err_tail:] if err_tail else self.stderr()


@contextmanager
def launch(
    command: list[str], display: str, err_path: Path, *, out_path: Path | None = None, cwd: Path | None = None
) -> Iterator[WindowApp]:
    """Start ``command`` with ``DISPLAY=display``, stderr to ``err_path`` and stdout to ``out_path``
    (discarded when None); kill it if it still runs when the block ends."""
    from fixtures_app import app_env

    with open(err_path, "w") as err, open(out_path or os.devnull, "w") as out:
        proc = subprocess.Popen(command, cwd=cwd, env=app_env(DISPLAY=display), stdout=out, stderr=err)
    try:
        yield WindowApp(display, proc, err_path, out_path)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def model_args(checkpoint: Path) -> tuple[str, ...]:
    """The app's model on the CPU with ``checkpoint``, encoding only when prompted (fast enough for a window test)."""
    return ("--weights", str(checkpoint), "--device", "cpu", "--reencode-every", "100000")


def red_pixels(shot: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(ys, xs)`` of the pure red pixels of ``shot`` (BGR)."""
    b, g, r = (shot[..., i].astype(int) for i in range(3))
    return np.nonzero((r > 200) & (g < 60) & (b < 60))


def red_centre(shot: np.ndarray) -> tuple[float, float]:
    """The centre of the red disc as shown (window pixels)."""
    ys, xs = red_pixels(shot)
    assert len(xs) > 10, "no red disc on screen"
    return float(xs.mean()), float(ys.mean())


def still_clip(path: Path, image: np.ndarray, *, sar: Fraction = Fraction(1), seconds: int = 200, fps: int = 5) -> Path:
    """An H.264 file showing ``image`` (BGR) for ``seconds``, its pixels ``sar`` wide.

    One second (``fps`` frames, a keyframe first) is encoded and its packets written
    ``seconds`` times, each copy a second later: the picture as close to ``image`` as when
    every frame was encoded (a 1080p clip of 120 s took 20 s that way on a 2-core machine).
    """
    import av

    height, width = image.shape[:2]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if sar != 1:
            stream.codec_context.sample_aspect_ratio = sar
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        second = []
        for i in range(fps):
            frame.pts = i
            second += stream.encode(frame)
        second += stream.encode()
        # Muxing takes a packet's data: each copy is a new packet of the same bytes.
        kept = [(bytes(p), p.pts, p.dts, p.is_keyframe, p.time_base) for p in second]
        for k in range(seconds):
            for data, pts, dts, key, time_base in kept:
                packet = av.Packet(data)
                packet.stream, packet.time_base = stream, time_base
                packet.pts, packet.dts, packet.is_keyframe = pts + k * fps, dts + k * fps, key
                out.mux(packet)
    return path


def disc_clip(
    path: Path, size: tuple[int, int], centre: tuple[int, int], *, sar: Fraction = Fraction(1), seconds: int = 200, fps: int = 5
) -> Path:
    """A ``size`` H.264 file whose pixels are ``sar`` wide (64:45 as a PAL DVD's): grey, with a red
    disc at ``centre`` a fifth of the height across, round as shown (so squeezed in stored pixels,
    as a real anamorphic picture is); long enough to outlast the test in real time."""
    import av

    width, height = size
    image = np.full((height, width, 3), 60, np.uint8)
    r = height // 10
    cv2.ellipse(image, centre, (round(r / float(sar)), r), 0, 0, 360, (0, 0, 255), -1)
    still_clip(path, image, sar=sar, seconds=seconds, fps=fps)
    if sar != 1:
        with av.open(str(path)) as check:  # what ffprobe would say: the file is anamorphic
            assert Fraction(check.streams.video[0].sample_aspect_ratio) == sar
    return path
