"""Streams on a pool of Ray actors: ``--ray [ADDRESS] --workers K`` (needs ``pip install 'realtime-sam[ray]'``).

::

    driver (this process)                      actor 1 (one model)              actor 2 (one model)
    jobs -> pin each stream to an actor  --->  run(job) per stream, on its  ..  run(job) ...
         <- outcome, or "actor died"           own Pipeline threads, encodes
            -> restart its streams on          through the actor's shared
               another actor                   EncodeScheduler

* Each actor holds one model and runs the streams pinned to it side by side
  (a threaded actor: one :meth:`StreamWorker.run` call per stream, each a
  :class:`~realtime_sam.app.pipeline.Pipeline` of its own).
* The streams on one actor share its encoder as in one process: encodes go
  stalest stream first, and its :class:`~realtime_sam.app.budget.FrameBudget`
  caps the live streams' processed frame rate while the encoder is behind.
* A stream is pinned to one actor, since its engine state lives there. When
  an actor dies, its streams start again on the least-loaded live actor (a
  new one when none is left): they reopen their source and encode afresh.
* Outputs are JSONL mask files (``--save-masks`` with ``{name}``) on storage
  every actor can reach. A restarted stream **appends** to its file: a line
  cut short by the crash is dropped first, a file resumes after its last
  complete frame (frames before it are read and skipped), a live stream's
  frame numbers go on from there, and new track ids start above every id
  the file already holds, so none is reused. The objects it tracked are
  prompted again from their last boxes.
* A stream whose source ended cleanly gets ``NAME.jsonl.done`` beside its
  output; a run over recorded files skips every file whose output has it,
  so a batch job can be stopped and resumed.

The driver imports Ray only inside :func:`run_on_ray`; without Ray installed
``--ray`` is a one-line error that says what to install.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Sequence

from realtime_sam.app.streams import StreamSpec
from realtime_sam.errors import ConfigError, PromptError, SinkError
from realtime_sam.sigterm import RaiseOnTerm, Terminated
from realtime_sam.types import Frame, FrameResult, ObjectPrompt

__all__ = [
    "StreamJob", "StreamOutcome", "ResumePoint", "resume_point", "done_marker", "AppendingJsonl", "StreamWorker",
    "workers_that_fit", "run_on_ray",
]


@dataclass(frozen=True)
class StreamJob:
    """One stream for an actor (picklable).

    Attributes:
        spec: the stream (name, source, its prompts and settings).
        masks_path: its JSONL output (``{name}`` already replaced).
        prompts: objects added to every stream (the command line's).
        config: the run's configuration (the stream's settings go over it on the actor).
    """

    spec: StreamSpec
    masks_path: str
    prompts: tuple[ObjectPrompt, ...] = ()
    config: Any = None


@dataclass(frozen=True)
class StreamOutcome:
    """How one stream ended.

    Attributes:
        name: the stream.
        state: ``done`` (source ended, output complete), ``stopped`` (max_frames or stop), ``skipped``
            (its output was already complete) or ``failed``.
        frames: frames in its output file now.
        attempts: actors it ran on (more than 1 after restarts).
        error: why it failed.
    """

    name: str
    state: str
    frames: int
    attempts: int = 1
    error: str | None = None


@dataclass(frozen=True)
class ResumePoint:
    """Where a stream's output file leaves off.

    Attributes:
        next_frame: one past the last complete frame's index (0 for a new file).
        next_id: one above the highest track id in the file (1 for a new file).
        frames: complete frame lines in the file.
        last_tracks: ``(box, label)`` of the tracks alive in the last frame, to prompt them again.
        complete: the stream finished cleanly before (``.done`` marker present).
    """

    next_frame: int = 0
    next_id: int = 1
    frames: int = 0
    last_tracks: tuple[tuple[tuple[float, float, float, float], str | None], ...] = ()
    complete: bool = False


def done_marker(masks_path: str | os.PathLike[str]) -> Path:
    """The file that says a stream's output is complete: ``PATH.done``."""
    p = Path(masks_path)
    return p.with_name(p.name + ".done")


