"""Several streams in one process: one model, one engine per stream, results tagged with their stream.

::

    stream "door":  Pipeline(source, Engine(SharedRunner)) --+
    stream "yard":  Pipeline(source, Engine(SharedRunner)) --+--> MultiPipeline --> StreamResult(stream, result)
                             |  encodes                       |
                             +--> EncodeScheduler (one model, stalest stream first)

Each stream is a :class:`~realtime_sam.app.pipeline.Pipeline` of its own
(its capture and inference threads, its sinks, its engine with its own
tracks and ids), so a stream that stalls or reconnects holds up nobody
else: the only thing shared is the image encoder, whose
:class:`~realtime_sam.app.scheduler.EncodeScheduler` serves the stalest
waiting stream first. :class:`MultiPipeline` starts no thread of its own:
it polls the streams' pipelines in turn from the caller's thread. A stream
that fails ends alone (its outputs finalised up to then, its error kept in
:attr:`StreamStatus.error`); the others go on.
"""

from __future__ import annotations

import numbers
import os
import threading
import time
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence

from realtime_sam.app.budget import FrameBudget
from realtime_sam.app.pipeline import Pipeline, SerialWorker, model_rate
from realtime_sam.app.runs import primed_run
from realtime_sam.app.scheduler import EncodeScheduler, SharedRunner
from realtime_sam.app.streams import StreamSpec, specs_from_sources
from realtime_sam.errors import ConfigError, RealtimeSamError
from realtime_sam.output.sink_base import discard_sinks, refuse_shared_outputs
from realtime_sam.types import FrameResult, ObjectPrompt

if TYPE_CHECKING:
    from realtime_sam.config import Config

__all__ = [
    "StreamResult", "StreamStatus", "StreamRun", "MultiPipeline", "StreamsFailed", "shared_scheduler", "open_streams",
    "track_many",
]


class StreamsFailed(RealtimeSamError):
    """Raised by :func:`track_many` once every stream has ended, when some failed part-way.

    Attributes:
        errors: the error that ended each failed stream, by name (the first is also ``__cause__``).
    """

    def __init__(self, errors: Mapping[str, BaseException]) -> None:
        self.errors = dict(errors)
        first = lambda exc: str(exc).splitlines()[0] if str(exc) else type(exc).__name__  # noqa: E731
        failed = "; ".join(f"{name}: {first(exc)}" for name, exc in self.errors.items())
        super().__init__(f"{len(self.errors)} stream(s) failed ({failed}); the others ran to their end")


@dataclass(frozen=True)
class StreamResult:
    """One processed frame of one stream.

    Attributes:
        stream: the stream's name.
        result: the frame's :class:`~realtime_sam.types.FrameResult` (tracks, masks, timings).
        encode_age_s: seconds since the frame behind the stream's newest embedding went to the encoder.
    """

    stream: str
    result: FrameResult
    encode_age_s: float | None = None

    @property
    def index(self) -> int:
        return self.result.index

    @property
    def tracks(self):
        return self.result.tracks


