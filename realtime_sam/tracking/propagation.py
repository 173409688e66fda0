"""Move track masks between re-encodes with sparse optical flow.

Running SAM's image encoder on every frame is too slow for live video, so the
engine encodes every few frames and, in between, moves each track's mask with
the motion of the pixels inside it:

1. the previous and current frames are converted to grey and shrunk so their
   longest side is at most ``max_side`` pixels (flow is about coarse motion;
   the small image makes it cheap);
2. up to ``max_points`` corners (``cv2.goodFeaturesToTrack``) are picked
   inside each mask and tracked with pyramidal Lucas-Kanade, forwards and
   then backwards; points that do not come back to where they started are
   dropped. Where two tracks' masks overlap, one object hides the other and
   which one is in front is unknown, so corners come from the part of a mask
   no other track claims (the whole mask when that part is too small):
   otherwise an object sliding behind another is dragged along by the
   occluder's motion;
3. a similarity transform (translation, rotation, uniform scale) is fitted
   to the surviving points with RANSAC (median translation when that fails)
   and applied to the mask and box.

The previous frame's work image is kept, so each frame is converted and
shrunk once. (OpenCV's Python binding of ``calcOpticalFlowPyrLK`` takes single
images only, not pyramids from ``buildOpticalFlowPyramid``, so the pyramid
itself is rebuilt inside each LK call; at work resolution that is cheap.)

Conventions: images ``HxWx3 uint8`` BGR (or ``HxW uint8`` grey); masks ``HxW
bool`` at source resolution; boxes ``XYXY`` float pixels, exclusive far edges.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Collection, Literal, Mapping, NamedTuple, Sequence

import cv2
import numpy as np

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError
from realtime_sam.tracking.association import box_edges, mask_to_box, shift_array

__all__ = ["FLOW_PRESETS", "METHODS", "PropagationConfig", "PropagatedMask", "MaskPropagator", "WorkFrame"]


# A mask whose box is at most this many work pixels on each side, and this area, is small: when its
# corners cannot be followed (too few, or blurred by fast motion), it is followed by
# matching its patch instead (MaskPropagator._match).
_SMALL_SIDE = 48
_SMALL_AREA = 600  # work pixels: e.g. 24x24, or 40x15 (a far-off car)
# With dense flow, up to this (DIS loses objects this small that move most of their size per frame;
# the patch match is then checked against the dense flow, see Engine._propagate).
_DENSE_SMALL_SIDE = 64
_DENSE_SMALL_AREA = 2000
# Patch matching searches four box sides around the box, at least _MATCH_REACH and at
# most _MATCH_MAX_REACH work pixels ...
_MATCH_REACH = 24
_MATCH_MAX_REACH = 64
# ... and accepts a normalised cross-correlation peak of at least this.
_MATCH_SCORE = 0.65
# With dense flow the match overrules the flow where they disagree: it must also stand out,
# this much above the best match elsewhere in the window (an object that vanished, or a
# repeated texture, matches about equally well in several places).
_DENSE_MATCH_MARGIN = 0.1
# With sparse flow, a small mask another track's mask covers at most this fraction of is still
# matched, on the pixels no other mask covers. Any overlap at all used to stop the match: seed 4's
# small fast object, passing a larger one whose mask reached 4 % into it, stood still and was lost
# (CPU preset). Not with dense flow, where the match overrules the flow: there it lost more than
# it won (hard scene seed 2, N = 42: 0.732 -> 0.699).
_MATCH_COVERED = 0.25
# A track's turns and zooms too small to apply on their own frame are added up, the sum
# forgetting a tenth of itself a frame (MaskPropagator._fit). With all of it kept (1.0),
# noise added up as a random walk and was applied now and then as a false zoom.
_PENDING_MEMORY = 0.9

METHODS = ("dense", "flow", "none")  # PropagationConfig.method's values (its Literal spells them for type checkers)
FLOW_PRESETS = ("ultrafast", "fast", "medium")  # PropagationConfig.flow_preset's values


@dataclass(frozen=True)
class PropagationConfig:
    """How masks move between re-encodes.

    Attributes:
        method: ``"dense"`` (dense optical flow warps each track's low-res
            logits per pixel, :mod:`realtime_sam.tracking.dense_flow`), ``"flow"``
            (sparse optical flow moves each mask as one piece: a similarity
            transform fitted to corners tracked inside it; the keys below
            from ``max_points`` to ``min_deformation`` tune it) or ``"none"``
            (masks stay where they were decoded until the next re-encode).
        flow_preset: the dense flow's DIS preset: ``"ultrafast"``, ``"fast"``
            or ``"medium"`` (slower, follows fast small objects far better).
        fb_tolerance: dense flow that does not come back to its start
            (forward then backward) within this many low-res cells (plus 10 %
            of its length) is unreliable there: occluded or newly revealed
            pixels; such pixels move with the object's own fitted motion.
        rigid_tolerance: an object whose dense flow is within this many
            low-res cells (median) of its fitted similarity motion is taken
            as rigid and moved as one piece by that motion (per-pixel flow
            would only add noise at its edges); ``0`` always warps per pixel.
        key_flow: dense: from the second frame after a decode, each cell's
            source in the decoded frame is taken from a flow straight back to
            that frame (DIS ``ultrafast``) instead of the frame-by-frame
            composition, up to ten frames after the decode, where that flow
            is forward-backward consistent and matches the decoded frame's
            colours clearly better (the composition adds up each frame's
            flow error).
        edge_motion: dense: each frame, the pixels within about half a
            low-res cell of a visible mask's edge are given to the object or
            the background by whichever one's motion carries the previous
            frame's colours onto them better (the flow blurs the two
            motions together at the edge). Only the masks shown and written
            change; tracking goes on with the flow's own masks.
        max_side: flow runs on frames (dense: on a crop around each object)
            shrunk so their longest side is at most this many pixels (``0``:
            full resolution). Smaller is faster and
            copes with larger motion, larger follows small objects better.
        max_points: most corners tracked per mask.
        min_points: fewer surviving corners than this and the mask is
            reported not ok (left where it was).
        win_size: Lucas-Kanade window side, in work-resolution pixels.
        max_level: Lucas-Kanade pyramid levels above the base (0: none); each
            level doubles the motion the flow can follow.
        fb_max_error: a point tracked forwards then backwards must land within
            this many work-resolution pixels of where it started.
        quality_level: ``cv2.goodFeaturesToTrack`` corner quality, relative to
            the best corner in the mask.
        min_distance: minimum spacing of corners, work-resolution pixels.
        ransac_thresh: RANSAC inlier distance, work-resolution pixels.
        max_scale_change: a fitted transform scaling the mask by more than
            this factor per frame (either way) is rejected as implausible.
        min_deformation: rotation and scale are applied only when they move
            the tracked points by at least this many work-resolution pixels
            (see :meth:`MaskPropagator._fit`); otherwise the motion is taken
            as a pure translation, and a track's smaller turns and zooms are
            added up until they reach it.
        edge_margin: corners are picked at least this many work-resolution
            pixels inside the mask's outline (less when the mask is too thin).
    """

    method: Literal["dense", "flow", "none"] = "dense"
    max_side: int = 480
    flow_preset: Literal["ultrafast", "fast", "medium"] = "medium"
    fb_tolerance: float = 0.5
    rigid_tolerance: float = 0.3
    key_flow: bool = True
    edge_motion: bool = True
    max_points: int = 50
    min_points: int = 6
    win_size: int = 11
    max_level: int = 3
    fb_max_error: float = 1.0
    quality_level: float = 0.01
    min_distance: float = 3.0
    ransac_thresh: float = 1.0
    max_scale_change: float = 1.25
    edge_margin: int = 3
    min_deformation: float = 0.5

    def __post_init__(self) -> None:
        check_numbers(self, "propagation")  # by type first: "5" < 1 is a TypeError naming no key
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"propagation: {message}")

        check(self.method in METHODS, f"method must be 'dense', 'flow' or 'none', got {self.method!r}")
        check(self.flow_preset in FLOW_PRESETS, f"flow_preset must be ultrafast, fast or medium, got {self.flow_preset!r}")
        check(self.fb_tolerance > 0, f"fb_tolerance must be > 0 cells, got {self.fb_tolerance}")
        check(self.rigid_tolerance >= 0, f"rigid_tolerance must be >= 0 cells, got {self.rigid_tolerance}")
        check(self.max_side == 0 or self.max_side >= 32, f"max_side must be 0 (full size) or >= 32 pixels, got {self.max_side}")
        check(self.min_points >= 3, f"min_points must be >= 3, got {self.min_points}")
        check(self.max_points >= self.min_points, f"max_points ({self.max_points}) must be >= min_points ({self.min_points})")
        # Upper bounds where OpenCV fails (win_size, max_points: cv2.error in the inference thread)
        # or takes minutes a frame (edge_margin: one erosion per pixel of margin).
        check(5 <= self.win_size <= 255, f"win_size must be in 5..255 pixels, got {self.win_size}")
        check(self.max_points <= 10000, f"max_points must be <= 10000, got {self.max_points}")
        check(0 <= self.max_level <= 8, f"max_level must be in 0..8, got {self.max_level}")
        check(self.fb_max_error > 0, f"fb_max_error must be > 0 pixels, got {self.fb_max_error}")
        check(0.0 < self.quality_level < 1.0, f"quality_level must be in (0, 1), got {self.quality_level}")
        # cv2.goodFeaturesToTrack segfaults (the whole process) for a min_distance of about 1e10 or more.
        check(0 <= self.min_distance <= 10000, f"min_distance must be in [0, 10000] pixels, got {self.min_distance}")
        check(self.ransac_thresh > 0, f"ransac_thresh must be > 0 pixels, got {self.ransac_thresh}")
        check(self.max_scale_change > 1.0, f"max_scale_change must be > 1, got {self.max_scale_change}")
        check(self.min_deformation >= 0, f"min_deformation must be >= 0 pixels, got {self.min_deformation}")
        check(0 <= self.edge_margin <= 100, f"edge_margin must be in 0..100 pixels, got {self.edge_margin}")


class PropagatedMask(NamedTuple):
    """One track's mask moved to the current frame.

    Attributes:
        mask: ``HxW bool``; the input mask unchanged when ``ok`` is False.
        box: ``(4,)`` float64 XYXY, the mask's box (the input box when not ok).
        ok: False when the motion could not be measured (too few trackable
            points, e.g. a textureless or tiny object, or one mostly covered by
            another track's mask) or the mask left the frame; the caller
            decides what to do with such a track (the engine coasts it on its
            motion model, :meth:`~realtime_sam.tracking.tracks.Tracker.coast`).
    """

    mask: np.ndarray
    box: np.ndarray
    ok: bool


# Transforms this close to a pure translation are applied as an integer
# shift with the sub-pixel remainder carried to the next frame, so slow
# motion (< 0.5 px/frame) is not rounded away frame after frame.
_NEAR_IDENTITY = 0.005


@dataclass
class WorkFrame:
    """A frame as flow sees it (from :meth:`MaskPropagator.work`)."""

    image: np.ndarray | None  # the source frame it was made from (identity check); None once detached
    sample: np.ndarray  # a sparse copy of its pixels, to notice a reused buffer
    gray: np.ndarray  # grey, at work resolution
    scale: float  # work pixels per source pixel
    full: np.ndarray | None = None  # grey at source resolution (small objects' patch match); None once detached

    def detached(self) -> "WorkFrame":
        """The same without its references to full-size images (to keep many of them small)."""
        return WorkFrame(None, self.sample, self.gray, self.scale)


class MaskPropagator:
    """Moves masks from one frame to the next (see the module docstring).

    Not thread-safe: one propagator per video stream. It keeps the last
    frame's work image and each track's sub-pixel remainder between calls.

    Attributes:
        patched: the tracks whose patch the last :meth:`step` found again
            (small objects, followed by matching their pixels: see
            ``_step_work``); the engine moves their landed masks as they were
            followed instead of replaying them through kept frames.
    """

    def __init__(self, config: PropagationConfig | None = None) -> None:
        self.config = config if config is not None else PropagationConfig()
        self._last: WorkFrame | None = None
        self._residual: dict[int, np.ndarray] = {}
        self._pending: dict[int, np.ndarray] = {}
        # The tracks whose patch the last step found again (small objects: see _step_work).
        self.patched: frozenset[int] = frozenset()

    def reset(self) -> None:
        """Forget the cached frame and per-track state (e.g. after a seek)."""
        self._last = None
        self._residual.clear()
        self._pending.clear()

    def step(
        self,
        prev: np.ndarray,
        cur: np.ndarray,
        tracks: Mapping[int, tuple[np.ndarray, np.ndarray | tuple[float, float, float, float]]],
        partly_hidden: Collection[int] = (),
    ) -> dict[int, PropagatedMask]:
        """Move each track's mask from ``prev`` to ``cur``.

        Args:
            prev: the frame the masks belong to, ``HxWx3 uint8`` BGR or ``HxW
                uint8`` grey. Pass the same (unmodified) array that was ``cur``
                on the previous call to reuse its conversion.
            cur: the frame to move them to, same size and format.
            tracks: ``{track_id: (mask HxW bool, box XYXY)}``.
            partly_hidden: tracks partly behind another one (with dense flow, their
                patch is not matched when beside another object: see ``_step_work``).

        Returns:
            ``{track_id: PropagatedMask}`` for every input track.
        """
        cfg = self.config
        self.patched = frozenset()
        # Remainders of tracks that are gone would only leak.
        for tid in list(self._residual):
            if tid not in tracks:
                del self._residual[tid]
        for tid in list(self._pending):
            if tid not in tracks:
                del self._pending[tid]
        if prev.shape != cur.shape:
            # A resolution change (e.g. an RTSP renegotiation): nothing to compare.
            self.reset()
            return {tid: _unchanged(m, b) for tid, (m, b) in tracks.items()}
        if cfg.method == "none":
            return {tid: PropagatedMask(np.asarray(m, dtype=bool), _box(b), True) for tid, (m, b) in tracks.items()}

        prev_w = self._last if self._last is not None and self._is_cached(prev) else self._work(prev)
        cur_w = self._work(cur)
        self._last = cur_w
        if not tracks:
            return {}
        for tid, (mask, _) in tracks.items():
            if np.shape(mask) != cur.shape[:2]:
                raise ValueError(f"track {tid}: mask shape {np.shape(mask)} does not match the frame {cur.shape[:2]}")
        patched: set[int] = set()
        out = self._step_work(prev_w, cur_w, tracks, self._residual, partly_hidden, self._pending, patched)
        self.patched = frozenset(patched)
        return out

    @property
    def _fills_edges(self) -> bool:
        """Whether a mask cut by the frame's edge goes on beyond it as it moves (what comes
        into view is filled in from the edge): with sparse flow (DAVIS, CPU preset: +0.01 J
        at N = 5-30). Not as dense flow's check: a box grown so disagreed with dense flow's
        and overruled it (kite-surf N = 30 0.66 -> 0.61)."""
        return self.config.method == "flow"

    def work(self, image: np.ndarray) -> WorkFrame:
        """The grey, shrunk copy of ``image`` that flow runs on (cached: the next :meth:`step` from it reuses it).

        Keep these to :meth:`replay` masks through frames later.
        """
        if not self._is_cached(image):
            self._last = self._work(image)
        return self._last  # type: ignore[return-value]

    def replay(
        self,
        frames: Sequence[WorkFrame],
        masks: Mapping[int, tuple[np.ndarray, np.ndarray | tuple[float, float, float, float]]],
        sizes: Mapping[int, np.ndarray] | None = None,
    ) -> dict[int, PropagatedMask]:
        """Move masks of ``frames[0]`` through ``frames[1:]`` to the last one, step by step.

        For masks decoded on an earlier frame (a background encode): the
        frames since are known only as :meth:`work` copies. ``ok`` is False for
        a mask that could not be followed on some step; on such a step it keeps
        its last measured motion. The per-track state of :meth:`step` is not touched.

        ``sizes``: ``{key: (w, h)}`` the whole size of objects where known (source
        pixels). A mask cut by the frame's edge is filled in from the edge as it
        moves into view (sparse flow); over a long replay that fill would go on
        past the object's end: it is kept within that size.
        """
        out = {k: PropagatedMask(np.asarray(m, dtype=bool), _box(b), True) for k, (m, b) in masks.items()}
        if self.config.method == "none" or len(frames) < 2 or not masks:
            return out
        residual: dict[int, np.ndarray] = {}
        last_shift: dict[int, tuple[int, int]] = {}
        for prev_w, cur_w in zip(frames[:-1], frames[1:]):
            if prev_w.gray.shape != cur_w.gray.shape:
                continue  # a resolution change: nothing to compare across it
            # Small turns and zooms are not added up here (see _fit): a replay's steps span
            # several frames each, and adding them up cost DAVIS live (simulated clock)
            # car-roundabout 0.28 -> 0.23 and camel 0.28 -> 0.24.
            moved = self._step_work(prev_w, cur_w, {k: (o.mask, o.box) for k, o in out.items()}, residual)
            for k, o in moved.items():
                before = out[k]
                if o.ok:
                    c0, c1 = before.box[:2] + before.box[2:], o.box[:2] + o.box[2:]
                    last_shift[k] = (int(round((c1[0] - c0[0]) / 2.0)), int(round((c1[1] - c0[1]) / 2.0)))
                    out[k] = PropagatedMask(o.mask, o.box, before.ok)
                    size = sizes.get(k) if sizes is not None else None
                    if size is not None:
                        out[k] = _bounded(out[k], size)
                elif k in last_shift:
                    # Unmeasured on this step (e.g. behind another mask): keep its last
                    # motion, as the engine coasts a live track on its motion model.
                    dx, dy = last_shift[k]
                    shifted = shift_array(before.mask, dx, dy, False, extend=self._fills_edges)
                    box = mask_to_box(shifted)
                    out[k] = PropagatedMask(shifted, box, False) if box is not None else PropagatedMask(before.mask, before.box, False)
                else:
                    out[k] = PropagatedMask(before.mask, before.box, False)
        return out

    def _step_work(
        self,
        prev_w: WorkFrame,
        cur_w: WorkFrame,
        tracks: Mapping[int, tuple[np.ndarray, np.ndarray | tuple[float, float, float, float]]],
        residual: dict[int, np.ndarray],
        partly_hidden: Collection[int] = (),
        pending: dict[int, np.ndarray] | None = None,
        patched: set[int] | None = None,
    ) -> dict[int, PropagatedMask]:
        cfg = self.config
        s = prev_w.scale
        gray0 = prev_w.gray
        claimed = _claims(tracks)
        ids: list[int] = []
        starts: list[np.ndarray] = []
        for tid, (mask, box) in tracks.items():
            mask = np.asarray(mask, dtype=bool)
            others = None if claimed is None else claimed > mask  # covered by another track's mask
            ids.append(tid)
            starts.append(self._features(gray0, mask, _box(box), s, others))
        counts = [len(p) for p in starts]
        out: dict[int, PropagatedMask] = {}
        if sum(counts):
            p0 = np.concatenate([p for p in starts if len(p)]).astype(np.float32).reshape(-1, 1, 2)
            p1, good = self._track(prev_w.gray, cur_w.gray, p0)
            p0, p1 = p0.reshape(-1, 2), p1.reshape(-1, 2)

        offset = 0
        for tid, n in zip(ids, counts):
            mask, box = tracks[tid]
            sel = slice(offset, offset + n)
            offset += n
            transform = None
            at_edge = any(box_edges(_box(box), np.shape(mask), margin=1.0))
            own = None
            if self._small(mask, box, s) and not at_edge and not (
                # With dense flow, not a sliver beside another object either (one going behind
                # it, or coming out): its patch is mostly the other object's edge. One wholly in
                # view passing over another is matched.
                cfg.method == "dense" and tid in partly_hidden and _beside(tid, tracks)
            ):
                # Whole-frame work: only for the small masks that may be matched.
                own = _uncovered(claimed, np.asarray(mask, dtype=bool), 0.0 if cfg.method == "dense" else _MATCH_COVERED)
            if own is not None:
                # A small object (a ball, a far-off car) has few corners, and often moves
                # more than its size per frame: find its patch in the next frame. Only its
                # pixels no other mask covers are matched, and not when other masks cover
                # much of it: the patch would hold the other object too. Not at the frame's
                # edge: there it may be the sliver of a large object leaving the view, whose
                # cut-off patch matches any edge-like texture. (With dense flow, which
                # follows small objects itself, corners are only its check.)
                transform = self._match_small(prev_w, cur_w, own, _box(box))
            matched = transform
            if n:
                a, b = p0[sel][good[sel]], p1[sel][good[sel]]
                fitted = self._fit(a, b, pending, tid) if len(a) >= cfg.min_points else None
                # Corners also see turns and zooms: theirs wins when it moves the box's centre
                # where the patch went (or when there was no match).
                if fitted is not None and (transform is None or _agree(fitted, transform, _box(box), s)):
                    transform = fitted
            if matched is not None and patched is not None:
                patched.add(tid)
            if transform is None:
                residual.pop(tid, None)
                out[tid] = _unchanged(mask, box)
                continue
            out[tid] = _warp(residual, tid, np.asarray(mask, dtype=bool), _box(box), _to_source(transform, s), self._fills_edges)
        return out

    # ------------------------------------------------------------------ internals

    def _is_cached(self, image: np.ndarray) -> bool:
        last = self._last
        # Identity alone is not enough: a capture loop may decode into the same buffer.
        return last is not None and last.image is image and np.array_equal(last.sample, _sample(image))

    def _work(self, image: np.ndarray) -> WorkFrame:
        cfg = self.config
        if image.ndim not in (2, 3):
            raise ValueError(f"expected an HxWx3 BGR or HxW grey image, got shape {image.shape}")
        gray = full = _grey(image)
        if gray.dtype != np.uint8:
            raise ValueError(f"expected a uint8 image, got {gray.dtype}")
        h, w = gray.shape
        longest = max(h, w)
        scale = 1.0 if cfg.max_side == 0 or longest <= cfg.max_side else cfg.max_side / longest
        if scale < 1.0:
            size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
            # Use the exact ratio that resize applied along x (y differs by rounding only).
            scale = size[0] / w
        return WorkFrame(image, _sample(image), np.ascontiguousarray(gray), float(scale), full)

    def _features(
        self, gray: np.ndarray, mask: np.ndarray, box: np.ndarray, s: float, others: np.ndarray | None = None
    ) -> np.ndarray:
        """``(K, 2)`` float32 corners inside the mask, work-resolution ``(x, y)``.

        ``others`` (``HxW bool``, pixels other tracks' masks cover): corners
        keep an LK window's distance from them when enough of the mask is left.
        """
        cfg = self.config
        gh, gw = gray.shape
        u0, v0 = max(0, int(math.floor(box[0] * s)) - 1), max(0, int(math.floor(box[1] * s)) - 1)
        u1, v1 = min(gw, int(math.ceil(box[2] * s)) + 1), min(gh, int(math.ceil(box[3] * s)) + 1)
        if u1 - u0 < 3 or v1 - v0 < 3:
            return np.empty((0, 2), np.float32)
        work = _at_work(mask, (u0, v0, u1, v1), s).astype(np.uint8)
        if others is not None:
            taken = _at_work(others, (u0, v0, u1, v1), s).astype(np.uint8)
            if taken.any():
                # A corner whose LK window reaches into another object follows that
                # object's edge; an occluder sliding over this one would drag it along.
                r = cfg.win_size // 2 + 1
                near = cv2.dilate(taken, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * r + 1, 2 * r + 1)))
                own = work & (1 - near)
                if int(own.sum()) >= 4 * cfg.min_points:
                    work = own
                elif (work & taken).any():
                    # Mostly behind (or in front of) another tracked object: its own
                    # motion cannot be told apart here, so report it unmeasured.
                    return np.empty((0, 2), np.float32)
        area = int(work.sum())
        if area < cfg.min_points:
            return np.empty((0, 2), np.float32)
        # Corners near the outline see background inside their LK window and
        # are dragged by it (the trailing side most, which reads as a bogus
        # expansion): keep to the interior, as deep as the mask allows.
        for radius in range(cfg.edge_margin, 0, -1):
            eroded = cv2.erode(work, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1)))
            if eroded.sum() >= max(cfg.min_points, area // 4):
                work = eroded
                break
        pts = cv2.goodFeaturesToTrack(
            gray[v0:v1, u0:u1], cfg.max_points, cfg.quality_level, cfg.min_distance, mask=work, blockSize=3
        )
        if pts is None:
            return np.empty((0, 2), np.float32)
        return pts.reshape(-1, 2) + np.array([u0, v0], np.float32)

    def _small(self, mask: np.ndarray, box, s: float) -> bool:
        """Whether a mask is too small at work resolution for :meth:`_features` to find corners in it."""
        b = _box(box)
        w, h = (b[2] - b[0]) * s, (b[3] - b[1]) * s
        side, area = (_DENSE_SMALL_SIDE, _DENSE_SMALL_AREA) if self.config.method == "dense" else (_SMALL_SIDE, _SMALL_AREA)
        return 0 < w <= side and 0 < h <= side and w * h <= area

    def _match_small(
        self, prev_w: WorkFrame, cur_w: WorkFrame, mask: np.ndarray, box: np.ndarray
    ) -> np.ndarray | None:
        """:meth:`_match` on the source frames' grey copies when they are at hand (a replay's
        kept frames have only the work images), the translation returned in work pixels.

        Shrunk, a small object's patch is a few hundred pixels and may match a look-alike
        nearly as well as itself: the hard scene with seed 4's small fast object (31x27 px,
        21 px a frame) matched at 0.86 against 0.77 elsewhere at 0.75 scale (dense flow,
        refused: too close), at 0.89 against 0.74 at full size, and was lost on its first
        frame. With sparse flow (the CPU preset, 0.5 scale) its first look jumped to a
        look-alike 27 px away on its first frame.
        """
        s = prev_w.scale
        if s >= 1.0 or prev_w.full is None or cur_w.full is None:
            return self._match(prev_w.gray, cur_w.gray, mask, box, s)
        m = self._match(prev_w.full, cur_w.full, mask, box, 1.0, unit=s)
        if m is not None:
            m[:, 2] *= s
        return m

    def _match(
        self, prev: np.ndarray, cur: np.ndarray, mask: np.ndarray, box: np.ndarray, s: float, unit: float = 1.0
    ) -> np.ndarray | None:
        """The translation (2x3, work pixels) of the mask's patch from ``prev`` to ``cur``, or ``None``.

        Normalised cross-correlation of the pixels under the mask (``HxW bool``,
        source resolution; its ``box``) over a search window four box sides (from
        ``_MATCH_REACH`` to ``_MATCH_MAX_REACH`` work pixels) around it: small objects move many
        times their size between frames, far beyond what corners could follow.
        Only the mask's own pixels count (the background around a moving
        object changes). The match must be clearly good (``_MATCH_SCORE``) and
        the patch must have texture (a flat patch matches anywhere).
        """
        gh, gw = prev.shape
        u0, v0 = int(math.floor(box[0] * s)), int(math.floor(box[1] * s))
        u1, v1 = int(math.ceil(box[2] * s)), int(math.ceil(box[3] * s))
        u0, v0, u1, v1 = max(0, u0), max(0, v0), min(gw, u1), min(gh, v1)
        if u1 - u0 < 3 or v1 - v0 < 3:
            return None
        patch = prev[v0:v1, u0:u1]
        inside = _at_work(mask, (u0, v0, u1, v1), s)
        if int(inside.sum()) < 9 or float(patch[inside].std()) < 4.0:
            return None
        # The reach is in work pixels; ``unit`` is work pixels per pixel of ``prev`` (1 on work images).
        reach = int(round(max(_MATCH_REACH, min(4 * max(u1 - u0, v1 - v0) * unit, _MATCH_MAX_REACH)) / unit))
        x0, y0 = max(0, u0 - reach), max(0, v0 - reach)
        x1, y1 = min(gw, u1 + reach), min(gh, v1 + reach)
        window = cur[y0:y1, x0:x1]
        if window.shape[0] < patch.shape[0] or window.shape[1] < patch.shape[1]:
            return None
        score = cv2.matchTemplate(window, patch, cv2.TM_CCOEFF_NORMED, mask=inside.astype(np.uint8))
        # With a mask, a flat part of the window (a wall, a clear sky, a blown-out highlight) scores
        # +-inf or NaN (zero variance): no match there. Left in, its +inf was the best score,
        # and one flat spot anywhere in the window lost the object.
        score = np.nan_to_num(score, nan=-1.0, posinf=-1.0, neginf=-1.0)
        _, best, _, (bx, by) = cv2.minMaxLoc(score)
        if best < _MATCH_SCORE:
            return None
        if self.config.method == "dense":
            ph, pw = patch.shape
            rest = score.copy()
            rest[max(0, by - ph // 2):by + ph // 2 + 1, max(0, bx - pw // 2):bx + pw // 2 + 1] = -1.0
            if best - float(rest.max()) < _DENSE_MATCH_MARGIN:
                return None
        dx, dy = float(x0 + bx - u0), float(y0 + by - v0)
        return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy]])

    def _track(self, prev: np.ndarray, cur: np.ndarray, p0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward-backward LK between work images; returns new points ``(N, 1, 2)`` and a ``(N,)`` good flag."""
        cfg = self.config
        level = cfg.max_level
        win = (cfg.win_size, cfg.win_size)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01)
        p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, winSize=win, maxLevel=level, criteria=criteria)
        back, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, winSize=win, maxLevel=level, criteria=criteria)
        fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
        h, w = cur.shape[:2]
        q = p1.reshape(-1, 2)
        inside = (q[:, 0] >= 0) & (q[:, 0] <= w - 1) & (q[:, 1] >= 0) & (q[:, 1] <= h - 1)
        good = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < cfg.fb_max_error) & inside
        return p1, good

    def _fit(
        self, a: np.ndarray, b: np.ndarray, pending: dict[int, np.ndarray] | None = None, key: int = 0
    ) -> np.ndarray:
        """2x3 transform mapping points ``a`` to ``b`` (work pixels).

        A pure translation (the median displacement, robust to a minority of
        bad tracks) unless a RANSAC similarity fit says the object clearly
        turns or changes size: its rotation/scale part must move the points
        by at least ``min_deformation`` pixels at their typical distance
        from their centre. Smaller fitted deformations are mostly measurement
        noise: applied frame after frame they make a mask swell or shrink.
        With ``pending`` (``{key: 2x2}``, each track's deformation not applied
        yet), they are added up instead and applied once the sum reaches
        ``min_deformation``: a slow, steady zoom or turn is then followed,
        while noise mostly cancels out.
        """
        cfg = self.config
        t = np.median(b - a, axis=0)
        translation = np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])
        m, inliers = cv2.estimateAffinePartial2D(
            a, b, method=cv2.RANSAC, ransacReprojThreshold=cfg.ransac_thresh, maxIters=500, confidence=0.99
        )
        if m is None or inliers is None or int(inliers.sum()) < cfg.min_points:
            return translation
        scale = math.hypot(m[0, 0], m[1, 0])
        if not 1.0 / cfg.max_scale_change <= scale <= cfg.max_scale_change:
            return translation
        inl = a[inliers.reshape(-1).astype(bool)]
        radius = float(np.median(np.linalg.norm(inl - inl.mean(axis=0), axis=1)))
        # Largest displacement the linear part adds at that radius: ||A - I||_2 * r.
        deformation = float(np.linalg.norm(m[:, :2] - np.eye(2), ord=2)) * radius
        if pending is None:
            return m if deformation >= cfg.min_deformation else translation
        if deformation >= cfg.min_deformation:
            pending.pop(key, None)
            return m
        # Below the threshold, the turn or zoom is kept and added to the next frames'; once the
        # sum reaches it, it is applied (about the points' centre, which moves as the translation
        # says). A slow zoom never moves points 0.5 px in one frame, and was lost for good: the
        # hard scenes' objects grew 25 % between encodes with their masks staying put. The sum
        # forgets a tenth a frame (_PENDING_MEMORY): a steady zoom still gets there, while
        # noise, which would add up as a random walk, stays well below it.
        kept = pending.get(key, np.eye(2))
        acc = m[:, :2] @ (_PENDING_MEMORY * kept + (1.0 - _PENDING_MEMORY) * np.eye(2))
        if float(np.linalg.norm(acc - np.eye(2), ord=2)) * radius < cfg.min_deformation:
            pending[key] = acc
            return translation
        pending.pop(key, None)
        c = inl.mean(axis=0)
        return np.hstack([acc, (c + t - acc @ c)[:, None]])