def resume_point(masks_path: str | os.PathLike[str]) -> ResumePoint:
    """Read a stream's JSONL output (if any) to see where a restart takes over."""
    from realtime_sam.output.jsonl import load_jsonl

    p = Path(masks_path)
    if not p.exists() or p.stat().st_size == 0:
        return ResumePoint()
    _header, frames = load_jsonl(p)
    complete = done_marker(p).exists()
    if not frames:
        return ResumePoint(complete=complete)
    ids = [t["id"] for f in frames for t in f["tracks"]]
    last = frames[-1]
    alive = tuple(
        (tuple(float(v) for v in t["box"]), t.get("label"))
        for t in last["tracks"]
        if t.get("state") != "lost" and t["box"][2] > t["box"][0] and t["box"][3] > t["box"][1]
    )
    return ResumePoint(
        next_frame=int(last["frame"]) + 1, next_id=max(ids, default=0) + 1, frames=len(frames),
        last_tracks=alive, complete=complete,  # type: ignore[arg-type]
    )


class AppendingJsonl:
    """The :class:`~realtime_sam.output.jsonl.JsonlSink` format, appended to an existing file.

    A last line cut short by a crash is cut off first; the header is written
    only when the file is new. Each frame is one unbuffered write, complete
    on disk when :meth:`write` returns.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, source: str | None = None, fps: float | None = None,
        sample_aspect_ratio: Any = None,
    ) -> None:
        from realtime_sam.output.sink_base import prepare_file

        self.path = prepare_file(path, "jsonl", "tracks.jsonl")
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1  # whatever follows the last newline is a line the crash cut short
        if keep != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(keep)
        self._new = keep == 0
        self._size = None if self._new else _header_size(data[: data.find(b"\n")])
        self.source, self.fps, self.sample_aspect_ratio = source, fps, sample_aspect_ratio
        self._file = open(self.path, "ab", buffering=0)
        self.frames_written = 0
        self._closed = False

    def write(self, result: FrameResult) -> None:
        from realtime_sam.output.jsonl import JsonlSink, header_record
        from realtime_sam.output.sink_base import write_all

        if self._closed:
            raise SinkError(f"write to the closed jsonl output {self.path}")
        header = b""
        if self._new:
            self._size = (int(result.frame.width), int(result.frame.height))
            record = header_record(
                source=self.source, width=self._size[0], height=self._size[1],
                sample_aspect_ratio=self.sample_aspect_ratio, fps=self.fps,
            )
            header = (json.dumps(record) + "\n").encode("utf-8")
            self._new = False
        data = header + (json.dumps(JsonlSink.frame_record(result, self._size), separators=(",", ":")) + "\n").encode("utf-8")
        write_all(self._file, data, self.path, "jsonl")
        self.frames_written += 1

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._file.close()


def _header_size(line: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a JSONL file's header line; ``None`` where it has none."""
    try:
        header = json.loads(line)
        return (int(header["width"]), int(header["height"]))
    except (ValueError, TypeError, KeyError):
        return None


class _Resumed:
    """A source picking up where an output file left off: a file skips the frames already written,
    a live source numbers its frames from there on."""

    def __init__(self, source: Any, next_frame: int) -> None:
        self.source = source
        self.next_frame = next_frame
        self.live = bool(getattr(source, "live", False))
        self.size, self.fps, self.name = source.size, source.fps, source.name
        self.sample_aspect_ratio = getattr(source, "sample_aspect_ratio", None)
        self.num_frames = getattr(source, "num_frames", None)
        self.sizes_vary = bool(getattr(source, "sizes_vary", False))

    @property
    def reconnects(self) -> int:
        """The source's :attr:`~realtime_sam.capture.base.LiveSource.reconnects` (the pipeline starts its
        count of encode intervals over after one)."""
        return int(getattr(self.source, "reconnects", 0))

    @property
    def reconnect_attempt(self) -> int | None:
        """The source's reconnect attempt under way while it is down, else ``None``."""
        return getattr(self.source, "reconnect_attempt", None)

    def read(self) -> Frame | None:
        while True:
            frame = self.source.read()
            if self.live:
                return self._numbered_on(frame)
            if frame is None or self.next_frame == 0 or frame.index >= self.next_frame:
                return frame

    def read_deferred(self) -> Any:
        """As :meth:`read`; a live source's frames may come unconverted (``Source.read_deferred``)."""
        read = getattr(self.source, "read_deferred", None)
        if not self.live or read is None:
            return self.read()
        return self._numbered_on(read())

    def _numbered_on(self, frame: Any) -> Any:
        """A live source's frame (a Frame or a DeferredFrame alike) numbered on from the output's."""
        if frame is None or self.next_frame == 0:
            return frame
        return replace(frame, index=frame.index + self.next_frame)

    def interrupt(self) -> None:
        fn = getattr(self.source, "interrupt", None)
        if callable(fn):
            fn()

    def close(self) -> None:
        self.source.close()


