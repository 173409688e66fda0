"""The threaded pipeline: ordering, back-pressure, latest-frame policy, errors, stopping, sinks."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from realtime_sam.app.pipeline import Pipeline, PipelineConfig
from realtime_sam.capture.base import LiveSource, SourceConfig
from realtime_sam.errors import ConfigError, StreamInterrupted
from realtime_sam.types import Frame, FrameResult


class ListSource:
    """A source over ``n`` tiny frames; ``period`` paces it like a camera."""

    def __init__(self, n: int, *, live: bool = False, period: float = 0.0, fail_after: int | None = None):
        self.n, self.live, self.period, self.fail_after = n, live, period, fail_after
        self.i = 0
        self.closed = False
        self.interrupted = threading.Event()

    def read(self):
        if self.fail_after is not None and self.i >= self.fail_after:
            raise StreamInterrupted(f"damaged file: stopped after {self.i} frames")
        if self.i >= self.n or self.interrupted.is_set():
            return None
        if self.period:
            time.sleep(self.period)
        f = Frame(self.i, np.full((4, 4, 3), self.i % 256, np.uint8), self.i / 25.0, time.monotonic())
        self.i += 1
        return f

    def interrupt(self):
        self.interrupted.set()

    def close(self):
        self.closed = True


class SlowEngine:
    def __init__(self, delay: float = 0.0, fail_at: int | None = None):
        self.delay, self.fail_at = delay, fail_at
        self.seen: list[int] = []
        self.has_pending = False

    def process(self, frame: Frame) -> FrameResult:
        if self.fail_at is not None and frame.index == self.fail_at:
            raise RuntimeError("boom in the engine")
        if self.delay:
            time.sleep(self.delay)
        self.seen.append(frame.index)
        return FrameResult(frame=frame, tracks=())


class RecordingSink:
    def __init__(self):
        self.indices: list[int] = []
        self.closed = 0

    def write(self, result):
        self.indices.append(result.index)

    def close(self):
        self.closed += 1


def test_file_source_loses_no_frame_and_keeps_order():
    sink = RecordingSink()
    src = ListSource(40)
    eng = SlowEngine(delay=0.002)
    with Pipeline(src, eng, sinks=[sink], config=PipelineConfig(queue_size=2)) as pipe:
        got = [r.index for r in pipe]
    assert got == list(range(40))
    assert sink.indices == list(range(40))
    assert sink.closed == 1
    assert pipe.stats.frames_dropped == 0
    assert src.closed


class WorksOn:
    """An engine with work (a mask to move: 20 ms, timed as ``propagate``) on the frames ``busy`` holds,
    none on the others (nothing tracked: only ``total``, as the real engine's idle frames)."""

    has_pending = False

    def __init__(self, busy) -> None:
        self.busy = busy

    def process(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        timings = {}
        if self.busy(frame.index):
            time.sleep(0.02)
            timings["propagate"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(frame=frame, tracks=(), timings=timings)


def test_model_fps_counts_only_the_frames_the_engine_had_work_on():
    from realtime_sam.app.pipeline import model_rate

    # Nothing tracked: each frame takes microseconds, and 1 / that made "model 1300 fps" (measured
    # with the real engine and no objects). The model is idle, and the lines say so.
    with Pipeline(ListSource(40), WorksOn(lambda i: False)) as pipe:
        assert len(list(pipe)) == 40
    assert pipe.stats.model_fps == 0.0 and model_rate(pipe.stats) == "idle"
    # The last 30 frames: 20 idle ones and 10 of 20 ms each: about 50 fps (idle ones counted, 150).
    with Pipeline(ListSource(50), WorksOn(lambda i: i < 10 or i >= 40)) as pipe:
        assert len(list(pipe)) == 50
    assert 15 < pipe.stats.model_fps <= 50.5, pipe.stats
    assert model_rate(pipe.stats) == f"{pipe.stats.model_fps:.1f} fps"


class LandsEncodes:
    """An engine with a mask to move on every frame (5 ms, ``propagate``) that lands an encode's
    masks on the frames ``landed`` holds (``encoded``, as a background encode landing), and is idle
    (nothing tracked) on the frames ``idle`` holds."""

    has_pending = False

    def __init__(self, landed, idle=lambda i: False) -> None:
        self.landed, self.idle = landed, idle

    def process(self, frame: Frame) -> FrameResult:
        t0 = time.perf_counter()
        timings = {}
        if not self.idle(frame.index):
            time.sleep(0.005)
            timings["propagate"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = (time.perf_counter() - t0) * 1e3
        return FrameResult(frame=frame, tracks=(), encoded=self.landed(frame.index), timings=timings)


def test_stats_say_how_often_encodes_land_beside_the_per_frame_rate():
    """With background encodes (the cpu preset) the model's rate times only the frames' own work:
    'model 108-200 fps' for masks the model refreshed every 0.6 s. The lines now say both."""
    import re

    from realtime_sam.app.pipeline import model_rate

    # An encode lands every 10th frame: 10 frames of at least 5 ms between two.
    with Pipeline(ListSource(60), LandsEncodes(lambda i: i % 10 == 0)) as pipe:
        assert len(list(pipe)) == 60
    stats = pipe.stats
    assert stats.encode_interval_s is not None and stats.encode_interval_s >= 10 * 0.005, stats
    assert stats.model_fps <= 1 / 0.005
    match = re.fullmatch(r"(\d+\.\d) fps, encode every (\d+\.\d+) s", model_rate(stats))
    assert match, model_rate(stats)
    assert float(match.group(2)) == pytest.approx(stats.encode_interval_s, abs=0.006)

    # Encodes stop landing (frames 21-79 move masks, none lands): the interval grows with the
    # time since the last one, not the mean of the two before it.
    with Pipeline(ListSource(80), LandsEncodes(lambda i: i in (0, 10, 20))) as pipe:
        assert len(list(pipe)) == 80
    assert pipe.stats.encode_interval_s >= 59 * 0.005, pipe.stats

    # None landed yet (one is not an interval): no encode part.
    with Pipeline(ListSource(20), LandsEncodes(lambda i: i == 3)) as pipe:
        assert len(list(pipe)) == 20
    assert pipe.stats.encode_interval_s is None and model_rate(pipe.stats).endswith(" fps")

    # Idle for 30 frames after the encodes (everything removed): no interval, 'idle'.
    with Pipeline(ListSource(60), LandsEncodes(lambda i: i in (0, 10, 20), idle=lambda i: i >= 25)) as pipe:
        assert len(list(pipe)) == 60
    assert pipe.stats.encode_interval_s is None and model_rate(pipe.stats) == "idle"


def test_the_encode_interval_leaves_out_the_time_paused():
    src = ListSource(40)
    with Pipeline(src, LandsEncodes(lambda i: i % 10 == 0)) as pipe:
        for result in pipe:
            if result.index == 15:
                pipe.pause()
                time.sleep(3.0)
                pipe.resume()
    # 4 encodes, 10 frames of 5 ms apart (with the pause counted, the mean was over 1 s).
    assert pipe.stats.encode_interval_s < 0.6, pipe.stats


class DropsOnce(LiveSource):
    """A live source (the real reconnect logic of :class:`LiveSource`) of ``n`` frames that loses its
    connection once, before frame ``drop_at``, and gets it back after ``outage_s`` (the backoff's first wait);
    black ``size`` (width, height) frames, 50 a second. Also serves tests/test_cluster.py."""

    name, fps, num_frames = "cam", 50.0, None

    def __init__(self, n: int, drop_at: int, outage_s: float, on_status=None, size: tuple[int, int] = (4, 4)) -> None:
        super().__init__(SourceConfig(backoff_initial_s=outage_s), on_status)
        self.size = size
        self.n, self.drop_at, self.i, self.up, self.dropped = n, drop_at, 0, True, False

    def _connect(self) -> None:
        self.up = True

    def _disconnect(self) -> None:
        self.up = False

    @property
    def _connected(self) -> bool:
        return self.up

    def _read(self):
        if self.i >= self.n:
            return None
        if self.i == self.drop_at and not self.dropped:
            self.dropped = True
            self._dropped("the test dropped it")
        time.sleep(0.01)
        self.i += 1
        return Frame(self.i - 1, np.zeros((self.size[1], self.size[0], 3), np.uint8), self.i / 50, time.monotonic())

    def _release(self) -> None:
        pass


def test_the_encode_interval_after_a_reconnect_leaves_out_the_outage():
    # Encodes land every 10th frame (~0.1 s apart); the stream is gone for 2 s before frame 45.
    # Before, the status line said 'encode every 2.1 s' right after the reconnect and kept the
    # outage in its mean for the next five encodes ('every 0.51 s').
    outage = 2.0
    src = DropsOnce(100, drop_at=45, outage_s=outage)
    seen: list[tuple[int, float | None]] = []

    class Snapshots(LandsEncodes):
        def process(self, frame):
            # What the status line shows as this frame comes in: every frame before it counted.
            seen.append((frame.index, pipe.stats.encode_interval_s))
            return super().process(frame)

    pipe = Pipeline(src, Snapshots(lambda i: i % 10 == 0))
    with pipe:
        list(pipe)
    assert src.reconnects == 1
    before = [v for i, v in seen if i <= 45]  # frame 45's snapshot holds the frames before the drop
    assert before[-1] is not None and before[-1] < outage / 2, seen
    after = [(i, v) for i, v in seen if i > 45]
    second = [i for i, _ in after if i % 10 == 0][1]
    # The count starts over at the reconnect: no interval until two encodes landed after it...
    assert all(v is None for i, v in after if i <= second), seen
    # ...and from then on it is the spacing of those encodes, never the outage.
    assert all(v is not None and v < outage / 2 for i, v in after if i > second), seen


def test_live_source_keeps_only_the_newest_frame():
    src = ListSource(60, live=True, period=0.005)
    eng = SlowEngine(delay=0.03)
    with Pipeline(src, eng) as pipe:
        got = [r.index for r in pipe]
    # The engine is ~6x slower than the camera: most frames are dropped, the rest stay in order.
    assert got == sorted(got)
    assert len(got) < 40
    assert pipe.stats.frames_dropped >= 60 - len(got) - 2
    assert got[-1] >= 50  # it kept up with the newest frames


def test_a_live_stream_converts_only_the_frames_the_engine_takes(monkeypatch):
    """A real lavfi stream at 50 fps, an engine at about 8: the frames dropped are never converted to BGR."""
    import realtime_sam.capture.stream as stream_module
    from realtime_sam.capture.sources import open_source

    converted: list[int] = []
    failed: list[int] = []
    real = stream_module.to_bgr

    def counting(av_frame):
        converted.append(1)
        if len(converted) == 4:  # one that cannot be converted is skipped, not fatal
            failed.append(1)
            raise ValueError("unsupported pixel format")
        return real(av_frame)

    monkeypatch.setattr(stream_module, "to_bgr", counting)
    src = open_source("lavfi:testsrc2=size=160x120:rate=50")
    eng = SlowEngine(delay=0.12)
    with Pipeline(src, eng, config=PipelineConfig(max_frames=8)) as pipe:
        got = [r for r in pipe]
        read = pipe.stats.frames_read
    assert len(got) == 8 and failed
    assert all(r.frame.image.shape == (120, 160, 3) for r in got)
    assert [r.index for r in got] == sorted(r.index for r in got)
    # One conversion per frame taken (plus the one that failed, and the frame read at open);
    # eagerly, every frame read would have been converted.
    assert len(converted) <= len(got) + 2
    assert read >= 3 * len(got)


def test_realtime_pacing_turns_a_file_into_a_live_source():
    src = ListSource(20)  # timestamps at 25 fps -> 0.8 s
    eng = SlowEngine(delay=0.1)
    t0 = time.monotonic()
    with Pipeline(src, eng, config=PipelineConfig(realtime=True)) as pipe:
        got = [r.index for r in pipe]
    assert time.monotonic() - t0 >= 0.7
    assert len(got) < 20 and pipe.stats.frames_dropped > 0


def test_engine_error_reaches_the_consumer_after_earlier_results():
    sink = RecordingSink()
    with pytest.raises(RuntimeError, match="boom"):
        with Pipeline(ListSource(30), SlowEngine(fail_at=7), sinks=[sink]) as pipe:
            for _ in pipe:
                pass
    assert sink.indices == list(range(7))
    assert sink.closed == 1


def test_source_error_arrives_after_every_decodable_frame():
    sink = RecordingSink()
    got = []
    with pytest.raises(StreamInterrupted):
        with Pipeline(ListSource(30, fail_after=12), SlowEngine(), sinks=[sink]) as pipe:
            for r in pipe:
                got.append(r.index)
    assert got == list(range(12))
    assert sink.indices == list(range(12)) and sink.closed == 1


def test_stop_from_another_thread_ends_iteration_and_closes_sinks():
    sink = RecordingSink()
    src = ListSource(10_000, live=True, period=0.002)
    with Pipeline(src, SlowEngine(delay=0.005), sinks=[sink]) as pipe:
        threading.Timer(0.3, pipe.stop).start()
        t0 = time.monotonic()
        n = sum(1 for _ in pipe)
        elapsed = time.monotonic() - t0
    assert n > 0 and elapsed < 3.0
    assert sink.closed == 1
    assert src.interrupted.is_set()


def test_max_frames_limits_processing():
    with Pipeline(ListSource(100), SlowEngine(), config=PipelineConfig(max_frames=5)) as pipe:
        assert [r.index for r in pipe] == [0, 1, 2, 3, 4]


def test_breaking_out_of_the_loop_finalises_sinks():
    sink = RecordingSink()
    with Pipeline(ListSource(1000), SlowEngine(), sinks=[sink]) as pipe:
        for r in pipe:
            if r.index == 3:
                break
    assert sink.closed == 1
    assert sink.indices[:4] == [0, 1, 2, 3]


@pytest.mark.parametrize("kwargs", [{"queue_size": 0}, {"max_frames": -1}, {"join_timeout_s": 0}])
def test_config_ranges_are_checked(kwargs):
    with pytest.raises(ConfigError):
        PipelineConfig(**kwargs)


# ------------------------------------------------------------------ sinks on their own thread


class GatedSink:
    """Writes through to ``inner`` (a real sink or a recorder) only once ``gate`` is open; records the thread."""

    def __init__(self, inner, gate: threading.Event):
        self.inner, self.gate = inner, gate
        self.threads: set[str] = set()
        self.waiting = threading.Event()  # set while a write waits at the gate

    def write(self, result):
        self.threads.add(threading.current_thread().name)
        if not self.gate.is_set():
            self.waiting.set()
            self.gate.wait()
        self.inner.write(result)

    def close(self):
        self.inner.close()


def _until(condition, what: str, timeout: float = 20.0):
    """Wait for ``condition`` (a guard against hanging, not a timing check)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


def test_a_blocked_sink_does_not_hold_inference_until_its_queue_is_full():
    gate = threading.Event()
    recorder = RecordingSink()
    sink = GatedSink(recorder, gate)
    engine = SlowEngine()
    got: list[int] = []
    with Pipeline(ListSource(40), engine, sinks=[sink], sink_queue_size=4) as pipe:
        # The sink holds result 0; results 1-4 fill its queue; result 5 waits for room.

        def five_results() -> bool:
            r = pipe.poll(0.05)
            if r is not None:
                got.append(r.index)
            return len(got) >= 5

        _until(five_results, "5 results")
        _until(lambda: len(engine.seen) >= 6, "frame 5 processed")
        assert sink.waiting.is_set() and recorder.indices == []  # nothing written yet ...
        assert got == [0, 1, 2, 3, 4]  # ... yet the consumer has results: inference went on
        time.sleep(0.3)
        assert engine.seen == list(range(6))  # back-pressure: no more frames while the queue is full
        assert pipe.poll(0.1) is None
        gate.set()
        got += [r.index for r in pipe]
    assert got == list(range(40))
    assert recorder.indices == list(range(40)) and recorder.closed == 1  # nothing dropped, in order
    assert sink.threads == {"rtsam-sinks"}  # written off the inference thread


def test_stop_with_a_full_sink_queue_still_writes_every_result_to_valid_files(tmp_path):
    from realtime_sam.output.jsonl import JsonlSink, load_jsonl

    gate = threading.Event()
    engine = SlowEngine()
    sink = GatedSink(JsonlSink(tmp_path / "out.jsonl", source="list", fps=25.0), gate)
    with Pipeline(ListSource(1000, live=True, period=0.001), engine, sinks=[sink], sink_queue_size=4) as pipe:
        _until(lambda: (pipe.poll(0.05), len(engine.seen) >= 6)[1], "the sink queue to fill")
        pipe.stop()  # Ctrl-C: the sink is still blocked, its queue full
        threading.Timer(0.2, gate.set).start()
        for _ in pipe:
            pass
    _, frames = load_jsonl(tmp_path / "out.jsonl")
    assert [f["frame"] for f in frames] == engine.seen  # every processed frame, in order, whole lines
    assert len(engine.seen) >= 6 and sink.inner.closed


class FailingSink(RecordingSink):
    def __init__(self, fail_at: int):
        super().__init__()
        self.fail_at = fail_at

    def write(self, result):
        if result.index == self.fail_at:
            from realtime_sam.errors import SinkError

            raise SinkError("cannot write out.jsonl: No space left on device")
        super().write(result)


def test_a_sink_error_on_the_sink_thread_stops_the_run_and_reaches_the_consumer():
    from realtime_sam.errors import SinkError

    failing, other = FailingSink(fail_at=5), RecordingSink()
    engine = SlowEngine(delay=0.002)
    with pytest.raises(SinkError, match="No space left"):
        with Pipeline(ListSource(10_000), engine, sinks=[failing, other], sink_queue_size=4) as pipe:
            for _ in pipe:
                pass
    assert failing.indices == list(range(5)) and other.indices == list(range(5))  # the sinks stop at the failure
    assert failing.closed == 1 and other.closed == 1  # and are still closed
    assert len(engine.seen) < 1000  # the run stopped


class FailingCloseSink(RecordingSink):
    def close(self):
        from realtime_sam.errors import SinkError

        super().close()
        raise SinkError("writing the video output out.mp4 failed: No space left on device")


def test_a_sink_that_fails_to_close_after_a_break_is_reported(caplog):
    # Breaking out of the loop (or a generator left open at exit) ends the run before poll
    # raises its errors: a sink's failed close (a video without its index) was dropped in
    # silence, and the damaged file looked saved.
    sink = FailingCloseSink()
    with Pipeline(ListSource(10_000), SlowEngine(), sinks=[sink]) as pipe:
        for result in pipe:
            if result.index == 3:
                break
    assert sink.closed == 1
    said = [r.getMessage() for r in caplog.records if r.name == "realtime_sam.app.pipeline"]
    assert said == ["error while closing the run: writing the video output out.mp4 failed: No space left on device"]


def test_the_error_a_run_raised_is_not_reported_again_at_close(caplog):
    from realtime_sam.errors import SinkError

    with pytest.raises(SinkError, match="No space left"):
        with Pipeline(ListSource(20), SlowEngine(), sinks=[FailingCloseSink()]) as pipe:
            for _ in pipe:
                pass
    assert not [r for r in caplog.records if r.name == "realtime_sam.app.pipeline"]


# ------------------------------------------------------------------ pipeline settings


class BlockingEngine(SlowEngine):
    """Holds its first frame until ``release`` is set."""

    def __init__(self):
        super().__init__()
        self.release = threading.Event()
        self.entered = threading.Event()

    def process(self, frame):
        self.entered.set()
        self.release.wait()
        return super().process(frame)


@pytest.mark.parametrize("queue_size", [1, 5])
def test_queue_size_is_how_far_a_file_is_read_ahead_of_the_model(queue_size):
    src = ListSource(100)
    engine = BlockingEngine()
    with Pipeline(src, engine, config=PipelineConfig(queue_size=queue_size)) as pipe:
        pipe.poll(0.01)
        _until(engine.entered.is_set, "the first frame in the engine")
        _until(lambda: src.i >= 1 + queue_size + 1, "the reader to fill the queue")
        time.sleep(0.2)
        # One frame in the engine, queue_size waiting, one read and held until there is room.
        assert src.i == 1 + queue_size + 1
        engine.release.set()
        assert [r.index for r in pipe] == list(range(100))


def test_join_timeout_s_bounds_how_long_close_waits_for_a_busy_worker():
    engine = BlockingEngine()  # never lets go of its frame by itself, like an encode that hangs
    pipe = Pipeline(ListSource(10), engine, config=PipelineConfig(join_timeout_s=0.2))
    pipe.start()
    _until(engine.entered.is_set, "the first frame in the engine")
    pipe.close()  # returns after the timeout, the worker still busy ...
    assert any(t.is_alive() for t in pipe._threads)
    engine.release.set()  # ... which then ends by itself (stop was set)
    _until(lambda: not any(t.is_alive() for t in pipe._threads), "the worker to end")


class WorkerEngine(SlowEngine):
    """An engine that asks for an encode worker (as one with ``background_encode`` does)."""

    wants_worker = True

    def __init__(self):
        super().__init__()
        self.lent: list[object] = []

    def attach_worker(self, submit):
        self.lent.append(submit)


def test_a_pipeline_closed_before_it_started_starts_nothing_when_iterated():
    before = set(threading.enumerate())
    engine, sink, source = WorkerEngine(), RecordingSink(), ListSource(5)
    pipe = Pipeline(source, engine, sinks=[sink])
    pipe.close()
    assert sink.closed == 1 and source.closed
    # Iterating it afterwards yields nothing and lends the engine no worker (whose thread
    # nothing would end: close() had already run).
    assert list(pipe) == [] and pipe.ended
    assert engine.lent == [] and engine.seen == []
    assert set(threading.enumerate()) - before == set()


def test_a_paused_realtime_file_resumes_where_it_was_paused():
    """``--realtime`` paces a file at its own clock; a pause stops that clock, so the video goes on
    from the paused frame instead of dropping every frame of the paused span (as a camera would)."""
    src = ListSource(40)  # 25 fps: 1.6 s
    got = []
    with Pipeline(src, SlowEngine(), config=PipelineConfig(realtime=True)) as pipe:
        for r in pipe:
            got.append(r.index)
            if r.index == 10:
                pipe.pause()
                time.sleep(1.0)  # 25 frames' time
                pipe.resume()
    assert pipe.stats.frames_dropped <= 3, (pipe.stats.frames_dropped, got)
    assert len(got) >= 37


def test_a_realtime_file_always_processes_its_last_frame():
    """``--realtime`` drops the frames a slow model cannot keep up with, but the file's end does not
    replace its last frame: the run covers the file to its end (before, the end marker took the
    unread last frame's place, and a 2 s file's last result was at 1.88 s)."""
    src = ListSource(20)  # 25 fps: frames at 0.00 .. 0.76 s
    eng = SlowEngine(delay=0.15)
    sink = RecordingSink()
    with Pipeline(src, eng, sinks=[sink], config=PipelineConfig(realtime=True)) as pipe:
        got = [r.index for r in pipe]
    assert pipe.stats.frames_dropped > 0  # still played as live: frames in between are dropped
    assert got[-1] == 19 and sink.indices[-1] == 19
    assert pipe.stats.frames_read == 20
    assert pipe.stats.frames_processed + pipe.stats.frames_dropped == 20
