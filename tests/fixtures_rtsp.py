"""Pytest fixtures for a real RTSP server on 127.0.0.1 (GStreamer gst-rtsp-server).

``tests/rtsp_server.py`` runs under the system interpreter (``/usr/bin/python3``
has PyGObject; the virtual environment does not) as its own process, so a
test can kill it, freeze it (SIGSTOP) and restart it on the same port.

Import these from ``conftest.py`` (``from fixtures_rtsp import *``). Tests
that use :func:`rtsp_server` skip with the reason when GStreamer's RTSP
server is not installed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest

__all__ = ["RtspServer", "gst_rtsp_available", "rtsp_server"]

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).resolve().with_name("rtsp_server.py")
_INSTALL_HINT = (
    "apt-get install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly"
)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class RtspServer:
    """One ``tests/rtsp_server.py`` process with mounts ``/live`` and (with ``file``) ``/file``,
    and ``/av``, ``/h265``, ``/mjpeg``, ``/resize`` (see ``tests/rtsp_server.py``).

    The port stays the same across :meth:`kill` / :meth:`restart`, so a
    client can reconnect to the same URL. ``auth`` (``USER:PASS``) makes every
    mount ask for those credentials; change it (or ``file``) between a kill
    and a start to serve otherwise on the same port.
    """

    def __init__(self, port: int, log_path: Path, file: Path | None = None, auth: str | None = None) -> None:
        self.port = port
        self.file = file
        self.auth = auth
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def url(self, mount: str = "live", *, userinfo: str | None = None) -> str:
        """``rtsp://[userinfo@]127.0.0.1:PORT/mount``."""
        auth = f"{userinfo}@" if userinfo else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}/{mount.lstrip('/')}"

    def start(self, timeout_s: float = 20.0) -> "RtspServer":
        """Start the process and wait until its port accepts connections."""
        if self.alive:
            return self
        cmd = [SYSTEM_PYTHON, str(SERVER_SCRIPT), "--port", str(self.port)]
        if self.file is not None:
            cmd += ["--file", str(self.file)]
        if self.auth is not None:
            cmd += ["--auth", self.auth]
        with open(self.log_path, "ab") as log:
            # Its own process (no shell): the PID is the server's, so signals reach it.
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"rtsp_server.py exited with {self.proc.returncode}: {self.log_path.read_text(errors='replace')[-2000:]}"
                )
            if _port_accepts(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"rtsp_server.py did not listen on port {self.port} within {timeout_s} s")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash: clients see the stream end) and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self) -> "RtspServer":
        """Kill if running, then start again on the same port."""
        self.kill()
        return self.start()

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets open but sends nothing."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGSTOP)  # type: ignore[union-attr]

    def thaw(self) -> None:
        """SIGCONT after :meth:`freeze`."""
        if self.alive:
            os.kill(self.proc.pid, signal.SIGCONT)  # type: ignore[union-attr]

    def stop(self) -> None:
        """Clean shutdown (SIGTERM, then SIGKILL if it lingers)."""
        if not self.alive:
            return
        self.thaw()  # a stopped process does not act on SIGTERM
        self.proc.terminate()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=5)  # type: ignore[union-attr]
        except subprocess.TimeoutExpired:
            self.kill()


def _gst_rtsp_missing() -> str | None:
    """Why GStreamer's RTSP server cannot run here, or ``None`` when it can."""
    if not os.path.exists(SYSTEM_PYTHON):
        return f"{SYSTEM_PYTHON} not found (the RTSP test server needs the system Python with PyGObject)"
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
        "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
        "('videotestsrc', 'x264enc', 'rtph264pay', 'qtdemux', 'h264parse')) else 3)"
    )
    try:
        done = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"cannot run {SYSTEM_PYTHON}: {exc}"
    if done.returncode == 3:
        return f"GStreamer plugins missing (videotestsrc/x264enc/rtph264pay/qtdemux/h264parse); {_INSTALL_HINT}"
    if done.returncode != 0:
        return f"GStreamer RTSP server (gi GstRtspServer 1.0) not available to {SYSTEM_PYTHON}; {_INSTALL_HINT}"
    return None


@pytest.fixture(scope="session")
def gst_rtsp_available() -> bool:
    """Skips the requesting test when GStreamer's RTSP server is missing."""
    reason = _gst_rtsp_missing()
    if reason is not None:
        pytest.skip(reason)
    return True


@pytest.fixture
def rtsp_server(gst_rtsp_available: bool, tmp_path: Path) -> Iterator[Callable[..., RtspServer]]:
    """Factory: ``rtsp_server(file=None, auth=None) -> RtspServer``, started on a free port.

    Every server it started is stopped when the test ends.
    """
    servers: list[RtspServer] = []

    def start(file: str | Path | None = None, auth: str | None = None) -> RtspServer:
        server = RtspServer(
            _free_port(),
            tmp_path / f"rtsp_server_{len(servers)}.log",
            Path(file).resolve() if file is not None else None,
            auth,
        )
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()