class StreamWorker:
    """What each Ray actor is: one model, and any number of streams run on it side by side.

    Plain Python (tested without Ray); :func:`run_on_ray` wraps it with ``ray.remote``. One that loads
    its model (no ``runner_for``) starts the shared encoder's thread: :meth:`close` ends it. An actor
    need not be closed: ``ray.kill`` ends its process, thread and all (and runs no exit handlers).
    """

    def __init__(
        self, model_config: Any, *, runner_for: Callable[[], Any] | None = None, scheduler: Any = None,
        source_for: Callable[..., Any] | None = None,
    ) -> None:
        import collections
        import threading

        from realtime_sam.app.budget import FrameBudget
        from realtime_sam.app.multi import shared_scheduler

        self._encoder: Any = None  # the shared encoder's thread, when this worker started one
        if runner_for is None:
            from realtime_sam.model.loader import load_model
            from realtime_sam.model.runners import InferenceRunner

            from realtime_sam.app.pipeline import SerialWorker

            model = load_model(model_config, progress=False)
            self._encoder = SerialWorker("rtsam-shared-encoder")  # until close(); an actor's, until ray.kill
            scheduler = shared_scheduler(model, 8, submit=self._encoder.submit)
            runner_for = lambda: InferenceRunner(model)  # noqa: E731
        self._runner_for = runner_for
        self._scheduler = scheduler
        self._source_for = source_for  # open_source's signature (tests give a source of their own)
        # Source events not yet reported: (line, StatusEvent.important).
        self._events: collections.deque[tuple[str, bool]] = collections.deque(maxlen=1000)
        self._lock = threading.Lock()
        self._running: dict[str, tuple[str, Any, Any, list[int]]] = {}  # key: (name, source, pipeline, [tracks])
        self.budget = FrameBudget()  # configured from the jobs (config.streams: the run's)
        scheduler.add_observer(self.budget.observe)

    def pid(self) -> int:
        return os.getpid()

    def close(self, timeout: float = 3.0) -> bool:
        """End the shared encoder's thread this worker started (a ``scheduler`` given to it is its caller's
        to close): encodes not started are cancelled, one running may finish within ``timeout`` seconds.

        Left open, the idle thread counts as a call still running: the process waits 3 s for it at exit
        (:func:`~realtime_sam.app.pipeline.wait_for_lingering`, which then returns False, as for a hung call).

        Returns:
            True once no thread of this worker's is left (at once when it started none).
        """
        encoder = self._encoder
        return True if encoder is None else encoder.close(timeout)

    def report(self) -> tuple[list[tuple[str, bool]], list[str]]:
        """``(events, status)``: the source events since the last call, each ``(line, important)``
        (``NAME: source: ...``; :attr:`~realtime_sam.capture.base.StatusEvent.important`), and one status line per stream
        running here (the one-process ``--source A --source B`` line)."""
        from realtime_sam.app.multi import StreamStatus

        events = []
        while self._events:
            events.append(self._events.popleft())
        with self._lock:
            running = list(self._running.items())
        lines = []
        for key, (name, source, pipeline, tracks) in running:
            s = pipeline.stats
            enc = self._scheduler.stats(key)
            attempt = getattr(source, "reconnect_attempt", None) or None
            lines.append(StreamStatus(
                name=name, live=bool(source.live), state="reconnecting" if attempt else "running",
                frames_read=s.frames_read, frames_processed=s.frames_processed, frames_dropped=s.frames_dropped,
                model_fps=s.model_fps, encodes=enc.encodes, encode_age_s=enc.age_s, tracks=tracks[0],
                fps_cap=self.budget.cap_fps(key), reconnect_attempt=attempt, encode_interval_s=s.encode_interval_s,
            ).line())
        return events, lines

    def run(self, job: StreamJob) -> StreamOutcome:
        """Run one stream to its end, appending to its output; returns how it ended (errors raise)."""
        from functools import partial

        from realtime_sam.app.multi import stream_config
        from realtime_sam.app.pipeline import Pipeline
        from realtime_sam.app.scheduler import SharedRunner
        from realtime_sam.capture.sources import open_source
        from realtime_sam.tracking.engine import Engine
        from realtime_sam.tracking.prompts import clamp_initial_prompt
        from realtime_sam.tracking.tracks import IdCounter

        spec = job.spec
        cfg = stream_config(job.config, spec)
        start = resume_point(job.masks_path)
        if start.complete:
            return StreamOutcome(spec.name, "skipped", start.frames)
        pipe_cfg = cfg.pipeline
        if pipe_cfg.max_frames and start.next_frame:
            left = pipe_cfg.max_frames - start.frames
            if left <= 0:
                return StreamOutcome(spec.name, "stopped", start.frames)
            pipe_cfg = replace(pipe_cfg, max_frames=left)
        def on_status(event: Any) -> None:
            self._events.append((f"{spec.name}: source: {event.message}", event.important))

        opener = self._source_for or open_source
        source = _Resumed(opener(spec.source, cfg.source, on_status=on_status), start.next_frame)
        key = f"{spec.name}@{start.next_frame}"
        try:
            runner = SharedRunner(self._runner_for(), self._scheduler, key)
            engine = Engine(
                runner, cfg.engine, tracker_config=cfg.tracker, propagation_config=cfg.propagation,
                discovery_config=cfg.discovery, ids=IdCounter(start.next_id),
            )
            # After a restart, the objects it was tracking are prompted again where they were last seen,
            # on the frame it resumes at: in an image folder of several sizes that frame's size, not the
            # first image's, is what the box is cut to.
            for box, label in start.last_tracks:
                try:
                    engine.add_object(clamp_initial_prompt(ObjectPrompt(box=box, label=label, start_frame=start.next_frame), source))
                except PromptError:  # a box gone out of the frame: that object is not taken up again
                    continue
            # The user's prompts are refused as in one process (a box outside the frame, a start_frame
            # past a file's end): the stream fails with the one-line reason instead of running without them.
            for p in (*spec.prompts, *job.prompts):
                if start.next_frame == 0 or p.start_frame >= start.next_frame:
                    engine.add_object(clamp_initial_prompt(p, source))
            sink = AppendingJsonl(
                job.masks_path, source=source.name, fps=source.fps,
                sample_aspect_ratio=getattr(source, "sample_aspect_ratio", None),
            )
        except BaseException:
            source.close()
            raise
        self.budget.configure(job.config.streams)
        self.budget.add(key, live=source.live or pipe_cfg.realtime, fps=source.fps)
        try:
            with Pipeline(source, engine, sinks=[sink], config=pipe_cfg) as pipeline:
                pipeline.pace_with(partial(self.budget.interval_s, key))
                tracks = [0]
                with self._lock:
                    self._running[key] = (spec.name, source, pipeline, tracks)
                for result in pipeline:  # a source or engine error raises here, the output complete up to it
                    tracks[0] = len(result.tracks)
                stopped = pipeline.stopped
        finally:
            with self._lock:
                self._running.pop(key, None)
            self.budget.end(key)
        end = resume_point(job.masks_path)
        if stopped or source.live:
            return StreamOutcome(spec.name, "stopped", end.frames)
        done_marker(job.masks_path).write_text(json.dumps({"frames": end.frames}) + "\n", encoding="utf-8")
        return StreamOutcome(spec.name, "done", end.frames)