@dataclass(frozen=True)
class StreamStatus:
    """A snapshot of one stream.

    Attributes:
        name: the stream's name.
        live: a camera, network stream or paced source (not a file read as fast as the model goes).
        state: ``running``, ``reconnecting`` (its live source is down and being reopened:
            :attr:`reconnect_attempt` says which attempt), ``done`` (its source ended or the run
            was stopped) or ``failed``.
        frames_read, frames_processed, frames_dropped, model_fps: the stream's pipeline counters
            (``model_fps`` 0 while the model is idle, see :class:`~realtime_sam.app.pipeline.PipelineStats`).
        encodes: embeddings the shared encoder made for it.
        encode_age_s: seconds since the frame behind its newest embedding went to the encoder (``None`` before the first).
        tracks: objects in its latest result.
        error: the one-line error that ended it (``state == "failed"``).
        fps_cap: its processed frames per second are capped at this while the shared encoder is behind
            (``None``: not capped; see :class:`~realtime_sam.app.budget.FrameBudget`).
        reconnect_attempt: the 1-based reconnect attempt under way (``state == "reconnecting"``), else ``None``.
        encode_interval_s: seconds between its encodes that landed (see
            :attr:`~realtime_sam.app.pipeline.PipelineStats.encode_interval_s`), shown after its model rate.
    """

    name: str
    live: bool
    state: str
    frames_read: int
    frames_processed: int
    frames_dropped: int
    model_fps: float
    encodes: int
    encode_age_s: float | None
    tracks: int
    error: str | None = None
    fps_cap: float | None = None
    reconnect_attempt: int | None = None
    encode_interval_s: float | None = None

    def line(self) -> str:
        """The stream's status line."""
        age = "-" if self.encode_age_s is None else f"{self.encode_age_s:.1f} s"
        cap = "" if self.fps_cap is None else f", capped at {self.fps_cap:.1f} fps (encoder behind)"
        state = self.state if self.reconnect_attempt is None else f"{self.state} (attempt {self.reconnect_attempt})"
        text = (
            f"{self.name}: {state}, frames {self.frames_read} read, {self.frames_processed} processed, "
            f"{self.frames_dropped} dropped{cap} | model {model_rate(self)} | encodes {self.encodes}, "
            f"encode age {age} | tracks {self.tracks}"
        )
        return text + (f" | error: {self.error}" if self.error else "")


class StreamRun:
    """One stream of a :class:`MultiPipeline`: its source, engine and pipeline (sinks belong to the pipeline)."""

    def __init__(self, name: str, source: Any, engine: Any, pipeline: Pipeline) -> None:
        self.name = name
        self.source = source
        self.engine = engine
        self.pipeline = pipeline
        self.ended = False
        self.error: BaseException | None = None
        self.tracks = 0

    @property
    def live(self) -> bool:
        return bool(getattr(self.source, "live", False)) or self.pipeline.config.realtime


