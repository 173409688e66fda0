"""The only module that owns threads: capture -> inference -> (sinks, consumer).

::

    capture thread                 inference thread                    caller
    source.read() --> buffer --> engine.process() --+--> result queue --> for r in pipeline
                                       |  ^          |
                          encode thread (engines     +--> sink queue --> sinks.write()
                          with background_encode)                        sink thread

* Live sources (cameras, streams, ``realtime`` pacing) keep only the newest
  frame: a slow model sees fresh frames and drops are counted; the source's
  end waits for its last frame to be taken (a file played live is still
  processed to its last frame), unless the run is stopping. Files use a
  bounded queue: nothing is lost, the reader waits for the model. A live
  source that can (PyAV streams, ``Source.read_deferred``) hands over
  decoded frames not yet converted to BGR; the inference thread converts the
  one it takes, so dropped frames cost no conversion.
* Sinks are told the source first (``sink.bind_source(source)``, where a sink
  has it): what the caller left ``None`` -- a file's timestamps, its pixel
  shape, name and frame rate -- comes from it. Where one cannot work with the
  source, nothing runs: every sink is discarded (``sink.discard()``, else
  ``close()``), removing the files and folders making it created.
* Sinks (video encoding, RLE, PNG compression: 4-13 ms a frame) run on their
  own thread, fed in order through a bounded queue (``sink_queue_size``); a
  full queue makes the inference thread wait (back-pressure), it never
  drops a result. When the inference thread ends, for any reason (end of
  source, ``stop()``, Ctrl-C, an error), it waits until every queued result
  is written and the sinks are closed before it reports the end, so an
  interrupted run still leaves complete, valid files. A sink's error stops
  the run like any worker's and reaches the caller.
* Workers stop on an event plus a sentinel; a worker's exception is kept and
  re-raised in the caller after every result produced before it; threads are
  joined with a timeout in ``close()``.
* A pipeline started and never closed (the generator of :func:`realtime_sam.track`
  kept in a variable when an error ended the script) is closed at exit, its sinks
  finalised (:func:`close_open_pipelines`, an :mod:`atexit` handler).
* Every thread here is a daemon (a hung read or write cannot hang the exit), but
  none is forgotten: one still running at exit (``close()`` gave up on an encode that
  took longer than ``join_timeout_s``, or was interrupted) is waited for once
  more, up to ``join_timeout_s``, before the interpreter finalizes
  (:func:`wait_for_lingering`, an :mod:`atexit` handler; the ``realtime-sam``
  command calls it first and, if a thread is still running after it, exits
  without finalizing). One inside a model call (an engine step, an encode, a
  flow: :func:`_model_call`) is waited for at exit until that call ends, with a
  warning; Ctrl-C then ends the process without finalizing (exit status 130).
* An engine drives one pipeline at a time (:func:`check_engine_free`).
  On Python <= 3.13 a daemon thread that comes back from native code (a torch
  op, an FFmpeg call) while the interpreter finalizes is ended by
  ``pthread_exit``, whose forced unwinding through the library's C++ frames
  aborts the process ("terminate called without an active exception", exit
  status 134).
* An engine that asks for a worker (``engine.wants_worker``) is lent one more
  thread for its background encodes (``engine.attach_worker(submit)``).
* A pace (:meth:`Pipeline.pace_with`, several streams sharing one encoder)
  sets the least time between two processed frames: the inference thread
  waits that long before it takes the next frame, and a live source's
  frames that arrive meanwhile are dropped, the newest kept.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import logging
import os
import queue
import sys
import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, replace
from typing import Callable, Iterator, Protocol, Sequence

from realtime_sam.app.scheduler import EncodeCancelled
from realtime_sam.capture.base import DeferredFrame
from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError, describe_error
from realtime_sam.output.render import model_rate as render_model_rate
from realtime_sam.output.sink_base import discard_sinks
from realtime_sam.types import Frame, FrameResult

__all__ = [
    "PipelineConfig", "PipelineStats", "model_rate", "Pipeline", "SerialWorker", "check_engine_free", "close_open_pipelines",
    "wait_for_lingering",
]

_END = object()

# The worker threads started here and not finished: each one's "finished" event and how
# long the process waits for it at exit. An event, not Thread.is_alive(): on Python 3.11
# a join() interrupted by a signal handler's exception (a second Ctrl-C) can mark a
# thread that still runs as stopped.
_running: dict[threading.Event, float] = {}
_running_lock = threading.Lock()
# Each of those threads' "finished" event by thread id, and how deep each thread is in model
# calls (:func:`_model_call`): at exit those are waited for until they end.
_finished_by_thread: dict[int, threading.Event] = {}
_in_model_call: dict[int, int] = {}
_wait_at_exit_registered = False
_log = logging.getLogger(__name__)

# The pipelines started and not closed: at exit each is closed (its sinks finalised) before the
# threads are waited for. A generator from track() kept in a variable (a script's global, or one
# ended by an uncaught exception) was never closed: its video had no index (0 bytes, "moov atom
# not found") and its workers, never stopped, were waited for in vain.
_open_pipelines: "weakref.WeakSet[Pipeline]" = weakref.WeakSet()

# id(engine) -> the pipeline driving it. An engine is not thread-safe: two runs on one engine at once
# (two track() generators given one engine=, iterated in turn) had two inference threads in it, and
# one failed half-way ("'NoneType' object has no attribute 'box'"), or the second run's
# engine.reset() emptied the first one's tracks under it. Keyed by id: an engine need not be
# hashable, and the pipeline holding it keeps that id its own.
_engine_runs: dict[int, "weakref.ref[Pipeline]"] = {}
_engine_runs_lock = threading.Lock()


def check_engine_free(engine: object) -> None:
    """Raise ``ValueError`` when ``engine`` is driven by a :class:`Pipeline` not closed and not ended.

    A run's generator left suspended (kept in a variable after a ``break``) still owns its engine:
    close it first (``gen.close()``), or give each run its own engine.
    """
    with _engine_runs_lock:
        ref = _engine_runs.get(id(engine))
        other = ref() if ref is not None else None
    if other is not None and other.engine is engine and not other._closed and not other._ended:
        raise ValueError(
            "this engine is in use by another run that is not closed (a track() generator or Pipeline not "
            "finished); close that one first (gen.close(), pipeline.close()), or give each run its own "
            "Engine.from_config(...)"
        )


def _start_thread(target: Callable[[], None], name: str, exit_wait_s: float) -> threading.Thread:
    """Start a daemon thread that the process waits for (up to ``exit_wait_s``) before it exits."""
    global _wait_at_exit_registered
    finished = threading.Event()

    def run() -> None:
        with _running_lock:
            _finished_by_thread[threading.get_ident()] = finished
        try:
            target()
        finally:
            finished.set()
            with _running_lock:
                _running.pop(finished, None)
                _finished_by_thread.pop(threading.get_ident(), None)

    with _running_lock:
        _running[finished] = exit_wait_s
        if not _wait_at_exit_registered:
            # Registered on first use, after torch was imported: atexit runs the last
            # registered first, so the threads are waited for before torch's handlers run.
            atexit.register(_at_exit)
            _wait_at_exit_registered = True
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def _model_call() -> Iterator[None]:
    """Marks this worker thread as inside a model call (torch, OpenCV) while the block runs.

    At exit such a call is waited for until it ends (:func:`_wait_for_model_calls`).
    """
    me = threading.get_ident()
    with _running_lock:
        _in_model_call[me] = _in_model_call.get(me, 0) + 1
    try:
        yield
    finally:
        with _running_lock:
            if _in_model_call[me] <= 1:
                del _in_model_call[me]
            else:
                _in_model_call[me] -= 1


def _model_calls_running() -> list[threading.Event]:
    """The "finished" events of this module's threads that are inside a model call now."""
    with _running_lock:
        return [e for ident, e in _finished_by_thread.items() if ident in _in_model_call and not e.is_set()]


