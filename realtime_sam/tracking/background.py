"""Bookkeeping for the engine's background encodes: jobs in flight, frames kept for replay.

With ``EngineConfig.background_encode`` a :class:`~realtime_sam.app.pipeline.Pipeline`
lends the engine a worker; :class:`BackgroundEncodes` holds what that needs
between frames: the worker's ``submit``, the encodes in flight (oldest first,
the worker runs them in order) and small grey copies of the frames since the
oldest encode in flight, through which its masks are replayed when it
lands. It decides which jobs land and when frames are forgotten; decoding,
moving masks and associating stay in the engine.
Nothing here touches the model.

A job whose encode has not started yet (it waits for an encoder that other
streams share, :class:`~realtime_sam.app.scheduler.EncodeScheduler`) can be
moved to a newer frame (:meth:`_BackgroundJob.offer`); the worker takes the
newest frame offered when the encoder starts on it (:meth:`_BackgroundJob.take`).
With K streams on one encoder a request waits for K - 1 other encodes: the
embedding is then of a frame one encode old when it lands, not K.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

if TYPE_CHECKING:
    from realtime_sam.tracking.propagation import WorkFrame
    from realtime_sam.tracking.tracks import TrackPrompt
    from realtime_sam.types import ObjectPrompt

__all__ = ["BackgroundEncodes"]

# Flow copies of the frames since the oldest background encode in flight (for the replay). At
# 30 fps that is 10 s, far beyond an encode's 1-3 s on a CPU; at the default 480 px
# work size a copy is about 170 KB.
_HISTORY_FRAMES = 300
# Replay through at most this many of those frames (evenly spaced): flow copes with a
# few frames' motion per step, and the replay then costs tens of milliseconds (5 tracks
# over a 1.4 s encode add 10-30 ms to a landing on 2 cores). Every frame (42 steps)
# followed the hard scene no better and cost so much that a simulated live round
# dropped up to 10 frames in a row.
_REPLAY_STEPS = 12


@dataclass(eq=False)
class _BackgroundJob:
    """An encode on the worker: the frame it embeds, the tracks' prompts and new user prompts at that frame.

    ``lost`` holds the ids of the prompted tracks that were lost then: a mask found for
    one is replayed to the current frame on its own (see ``Engine._land``).

    Until the worker starts it (:meth:`take`), the inference thread may move a job
    without new prompts or a detector run to a newer frame (:meth:`offer`): frame,
    image, prompts, lost ids and decode request change together. After that they
    are fixed, and the engine reads them when the job lands.
    """

    frame_index: int
    prompts: tuple[TrackPrompt, ...]
    future: Future | None = None  # set by :meth:`BackgroundEncodes.start` once submitted
    new: list[ObjectPrompt] = field(default_factory=list)
    lost: frozenset[int] = frozenset()
    detect: bool = False  # the detector ran on this frame too (its boxes are decoded with the rest)
    image: np.ndarray | None = None  # ``HxWx3 uint8`` BGR: the frame embedded
    request: Any = None  # what the worker decodes against the embedding (the engine's ``_DecodeRequest``)
    after: tuple[Future, ...] = ()  # dropped encodes still running: the worker waits for them first (:meth:`wait_for`)
    offered_at: float = field(default_factory=time.monotonic)  # when ``image`` was set (monotonic seconds)
    started: bool = False  # the worker took it: no more moves
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def movable(self) -> bool:
        """True while it waits and has nothing tied to its frame (new prompts, a detector run)."""
        return not self.started and not self.new and not self.detect

    def offer(
        self, frame_index: int, image: np.ndarray, request: Any, prompts: Sequence[TrackPrompt], lost: frozenset[int]
    ) -> bool:
        """Move the job to a newer frame if its encode has not started (inference thread). True if moved."""
        with self._lock:
            if not self.movable or frame_index <= self.frame_index:
                return False
            self.frame_index, self.image, self.request = frame_index, image, request
            self.prompts, self.lost = tuple(prompts), lost
            self.offered_at = time.monotonic()
            return True

    def take(self) -> tuple[np.ndarray, float]:
        """Start it (worker thread): the frame to embed and the seconds since it was offered.

        No offer moves it after this; :attr:`request` is the one to decode.
        """
        with self._lock:
            self.started = True
            assert self.image is not None
            return self.image, max(0.0, time.monotonic() - self.offered_at)


class BackgroundEncodes:
    """The encodes in flight on a lent worker and the frames kept to replay their new prompts.

    Not thread-safe, except :attr:`has_pending` (read from a window's thread).
    """

    def __init__(self) -> None:
        self.submit: Callable[..., Future] | None = None  # the worker's ``submit(fn, *args) -> Future``
        self.jobs: deque[_BackgroundJob] = deque()  # in submission order; the worker runs them in order
        self.history: deque[tuple[int, WorkFrame]] = deque(maxlen=_HISTORY_FRAMES)  # (frame index, flow copy)
        # Encodes dropped while running (a reset, a new frame size, the worker taken back): they
        # end by making their old embedding the runner's current one, so the runner is not used
        # again before they have ended (:meth:`wait_dropped`, :attr:`_BackgroundJob.after`).
        self.dropped: list[Future] = []

    @property
    def attached(self) -> bool:
        """True while a worker is lent."""
        return self.submit is not None

    @property
    def busy(self) -> bool:
        """True while any encode is in flight."""
        return bool(self.jobs)

    @property
    def has_pending(self) -> bool:
        """True when new prompts wait for an encode in flight."""
        # A window's thread asks while the inference thread changes the deque:
        # tuple() copies it in one step (no Python code runs in between).
        return any(j.new for j in tuple(self.jobs))

    def start(
        self,
        run: Callable[[_BackgroundJob], object],
        image: np.ndarray,
        frame_index: int,
        prompts: Sequence[TrackPrompt],
        new: list[ObjectPrompt],
        lost: frozenset[int] = frozenset(),
        detect: bool = False,
        request: Any = None,
    ) -> None:
        """Submit ``run(job)`` to the worker for frame ``frame_index`` (``image``: ``HxWx3 uint8`` BGR).

        ``run`` is the engine's: it takes the job's frame (:meth:`_BackgroundJob.take`),
        embeds it and decodes ``request`` against the embedding (with ``detect``,
        running the detector too); its result is the job's future's.
        """
        assert self.submit is not None, "no worker attached"
        job = _BackgroundJob(frame_index, tuple(prompts), None, new, lost, detect, image, request)
        job.after, self.dropped = tuple(self.dropped), []  # waited for through this job from now on
        job.future = self.submit(run, job)
        self.jobs.append(job)

    def waiting(self) -> _BackgroundJob | None:
        """The newest job if it can still be moved to a newer frame (see :meth:`_BackgroundJob.offer`)."""
        job = self.jobs[-1] if self.jobs else None
        return job if job is not None and job.movable else None

    def next_finished(self) -> _BackgroundJob | None:
        """The oldest job, taken off the queue, if its encode is done; else ``None`` (later ones wait their turn)."""
        if self.jobs and self.jobs[0].future is not None and self.jobs[0].future.done():
            return self.jobs.popleft()
        return None

    def settle(self) -> Iterator[_BackgroundJob]:
        """Before an encode on the calling thread: empty the queue, waiting for each job in turn.

        The runner holds one image at a time and that encode is newer: jobs with
        new prompts are yielded (oldest first) to land, the others are dropped
        (the newer encode refreshes every track). A worker's error is re-raised.
        """
        while self.jobs:
            job = self.jobs.popleft()
            assert job.future is not None
            job.future.result()
            if job.new or job.detect:
                yield job

    def drop(self) -> list[ObjectPrompt]:
        """Forget the jobs in flight and the kept frames; returns their new prompts (to encode again).

        Jobs not started are cancelled; those running are kept in :attr:`dropped` until they end.
        """
        prompts = [p for job in self.jobs for p in job.new]
        for job in self.jobs:
            if job.future is None:
                continue
            # A worker's future may lack cancel() (only result() and done() are asked of it):
            # then it is taken as running.
            cancel = getattr(job.future, "cancel", None)
            if callable(cancel) and cancel():
                # It never runs, so it no longer waits for the encodes dropped before it: they are
                # waited for by whatever uses the runner next, as if it had never been submitted.
                self.dropped.extend(job.after)
            else:
                self.dropped.append(job.future)
        self.jobs.clear()
        self.history.clear()
        return prompts

    def wait_dropped(self) -> None:
        """Before the calling thread uses the runner: wait for the dropped encodes still running."""
        dropped, self.dropped = self.dropped, []
        wait_for(dropped)

    def forget_new(self) -> None:
        """Drop the new prompts of the jobs in flight (the user cleared everything)."""
        for job in self.jobs:
            job.new.clear()

    def withdraw(self, track_id: int) -> None:
        """Drop the new prompt that reserved ``track_id`` from the jobs in flight (the user removed it first)."""
        for job in self.jobs:
            job.new[:] = [p for p in job.new if getattr(p, "new_id", None) != track_id]

    def keep(self, frame_index: int, work: WorkFrame) -> None:
        """Keep the flow copy ``work`` of frame ``frame_index`` (the newest frame)."""
        self.history.append((frame_index, work))

    def replay_frames(self, since: int) -> list[WorkFrame] | None:
        """The kept frames from ``since`` to the newest, thinned to at most ``_REPLAY_STEPS`` steps.

        ``None`` when the frame ``since`` is no longer kept (nothing to replay through).
        """
        if not self.history or self.history[0][0] > since:
            return None
        frames = [w for i, w in self.history if i >= since]
        if len(frames) > _REPLAY_STEPS + 1:
            picks = np.unique(np.linspace(0, len(frames) - 1, _REPLAY_STEPS + 1).round().astype(int))
            frames = [frames[i] for i in picks]
        return frames

    def trim(self) -> None:
        """Forget the frames no job in flight will replay through: those before the oldest one's frame."""
        if self.jobs:
            while self.history and self.history[0][0] < self.jobs[0].frame_index:
                self.history.popleft()
        else:
            self.history.clear()


def wait_for(futures: Sequence[Future]) -> None:
    """Wait until each of ``futures`` has ended; their results and errors belong to dropped work and are ignored."""
    for future in futures:
        try:
            future.result()
        except BaseException:  # noqa: BLE001  (a cancelled or failed encode of a source given up)
            pass