class MultiPipeline:
    """Runs several streams side by side and yields :class:`StreamResult` values as they come.

    Use as a context manager and iterate; :meth:`stop` may be called from any
    thread (a signal handler). A stream whose pipeline raises ends alone:
    its error is in :meth:`status` and :attr:`errors`; iteration goes on
    until every stream has ended. A stream that was stopped ends ``done``,
    not failed; a ``KeyboardInterrupt`` or ``SystemExit`` raised in the
    polling thread leaves :meth:`poll` (the run's, not a stream's).

    With a ``scheduler``, ``budget`` (default: a :class:`~realtime_sam.app.budget.FrameBudget`
    with the default settings) watches its encoder calls and paces every
    stream's pipeline (:meth:`~realtime_sam.app.pipeline.Pipeline.pace_with`).
    """

    def __init__(
        self,
        runs: Sequence[StreamRun],
        scheduler: EncodeScheduler | None = None,
        *,
        workers: Sequence[SerialWorker] = (),
        budget: FrameBudget | None = None,
    ) -> None:
        names = [r.name for r in runs]
        if len(set(names)) != len(names):
            raise ValueError(f"stream names must be unique, got {names}")
        self.runs = list(runs)
        self.scheduler = scheduler
        self._workers = list(workers)  # the shared encoder's thread, closed with the run
        self.budget = budget if budget is not None or scheduler is None else FrameBudget()
        if self.budget is not None:
            if scheduler is not None:
                scheduler.add_observer(self.budget.observe)
            for r in self.runs:
                self.budget.add(r.name, live=r.live, fps=getattr(r.source, "fps", None))
                r.pipeline.pace_with(partial(self.budget.interval_s, r.name))
        self._next = 0
        self._stopped = False
        self._closed = False

    # -- control ---------------------------------------------------------------------------

    def start(self) -> "MultiPipeline":
        for r in self.runs:
            r.pipeline.start()
        return self

    def stop(self) -> None:
        """Ask every stream to finish (outputs are finalised); safe from any thread."""
        self._stopped = True
        for r in self.runs:
            r.pipeline.stop()
            if self.scheduler is not None:
                self.scheduler.withdraw(r.name)

    def stop_stream(self, name: str) -> None:
        """Finish one stream (its outputs are finalised); the others go on."""
        r = self.run(name)
        r.pipeline.stop()
        if self.scheduler is not None:
            self.scheduler.withdraw(name)

    def close(self) -> None:
        """Stop every stream and join its workers (bounded); sources closed.

        The shared encoder's thread is waited for as a stream's own encode worker is by
        :meth:`Pipeline.close <realtime_sam.app.pipeline.Pipeline.close>`: up to ``join_timeout_s``
        (the longest of the streams') plus one and a half of the slowest encode it ran
        (:attr:`_TimedSerialWorker.slowest_s`), counted from this call.
        """
        if self._closed:
            return
        self._closed = True
        started = time.monotonic()
        self.stop()
        for r in self.runs:
            r.pipeline.close()
        if self.budget is not None and self.scheduler is not None:
            self.scheduler.remove_observer(self.budget.observe)
        join_s = max((r.pipeline.config.join_timeout_s for r in self.runs), default=3.0)
        for w in self._workers:
            # An encode in progress is slow, not hung, when no slower than the slowest one: the
            # fixed 1 s wait gave up on a stream's first encode, which its pipeline had not timed
            # yet (it waited behind another stream's), and the encoder ran on past close().
            deadline = started + join_s + 1.5 * float(getattr(w, "slowest_s", 0.0))
            w.close(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> "MultiPipeline":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, name: str) -> StreamRun:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(f"no stream named {name!r}; streams: {', '.join(x.name for x in self.runs)}")

    # -- results ---------------------------------------------------------------------------

    @property
    def ended(self) -> bool:
        return all(r.ended for r in self.runs)

    @property
    def errors(self) -> dict[str, BaseException]:
        """The error that ended each failed stream, by name."""
        return {r.name: r.error for r in self.runs if r.error is not None}

    def __iter__(self) -> Iterator[StreamResult]:
        while not self.ended:
            item = self.poll(0.01)
            if item is not None:
                yield item

    def poll(self, timeout: float = 0.0) -> StreamResult | None:
        """The next result of any stream (taking them in turn), or ``None`` if none came within ``timeout``."""
        self.start()
        n = len(self.runs)
        for k in range(n):
            r = self.runs[(self._next + k) % n]
            item = self._poll_one(r, 0.0)
            if item is not None:
                self._next = (self._next + k + 1) % n
                return item
        live = [r for r in self.runs if not r.ended]
        if live and timeout > 0:
            # Nothing ready anywhere: wait on one stream (in turn) rather than spin.
            r = live[self._next % len(live)]
            self._next = (self._next + 1) % n
            return self._poll_one(r, timeout)
        return None

    def _poll_one(self, r: StreamRun, timeout: float) -> StreamResult | None:
        if r.ended:
            return None
        try:
            result = r.pipeline.poll(timeout)
        except Exception as exc:  # this stream's failure, not the run's
            # KeyboardInterrupt and SystemExit (a second Ctrl-C) are raised in this thread, not by
            # the stream: they end the run. (An encode withdrawn by a stop is no failure: its
            # pipeline does not raise it.)
            r.error = exc
            self._ended(r)
            return None
        if result is None:
            if r.pipeline.ended:
                self._ended(r)
            return None
        r.tracks = len(result.tracks)
        age = self.scheduler.stats(r.name).age_s if self.scheduler is not None else None
        return StreamResult(r.name, result, age)

    def _ended(self, r: StreamRun) -> None:
        r.ended = True
        if self.budget is not None:
            self.budget.end(r.name)  # the streams still running share its budget

    def status(self) -> list[StreamStatus]:
        """Every stream's :class:`StreamStatus`, in the order given."""
        out = []
        for r in self.runs:
            s = r.pipeline.stats
            enc = self.scheduler.stats(r.name) if self.scheduler is not None else None
            state = "failed" if r.error is not None else ("done" if r.ended else "running")
            # A live source being reopened (its server went away): not running, and on which attempt.
            attempt = getattr(r.source, "reconnect_attempt", None) if state == "running" else None
            if attempt:
                state = "reconnecting"
            going = state in ("running", "reconnecting")
            out.append(
                StreamStatus(
                    name=r.name, live=r.live, state=state,
                    frames_read=s.frames_read, frames_processed=s.frames_processed,
                    frames_dropped=s.frames_dropped, model_fps=s.model_fps,
                    # An ended stream's embedding ages for nothing: its age is reported while it runs.
                    encodes=enc.encodes if enc else 0, encode_age_s=enc.age_s if enc and going else None,
                    tracks=r.tracks, error=None if r.error is None else str(r.error).splitlines()[0] if str(r.error) else type(r.error).__name__,
                    fps_cap=self.budget.cap_fps(r.name) if self.budget is not None and going else None,
                    reconnect_attempt=attempt or None,
                    encode_interval_s=s.encode_interval_s if going else None,
                )
            )
        return out