def _wait_for_model_calls() -> bool:
    """Wait, without a bound, until none of this module's threads is inside a model call; True if one was.

    The interpreter must not finalize under such a call: coming back from torch's or
    OpenCV's C++ code then aborts the process ("terminate called without an active
    exception", exit status 134) and the run's outputs are never finished. The bounded
    waits before gave up on a step slower than ``join_timeout_s`` and one and a half of
    the slowest step measured (a first encode on a busy CPU takes seconds, and none was
    measured yet). Ctrl-C while waiting ends the process at once, without finalizing
    (exit status 130), as the command does when the user insists.
    """
    pending = _model_calls_running()
    if not pending:
        return False
    try:
        # Inside the try: a Ctrl-C that lands while the warning is being written (the user
        # read it and pressed at once) leaves as one after it does, not through finalizing.
        _log.warning("waiting for the model's step in progress to end before exiting (Ctrl-C to leave at once)")
        while pending:
            pending[0].wait(0.1)  # short slices: Ctrl-C is handled between them
            pending = _model_calls_running()
        return True
    except KeyboardInterrupt:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(130)


def _at_exit() -> None:
    """The process is exiting: close the pipelines nobody closed (their sinks finalised), then wait for the threads."""
    close_open_pipelines()
    # Bounded first, without a word: an encode a little slower than close()'s wait ends here.
    if not wait_for_lingering() and _wait_for_model_calls():
        wait_for_lingering()  # the sinks, finishing once the inference thread's step ended


def close_open_pipelines() -> None:
    """Close every :class:`Pipeline` started and not closed (each as :meth:`Pipeline.close` does).

    Runs by itself at exit, before :func:`wait_for_lingering`: a run whose
    generator outlived the script (kept in a variable when the loop ended by an
    uncaught exception) still leaves complete, valid files.
    """
    for pipe in list(_open_pipelines):
        try:
            pipe.close()
        except Exception:  # the others are still closed
            pass


