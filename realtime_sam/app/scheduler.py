"""One image encoder shared by several streams: stalest stream first, batched where it pays.

Each stream's engine talks to its own :class:`SharedRunner` (its own current
embedding, decoder calls on the shared model); every encode goes through one
:class:`EncodeScheduler`, which runs the shared encoder for the waiting
streams:

* **stalest first**: when the encoder comes free, the waiting stream whose
  latest embedding is oldest goes next (a stream never encoded before goes
  first of all). With K streams always waiting, every stream gets one encode
  in every K, so a live camera's encode age is at most K times its age alone,
  and a file read as fast as the model goes never starves a camera;
* **fresh**: a request made with ``latest`` (the engine's background
  encodes) takes its stream's newest frame when the encoder starts on it, so
  the K - 1 encodes it waited for do not age the frame it embeds;
* **batched**: up to ``max_batch`` waiting requests go in one encoder call
  (on a GPU one call for several images costs little more than one); with
  ``max_batch=1`` (the CPU) they run in turn.

The scheduler starts no thread: the caller that finds the encoder free
takes the next batch (for itself and for the others waiting), while the rest
wait on a condition; with ``submit`` (a
:class:`~realtime_sam.app.pipeline.SerialWorker`'s) the batch runs on that
one thread, else on the caller's. Threads are the pipeline's
(:mod:`realtime_sam.app.pipeline`): each stream's inference thread or its
background-encode worker calls :meth:`EncodeScheduler.encode`.

After each encoder call the scheduler tells its observers
(:meth:`EncodeScheduler.add_observer`) how long it took and which other
streams were waiting: the :class:`~realtime_sam.app.budget.FrameBudget`
caps the live streams' frame rate from that while the encoder is behind.
"""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from realtime_sam.app.budget import EncoderCall

__all__ = ["EncodeCancelled", "EncodeScheduler", "EncodeStats", "SharedRunner"]


class EncodeCancelled(Exception):
    """The stream's encode request was withdrawn (the stream is stopping)."""


@dataclass(frozen=True)
class EncodeStats:
    """One stream's encoder figures.

    Attributes:
        encodes: embeddings delivered to the stream.
        age_s: seconds since the frame behind its newest embedding was handed to the encoder
            (for a request made with ``latest``: since the stream offered that frame; ``None``
            before its first encode).
        last_wait_s: how long its last request waited for the encoder (queue time, not encode time).
    """

    encodes: int
    age_s: float | None
    last_wait_s: float


@dataclass
class _Request:
    key: str
    image: np.ndarray | None  # ``None`` until ``latest`` gives it
    since: float  # when its image was handed over (asked for, or offered to ``latest``)
    seq: int
    latest: Callable[[], tuple[np.ndarray, float]] | None = None  # the newest image and its age, at pick
    done: bool = False
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Stream:
    encodes: int = 0
    last_asked: float | None = None  # request time of the newest delivered embedding
    last_wait_s: float = 0.0
    log: list[int] = field(default_factory=list)