def _warp(
    residual: dict[int, np.ndarray], tid: int, mask: np.ndarray, box: np.ndarray, m: np.ndarray, extend: bool = False
) -> PropagatedMask:
    """Apply the 2x3 source-pixel transform ``m``; ``residual`` carries sub-pixel remainders per track.

    ``extend``: what moves into view from beyond the frame's edge is filled in from the edge.
    """
    a = m[:, :2]
    near_identity = np.abs(a - np.eye(2)).max() < _NEAR_IDENTITY
    if near_identity:
        t = m[:, 2] + residual.get(tid, np.zeros(2))
        shift = np.round(t)
        residual[tid] = t - shift
        new = shift_array(mask, int(shift[0]), int(shift[1]), False, extend=extend)
    else:
        residual.pop(tid, None)
        extent = mask_to_box(mask)  # the caller's box may be loose; the warp must not crop the mask
        new = _warp_mask(mask, extent if extent is not None else box, m, extend)
    new_box = mask_to_box(new)
    if new_box is None:
        return _unchanged(mask, box, ok=False)
    return PropagatedMask(new, new_box, True)


def _grey(image: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8`` BGR (or already grey) -> ``HxW uint8`` grey: the work images', the small-object
    match's and dense flow's (``DenseFlowPropagator``)."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image


def _at_work(mask: np.ndarray, region: tuple[int, int, int, int], s: float) -> np.ndarray:
    """``mask`` (``HxW bool``, source pixels) sampled at the centre of each work pixel of
    ``region`` (``u0, v0, u1, v1``, work pixels; ``s`` = work / source scale), nearest."""
    u0, v0, u1, v1 = region
    rows = np.clip(((np.arange(v0, v1) + 0.5) / s).astype(np.int64), 0, mask.shape[0] - 1)
    cols = np.clip(((np.arange(u0, u1) + 0.5) / s).astype(np.int64), 0, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]


def _agree(a: np.ndarray, b: np.ndarray, box: np.ndarray, s: float) -> bool:
    """Whether two 2x3 work-pixel transforms move the centre of ``box`` (source pixels) within 2 work pixels."""
    c = np.array([(box[0] + box[2]) / 2.0 * s, (box[1] + box[3]) / 2.0 * s, 1.0])
    return float(np.linalg.norm(a @ c - b @ c)) <= 2.0


def _uncovered(claimed: np.ndarray | None, mask: np.ndarray, most: float) -> np.ndarray | None:
    """``mask`` (``HxW bool``) less what other tracks' masks cover (``claimed``: :func:`_claims`);
    ``None`` when they cover more than the fraction ``most`` of it."""
    if claimed is None:
        return mask
    shared = (claimed > 1) & mask
    n = int(np.count_nonzero(shared))
    if n == 0:
        return mask
    if n > most * max(1, int(np.count_nonzero(mask))):
        return None
    return mask & ~shared


def _meet(a: np.ndarray, b: np.ndarray, margin: float = 0.0) -> bool:
    """Whether two XYXY boxes overlap, or (``margin`` > 0) come within ``margin`` pixels of it on both axes."""
    return min(a[2], b[2]) + margin > max(a[0], b[0]) and min(a[3], b[3]) + margin > max(a[1], b[1])


def _beside(tid: int, tracks: Mapping[int, tuple[np.ndarray, object]], margin: float = 8.0) -> bool:
    """Whether track ``tid``'s box, grown ``margin`` pixels, meets another track's box."""
    a = _box(tracks[tid][1])
    return any(other != tid and _meet(a, _box(box), margin) for other, (_, box) in tracks.items())


def _claims(tracks: Mapping[int, tuple[np.ndarray, object]]) -> np.ndarray | None:
    """``HxW uint8``: how many tracks' masks cover each pixel; ``None`` when no two boxes overlap."""
    boxes = [_box(b) for _, b in tracks.values()]
    overlap = any(
        _meet(a, b)
        for i, a in enumerate(boxes)
        for b in boxes[i + 1 :]
    )
    if not overlap:
        return None
    count: np.ndarray | None = None
    for mask, _ in tracks.values():
        m = np.asarray(mask, dtype=np.uint8)
        count = m.copy() if count is None else cv2.add(count, m)
    return count


def _sample(image: np.ndarray) -> np.ndarray:
    return image[::16, ::16].copy()


def _box(box) -> np.ndarray:
    return np.asarray(box, dtype=np.float64).reshape(4)


def _unchanged(mask, box, ok: bool = False) -> PropagatedMask:
    return PropagatedMask(np.asarray(mask, dtype=bool), _box(box), ok)


def _to_source(m: np.ndarray, s: float) -> np.ndarray:
    """A 2x3 transform between work pixels -> the same motion between source pixels.

    Pixel centres map as ``p_work = s * p_src + k`` with ``k = (s - 1) / 2``.
    """
    if s == 1.0:
        return m.astype(np.float64)
    a = m[:, :2].astype(np.float64)
    k = np.full(2, (s - 1.0) / 2.0)
    t = (a @ k + m[:, 2] - k) / s
    return np.concatenate([a, t[:, None]], axis=1)


def _bounded(p: PropagatedMask, size) -> PropagatedMask:
    """A mask cut by the frame's edge and filled in from it (``extend``) kept within the object's
    whole ``size`` (``(w, h)``, source pixels): the edge's fill stops where the object ends."""
    h, w = p.mask.shape
    b = p.box
    left, top, right, bottom = box_edges(b, (h, w), margin=1.0)  # (a mask's box: the mask reaches the edge)
    keep = [0, 0, w, h]
    cut = False
    for axis, (lo, hi, at_lo, at_hi) in enumerate(((b[0], b[2], left, right), (b[1], b[3], top, bottom))):
        extent = float(size[axis])
        if hi - lo <= extent + 1.0:
            continue
        if at_hi and not at_lo:  # came in over the far edge: the object ends its size from its near side
            keep[axis], keep[axis + 2] = int(math.floor(lo)), int(math.ceil(lo + extent))
            cut = True
        elif at_lo and not at_hi:
            keep[axis], keep[axis + 2] = int(math.floor(hi - extent)), int(math.ceil(hi))
            cut = True
    if not cut:
        return p
    mask = np.zeros_like(p.mask)
    x0, y0, x1, y1 = max(0, keep[0]), max(0, keep[1]), min(w, keep[2]), min(h, keep[3])
    mask[y0:y1, x0:x1] = p.mask[y0:y1, x0:x1]
    box = mask_to_box(mask)
    return p if box is None else PropagatedMask(mask, box, p.ok)


def _warp_mask(mask: np.ndarray, box: np.ndarray, m: np.ndarray, extend: bool = False) -> np.ndarray:
    """Warp only the mask's neighbourhood: cost follows the object's size, not the frame's.

    ``extend``: what moves into view from beyond the frame's edge is filled in from the edge.
    """
    h, w = mask.shape
    x0, y0 = max(0, int(math.floor(box[0])) - 2), max(0, int(math.floor(box[1])) - 2)
    x1, y1 = min(w, int(math.ceil(box[2])) + 2), min(h, int(math.ceil(box[3])) + 2)
    out = np.zeros_like(mask)
    if x1 <= x0 or y1 <= y0:
        return out
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], dtype=np.float64)
    moved = corners @ m[:, :2].T + m[:, 2]
    dx0, dy0 = max(0, int(math.floor(moved[:, 0].min())) - 1), max(0, int(math.floor(moved[:, 1].min())) - 1)
    dx1, dy1 = min(w, int(math.ceil(moved[:, 0].max())) + 2), min(h, int(math.ceil(moved[:, 1].max())) + 2)
    if extend:
        # Where the crop holds the frame's edge, the window reaches that edge too and the
        # crop's border is replicated: a mask cut by the edge goes on beyond it. (Elsewhere
        # the crop's border is the zero margin around the mask.)
        dx0, dy0 = (0 if x0 == 0 else dx0), (0 if y0 == 0 else dy0)
        dx1, dy1 = (w if x1 == w else dx1), (h if y1 == h else dy1)
    if dx1 <= dx0 or dy1 <= dy0:
        return out  # moved entirely off the frame
    # Source crop at (x0, y0), destination window at (dx0, dy0).
    local = m.astype(np.float64).copy()
    local[:, 2] = m[:, :2] @ np.array([x0, y0], dtype=np.float64) + m[:, 2] - np.array([dx0, dy0], dtype=np.float64)
    crop = mask[y0:y1, x0:x1].astype(np.uint8)
    warped = cv2.warpAffine(
        crop, local, (dx1 - dx0, dy1 - dy0), flags=cv2.INTER_NEAREST,
        borderMode=cv2.BORDER_REPLICATE if extend else cv2.BORDER_CONSTANT,
    )
    out[dy0:dy1, dx0:dx1] = warped.astype(bool)
    return out