def wait_for_lingering(timeout: float | None = None) -> bool:
    """Wait for this module's worker threads that are still running; True once none is left.

    Such a thread is one ``close()`` gave up on (an encode longer than
    ``join_timeout_s``), or one whose pipeline was never closed. Runs by itself
    at exit (an :mod:`atexit` handler); the ``realtime-sam`` command calls it
    first and, when it returns False, ends the process without finalizing the
    interpreter (:func:`realtime_sam.app.cli.entry`).

    Args:
        timeout: the longest wait in seconds, for all of them together; ``None``
            = the longest ``join_timeout_s`` of the pipelines they belong to.

    Returns:
        False when a thread is still running after the wait (a hung call):
        finalizing the interpreter under it aborts the process if that call
        returns meanwhile (see the module docstring).
    """
    with _running_lock:
        waiting = list(_running.items())
    if waiting:
        deadline = time.monotonic() + (max(s for _, s in waiting) if timeout is None else timeout)
        for finished, _ in waiting:
            finished.wait(max(0.0, deadline - time.monotonic()))
    return all(finished.is_set() for finished, _ in waiting)


@dataclass(frozen=True)
class PipelineConfig:
    """Buffering and pacing between the stages.

    Attributes:
        realtime: pace files at their frame rate and keep only the newest frame (like a live camera).
        queue_size: frames buffered between capture and inference for files (back-pressure beyond).
        max_frames: stop after this many processed frames (0 = no limit).
        join_timeout_s: how long ``close()`` waits for the worker threads, beyond one and a
            half of the slowest engine step the run measured (a background encode's included);
            one still busy then is waited for once more, ``join_timeout_s`` again, before the
            process exits. A sink's error after that wait is logged from the sink's thread.
        two_way: for a file read as fast as the model goes (not live, not ``realtime``),
            hold each result until the next encoded frame and blend that frame's masks,
            carried back by dense flow, into the held ones
            (:mod:`realtime_sam.tracking.two_way`); results come out up to one encode
            interval late. Needs ``propagation.method: dense``; the window turns it off.
    """

    realtime: bool = False
    queue_size: int = 8
    max_frames: int = 0
    join_timeout_s: float = 3.0
    two_way: bool = True

    def __post_init__(self) -> None:
        check_numbers(self, "pipeline")  # by type first: "5" < 1 is a TypeError naming no key
        if self.queue_size < 1:
            raise ConfigError(f"pipeline.queue_size must be >= 1, got {self.queue_size}")
        if self.max_frames < 0:
            raise ConfigError(f"pipeline.max_frames must be >= 0 (0 = no limit), got {self.max_frames}")
        # `not 0 < x <= limit`: NaN fails it too (Thread.join(nan) raises at close). Above a day the
        # waits overflow Python's thread timeouts (about 9.2e9 s) when the run closes.
        if not 0 < self.join_timeout_s <= 86400:
            raise ConfigError(f"pipeline.join_timeout_s must be > 0 and <= 86400 seconds, got {self.join_timeout_s}")


@dataclass(frozen=True)
class PipelineStats:
    """A snapshot of the pipeline's counters (safe to read from any thread).

    Attributes:
        model_fps: frames per second of engine time, over those of the last 30
            frames processed on which the engine had work (a mask moved, an encode,
            a decode, discovery or a detector); ``0.0`` when none of them had
            (nothing tracked: the model is idle) or none was processed yet. With
            background encodes (the cpu preset) it times only the frames' own work
            (moving masks, landing an encode): see ``encode_interval_s`` for how
            often the model refreshes them.
        encode_interval_s: seconds between the encodes that landed (masks fresh from
            the model), the mean over the last ``_ENCODES`` ones in playing time (pauses
            left out), or the time since the last one as of the last frame processed
            when that is longer (encodes stopped coming); ``None`` before two landed,
            and again after the model was idle for 30 frames or the source reconnected
            (until two more landed: the outage is no time between encodes).
    """

    frames_read: int
    frames_dropped: int
    frames_processed: int
    model_fps: float
    latency_ms: float
    last_encode_index: int | None
    encode_interval_s: float | None = None


_ENCODES = 6
"""Landed encodes whose spacing :attr:`PipelineStats.encode_interval_s` averages (5 intervals)."""


def _had_work(result: object) -> bool:
    """Whether the engine did any work for ``result`` beyond bookkeeping: a stage timed besides ``total``."""
    return any(stage != "total" for stage in getattr(result, "timings", None) or ())


def model_rate(stats: object) -> str:
    """The model's rate in ``stats`` (:class:`PipelineStats`) as status lines show it, in the
    HUD's words (:func:`~realtime_sam.output.render.model_rate`): ``5.1 fps`` and, once two
    encodes landed, ``5.1 fps, encode every 0.62 s``; ``idle`` when the last frames gave the
    engine nothing to do (``model_fps`` is 0 after frames were processed); ``-- fps`` before the
    first frame."""
    fps = float(getattr(stats, "model_fps", 0.0) or 0.0)
    worked = fps > 0
    idle = not worked and bool(getattr(stats, "frames_processed", 0))
    return render_model_rate(fps if worked else None, getattr(stats, "encode_interval_s", None), idle=idle)


class _Sink(Protocol):
    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...