# ---------------------------------------------------------------- building the streams


class _TimedSerialWorker(SerialWorker):
    """A :class:`~realtime_sam.app.pipeline.SerialWorker` that times its calls: :attr:`slowest_s`.

    The shared encoder's thread: :meth:`MultiPipeline.close` waits for an encode in progress
    as long as the slowest one took (as a pipeline times its own background encodes).
    """

    def __init__(self, name: str, *, exit_wait_s: float = 3.0) -> None:
        self.slowest_s = 0.0
        self._slowest_lock = threading.Lock()
        super().__init__(name, exit_wait_s=exit_wait_s)

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        """As :meth:`SerialWorker.submit`; the call's duration counts towards :attr:`slowest_s`."""

        def timed(*call_args: object) -> object:
            t0 = time.perf_counter()
            try:
                return fn(*call_args)
            finally:
                took = time.perf_counter() - t0
                with self._slowest_lock:
                    self.slowest_s = max(self.slowest_s, took)

        return super().submit(timed, *args)


def shared_scheduler(model: Any, streams: int, submit: Callable[..., Any] | None = None) -> EncodeScheduler:
    """An :class:`EncodeScheduler` over an :class:`~realtime_sam.model.runtime.InferenceModel`.

    On a CUDA GPU up to ``streams`` images go in one encoder call
    (:meth:`~realtime_sam.model.runtime.InferenceModel.encode_batch`); elsewhere
    they run one at a time (a CPU gains nothing from batching and a stream
    would wait for the others' encodes too). ``submit``: a
    :class:`~realtime_sam.app.pipeline.SerialWorker`'s, to run every encode on its one thread.
    """
    batched = getattr(getattr(model, "device", None), "type", "cpu") == "cuda"
    return EncodeScheduler(
        lambda images: model.encode_batch(images, "BGR"), max_batch=max(1, streams) if batched else 1, submit=submit
    )


def stream_config(base: Config, spec: StreamSpec) -> Config:
    """``base`` with the stream's own settings applied over it."""
    if not spec.settings:
        return base
    from realtime_sam.config import parse_config

    try:
        return parse_config({k: dict(v) for k, v in spec.settings.items()}, base)
    except ConfigError as exc:  # which stream's settings, among several
        raise ConfigError(f"stream {spec.name}: settings: {exc}") from None


