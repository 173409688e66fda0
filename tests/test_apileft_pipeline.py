"""``Pipeline.close()``'s bounded waits: what it gives up on is still told, and background encodes
count among the steps whose slowest it waits for.

Real pipelines and engines; the model is :class:`~realtime_sam.testing.fakes.BoxRunner`, made
slow where a test needs a slow model.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

from realtime_sam.app.pipeline import Pipeline, PipelineConfig, wait_for_lingering
from realtime_sam.errors import SinkError
from realtime_sam.types import Frame, FrameResult


class FrameSource:
    """A file-like source of ``n`` black 160x120 frames (0 = endless)."""

    live = False
    fps = 25.0
    name = "frames"

    def __init__(self, n: int = 0) -> None:
        self.n, self.i = n, 0

    def read(self) -> Frame | None:
        if self.n and self.i >= self.n:
            return None
        frame = Frame(self.i, np.zeros((120, 160, 3), np.uint8), self.i / self.fps, time.monotonic())
        self.i += 1
        return frame

    def close(self) -> None:
        pass


class QuickEngine:
    """Returns each frame with no track, at once."""

    def process(self, frame: Frame) -> FrameResult:
        return FrameResult(frame=frame, tracks=())


class SlowToCloseSink:
    """Writes nothing; its ``close`` takes ``delay`` seconds, then fails as a full disk makes a video's last write fail."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.closing = threading.Event()
        self.finished = threading.Event()
        self.path = "out.mp4"

    def write(self, result: FrameResult) -> None:
        pass

    def close(self) -> None:
        self.closing.set()
        try:
            time.sleep(self.delay)
            raise SinkError("finishing the video output out.mp4 failed: No space left on device")
        finally:
            self.finished.set()


def test_a_sink_that_fails_after_close_stopped_waiting_for_it_is_reported(caplog):
    """``close()`` waits a bounded time for the sinks to close; a sink that failed after that (its
    file left without an index) was never told: the error was kept where nobody read it."""
    sink = SlowToCloseSink(delay=2.0)
    caplog.set_level(logging.WARNING)
    with Pipeline(FrameSource(), QuickEngine(), sinks=[sink], config=PipelineConfig(join_timeout_s=0.1)) as pipe:
        for result in pipe:
            if result.index == 2:
                break
    # close() has returned; the sink is still closing (the case under test) ...
    assert sink.closing.is_set() and not sink.finished.is_set()
    assert not [r for r in caplog.records if r.name == "realtime_sam.app.pipeline"]
    # ... and fails afterwards, on its own thread: that is told, in one line.
    assert wait_for_lingering(timeout=30)
    said = [r.getMessage() for r in caplog.records if r.name == "realtime_sam.app.pipeline"]
    assert said == [
        "the output out.mp4 failed after the run was closed, so it may be incomplete: "
        "finishing the video output out.mp4 failed: No space left on device"
    ]
    assert [r.levelname for r in caplog.records if r.name == "realtime_sam.app.pipeline"] == ["WARNING"]