def _describe_sink(sink: object) -> str:
    """A sink as a message names it: its path (``out.mp4``), else its kind or type; one holding
    several (``open_sinks``'s) as the list of its parts' paths."""
    inner = getattr(sink, "sinks", None)
    if isinstance(inner, list) and inner:
        return " or ".join(_describe_sink(part) for part in inner)
    path = getattr(sink, "path", None)
    if path is not None:
        return str(path)
    return str(getattr(sink, "kind", None) or type(sink).__name__)


class _LatestSlot:
    """A one-frame buffer: ``put`` replaces the unread frame (counted as dropped)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object = None
        self._has = False
        self.dropped = 0

    def put(self, item: object) -> None:
        with self._cond:
            if self._has and self._item is not _END:
                self.dropped += 1
            if not (self._has and self._item is _END):
                self._item, self._has = item, True
            self._cond.notify()

    def put_final(self, item: object, stop: threading.Event) -> None:
        """Put the end marker once the unread frame is taken: the source's last frame is processed
        (a file played live still runs to its end). Once ``stop`` is set it replaces that frame."""
        with self._cond:
            while self._has and not stop.is_set():
                self._cond.wait(0.05)
        self.put(item)

    def get(self, timeout: float) -> object:
        with self._cond:
            if not self._has:
                self._cond.wait(timeout)
            if not self._has:
                raise queue.Empty
            item, self._item, self._has = self._item, None, False
            self._cond.notify()
            return item


class _FifoBuffer:
    """A bounded FIFO whose ``put`` waits for room but gives up when ``stop`` is set."""

    def __init__(self, size: int, stop: threading.Event) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=size)
        self._stop = stop
        self.dropped = 0

    def put(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def put_final(self, item: object) -> None:
        """The end marker always arrives: it waits for room, or makes room once stopping."""
        while True:
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                if not self._stop.is_set():
                    continue
                try:
                    self._q.get_nowait()
                except queue.Empty:
                    pass

    def get(self, timeout: float) -> object:
        return self._q.get(timeout=timeout)


class _SinkWriter:
    """The sinks' own thread: writes each queued result to every sink, in order, then closes them.

    ``put`` waits while the queue is full (back-pressure, nothing dropped).
    After a sink fails, the error goes to ``on_error(error, sink)`` once, later
    results are taken off the queue unwritten (the run is stopping) and the
    sinks are still closed (each close that fails goes there too).
    """

    def __init__(
        self, sinks: Sequence[_Sink], size: int, on_error: Callable[[BaseException, object], None], exit_wait_s: float = 3.0
    ) -> None:
        self.sinks = list(sinks)
        self._q: queue.Queue = queue.Queue(maxsize=size)
        self._on_error = on_error
        self._failed = False
        self._finishing = False
        self._lock = threading.Lock()
        self.thread = _start_thread(self._loop, "rtsam-sinks", exit_wait_s)

    def put(self, result: FrameResult) -> None:
        """Queue ``result`` for writing; waits for room as long as the sink thread runs."""
        self._put(result)

    def _put(self, item: object) -> None:
        while self.thread.is_alive():
            try:
                self._q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def finish(self, timeout: float | None = None) -> bool:
        """Write everything queued, close the sinks and end the thread; True once done within ``timeout``."""
        with self._lock:
            first, self._finishing = not self._finishing, True
        if first:
            self._put(_END)
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def drain(self, timeout: float) -> bool:
        """Wait until every result queued so far is written (the thread goes on); True if it was in time."""
        deadline = time.monotonic() + timeout
        with self._q.all_tasks_done:
            while self._q.unfinished_tasks and self.thread.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._q.all_tasks_done.wait(min(left, 0.1))
        return True

    def _loop(self) -> None:
        writing: object = None
        try:
            while True:
                item = self._q.get()
                try:
                    if item is _END:
                        return
                    if not self._failed:
                        for sink in self.sinks:
                            writing = sink
                            sink.write(item)  # type: ignore[arg-type]
                except BaseException as exc:  # the run stops; the caller gets it
                    self._failed = True
                    self._on_error(exc, writing)
                finally:
                    self._q.task_done()
        finally:
            for sink in self.sinks:
                try:
                    sink.close()
                except BaseException as exc:
                    self._on_error(exc, sink)


class _Worker:
    """One thread that runs submitted calls in order; each call's outcome comes back as a Future."""

    def __init__(self, name: str, *, exit_wait_s: float = 3.0) -> None:
        """``exit_wait_s``: how long the process waits at exit for a call still running (see :func:`wait_for_lingering`)."""
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._closing = False
        self._lock = threading.Lock()  # a call submitted while closing is cancelled, never left unanswered
        self.thread = _start_thread(self._loop, name, exit_wait_s)

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        """Run ``fn(*args)`` on the thread; once closing, the Future comes back cancelled."""
        future: Future = Future()
        with self._lock:
            if self._closing:
                future.cancel()
            else:
                self._jobs.put((future, fn, args))
        return future

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, fn, args = job
            if self._closing:
                future.cancel()  # closed: calls not started yet are not run (an encode takes seconds)
            if not future.set_running_or_notify_cancel():
                continue
            try:
                with _model_call():  # an encode, a flow: waited for at exit until it ends
                    value = fn(*args)
                future.set_result(value)
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)

    def close(self, timeout: float) -> bool:
        """Cancel the calls not started, let the running one finish; True if the thread ended within ``timeout``.

        A call still running then is waited for again before the process exits (:func:`wait_for_lingering`).
        """
        with self._lock:
            self._closing = True
            self._jobs.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()