def workers_that_fit(resources: dict[str, float], *, num_cpus: float, num_gpus: float) -> int:
    """How many actors of ``num_cpus`` CPUs and ``num_gpus`` GPUs fit in Ray's ``resources`` (``{"CPU": 2.0, ...}``)."""
    fits = []
    for key, each in (("CPU", num_cpus), ("GPU", num_gpus)):
        if each > 0:
            fits.append(int(float(resources.get(key, 0.0)) / each + 1e-9))
    return min(fits) if fits else 1 << 30


class _TermWhileWaiting(RaiseOnTerm):
    """:class:`~realtime_sam.sigterm.RaiseOnTerm` that notes that a SIGTERM came: Ray's waits turn the
    exception a signal handler raises into ``KeyboardInterrupt``."""

    received = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = True
        super()._handle(signum, frame)


@dataclass
class _Actor:
    handle: Any
    alive: bool = True
    streams: set[str] = field(default_factory=set)


def run_on_ray(
    jobs: Sequence[StreamJob],
    *,
    model_config: Any,
    workers: int,
    address: str | None = None,
    max_restarts: int = 3,
    on_event: Callable[[str], None] = lambda text: None,
    on_started: Callable[[list[Any]], None] | None = None,
    num_cpus: float = 1.0,
    num_gpus: float = 0.0,
    status_interval_s: float | None = None,
    on_warning: Callable[[str], None] | None = None,
) -> list[StreamOutcome]:
    """Run ``jobs`` on ``workers`` Ray actors; restart a dead actor's streams elsewhere.

    Args:
        jobs: one per stream; a job whose output is already complete is skipped.
        model_config: the model every actor loads (``config.model``).
        workers: actors in the pool.
        address: a running cluster (``ray://host:10001``, ``auto``); ``None`` starts a local one
            (or uses the one this process already joined).
        max_restarts: how often one stream may be restarted after its actor died.
        on_event: receives one line per event (started on, restarted, done, failed), and the streams'
            source events from the actors (``NAME: source: disconnected ...``, within about a second).
        on_started: called with the actor handles once they exist (tests kill one).
        num_cpus, num_gpus: each actor's Ray resources.
        status_interval_s: every this many seconds, each running stream's status line goes to ``on_event``
            (``None``: none).
        on_warning: receives, instead of ``on_event``, the source events that a quiet run still shows
            (a stream dropped, came back or gave up: :attr:`~realtime_sam.capture.base.StatusEvent.important`); ``None``: ``on_event``.

    Returns:
        One :class:`StreamOutcome` per job, in job order.

    Raises:
        ConfigError: Ray is not installed.
    """
    try:
        import ray
        from ray.exceptions import RayActorError
    except ImportError:
        raise ConfigError("--ray needs the ray package: pip install 'realtime-sam[ray]'") from None
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    outcomes: dict[str, StreamOutcome] = {}
    todo = []
    for job in jobs:
        start = resume_point(job.masks_path)
        if start.complete:
            outcomes[job.spec.name] = StreamOutcome(job.spec.name, "skipped", start.frames, attempts=0)
            on_event(f"{job.spec.name}: output already complete, skipped")
        else:
            todo.append(job)
    if not todo:
        return [outcomes[j.spec.name] for j in jobs]
    local = address is None and not ray.is_initialized()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    wanted = min(workers, max(1, len(todo)))
    # An actor the cluster has no room for never starts, and the streams pinned to it would wait for ever.
    resources = ray.cluster_resources() if local else ray.available_resources()
    room = workers_that_fit(resources, num_cpus=num_cpus, num_gpus=num_gpus)
    if room < wanted:
        each = f"{num_cpus:g} CPU" + (f" and {num_gpus:g} GPU" if num_gpus else "") + " each"
        if local and room == 0:
            has = f"{resources.get('CPU', 0):g} CPU, {resources.get('GPU', 0):g} GPU"
            raise ConfigError(
                f"this machine has no room for one Ray worker ({each}; Ray sees {has}); "
                "use --device cpu, or a cluster with room: --ray ADDRESS"
            )
        if local:
            on_event(f"note: --workers {workers}, but this machine has room for {room} ({each}): running {room}")
            wanted = room
        else:
            on_event(f"note: the cluster has room for {room} of {wanted} workers now ({each}); the others start when it has more")
    remote = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=max(2, len(todo) + 1), max_restarts=0)(StreamWorker)
    actors = [_Actor(remote.remote(model_config)) for _ in range(wanted)]
    if on_started is not None:
        on_started([a.handle for a in actors])
    attempts: dict[str, int] = {}
    pending: dict[Any, tuple[StreamJob, _Actor]] = {}

    def submit(job: StreamJob, actor: _Actor) -> None:
        attempts[job.spec.name] = attempts.get(job.spec.name, 0) + 1
        actor.streams.add(job.spec.name)
        pending[actor.handle.run.remote(job)] = (job, actor)

    for i, job in enumerate(todo):
        submit(job, actors[i % len(actors)])
        on_event(f"{job.spec.name}: on worker {i % len(actors) + 1}")
    asking: dict[Any, _Actor] = {}  # one report call under way per actor (one still loading its model answers later)
    want_status: set[int] = set()  # the actors whose next report's status lines are due

    def relay() -> None:
        """The actors' source events (and status lines when due) to ``on_event``; never waits."""
        if asking:
            done, _ = ray.wait(list(asking), num_returns=len(asking), timeout=0)
            for ask in done:
                actor = asking.pop(ask)
                try:
                    events, lines = ray.get(ask)
                except Exception:  # a dying actor: its streams' own calls say so
                    continue
                for text, important in events:
                    (on_warning if important and on_warning is not None else on_event)(text)
                if id(actor) in want_status:
                    want_status.discard(id(actor))
                    for text in lines:
                        on_event(text)
        busy = set(map(id, asking.values()))
        for a in actors:
            if a.alive and id(a) not in busy:
                asking[a.handle.report.remote()] = a

    import time

    next_status = time.monotonic() + (status_interval_s or 0)

    def _drive() -> None:
        nonlocal next_status
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)
            if status_interval_s is not None and time.monotonic() >= next_status:
                next_status = time.monotonic() + status_interval_s
                want_status.update(id(a) for a in actors if a.alive)
            relay()
            if not ready:
                continue
            ref = ready[0]
            job, actor = pending.pop(ref)
            name = job.spec.name
            actor.streams.discard(name)
            try:
                outcome = ray.get(ref)
                outcomes[name] = replace(outcome, attempts=attempts[name])
                on_event(f"{name}: {outcome.state}, {outcome.frames} frames")
            except RayActorError:
                actor.alive = False
                if attempts[name] > max_restarts:
                    outcomes[name] = StreamOutcome(name, "failed", resume_point(job.masks_path).frames, attempts[name], "its workers kept dying")
                    on_event(f"{name}: failed, its workers kept dying")
                    continue
                live = [a for a in actors if a.alive]
                if not live:
                    actors.append(_Actor(remote.remote(model_config)))
                    live = actors[-1:]
                target = min(live, key=lambda a: len(a.streams))
                on_event(f"{name}: worker died, restarting on worker {actors.index(target) + 1}")
                submit(job, target)
            except Exception as exc:  # the stream's own failure (a damaged file, a source that gave up)
                cause = getattr(exc, "cause", None) or exc
                text = str(cause).strip().splitlines()
                outcomes[name] = StreamOutcome(name, "failed", resume_point(job.masks_path).frames, attempts[name], text[-1] if text else type(cause).__name__)
                on_event(f"{name}: failed: {outcomes[name].error}")

    # ray.init set its own SIGTERM handler (sys.exit(15), printing a stack): SIGTERM is Terminated
    # again, as for the rest of the command (exit status 143; the outputs complete up to here).
    term = _TermWhileWaiting()
    try:
        with term:
            _drive()
    except KeyboardInterrupt:
        if term.received:
            raise Terminated() from None
        raise
    finally:
        # Stopped or not, no actor goes on writing (a cluster this process joined outlives it).
        for a in actors:
            if a.alive:
                ray.kill(a.handle)
    return [outcomes[j.spec.name] for j in jobs]