class EncodeScheduler:
    """Serialises (or batches) encodes of several streams on one encoder, stalest stream first.

    Args:
        encode_many: ``[HxWx3 uint8 BGR] -> [embedding]``, one embedding per image, in order.
        max_batch: most requests per ``encode_many`` call (1 = one at a time, the CPU's way).
        submit: ``submit(fn, *args) -> Future`` running ``encode_many`` on one dedicated thread
            (every encode in one thread's heap; see :class:`~realtime_sam.app.pipeline.SerialWorker`);
            ``None`` runs it on the calling thread.
        clock: monotonic seconds (injected by tests).

    Attributes:
        order: keys in the order their encodes were run (for diagnostics and tests).
        batches: sizes of the ``encode_many`` calls made.
    """

    def __init__(
        self,
        encode_many: Callable[[Sequence[np.ndarray]], Sequence[Any]],
        *,
        max_batch: int = 1,
        submit: Callable[..., Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._encode_many = encode_many
        self.max_batch = int(max_batch)
        self._clock = clock
        self._submit = submit
        self._cond = threading.Condition()
        self._waiting: list[_Request] = []
        self._streams: dict[str, _Stream] = {}
        self._busy = False
        self._seq = itertools.count()
        self._observers: list[Callable[[EncoderCall], None]] = []
        self.order: list[str] = []
        self.batches: list[int] = []

    def add_observer(self, fn: Callable[[EncoderCall], None]) -> None:
        """Call ``fn(EncoderCall)`` after every encoder call (under the scheduler's lock: ``fn`` must be quick)."""
        with self._cond:
            self._observers.append(fn)

    def remove_observer(self, fn: Callable[[EncoderCall], None]) -> None:
        with self._cond:
            if fn in self._observers:
                self._observers.remove(fn)

    def register(self, key: str) -> None:
        """Make ``key`` known (its stats exist before its first encode)."""
        with self._cond:
            self._streams.setdefault(key, _Stream())

    def encode(
        self,
        key: str,
        image: np.ndarray | None = None,
        *,
        latest: Callable[[], tuple[np.ndarray, float]] | None = None,
    ) -> Any:
        """The embedding of ``image`` for stream ``key``; blocks until the encoder has run it.

        With ``latest`` instead of ``image``, the image is the one ``latest()``
        returns when the encoder takes this request (``(HxWx3 uint8 BGR, seconds
        since the stream offered it)``; called off the scheduler's lock): a
        stream that waited for other streams' encodes is embedded as it is
        then, not as it was when it asked. Its encode age counts from when that
        image was offered.

        Raises:
            EncodeCancelled: :meth:`withdraw` was called for ``key`` while it waited.
            BaseException: whatever ``encode_many`` (or ``latest``) raised for the batch holding it.
        """
        if (image is None) == (latest is None):
            raise TypeError("encode() takes an image or latest=, not both or neither")
        with self._cond:
            stream = self._streams.setdefault(key, _Stream())
            req = _Request(key, image, self._clock(), next(self._seq), latest)
            self._waiting.append(req)
            while not req.done:
                if self._busy or not self._waiting:
                    self._cond.wait()
                    continue
                batch = self._pick()
                self._busy = True
                started = self._clock()
                self._cond.release()
                try:
                    try:
                        for r in batch:
                            if r.latest is not None:
                                r.image, age = r.latest()
                                r.since = self._clock() - age
                        images = [r.image for r in batch]
                        if self._submit is not None:
                            out = list(self._submit(self._encode_many, images).result())
                        else:
                            out = list(self._encode_many(images))
                        if len(out) != len(batch):
                            raise RuntimeError(f"encode_many returned {len(out)} embeddings for {len(batch)} images")
                        error = None
                    except BaseException as exc:  # handed to every request of the batch
                        out, error = [None] * len(batch), exc
                finally:
                    self._cond.acquire()
                self._busy = False
                ended = self._clock()
                self.batches.append(len(batch))
                for r, emb in zip(batch, out):
                    r.done, r.result, r.error = True, emb, error
                    s = self._streams.setdefault(r.key, _Stream())
                    if error is None:
                        s.encodes += 1
                        s.last_asked = r.since
                    self.order.append(r.key)
                keys = tuple(dict.fromkeys(r.key for r in batch))
                call = EncoderCall(started, ended, keys, tuple(sorted({r.key for r in self._waiting} - set(keys))))
                self._cond.notify_all()
                for fn in self._observers:
                    fn(call)
            stream.last_wait_s = max(0.0, self._clock() - req.since)
            if req.error is not None:
                raise req.error
            return req.result

    def _pick(self) -> list[_Request]:
        """The next batch, under the lock: stalest streams first (never encoded = stalest), one request each."""

        def staleness(r: _Request) -> tuple[float, int]:
            last = self._streams[r.key].last_asked
            return (float("-inf") if last is None else last, r.seq)

        chosen: list[_Request] = []
        keys: set[str] = set()
        for r in sorted(self._waiting, key=staleness):
            if r.key in keys:
                continue  # a stream's second request waits for the next round
            chosen.append(r)
            keys.add(r.key)
            if len(chosen) == self.max_batch:
                break
        for r in chosen:
            self._waiting.remove(r)
        return chosen

    def withdraw(self, key: str) -> None:
        """Cancel ``key``'s waiting requests (they raise :class:`EncodeCancelled`); a running one completes."""
        with self._cond:
            for r in [r for r in self._waiting if r.key == key]:
                self._waiting.remove(r)
                r.done, r.error = True, EncodeCancelled(f"encode for stream {key} withdrawn")
            self._cond.notify_all()

    def stats(self, key: str) -> EncodeStats:
        """``key``'s encode count and encode age now."""
        with self._cond:
            s = self._streams.get(key) or _Stream()
            age = None if s.last_asked is None else max(0.0, self._clock() - s.last_asked)
            return EncodeStats(encodes=s.encodes, age_s=age, last_wait_s=s.last_wait_s)


class SharedRunner:
    """A stream's :class:`~realtime_sam.tracking.model_runner.ModelRunner` over a shared model.

    Decoding goes to ``runner`` (the stream's own, holding the stream's
    current embedding; the model behind it is shared); encoding goes
    through ``scheduler`` under ``key``. ``runner`` needs ``use(embedding)``
    (and the scheduler's ``encode_many`` must make embeddings it accepts).
    Having ``embed``, it supports the engine's ``background_encode``;
    ``embed_latest`` lets a background encode that waits for the shared encoder
    take the stream's newest frame when its turn comes.
    """

    def __init__(self, runner: Any, scheduler: EncodeScheduler, key: str) -> None:
        if not callable(getattr(runner, "use", None)):
            raise TypeError(f"{type(runner).__name__} has no use(embedding); it cannot share an encoder")
        self.runner = runner
        self.scheduler = scheduler
        self.key = key
        scheduler.register(key)

    def encode(self, image_bgr: np.ndarray) -> None:
        """Embed ``image_bgr`` (``HxWx3 uint8`` BGR) when the scheduler says so, and make it current."""
        self.runner.use(self.scheduler.encode(self.key, image_bgr))

    def embed(self, image_bgr: np.ndarray) -> Any:
        """Embed without making it current (the engine's background worker)."""
        return self.scheduler.encode(self.key, image_bgr)

    def embed_latest(self, latest: Callable[[], tuple[np.ndarray, float]]) -> Any:
        """Embed the image ``latest()`` gives when the encoder takes this stream, without making it current.

        The engine's background worker passes its job's ``take``: an encode
        that waited behind other streams' embeds the stream's newest frame.
        """
        return self.scheduler.encode(self.key, latest=latest)

    def use(self, embedding: Any) -> None:
        self.runner.use(embedding)

    def decode(self, points, labels, boxes, mask_input, multimask):
        return self.runner.decode(points, labels, boxes, mask_input, multimask)

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        return self.runner.masks(low_res, size)
