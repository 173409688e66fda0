"""A stop is not held up by the host-name lookup made after an RTSP open failed with EIO.

FFmpeg says only "Input/output error" when a host name does not resolve, so a failed (re)open
looks the name up again (``_resolves``). That lookup did not watch the stop flag: with a slow DNS
server, ``close()`` (and Ctrl-C) waited for the whole lookup.

The stream here is a real file opened in place of the camera's first connection (no subprocess);
the reconnect then fails with EIO and the resolver is a fake that blocks until the test lets it go.
"""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path

import av
import pytest

from realtime_sam.capture.base import SourceConfig, StatusEvent
from realtime_sam.capture.stream import StreamSource
from realtime_sam.testing.synthetic import standard_scene, write_video

FAST = SourceConfig(open_timeout_s=30, read_timeout_s=2, backoff_initial_s=0.0, backoff_max_s=0.1)
URL = "rtsp://viewer:s3cretpw@slow-dns.example:554/live"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(standard_scene(64, 48, num_frames=4, num_objects=1), tmp_path_factory.mktemp("resolve") / "c.mp4")


class _SlowResolver:
    """``socket.getaddrinfo`` that blocks until ``release`` is set; ``asked`` is set when it is called."""

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.release = threading.Event()
        self.answered = threading.Event()

    def __call__(self, host, *args, **kwargs):
        self.asked.set()
        try:
            self.release.wait(60)
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        finally:
            self.answered.set()


@pytest.fixture
def slow_camera(clip, monkeypatch):
    """A StreamSource for ``URL`` whose first connection plays ``clip`` and whose reopens fail with EIO."""
    real_open = av.open
    opens: list[str] = []

    def fake_open(url, *args, **kwargs):
        opens.append(url)
        if len(opens) == 1:
            return real_open(str(clip))
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(av, "open", fake_open)
    resolver = _SlowResolver()
    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    events: list[StatusEvent] = []
    src = StreamSource(URL, FAST, on_status=events.append)
    try:
        yield src, resolver, events
    finally:
        resolver.release.set()
        src.close()


@pytest.mark.parametrize("how", ["close", "interrupt"])
def test_a_stop_during_a_slow_host_name_lookup_returns_before_the_lookup(slow_camera, how):
    src, resolver, events = slow_camera
    got: list[object] = []

    def reader() -> None:
        while (frame := src.read()) is not None:
            got.append(frame)
        got.append(None)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    # The file ends ("the stream ended"), the reopen fails with EIO, and the name is looked up.
    assert resolver.asked.wait(30), events
    if how == "close":
        src.close()
    else:
        src.interrupt()
    t.join(20)  # a bound for a broken build, not a timing: the lookup blocks for 60 s
    assert not t.is_alive()
    assert not resolver.answered.is_set()  # the read ended while the lookup was still running
    assert got[-1] is None and len(got) == 5  # the file's 4 frames, then the end of the reads
    assert not [e for e in events if e.kind == "gave_up"]
    assert all("s3cretpw" not in e.message for e in events)


def test_a_lookup_that_answers_still_tells_the_name_does_not_resolve(slow_camera):
    src, resolver, events = slow_camera
    resolver.release.set()  # answers at once: the name does not resolve
    got: list[object] = []

    def reader() -> None:
        while (frame := src.read()) is not None:
            got.append(frame)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    for _ in range(600):
        if sum(e.kind == "reconnecting" for e in events) >= 2:
            break
        threading.Event().wait(0.05)
    src.close()
    t.join(20)
    assert not t.is_alive()
    second = [e.message for e in events if e.kind == "reconnecting"][1]
    assert "attempt 1: the host name slow-dns.example does not resolve" in second, second