class Pipeline:
    """Runs a source through an engine on worker threads and yields one result per processed frame.

    Use as a context manager and iterate::

        with Pipeline(source, engine, sinks=[JsonlSink("out.jsonl")]) as pipe:
            for result in pipe:
                ...

    ``stop()`` may be called from any thread (a signal handler, a UI) and
    iteration ends soon after, with sinks finalised.
    """

    def __init__(
        self,
        source,
        engine,
        *,
        sinks: Sequence[_Sink] = (),
        config: PipelineConfig = PipelineConfig(),
        on_status: Callable[[object], None] | None = None,
        result_queue_size: int = 2,
        sink_queue_size: int = 8,
    ) -> None:
        self.source = source
        self.engine = engine
        self.sinks = list(sinks)
        try:
            check_engine_free(engine)
            for sink in self.sinks:
                # What the caller left unsaid comes from the source: its rate, a file's timestamps
                # and pixel shape in the video, its name and rate in the masks file (as the command
                # gives them).
                bind = getattr(sink, "bind_source", None)
                if callable(bind):
                    bind(source)
        except BaseException:
            # A sink that cannot work with this source (a video without a frame rate): nothing
            # runs, what close() would have closed is closed, and the files the sinks created
            # when they were made are removed (no empty output left behind).
            discard_sinks(self.sinks)
            close = getattr(source, "close", None)
            if callable(close):
                close()
            raise
        self.config = config
        self.on_status = on_status
        self._stop = threading.Event()
        self._pause = threading.Event()
        self._paused_since: float | None = None  # when the pause going on began
        self._paused_total_s = 0.0  # the ended pauses: a file paced by ``realtime`` does not play on meanwhile
        self._live = bool(getattr(source, "live", False)) or config.realtime
        self._frames = _LatestSlot() if self._live else _FifoBuffer(config.queue_size, self._stop)
        self._results: queue.Queue = queue.Queue(maxsize=max(1, result_queue_size))
        self._sink_queue_size = max(1, sink_queue_size)
        self._writer: _SinkWriter | None = None
        self._errors: list[BaseException] = []
        # Set (under the lock) once close() has reported the errors: a sink's error after that,
        # on its own thread, is logged there (close() gave up waiting for it).
        self._errors_lock = threading.Lock()
        self._errors_reported = False
        self._threads: list[threading.Thread] = []
        self._worker: _Worker | None = None  # background encodes
        self._flow_worker: _Worker | None = None  # one direction of dense flow (Engine.attach_flow_worker)
        self._pace: Callable[[], float] | None = None
        self._frames_read = 0
        self._frames_processed = 0
        # (seconds in engine.process, whether the engine had work on that frame) of the last frames.
        self._proc_times: collections.deque[tuple[float, bool]] = collections.deque(maxlen=30)
        # Seconds: the longest engine step of the run, a background encode's included (close() waits on one).
        self._slowest_step = 0.0
        self._slowest_lock = threading.Lock()
        # Playing time (:meth:`_playing_clock`) when the last encodes landed, and when the last
        # frame was processed: how often the model refreshes the masks.
        self._encode_times: collections.deque[float] = collections.deque(maxlen=_ENCODES)
        self._processed_at = 0.0
        self._reconnects_seen = getattr(source, "reconnects", 0)  # a live source's (LiveSource.reconnects)
        self._latency_ms = 0.0
        self._started = False
        self._ended = False
        self._raised = 0  # how many of _errors poll raised (the first, at the end)
        self._closed = False
        # Two-way propagation (files only): live results cannot wait for the next encode.
        with _engine_runs_lock:
            _engine_runs[id(engine)] = weakref.ref(self)
        make = getattr(engine, "two_way", None)
        self._two_way = make() if config.two_way and not self._live and callable(make) else None

    # -- control (any thread) ------------------------------------------------------------

    def stop(self) -> None:
        """Ask every stage to finish; safe from any thread and from signal handlers."""
        self._stop.set()
        interrupt = getattr(self.source, "interrupt", None)
        if callable(interrupt):
            interrupt()

    def pace_with(self, interval_s: Callable[[], float] | None) -> None:
        """Process at most one frame per ``interval_s()`` seconds (asked before each frame; 0 = no limit).

        For several streams sharing one encoder (:class:`~realtime_sam.app.budget.FrameBudget`):
        frames of a live source that come in the meantime are dropped (the newest is kept),
        a file's wait in its queue. May be set or cleared (``None``) at any time.
        """
        self._pace = interval_s

    def pause(self) -> None:
        if not self._pause.is_set():
            self._paused_since = time.monotonic()
        self._pause.set()

    def resume(self) -> None:
        since, self._paused_since = self._paused_since, None
        if since is not None:
            self._paused_total_s += time.monotonic() - since
        self._pause.clear()

    def _paused_s(self) -> float:
        """Seconds spent paused so far (the pause going on included)."""
        since = self._paused_since
        return self._paused_total_s + (time.monotonic() - since if since is not None else 0.0)

    def _playing_clock(self) -> float:
        """``time.monotonic()`` less the time paused: a pause is no time between two encodes."""
        return time.monotonic() - self._paused_s()

    @property
    def paused(self) -> bool:
        return self._pause.is_set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def stats(self) -> PipelineStats:
        # Over the frames the engine had work on: one with no objects (nor discovery, nor a
        # detector) takes a tenth of a millisecond and made "model 1300 fps" with nothing tracked.
        times = [t for t, worked in list(self._proc_times) if worked]
        fps = len(times) / sum(times) if times and sum(times) > 0 else 0.0
        # With background encodes the frames' own time says nothing of how often the masks come
        # fresh from the model (the cpu preset read 'model 108-200 fps' for an encode every 0.6 s).
        landed = list(self._encode_times)
        interval = None
        if len(landed) >= 2:
            interval = max((landed[-1] - landed[0]) / (len(landed) - 1), self._processed_at - landed[-1])
        return PipelineStats(
            frames_read=self._frames_read,
            frames_dropped=self._frames.dropped,
            frames_processed=self._frames_processed,
            model_fps=fps,
            latency_ms=self._latency_ms,
            last_encode_index=getattr(self.engine, "last_encode_index", None),
            encode_interval_s=interval,
        )

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> "Pipeline":
        """Start the worker threads (once); after :meth:`close` it starts nothing and iteration yields nothing."""
        if self._started or self._closed:
            # Closed before it was started: starting now would lend the engine workers that
            # no close() ever ends (the encode worker's thread lived on until exit).
            return self
        self._started = True
        _open_pipelines.add(self)
        if getattr(self.engine, "wants_worker", False):
            self._worker = _Worker("rtsam-encode", exit_wait_s=self.config.join_timeout_s)
            self.engine.attach_worker(self._timed(self._worker.submit))
        if getattr(self.engine, "wants_flow_worker", False):
            self._flow_worker = _Worker("rtsam-flow", exit_wait_s=self.config.join_timeout_s)
            self.engine.attach_flow_worker(self._flow_worker.submit)
        if self.sinks:
            sinks, self.sinks = self.sinks, []
            self._writer = _SinkWriter(sinks, self._sink_queue_size, self._sink_failed, self.config.join_timeout_s)
        for name, target in (("rtsam-capture", self._capture_loop), ("rtsam-inference", self._inference_loop)):
            self._threads.append(_start_thread(target, name, self.config.join_timeout_s))
        return self

    def close(self) -> None:
        """Stop, join the workers (bounded), close the source.

        Sinks are closed by the inference thread once their queue is written.
        If that thread is still busy (an encode) when the join times out, the
        results queued so far are still written before this returns (bounded
        by ``join_timeout_s`` more); the sink thread finishes the rest, and logs a sink's
        error that comes after this returned (the output may be incomplete). Encodes
        queued on the encode worker and not started are cancelled. A thread
        still running when this returns is waited for once more, up to
        ``join_timeout_s``, before the process exits (:func:`wait_for_lingering`).
        """
        if self._closed:
            return
        self._closed = True
        _open_pipelines.discard(self)
        with _engine_runs_lock:
            if (ref := _engine_runs.get(id(self.engine))) is not None and ref() is self:
                del _engine_runs[id(self.engine)]
        self.stop()
        # A step as slow as the slowest this run took is slow, not hung: a big model's encode on
        # a CPU (SAM ViT-H, 10 s and more) running when the loop was left was given up on after
        # join_timeout_s, and the results two-way held for it were never written, nor the video
        # finished, when the process then ended.
        deadline = time.monotonic() + self.config.join_timeout_s + 1.5 * self._slowest_step
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        if self._writer is not None and self._writer.thread.is_alive():
            self._writer.drain(self.config.join_timeout_s)
        if self._worker is not None:
            # An encode may be running (seconds on a CPU); its result is not needed, but
            # the thread must not be inside torch when the interpreter finalizes: if it
            # outlasts the timeout, it is waited for again at exit.
            self.engine.attach_worker(None)
            self._worker.close(max(0.0, deadline - time.monotonic()))
            self._worker = None
        if self._flow_worker is not None:
            # Taken back first: a flow asked for after this runs on the inference thread.
            self.engine.attach_flow_worker(None)
            self._flow_worker.close(max(0.0, deadline - time.monotonic()))
            self._flow_worker = None
        if not self._started:
            self._close_sinks()
        close = getattr(self.source, "close", None)
        if callable(close) and not any(t.is_alive() and t.name == "rtsam-capture" for t in self._threads):
            close()
        # poll raises the first error once it passes the end. A run left before its end (a break
        # out of the loop, a generator still open at exit) dropped its errors without a word: a
        # sink that failed to finalise its file (a video with no index) looked like a saved one.
        with self._errors_lock:
            self._errors_reported = True
            unreported = self._errors[self._raised :]
        for exc in unreported:
            _log.warning("error while closing the run: %s", describe_error(exc))

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[FrameResult]:
        while True:
            result = self.poll(0.1)
            if result is not None:
                yield result
            elif self._ended:
                return

    def poll(self, timeout: float = 0.0) -> FrameResult | None:
        """The next result if one comes within ``timeout`` seconds, else ``None``; starts the workers.

        For loops that must not block (a GUI serving its window while an
        encode takes seconds): after the last result it returns ``None`` and
        :attr:`ended` is true.

        Raises:
            BaseException: a worker's error (e.g. :class:`SourceError`), once
                every result before it was returned.
        """
        self.start()
        if self._ended:
            return None
        try:
            item = self._results.get(timeout=timeout) if timeout > 0 else self._results.get_nowait()
        except queue.Empty:
            if any(t.is_alive() for t in self._threads) or not self._results.empty():
                return None
            item = _END  # workers gone without an end marker
        if item is not _END:
            return item  # type: ignore[return-value]
        self._ended = True
        for t in self._threads:
            t.join(self.config.join_timeout_s)
        if self._errors:
            self._raised = 1
            raise self._errors[0]
        return None

    @property
    def ended(self) -> bool:
        """True once :meth:`poll` (or iteration) has passed the last result."""
        return self._ended

    def run(self) -> int:
        """Process everything without yielding (headless); returns the number of frames processed."""
        n = 0
        for _ in self:
            n += 1
        return n

    # -- workers -------------------------------------------------------------------------

    def _capture_loop(self) -> None:
        paced_start: float | None = None
        first_ts: float | None = None
        # A live source's frames go to the newest-frame slot, where most are replaced unread when
        # the engine is slower: their conversion to BGR waits until the inference thread takes one.
        # (A file paced by ``realtime`` is read as it is: its frames are re-stamped below.)
        read = self.source.read
        if getattr(self.source, "live", False):
            read = getattr(self.source, "read_deferred", read)
        try:
            while not self._stop.is_set():
                frame = read()
                if frame is None:
                    break
                self._frames_read += 1
                if self.config.realtime and not getattr(self.source, "live", False):
                    # Pace a file at its own clock so it behaves like a camera.
                    if paced_start is None:
                        paced_start, first_ts = time.monotonic(), frame.timestamp
                    # Its clock stands still while the user pauses: after a pause the video goes on
                    # from the paused frame, not from where a camera would be by then.
                    while True:
                        delay = (frame.timestamp - first_ts) - (time.monotonic() - paced_start - self._paused_s())
                        if delay <= 0 or self._stop.wait(min(delay, 0.05)):
                            break
                    if self._stop.is_set():
                        break
                    frame = replace(frame, capture_time=time.monotonic())
                self._frames.put(frame)
        except BaseException as exc:  # re-raised in the consumer
            self._errors.append(exc)
        finally:
            if isinstance(self._frames, _FifoBuffer):
                self._frames.put_final(_END)
            else:
                self._frames.put_final(_END, self._stop)

    def _note_encode(self, result: FrameResult) -> None:
        now = self._processed_at = self._playing_clock()
        reconnects = getattr(self.source, "reconnects", 0)
        if reconnects != self._reconnects_seen:
            # The source dropped and came back: the encodes after it start a new count, not one
            # spanning the outage (read timeout, backoff, reconnect: seconds with no frame).
            self._reconnects_seen = reconnects
            self._encode_times.clear()
        if getattr(result, "encoded", False):
            self._encode_times.append(now)
        elif not any(worked for _, worked in self._proc_times):
            # Idle for 30 frames (nothing tracked): the next object's encodes start a new count,
            # not one spanning the idle time.
            self._encode_times.clear()

    def _inference_loop(self) -> None:
        last: Frame | None = None
        last_start: float | None = None
        try:
            while not self._stop.is_set():
                if self._pause.is_set():
                    # Paused: show the user's new prompts on the frozen frame.
                    if last is not None and getattr(self.engine, "has_pending", False):
                        with _model_call():
                            shown = self.engine.process(last)
                        self._emit(shown, write=False)
                        if getattr(self.engine, "has_pending", False):
                            time.sleep(0.02)  # a background encode for the new prompt is still running
                    else:
                        time.sleep(0.02)
                    continue
                pace = self._pace
                if pace is not None and last_start is not None:
                    # Capped: wait before taking a frame, so the one taken is the newest.
                    wait = last_start + pace() - time.perf_counter()
                    if wait > 0:
                        self._stop.wait(min(wait, 0.05))  # short slices: a new cap, pause or stop counts soon
                        continue
                try:
                    item = self._frames.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is _END:
                    # A stop (Ctrl-C) also ends the source, which then sends _END: that is no file's
                    # end, and its held results go out one-way below, with no encode more.
                    if self._two_way is not None and not self._stop.is_set():
                        # A file that ended cleanly: its last frame anchors the held results.
                        with _model_call():
                            finished = self._two_way.finish(self.engine)
                        for done in finished:
                            self._emit(done, write=True)
                    break
                t0 = last_start = time.perf_counter()
                if isinstance(item, DeferredFrame):
                    item = item.frame()  # converted now, on this thread: the frames dropped never are
                    if item is None:
                        continue  # decoded but not convertible: the source counted it as a decode error
                frame: Frame = item  # type: ignore[assignment]
                with _model_call():
                    result = self.engine.process(frame)
                took = time.perf_counter() - t0
                self._proc_times.append((took, _had_work(result)))
                self._note_step(took)
                self._note_encode(result)
                self._frames_processed += 1
                last = frame
                if self._two_way is not None:
                    with _model_call():
                        final = self._two_way.push(result, self.engine.soft_masks())
                    for done in final:
                        self._emit(done, write=True)
                else:
                    self._emit(result, write=True)
                if self.config.max_frames and self._frames_processed >= self.config.max_frames:
                    if self._two_way is not None:
                        # max_frames ends the file here as its end would: this frame anchors the held
                        # results (flushed one-way as after a stop, the frames since the last encode
                        # got less than a file of this length gets).
                        with _model_call():
                            finished = self._two_way.finish(self.engine)
                        for done in finished:
                            self._emit(done, write=True)
                    self._stop.set()
                    break
        except BaseException as exc:
            # A stop that withdrew this stream's encode waiting for a shared encoder (several streams)
            # ends the run stopped, not failed: a later error (a sink's, as the outputs close) is then
            # the one raised.
            if not (isinstance(exc, EncodeCancelled) and self._stop.is_set()):
                self._errors.append(exc)
            self._stop.set()
        finally:
            if self._two_way is not None:
                # Stopped or ended between encodes: the held results go out one-way, none is lost.
                for done in self._two_way.flush():
                    self._emit(done, write=True)
            if self._writer is not None:
                self._writer.finish()  # every queued result written, sinks closed: then the end
            self._put_result(_END, force=True)

    def _sink_failed(self, exc: BaseException, sink: object = None) -> None:
        """Called on the sink thread: the error reaches the caller and the run stops.

        After :meth:`close` stopped waiting for the sinks (a close longer than its bounded wait) and
        reported the errors, nobody would read it: it is logged here, on the sink thread, saying that
        the output may be incomplete (a video without its index looked saved).
        """
        with self._errors_lock:
            late = self._errors_reported
            if not late:
                self._errors.append(exc)
        self._stop.set()
        if late:
            _log.warning(
                "the output %s failed after the run was closed, so it may be incomplete: %s",
                _describe_sink(sink), describe_error(exc),
            )

    def _note_step(self, seconds: float) -> None:
        """Count one engine step (or background encode) of ``seconds`` towards the slowest, which close() waits on."""
        with self._slowest_lock:
            self._slowest_step = max(self._slowest_step, seconds)

    def _timed(self, submit: Callable[..., Future]) -> Callable[..., Future]:
        """``submit`` (a worker's ``submit(fn, *args) -> Future``) whose calls' durations count as steps
        (:meth:`_note_step`): a background encode is as slow as the model, and close() gave up on one
        running after ``join_timeout_s`` when only the inference thread's steps were measured."""

        def timed_submit(fn: Callable[..., object], *args: object) -> Future:
            def run(*call_args: object) -> object:
                t0 = time.perf_counter()
                try:
                    return fn(*call_args)
                finally:
                    self._note_step(time.perf_counter() - t0)

            return submit(run, *args)

        return timed_submit

    def _emit(self, result: FrameResult, *, write: bool) -> None:
        if write and self._writer is not None:
            self._writer.put(result)
        self._latency_ms = (time.monotonic() - result.frame.capture_time) * 1e3
        self._put_result(result)

    def _put_result(self, item: object, force: bool = False) -> None:
        while True:
            try:
                self._results.put(item, timeout=0.1)
                return
            except queue.Full:
                if self._stop.is_set():
                    if not force:
                        return
                    # Make room for the end marker: the consumer may be gone.
                    try:
                        self._results.get_nowait()
                    except queue.Empty:
                        pass

    def _close_sinks(self) -> None:
        sinks, self.sinks = self.sinks, []
        for sink in sinks:
            try:
                sink.close()
            except BaseException as exc:
                self._errors.append(exc)


class SerialWorker(_Worker):
    """One daemon thread that runs submitted calls in order: ``submit(fn, *args) -> Future``; ``close(timeout)``.

    ``close`` cancels the calls not started yet; a call still running after
    ``timeout`` is waited for again, up to ``exit_wait_s``, before the process
    exits (:func:`wait_for_lingering`).

    Public for the shared encoder of several streams
    (:class:`~realtime_sam.app.scheduler.EncodeScheduler`): every encode runs
    on this one thread, so the encoder's large activations are allocated in
    one thread's heap arena (with :func:`~realtime_sam.model.device.tune_cpu_allocator`
    each arena keeps its peak: encodes spread over K threads kept K peaks).
    """