def _require_unique_names(specs: Sequence[StreamSpec]) -> None:
    """Refuse two streams of one name (their results, sinks and outputs would be confused).

    Raises:
        ConfigError: one line naming the names.
    """
    names = [spec.name for spec in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(
            f"stream name(s) {', '.join(map(repr, dup))} used twice (a file's stem names a plain source); "
            "give each StreamSpec its own name"
        )


def require_detectors(specs: Sequence[StreamSpec], config: Config) -> None:
    """Refuse a stream whose ``detect.*`` settings (the run's or its own) have no detector to use them.

    Each stream is checked as its engine is built (:func:`stream_config`): the run's
    ``detect.conf`` with every stream naming its own ``detect.model`` is no mistake.

    Raises:
        ConfigError: one line naming the settings (and the stream, where streams have detect settings of their own).
    """
    # Which stream, where some streams have detect settings of their own; else it is the run's.
    named = any("detect" in spec.settings for spec in specs)
    for spec in specs:
        try:
            stream_config(config, spec).detect.require_detector()
        except ConfigError as exc:
            message = str(exc)
            prefix = f"stream {spec.name}: "
            raise ConfigError(prefix + message if named and not message.startswith(prefix) else message) from None


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Re-raise a :class:`RealtimeSamError` as the same error naming the stream.

    A ``--box`` that fits one stream's frame and not another's said only "box ... lies outside the
    320x240 frame"; a camera that did not open, only its URL (shared by several streams of one
    server, or a file named alike in several folders).
    """
    try:
        yield
    except RealtimeSamError as exc:
        prefix = f"stream {name}: "
        text = str(exc)
        if text.startswith(prefix):
            raise
        try:
            named = type(exc)(prefix + text)
        except Exception:  # an error class with other arguments: raised as it is
            raise exc from None
        raise named.with_traceback(exc.__traceback__) from exc.__cause__


def load_detectors(specs: Sequence[StreamSpec], config: Config, verbose: bool = True) -> dict[str, Any]:
    """Each stream's detector (``detect.model``, the run's or its own), as :class:`~realtime_sam.tracking.detection.DetectorPrompts`.

    Returns:
        stream name -> ``DetectorPrompts`` (its ``detector`` for :func:`open_streams`, its
        ``class_numbers()`` for MOTS files); streams without a detector are left out.

    Raises:
        RealtimeSamError: a detector that does not load or lacks a class in ``detect.classes``, naming the stream.

    ``verbose=False`` (``--quiet``): Ultralytics' own lines below its errors are not printed.
    """
    from realtime_sam.model.detector import load_detector
    from realtime_sam.tracking.detection import DetectorPrompts

    out: dict[str, Any] = {}
    for spec in specs:
        cfg = stream_config(config, spec)
        if cfg.detect.model:
            with _naming(spec.name):
                out[spec.name] = DetectorPrompts(load_detector(cfg.detect, cfg.model.device, verbose), cfg.detect)
    return out


def open_streams(
    specs: Sequence[StreamSpec],
    config: Config,
    *,
    detectors: Mapping[str, Any] | None = None,
    prompts: Iterable[ObjectPrompt] = (),
    sinks_for: Callable[[StreamSpec, Any, Config], Sequence[Any]] | None = None,
    model: Any = None,
    runner_for: Callable[[StreamSpec], Any] | None = None,
    scheduler: EncodeScheduler | None = None,
    on_status: Callable[[StreamSpec], Callable[[object], None] | None] | None = None,
    progress: bool = False,
    on_export: Callable[[Any], None] | None = None,
) -> MultiPipeline:
    """Open every stream's source, engine and sinks around one shared model; all or nothing.

    Every source opens (and every prompt is checked against its frame) before
    any stream's outputs are created, so a source that fails leaves no file behind.

    Args:
        specs: the streams (names unique).
        config: the run's configuration; each stream's ``settings`` go over it.
        prompts: objects added to every stream (after its own).
        sinks_for: ``(spec, source, config) -> sinks`` for each stream (closed by its pipeline).
        model: the shared :class:`~realtime_sam.model.runtime.InferenceModel`; loaded from
            ``config.model`` when neither it nor ``runner_for`` is given.
        runner_for: ``spec -> runner`` with ``embed``/``use`` (tests pass fakes); then ``scheduler`` is required.
        scheduler: the encoder's scheduler (default: :func:`shared_scheduler` over ``model``); its calls
            drive the run's :class:`~realtime_sam.app.budget.FrameBudget` (``config.streams``).
        on_status: ``spec -> callback`` for the live source's status events.
        detectors: stream name -> its detector, loaded already (read as each stream's engine is
            made, after ``sinks_for``); a stream not in it loads its ``detect.model``, if any, then.
        on_export: when the model is loaded here with an exported backend, called with the
            file's path as the encoder's export starts (see :func:`~realtime_sam.model.loader.load_model`).

    Raises:
        RealtimeSamError: a source that does not open, a bad setting or output; whatever was opened is closed.
    """
    from realtime_sam.capture.sources import open_source
    from realtime_sam.tracking.engine import Engine
    from realtime_sam.tracking.prompts import clamp_initial_prompt

    common = list(prompts)
    if runner_for is not None and scheduler is None:
        raise ValueError("open_streams: runner_for needs a scheduler")
    _require_unique_names(specs)  # before anything opens: MultiPipeline refused them with every source open
    workers: list[SerialWorker] = []
    opened: list[tuple[StreamSpec, Config, Any, list[Any]]] = []  # (spec, its config, source, sinks)
    runs: list[StreamRun] = []
    try:
        # Sources, prompts and outputs before the model: a bad one fails in a second, not after a download.
        for spec in specs:
            cfg = stream_config(config, spec)
            with _naming(spec.name):
                source = open_source(spec.source, cfg.source, on_status=on_status(spec) if on_status else None)
            opened.append((spec, cfg, source, []))
            with _naming(spec.name):
                for p in (*spec.prompts, *common):
                    clamp_initial_prompt(p, source)  # a box wholly outside this stream's frame: PromptError now
        # The outputs once every source is open (as for one stream): opening one creates its file,
        # or truncates one already there, which a later stream's missing camera must not leave behind,
        # nor weights or a device that would fail the load, nor an encoder export that fails
        # (onnxruntime, openvino: prepare_model loads the model now).
        if runner_for is None and model is None:
            from realtime_sam.model.loader import prepare_model

            model = prepare_model(config.model, progress=progress, on_export=on_export)
        if sinks_for is not None:
            for spec, cfg, source, sinks in opened:
                sinks.extend(sinks_for(spec, source, cfg))
        if runner_for is None:
            if model is None:
                from realtime_sam.model.loader import load_model

                model = load_model(config.model, progress=progress)
            if scheduler is None:
                workers.append(_TimedSerialWorker("rtsam-shared-encoder", exit_wait_s=config.pipeline.join_timeout_s))
                scheduler = shared_scheduler(model, len(specs), submit=workers[0].submit)
            from realtime_sam.model.runners import InferenceRunner

            runner_for = lambda spec: InferenceRunner(model)  # noqa: E731  (each stream its own current embedding)
        for spec, cfg, source, sinks in opened:
            engine = Engine.from_config(
                cfg, runner=SharedRunner(runner_for(spec), scheduler, spec.name), detector=(detectors or {}).get(spec.name)
            )
            for p in (*spec.prompts, *common):
                engine.add_object(clamp_initial_prompt(p, source))
            runs.append(StreamRun(spec.name, source, engine, Pipeline(source, engine, sinks=sinks, config=cfg.pipeline)))
    except BaseException:
        for r in runs:
            r.pipeline.close()  # closes its sinks and source
        for _spec, _cfg, source, sinks in opened[len(runs):]:
            for sink in sinks:
                sink.close()
            source.close()
        for w in workers:
            w.close(timeout=1.0)
        raise
    return MultiPipeline(runs, scheduler, workers=workers, budget=FrameBudget(config.streams))


def track_many(
    sources: Sequence[str | int | StreamSpec],
    *,
    prompts: Iterable[ObjectPrompt] = (),
    config: Config | Mapping[str, Any] | str | Path | None = None,
    overrides: Sequence[str] = (),
    sinks: Mapping[str, Sequence[Any]] | None = None,
    model: Any = None,
) -> Iterator[StreamResult]:
    """Track objects in several sources at once with one model; yields :class:`StreamResult` values.

    Args:
        sources: webcam indices, files, URLs, ``lavfi:`` graphs, or :class:`StreamSpec` values
            (name, prompts and settings per stream). Plain sources are named by
            :func:`~realtime_sam.app.streams.stream_name` (``result.stream``).
        prompts: objects to track in every stream.
        config, overrides: as for :func:`realtime_sam.track`.
        sinks: ``{stream name: [sink, ...]}`` fed that stream's results (a name no stream has is a
            :class:`ConfigError`).
        model: a loaded :class:`~realtime_sam.model.runtime.InferenceModel` to share (default: loaded from ``config``).

    Breaking out of the loop stops every stream and finalises the sinks (a generator kept in a
    variable does so when it is closed: ``gen.close()`` or ``del``). A generator closed or
    dropped before its first result is a run that never started: the sinks are discarded (closed,
    and what making them created removed), also for one kept to the process's exit.

    Raises:
        ConfigError: at the call, for a bad ``config`` or ``overrides`` (as :func:`realtime_sam.track`),
            ``sources`` that is not a non-empty list of paths, URLs, webcam indices and :class:`StreamSpec`
            values, a :class:`StreamSpec` with ``output``/``save_masks`` (give ``sinks``), two streams of
            one name, or ``sinks`` under a name no stream has or not lists of sinks; :class:`PromptError`
            at the call for a bad prompt (a stream's own included); the rest (a source that does not
            open, ...) at the first ``next()``. A run that cannot start discards the sinks given
            (closed, and what making them created removed, as :func:`realtime_sam.track` does).
        StreamsFailed: a stream failed part-way (a damaged file, a stream that gave up
            reconnecting): the others run on, and this is raised once every stream has ended,
            its sinks finalised (``errors``: each failed stream's error, by name).
    """
    from realtime_sam.config import load_config
    from realtime_sam.tracking.prompts import validate_prompts

    try:
        cfg = load_config(config, overrides)  # a Config, a mapping, a path or a preset
        specs = _specs_for(sources)
        _require_unique_names(specs)
        require_detectors(specs, cfg)  # per stream: a stream's settings may name its own detector
        given = _check_sinks(sinks, specs)
        checked = validate_prompts(prompts)  # at the call, as for track()
    except BaseException:
        # The run never starts: the outputs made for it are closed and what making them
        # created is removed, as track() does (they were left as empty, unfinished files).
        discard_sinks(_given_sinks(sinks))
        raise
    # Closed or dropped before its first result, the run discards the sinks (its body never ran).
    return primed_run(_track_many(specs, cfg, checked, given, model), [sink for value in given.values() for sink in value])


def _specs_for(sources: Any) -> list[StreamSpec]:
    """``track_many``'s ``sources`` as :class:`StreamSpec` values (plain sources named by their stem).

    Raises:
        ConfigError: ``sources`` is not a list, is empty, or holds something that is not a source.
        PromptError: a stream's own prompt breaks the rules (naming the stream).
    """
    from realtime_sam.tracking.prompts import validate_prompts

    if isinstance(sources, (str, bytes, int, os.PathLike, StreamSpec)) or not isinstance(sources, Iterable):
        raise ConfigError(
            f"track_many takes a list of sources; got {type(sources).__name__} {sources!r:.80}: "
            "give track_many([source, ...]), or track(source) for one"
        )
    # A webcam index may be any integer (numpy's too, e.g. from np.arange): int() as track() reads it.
    sources = [int(s) if isinstance(s, numbers.Integral) and not isinstance(s, bool) else s for s in sources]
    if not sources:
        raise ConfigError("track_many needs at least one source; got an empty list")
    for i, s in enumerate(sources):
        if isinstance(s, bool) or not isinstance(s, (str, int, os.PathLike, StreamSpec)):
            raise ConfigError(
                f"sources[{i}] is a {type(s).__name__} ({s!r:.80}); give a file, URL, lavfi: graph, webcam index "
                "or StreamSpec(name, source, prompts=..., settings=...)"
            )
    plain = [s for s in sources if not isinstance(s, StreamSpec)]
    named = iter(specs_from_sources([s if isinstance(s, int) else os.fspath(s) for s in plain]))
    specs = [s if isinstance(s, StreamSpec) else replace(next(named), source=s) for s in sources]
    out = []
    for spec in specs:
        if spec.output is not None or spec.save_masks is not None:
            # Read from a --sources file by the command; track_many wrote nothing there.
            raise ConfigError(
                f"stream {spec.name}: StreamSpec output/save_masks are for the command's --sources file; "
                f"with track_many give sinks={{{spec.name!r}: [make_sink('video', ...), make_sink('jsonl', ...)]}}"
            )
        with _naming(spec.name):
            own = tuple(validate_prompts(spec.prompts, "prompts", name_each=True))
        out.append(replace(spec, prompts=own))
    return out


def _given_sinks(sinks: Any) -> list[Any]:
    """Every sink object in ``track_many``'s ``sinks`` argument, however malformed (to discard)."""
    if not isinstance(sinks, Mapping):
        return []
    out = []
    for value in sinks.values():
        if hasattr(value, "write"):
            out.append(value)
        elif isinstance(value, (list, tuple)):
            out.extend(x for x in value if hasattr(x, "write"))
    return out


def _check_sinks(sinks: Any, specs: Sequence[StreamSpec]) -> dict[str, list[Any]]:
    """``track_many``'s ``sinks``: a mapping of stream names to lists of sinks.

    Raises:
        ConfigError: not a mapping, a name no stream has, or a value that is not a list of sinks.
    """
    if sinks is None:
        return {}
    example = "sinks={'door': [make_sink('video', 'door.mp4')]}"
    if not isinstance(sinks, Mapping):
        raise ConfigError(f"sinks must map stream names to lists of sinks, e.g. {example}; got {type(sinks).__name__}")
    unknown = sorted(set(sinks) - {spec.name for spec in specs}, key=str)
    if unknown:
        # Sinks under a name no stream has were never written nor closed (e.g. keyed by the
        # file "door.mp4" where the stream is named "door"): an empty, unfinished output.
        raise ConfigError(
            f"sinks for no stream: {', '.join(map(repr, unknown))}; "
            f"the streams are named {', '.join(repr(spec.name) for spec in specs)}"
        )
    given = {}
    for name, value in sinks.items():
        if hasattr(value, "write"):
            raise ConfigError(f"sinks[{name!r}] is one sink; give a list: sinks={{{name!r}: [sink]}}")
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"sinks[{name!r}] is a {type(value).__name__}; give a list of sinks, e.g. {example}")
        for k, sink in enumerate(value):
            if not (callable(getattr(sink, "write", None)) and callable(getattr(sink, "close", None))):
                raise ConfigError(
                    f"sinks[{name!r}][{k}] is a {type(sink).__name__} ({sink!r:.60}), not a sink; "
                    "make one with make_sink(kind, path) or open_sinks([...])"
                )
        given[name] = list(value)
    _refuse_shared_outputs(given)
    return given


