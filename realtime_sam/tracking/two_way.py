"""Two-way propagation for recorded video: masks carried back from the next encode, blended in.

Live, a frame's masks between two encodes can only come from the frames
before it: the last decode, carried forward by optical flow, drifting more
with every frame. A file processed as fast as the model goes has no such
limit: the next encode is a few frames away. :class:`TwoWay` holds each
frame's result until the next encoded frame (the *anchor*) arrives, carries
the anchor's freshly decoded masks back through the held frames by dense
optical flow, and blends the two soft masks per track::

    frame   j (encoded) . . . t . . . k (encoded, the anchor)
    forward  logits from j, carried forward  ->   weight (k - t) / (k - j)
    backward logits from k, carried backward <-   weight (t - j) / (k - j)

so every frame is at most half an encode interval of drift from a decode.
On DAVIS with the oracle decoder this takes mean J at N = 5 / 15 / 30 from
0.822 / 0.693 / 0.611 (one-way) to 0.852 / 0.755 / 0.686 (README, "Tracking quality").

What is blended, and what is not:

- a track is blended in a held frame only when it has a mask there and the
  anchor decoded it (a track lost, new or removed in between keeps its
  forward mask);
- the blend is of the ``256x256`` low-res logits, clipped to ``[-10, 10]``;
  the visible mask is ``blend > 0`` upsampled as the decoder's masks are,
  its edge re-decided by the object's and the background's motion from the
  frame before (``edges``, :func:`~realtime_sam.tracking.dense_flow.edge_by_motion`,
  with the flow the engine's step to that frame ran), minus the tracks in
  front of it (the engine's order at that frame);
- ids, states, scores and labels are the forward run's: nothing here
  changes which track is which;
- the forward run's own masks are shown, edges re-decided, only where
  nothing is blended over them: the engine leaves those edges undone
  (:attr:`SoftMasks.shown`, a :class:`~realtime_sam.tracking.dense_flow.Deferred`
  a track), and they are worked out for the tracks not blended and the
  results let go as they are (:meth:`TwoWay.flush`, ``max_held``). The
  masks are those of edges made at once.

Results come out in frame order, up to one encode interval late (at most
``max_held`` frames). At the end of a file, :meth:`TwoWay.finish` encodes
the last frame once more so that the frames after the last periodic
encode are two-way too. The :class:`~realtime_sam.app.pipeline.Pipeline`
uses it for file sources read as fast as the model goes (not live, not
``pipeline.realtime``, no window), when ``pipeline.two_way`` is on and the
engine propagates with dense flow.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from typing import Collection, Mapping, NamedTuple, Protocol, Sequence

import numpy as np

from realtime_sam.tracking.association import mask_to_box
from realtime_sam.tracking.dense_flow import (
    DenseFlowPropagator, Deferred, _full_lab, _result_or_run, edge_by_motion, logits_to_mask,
)
from realtime_sam.types import Frame, FrameResult, TrackResult

__all__ = ["SoftMasks", "TwoWay", "shown_as"]

_CLIP = 10.0  # logits are blended within +-_CLIP: a decode's -30 background must not outvote a warped +5


class _Engine(Protocol):
    """What :meth:`TwoWay.finish` needs of the engine (:class:`~realtime_sam.tracking.engine.Engine`)."""

    def encode_next(self) -> None: ...

    def process(self, frame: Frame) -> FrameResult: ...

    def soft_masks(self) -> SoftMasks: ...


class SoftMasks(NamedTuple):
    """Every track's soft mask after one frame (:meth:`Engine.soft_masks <realtime_sam.tracking.engine.Engine.soft_masks>`).

    Attributes:
        logits: ``{track_id: 256x256 float32}`` low-res logits (with dense
            flow, the whole object, hidden parts included).
        order: track ids front to back.
        flow: ``{track_id: (rows, cols, 2) float32}`` the backward flow at the
            low-res cells of the step to this frame, for the tracks dense flow
            moved (:attr:`FlowResult.back <realtime_sam.tracking.dense_flow.FlowResult.back>`);
            ``None``: none.
        shown: ``{track_id: Deferred}`` the tracks of the frame's result whose
            mask is dense flow's as warped, their edges not yet re-decided
            (:attr:`DenseFlowPropagator.defer_edges
            <realtime_sam.tracking.dense_flow.DenseFlowPropagator.defer_edges>`):
            called, each gives the ``HxW bool`` mask to show instead
            (:func:`shown_as`); ``None``: none.
    """

    logits: Mapping[int, np.ndarray]
    order: tuple[int, ...]
    flow: Mapping[int, np.ndarray] | None = None
    shown: Mapping[int, Deferred] | None = None


def shown_as(track: TrackResult, shown: np.ndarray) -> TrackResult:
    """``track`` showing ``shown`` (``HxW bool``, its mask with the edge re-decided) and that mask's box;
    ``track`` as it is when ``shown`` is empty."""
    box = mask_to_box(shown)
    if box is None:
        return track
    return dataclass_replace(track, mask=shown, box=tuple(float(v) for v in box))


def _as_shown(result: FrameResult, shown: Mapping[int, Deferred] | None, skip: Collection[int] = ()) -> FrameResult:
    """``result`` with each track in ``shown`` (:attr:`SoftMasks.shown`), but those in ``skip``, as
    :func:`shown_as` makes it: the deferred edges worked out (those alone)."""
    if not shown:
        return result
    todo = {t.track_id for t in result.tracks if t.track_id in shown and t.track_id not in skip}
    if not todo:
        return result
    tracks = tuple(shown_as(t, shown[t.track_id]()) if t.track_id in todo else t for t in result.tracks)
    return dataclass_replace(result, tracks=tracks)


class _Cells(NamedTuple):
    """A flow at the low-res cells kept small: the part that is not zero (a crop's), and where it goes."""

    part: np.ndarray  # (h, w, 2) float32
    at: tuple[int, int]  # its first row and column
    shape: tuple[int, ...]  # the whole grid's

    @classmethod
    def of(cls, flow: np.ndarray) -> "_Cells":
        """``flow`` (``(rows, cols, 2)``, zero outside one rectangle of cells) kept as that rectangle."""
        # (Each channel against zero: ``any(axis=2)`` over a last axis of two took 0.6 ms a
        # track and frame, ten times this.)
        box = mask_to_box((flow[..., 0] != 0) | (flow[..., 1] != 0))
        if box is None:
            return cls(np.zeros((0, 0, 2), np.float32), (0, 0), flow.shape)
        x0, y0, x1, y1 = (int(v) for v in box)
        return cls(flow[y0:y1, x0:x1].copy(), (y0, x0), flow.shape)

    def whole(self) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        y, x = self.at
        out[y : y + self.part.shape[0], x : x + self.part.shape[1]] = self.part
        return out


@dataclass
class _Held:
    result: FrameResult
    logits: dict[int, np.ndarray]  # tracks with a non-empty mask in ``result``
    order: tuple[int, ...]
    flow: Mapping[int, _Cells]  # SoftMasks.flow: the step to this frame's, per track (edges only)
    shown: Mapping[int, Deferred] | None  # SoftMasks.shown: worked out for the tracks shown as the forward run made them

    def forward(self, skip: Collection[int] = ()) -> FrameResult:
        """The result as the forward run shows it, its deferred edges worked out (not for ``skip``)."""
        return _as_shown(self.result, self.shown, skip)


class TwoWay:
    """Holds results between encodes and blends the next encode's masks, carried back, into them.

    Not thread-safe: one per stream, fed in frame order.

    Args:
        propagator: the dense flow that carries the anchor's logits back
            (a fresh one, not the engine's: it keeps per-track state).
        max_held: most results held; beyond, the oldest goes out as it is
            (bounds memory and delay when encodes are far apart).
        edges: re-decide each blended mask's edge by motion from the frame
            before (``propagation.edge_motion``).
    """

    def __init__(self, propagator: DenseFlowPropagator, *, max_held: int = 120, edges: bool = True) -> None:
        if max_held < 1:
            raise ValueError(f"max_held must be >= 1, got {max_held}")
        self.propagator = propagator
        self.max_held = int(max_held)
        self.edges = bool(edges)
        self._held: list[_Held] = []
        self._anchor: int | None = None  # frame index of the last encoded result
        # The last encoded result's masks and frame: where the first held frame's edges come from.
        self._then: tuple[dict[int, np.ndarray], np.ndarray] | None = None

    @property
    def held(self) -> int:
        """Results waiting for the next encode."""
        return len(self._held)

    def push(self, result: FrameResult, soft: SoftMasks) -> list[FrameResult]:
        """Take the engine's result for the next frame (and its soft masks); return those now final, in order.

        A second result for the frame held last (see :meth:`finish`) replaces it.
        """
        if self._held and result.index == self._held[-1].result.index:
            self._held.pop()
        if not result.encoded:
            if not self._held and not any(t.mask.any() for t in result.tracks):
                return [_as_shown(result, soft.shown)]  # nothing to blend: no reason to wait
            logits = {
                t.track_id: np.array(soft.logits[t.track_id], dtype=np.float32)
                for t in result.tracks if t.track_id in soft.logits and t.mask.any()
            }
            flow = {tid: _Cells.of(f) for tid, f in (soft.flow or {}).items() if tid in logits} if self.edges else {}
            self._held.append(_Held(result, logits, tuple(soft.order), flow, soft.shown))
            out: list[FrameResult] = []
            while len(self._held) > self.max_held:
                out.append(self._held.pop(0).forward())
                self._anchor = None  # the blend's far end is gone: weights start afresh
                self._then = None
            return out
        result = _as_shown(result, soft.shown)  # (tracks the encode did not decode)
        anchor = {t.track_id for t in result.tracks if t.mask.any()}
        out = self._blend(result, {tid: soft.logits[tid] for tid in anchor if tid in soft.logits}, tuple(soft.order))
        self._held = []
        if self.propagator.reuse_from is not None:
            self.propagator.reuse_from.clear()  # the forward run's flow before this anchor is spent
        self._anchor = result.index
        self._then = ({t.track_id: t.mask for t in result.tracks if t.mask.any()}, result.frame.image)
        out.append(result)
        return out

    def finish(self, engine: _Engine) -> list[FrameResult]:
        """The end of a file: its last frame is encoded once more, as the anchor of the held results.

        Without it the frames after the last periodic encode (up to
        ``reencode_every - 1``) would go out one-way. ``engine`` (the one whose
        results were pushed) processes the last frame again with an encode;
        that result replaces the held one of the same frame. When the encode
        does not land at once (background encodes), the rest goes out one-way.
        Not for a stop or a fault: use :meth:`flush` there.
        """
        if not self._held:
            return []
        engine.encode_next()
        result = engine.process(self._held[-1].result.frame)
        return self.push(result, engine.soft_masks()) + self.flush()

    def flush(self) -> list[FrameResult]:
        """The held results as they are (the stream ended, or stopped, before another encode)."""
        out = [h.forward() for h in self._held]
        self._held = []
        if self.propagator.reuse_from is not None:
            self.propagator.reuse_from.clear()
        return out

    def _blend(self, anchor: FrameResult, logits: Mapping[int, np.ndarray], order: Sequence[int]) -> list[FrameResult]:
        held = self._held
        if not held:
            return []
        wanted = set(logits) & set().union(*(h.logits.keys() for h in held))
        if not wanted:
            return [h.forward() for h in held]
        self.propagator.reset()
        k = anchor.index
        j = self._anchor if self._anchor is not None else held[0].result.index - 1
        span = float(max(1, k - j))
        cur = {tid: np.asarray(logits[tid], np.float32) for tid in wanted}
        nxt = anchor.frame.image
        back: list[dict[int, np.ndarray]] = []
        for h in reversed(held):
            image = h.result.frame.image
            moved = self.propagator.step(nxt, image, cur, list(order))
            cur = {tid: r.logits for tid, r in moved.items()}
            back.append(cur)
            nxt = image
        back.reverse()
        # The masks shown on the frame before each held one (first: the last encoded result's),
        # which its edges are re-decided from, and that frame in Lab.
        before, image_then = self._then if self._then is not None and self.edges else ({}, None)
        lab_then = None if image_then is None else _full_lab(image_then)
        out = []
        for h, b in zip(held, back):
            blended = self._mix(h, b, (h.result.index - j) / span)
            lab_now = _full_lab(h.result.frame.image) if self.edges else None
            if lab_then is not None and lab_now is not None:
                self._edges(blended, before, h.flow, lab_then, lab_now)
            # The forward run's masks where nothing is blended (the deferred edges worked out for those alone).
            forward = h.forward(skip=blended)
            before = {**{t.track_id: t.mask for t in forward.tracks if t.mask.any()}, **blended}
            lab_then = lab_now
            out.append(self._shown(forward, h.order, blended))
        return out

    def _edges(
        self, blended: dict[int, np.ndarray], before: Mapping[int, np.ndarray], flow: Mapping[int, _Cells],
        lab_then: np.ndarray, lab_now: np.ndarray,
    ) -> None:
        """Re-decide each ``blended`` mask's edge by motion from the mask ``before`` it (in place), for the
        tracks with both and a flow: every other track on the propagator's lent thread, if any, beside
        the rest here (each needs nothing of the others'; numpy and OpenCV let go of the GIL for most of it)."""
        todo = [
            (tid, (before[tid], mask, flow[tid].whole(), lab_then, lab_now))
            for tid, mask in blended.items() if tid in before and tid in flow
        ]
        submit = self.propagator.lent
        jobs = {tid: submit(edge_by_motion, *args) for tid, args in todo[1::2]} if submit is not None else {}
        for tid, args in todo:
            if tid not in jobs:
                blended[tid] = edge_by_motion(*args)
        for tid, args in todo:
            if tid in jobs:
                blended[tid] = _result_or_run(jobs[tid], edge_by_motion, *args)

    @staticmethod
    def _mix(h: _Held, back: Mapping[int, np.ndarray], w_back: float) -> dict[int, np.ndarray]:
        """One held result's tracks' forward and backward logits blended, ``w_back`` on the backward:
        ``{track_id: HxW bool}`` (``blend > 0``), for the tracks carried back to it."""
        size = h.result.frame.image.shape[:2]
        blended: dict[int, np.ndarray] = {}
        for tid, fwd in h.logits.items():
            if tid in back:
                mix = (1.0 - w_back) * np.clip(fwd, -_CLIP, _CLIP) + w_back * np.clip(back[tid], -_CLIP, _CLIP)
                blended[tid] = logits_to_mask(mix, size)
        return blended

    @staticmethod
    def _shown(result: FrameResult, order: Sequence[int], blended: dict[int, np.ndarray]) -> FrameResult:
        """One held result with the ``blended`` masks in place of its tracks' own, tracks in front (``order``,
        front first) hiding those behind."""
        size = result.frame.image.shape[:2]
        if not blended:
            return result
        # Visible masks: tracks in front (the forward run's order then) hide those behind;
        # a track not blended hides with its forward mask.
        masks = {t.track_id: t.mask for t in result.tracks if t.mask.any()}
        ranked = [t for t in order if t in masks] + sorted(t for t in masks if t not in order)
        covered = np.zeros(size, bool)
        for tid in ranked:
            if tid in blended:
                blended[tid] = blended[tid] & ~covered  # (a new array: the caller keeps the whole one)
                covered |= blended[tid]
            else:
                covered |= masks[tid]
        tracks: list[TrackResult] = []
        for t in result.tracks:
            mask = blended.get(t.track_id)
            if mask is None:
                tracks.append(t)
                continue
            box = mask_to_box(mask)
            tracks.append(dataclass_replace(t, mask=mask, box=t.box if box is None else tuple(float(v) for v in box)))
        return dataclass_replace(result, tracks=tuple(tracks))
