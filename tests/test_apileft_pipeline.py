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
from realtime_sam.config import load_config
from realtime_sam.errors import SinkError
from realtime_sam.testing.fakes import BoxRunner
from realtime_sam.tracking.engine import Engine
from realtime_sam.types import Frame, FrameResult, ObjectPrompt


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


class SlowEmbedRunner(BoxRunner):
    """:class:`BoxRunner` whose background encode (``embed``) takes ``delay`` seconds, as a big model's
    encode on a CPU does; ``second`` is set as the second one starts (the first has finished)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.embeds = 0
        self.second = threading.Event()
        self.finished = 0

    def embed(self, image_bgr: np.ndarray):
        self.embeds += 1
        if self.embeds == 2:
            self.second.set()
        time.sleep(self.delay)
        out = super().embed(image_bgr)
        self.finished += 1
        return out


def test_close_waits_for_a_background_encode_as_slow_as_the_runs_slowest():
    """With ``engine.background_encode`` (the cpu preset) encodes run on a worker and their times were not
    among the steps ``close()`` allows one and a half of: an encode running when the loop was left was
    given up on after ``join_timeout_s`` (here 0.1 s), though the run's encodes all took 1 s."""
    cfg = load_config("cpu", ["engine.reencode_every=2"])
    runner = SlowEmbedRunner(delay=1.0)
    engine = Engine.from_config(cfg, runner=runner)
    assert engine.wants_worker
    engine.add_object(ObjectPrompt(box=(10, 10, 60, 60)))
    before = set(threading.enumerate())
    pipe = Pipeline(FrameSource(), engine, config=PipelineConfig(join_timeout_s=0.1, two_way=False))
    with pipe:
        encode_threads = [t for t in set(threading.enumerate()) - before if t.name == "rtsam-encode"]
        for _ in pipe:
            if runner.second.is_set():  # the first encode took 1 s; the second is running
                break
    assert len(encode_threads) == 1
    # close() waited for the running encode: its thread is not left in the model (before: still
    # running, waited for again at exit and, still running then, the interpreter finalized under it).
    assert not encode_threads[0].is_alive()
    assert runner.finished == 2