def _refuse_shared_outputs(given: Mapping[str, Sequence[Any]]) -> None:
    """Refuse one sink, or one output path, given twice (two streams would write one file).

    One sink under two streams got both streams' frames interleaved (frame numbers repeated, one
    stream's header) and failed the stream that closed second ("already closed"); two sinks of one
    path left one stream's video and no word of the other's, as the command refuses.

    Raises:
        ConfigError: one line naming both places and the path.
    """
    places = [(f"sinks[{name!r}][{k}]", sink) for name, value in given.items() for k, sink in enumerate(value)]
    refuse_shared_outputs(places, one_sink_advice="make one sink per stream")


def _track_many(
    specs: list[StreamSpec], cfg: Config, prompts: list[ObjectPrompt], given: dict[str, Sequence[Any]], model: Any
) -> Iterator[StreamResult]:
    try:
        # The detectors before the sinks go to the streams: one that fails (a class it lacks) leaves the
        # sinks to be discarded here, an earlier run's file as it was (closed, it was emptied to a header).
        detectors = {name: d.detector for name, d in load_detectors(specs, cfg).items()}
        multi = open_streams(
            specs, cfg, detectors=detectors, prompts=prompts, model=model, sinks_for=lambda spec, _src, _cfg: given.get(spec.name, ())
        )
    except BaseException:
        # A source that does not open, a prompt outside a stream's frame, the model: the run never
        # started, so the outputs made for it are removed, as track() does (they were left empty).
        discard_sinks([sink for value in given.values() for sink in value])
        raise
    with multi:
        yield from multi
    if multi.errors:
        # Told, as track() raises it for one stream: a failed stream only ended its results.
        raise StreamsFailed(multi.errors) from next(iter(multi.errors.values()))

