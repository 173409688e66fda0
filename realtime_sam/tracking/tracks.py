"""Track lifecycle: link per-frame masks to persistent ids.

The engine drives a :class:`Tracker` once per frame:

1. :meth:`Tracker.predict` advances every track's constant-velocity motion
   model to the new frame;
2. between re-encodes, :meth:`Tracker.apply_propagation` moves a track's
   mask and box by optical flow (neither a hit nor a miss);
3. on a re-encode frame the engine prompts the decoder with
   :meth:`Tracker.prompts`, wraps each decoded mask in a :class:`Detection`
   and calls :meth:`Tracker.update`, which matches detections (and, in auto
   mode, discovery candidates) to tracks and runs the lifecycle;
4. :meth:`Tracker.results` reports the tracks that are alive.

Lifecycle (see :class:`~realtime_sam.types.TrackState`): user prompts start
``CONFIRMED`` tracks, discovery candidates start ``TENTATIVE`` ones, confirmed
after ``min_hits`` consecutive hits and removed at their first miss. A miss
turns a ``CONFIRMED`` track ``LOST``; a lost track keeps being prompted at its
motion-predicted box and comes back with the same id when a good mask matches
it, or is ``REMOVED`` after ``max_lost_s`` seconds (by the frames' timestamps), or
after ``max_lost_frames`` frames where that is set instead. Ids come from an
:class:`IdCounter` and are never reused.

Conventions: masks are ``HxW bool`` at source resolution; boxes ``XYXY``
float pixels (exclusive far edges, see :mod:`realtime_sam.tracking.association`);
``logits`` are SAM's ``256x256 float32`` low-resolution mask logits, which
cover the source image resized so its longest side is 1024 and padded
bottom/right (one low-res cell = ``max(H, W) / 256`` source pixels).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterable, Mapping, NamedTuple, Sequence

import cv2
import numpy as np

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError
from realtime_sam.tracking.association import (
    box_edges,
    box_iou_matrix,
    linear_assignment,
    mask_iou_matrix,
    mask_to_box,
    shift_array,
    track_under,
)
from realtime_sam.tracking.appearance import appearance_of, similarity
from realtime_sam.tracking.dense_flow import move_logits
from realtime_sam.types import Box, TrackResult, TrackState

__all__ = [
    "IdCounter",
    "TrackerConfig",
    "Detection",
    "BoxKalmanFilter",
    "Track",
    "TrackPrompt",
    "Tracker",
    "appearance_of",
    "similarity",
    "plausible_mask",
]

_LOWRES = 256  # side of SAM's low-resolution mask logits
# A lost object's candidate beyond where it most likely is (Tracker.search_region's
# near band) must look this much more like it than ``search_appearance`` asks.
_FAR_LOOK = 0.1
# Frames lost after which a lost track takes a mask at its own prompt only when it looks as
# alike as a searched one must (``search_appearance``): hard scene N = 15 0.61 -> 0.67 (CPU
# preset), where from the start that cost DAVIS breakdance 0.30 -> 0.25 (a dancer's looks change).
_LONG_LOST = 15
# The frame rate the tracker's clock counts frames at where they bring no time that goes forward
# (300 frames for 10 s, the frame limit ``max_lost_s`` replaced).
_NOMINAL_FPS = 30.0
CHI2_GATE_4DOF = 9.4877
"""95th percentile of the chi-square distribution with 4 degrees of freedom."""


class IdCounter:
    """Hands out track ids ``1, 2, 3, ...``; an id is never handed out twice.

    Passed to a :class:`Tracker` (rather than being a global) so that two
    engines never share ids by accident and tests can start from a known id.
    Thread-safe: the engine reserves ids for new objects on the caller's
    thread while the tracker takes ids on the inference thread.
    """

    def __init__(self, start: int = 1) -> None:
        if start < 1:
            raise ValueError(f"track ids start at 1 or more, got {start}")
        self._next = int(start)
        self._lock = threading.Lock()

    def next(self) -> int:
        """The next unused id."""
        with self._lock:
            value = self._next
            self._next += 1
        return value

    @property
    def peek(self) -> int:
        """The id :meth:`next` will return (not consumed)."""
        return self._next


@dataclass(frozen=True)
class TrackerConfig:
    """Association gate and lifecycle rules.

    Attributes:
        match_iou_thresh: minimum IoU between a track and a mask for them to
            be linked (mask IoU against the track's current mask, or box IoU
            against its motion-predicted box when it has no mask); also the
            overlap below which a discovery candidate counts as a new object.
        min_hits: consecutive good frames that turn a ``TENTATIVE`` track
            (started by discovery) into a ``CONFIRMED`` one.
        max_lost_s: seconds a ``LOST`` track is kept (and prompted at its
            predicted box, slid inside the frame) for re-acquisition before it
            is ``REMOVED``, by the frames' timestamps (a camera at 60 fps and a
            stream at 5 fps keep it as long); where the timestamps stand still
            or go back, or none is given, frames count at 30 a second.
        max_lost_frames: keep a ``LOST`` track this many frames instead of
            ``max_lost_s`` (``None``, the default: by ``max_lost_s``; the limit
            before ``max_lost_s`` came, so an older config keeps its meaning).
        min_score: decoder predicted IoU below which a mask counts as a miss.
        min_area_frac: masks covering less than this fraction of the frame
            are implausible (a miss).
        max_area_frac: masks covering more than this fraction of the frame
            are implausible (a miss), e.g. the decoder grabbing the whole scene.
        max_area_change: a mask whose area differs from the track's reference
            area by more than this factor (either way) is implausible (a miss).
        duplicate_iou: when two tracks' new masks overlap more than this, the
            weaker one (lower ``score * IoU with its own track``) counts as a
            miss, so two ids never follow one object.
        max_new_overlap: a discovery candidate with more than this fraction of
            its area already covered by live tracks' masks does not start a
            track (it is a part of a tracked object).
        min_appearance: a ``LOST`` track takes a mask back only when their
            appearance descriptors (colour histograms, see
            :attr:`Detection.appearance`) are at least this similar (histogram
            intersection, ``0..1``); masks or tracks without one are not checked.
            Lost for more than 15 frames, it takes one only at ``search_appearance``.
        search_candidates: at each encode, a ``LOST`` track is also looked for
            anywhere in the frame: this many boxes where the frame looks most
            like it (:func:`~realtime_sam.tracking.appearance.search_boxes`) are
            decoded too (0 turns the search off).
        search_appearance: a mask found by that search is taken back wherever
            it is when it looks at least this much like the track (and covers
            no live track); stricter than ``min_appearance``, which applies
            where the track was expected (in its first 15 frames lost).
    """

    match_iou_thresh: float = 0.3
    min_hits: int = 3
    max_lost_s: float = 10.0
    max_lost_frames: int | None = None
    min_score: float = 0.5
    min_area_frac: float = 0.0002
    max_area_frac: float = 0.9
    max_area_change: float = 4.0
    duplicate_iou: float = 0.85
    max_new_overlap: float = 0.5
    min_appearance: float = 0.5
    search_candidates: int = 2
    search_appearance: float = 0.65

    def __post_init__(self) -> None:
        check_numbers(self, "tracker")  # by type first: "5" < 1 is a TypeError naming no key
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"tracker: {message}")

        check(0.0 < self.match_iou_thresh <= 1.0, f"match_iou_thresh must be in (0, 1], got {self.match_iou_thresh}")
        check(int(self.min_hits) == self.min_hits and self.min_hits >= 1, f"min_hits must be an integer >= 1, got {self.min_hits}")
        check(
            isinstance(self.max_lost_s, (int, float)) and not isinstance(self.max_lost_s, bool)
            and math.isfinite(self.max_lost_s) and self.max_lost_s >= 0,
            f"max_lost_s must be a number of seconds >= 0, got {self.max_lost_s}",
        )
        check(
            self.max_lost_frames is None or (int(self.max_lost_frames) == self.max_lost_frames and self.max_lost_frames >= 0),
            f"max_lost_frames must be an integer >= 0 or null (no limit in frames), got {self.max_lost_frames}",
        )
        check(0.0 <= self.min_score <= 1.0, f"min_score must be in [0, 1], got {self.min_score}")
        check(
            0.0 <= self.min_area_frac < self.max_area_frac <= 1.0,
            "min_area_frac and max_area_frac must satisfy 0 <= min_area_frac < max_area_frac <= 1, "
            f"got {self.min_area_frac} and {self.max_area_frac}",
        )
        check(self.max_area_change >= 1.0, f"max_area_change must be >= 1, got {self.max_area_change}")
        check(0.0 < self.duplicate_iou <= 1.0, f"duplicate_iou must be in (0, 1], got {self.duplicate_iou}")
        check(0.0 < self.max_new_overlap <= 1.0, f"max_new_overlap must be in (0, 1], got {self.max_new_overlap}")
        check(0.0 <= self.min_appearance <= 1.0, f"min_appearance must be in [0, 1], got {self.min_appearance}")
        check(self.search_candidates >= 0, f"search_candidates must be >= 0, got {self.search_candidates}")
        check(0.0 <= self.search_appearance <= 1.0, f"search_appearance must be in [0, 1], got {self.search_appearance}")


@dataclass(frozen=True, eq=False)
class Detection:
    """One decoded mask offered to the tracker.

    Attributes:
        mask: ``HxW bool`` at source resolution.
        box: ``XYXY`` float pixels, normally the mask's bounding box.
        score: the decoder's predicted IoU in ``[0, 1]``.
        logits: the decoder's ``256x256 float32`` low-res logits for this mask
            (fed back as the next mask prompt), or ``None``.
        source_track: id of the track whose prompt produced this mask;
            ``None`` for discovery candidates and new user prompts.
        label: optional user label for a new track.
        appearance: a normalised descriptor of the pixels under the mask
            (the engine's colour histogram, :func:`appearance_of`), or ``None``.
        searched: decoded at a box the appearance search chose for its
            ``LOST`` source track (anywhere in the frame): the track takes it
            on looks alone (``TrackerConfig.search_appearance``).
        found_at: for a searched mask decoded on an earlier frame (a
            background encode) and carried to this one: its ``XYXY`` box
            there, where it is judged against the track's search region (it
            has moved on since); ``None``: judged where it is.
        matched_then: decoded on an earlier frame (a background encode) from
            its source track's prompt, and its box there overlapped the
            prompt's by at least ``match_iou_thresh``: it is what the track
            followed then, carried to this frame, however far the track's
            own mask drifted meanwhile. A visible track may take it where
            the two no longer overlap, and whatever its area against the
            track's (its size was checked against the prompt's box); it
            must still look like the track.
    """

    mask: np.ndarray
    box: Box
    score: float
    logits: np.ndarray | None = None
    source_track: int | None = None
    label: str | None = None
    appearance: np.ndarray | None = None
    searched: bool = False
    found_at: Box | None = None
    matched_then: bool = False

    def __post_init__(self) -> None:
        mask = np.asarray(self.mask)
        if mask.ndim != 2:
            raise ValueError(f"Detection.mask must be HxW, got shape {mask.shape}")
        box = np.asarray(self.box, dtype=np.float64).reshape(-1)
        if box.size != 4:
            raise ValueError(f"Detection.box must be 4 numbers (XYXY), got {self.box!r}")
        if self.logits is not None and np.ndim(self.logits) != 2:
            raise ValueError(f"Detection.logits must be a 2-D array, got shape {np.shape(self.logits)}")
        # Frozen: normalise through object.__setattr__ so consumers can rely on
        # dtypes without copying again.
        object.__setattr__(self, "mask", mask.astype(bool, copy=False))
        object.__setattr__(self, "box", tuple(float(v) for v in box))
        object.__setattr__(self, "score", float(self.score))


class BoxKalmanFilter:
    """Constant-velocity Kalman filter on a box's centre and size.

    State ``[cx, cy, w, h, vcx, vcy, vw, vh]`` (pixels, pixels/frame),
    measurement ``[cx, cy, w, h]``. The filter holds only the model's
    constants; each track owns its mean ``(8,)`` and covariance ``(8, 8)``.
    Noise standard deviations scale with the box size, so the same settings
    suit small and large objects.

    Args:
        std_position: position noise as a fraction of the box size per frame.
        std_velocity: velocity noise as a fraction of the box size per frame.
        std_measurement: measurement noise as a fraction of the box size.
        std_initial_velocity: a new track's velocity uncertainty, as a
            fraction of its size per frame: a new object may move a good part
            of its own size per frame, and a wide prior lets the first
            measurements set the velocity.
    """

    def __init__(
        self,
        *,
        std_position: float = 1.0 / 20.0,
        std_velocity: float = 1.0 / 160.0,
        std_measurement: float = 1.0 / 20.0,
        std_initial_velocity: float = 0.5,
    ) -> None:
        self.std_position = std_position
        self.std_velocity = std_velocity
        self.std_measurement = std_measurement
        self.std_initial_velocity = std_initial_velocity
        self._h = np.eye(4, 8)

    @staticmethod
    def _scale(size: np.ndarray) -> np.ndarray:
        """``[w, h, w, h]`` per box, never below one pixel. ``size``: ``(..., 2)``."""
        s = np.maximum(size, 1.0)
        return np.concatenate([s, s], axis=-1)

    def initiate(self, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``(8,)`` and covariance ``(8, 8)`` for a new track at ``box`` (XYXY)."""
        z = _xyxy_to_cxcywh(np.asarray(box, dtype=np.float64))
        mean = np.concatenate([z, np.zeros(4)])
        s = self._scale(z[2:4])
        std = np.concatenate([2.0 * self.std_position * s, self.std_initial_velocity * s])
        return mean, np.diag(std**2)

    def predict(self, means: np.ndarray, covs: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance ``N`` tracks by ``steps`` frames each (vectorised).

        Args:
            means: ``(N, 8)``; covs: ``(N, 8, 8)``; steps: ``(N,)`` frames (>= 0).
        """
        steps = np.asarray(steps, dtype=np.float64)
        n = means.shape[0]
        f = np.tile(np.eye(8), (n, 1, 1))
        f[:, np.arange(4), np.arange(4) + 4] = steps[:, None]
        s = self._scale(means[:, 2:4])
        std = np.concatenate([self.std_position * s, self.std_velocity * s], axis=1)
        q = np.zeros((n, 8, 8))
        q[:, np.arange(8), np.arange(8)] = std**2 * steps[:, None]
        new_means = np.einsum("nij,nj->ni", f, means)
        new_covs = f @ covs @ f.transpose(0, 2, 1) + q
        # A shrinking box must not invert: keep at least one pixel.
        new_means[:, 2:4] = np.maximum(new_means[:, 2:4], 1.0)
        return new_means, new_covs

    def gating_distance(self, mean: np.ndarray, cov: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of ``(M, 4)`` XYXY boxes from one track's prediction.

        Compare with :data:`CHI2_GATE_4DOF` (95 % of a 4-dof chi-square): the
        gate widens as the track's uncertainty grows while it coasts.
        """
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        z = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0, boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], axis=1)
        r = np.diag((self.std_measurement * self._scale(mean[2:4])) ** 2)
        s = self._h @ cov @ self._h.T + r
        d = z - mean[:4]
        return np.einsum("mi,mi->m", d, np.linalg.solve(s, d.T).T)

    def update(
        self, mean: np.ndarray, cov: np.ndarray, box: np.ndarray, noise_scale: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """Correct one track with a measured ``box`` (XYXY).

        ``noise_scale`` multiplies the measurement standard deviation: callers
        raise it for measurements they trust less (a partly hidden object).
        """
        z = _xyxy_to_cxcywh(np.asarray(box, dtype=np.float64))
        r = np.diag((noise_scale * self.std_measurement * self._scale(mean[2:4])) ** 2)
        h = self._h
        innovation_cov = h @ cov @ h.T + r
        gain = np.linalg.solve(innovation_cov, h @ cov).T  # cov H^T S^-1, S symmetric
        new_mean = mean + gain @ (z - h @ mean)
        new_cov = cov - gain @ innovation_cov @ gain.T
        new_mean[2:4] = np.maximum(new_mean[2:4], 1.0)
        return new_mean, new_cov


def _xyxy_to_cxcywh(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0, box[2] - box[0], box[3] - box[1]])


def _cxcywh_to_xyxy(z: np.ndarray) -> np.ndarray:
    return np.array([z[0] - z[2] / 2.0, z[1] - z[3] / 2.0, z[0] + z[2] / 2.0, z[1] + z[3] / 2.0])


class Track:
    """One tracked object. Internal and mutable: only its :class:`Tracker` changes it.

    Attributes:
        id: the track id (positive, never reused).
        state: lifecycle state.
        mask: ``HxW bool`` last mask (decoded or propagated); ``None`` while lost.
        box: ``XYXY`` box of ``mask`` (last known box while lost).
        score: last decoder predicted IoU.
        logits: last ``256x256`` low-res logits, or ``None``.
        logits_box: the box at which ``logits`` were decoded.
        hits: frames with a good, matched mask.
        misses: consecutive frames without one.
        lost_since: frame index at which it became ``LOST`` (``None`` otherwise).
        lost_since_s: the tracker's clock (seconds, :meth:`Tracker.predict`) when it
            became ``LOST``, or ``None`` (not lost).
        start_frame: frame index at which it was created.
        last_update: frame index of the last hit.
        mask_frame: frame index the current ``mask`` belongs to.
        ref_area: typical mask area (pixels), the reference for plausibility.
        mean, cov: motion model state (see :class:`BoxKalmanFilter`).
        pred_frame: frame index ``mean`` refers to.
        label: optional user label.
        appearance: running mean of its masks' appearance descriptors (kept while lost).
        full_size: ``(w, h)`` of its last decoded box not cut by the frame's edge
            nor by an object in front (the size it is looked for at while lost),
            or ``None``.
        full_area: the mask area (pixels) of that decode, or ``0``.
        decoded_box: ``XYXY`` box of its last decoded mask (not moved since), or ``None``.
        lost_box, lost_speed: while lost, its last box and speed (pixels per
            frame) when it was lost: where the search may find it (:meth:`Tracker.search_region`).
        looked_at: while lost, the frame of the last update that did not find it.
    """

    __slots__ = (
        "id", "state", "mask", "box", "score", "logits", "logits_box", "hits", "misses", "lost_since", "lost_since_s",
        "start_frame", "last_update", "mask_frame", "ref_area", "mean", "cov", "pred_frame", "label",
        "appearance", "full_size", "full_area", "decoded_box", "lost_box", "lost_speed", "looked_at",
    )

    def __init__(self, track_id: int, state: TrackState, frame_index: int, mean: np.ndarray, cov: np.ndarray) -> None:
        self.id = track_id
        self.state = state
        self.mask: np.ndarray | None = None
        self.box = np.zeros(4)
        self.score = 0.0
        self.logits: np.ndarray | None = None
        self.logits_box: np.ndarray | None = None
        self.hits = 0
        self.misses = 0
        self.lost_since: int | None = None
        self.lost_since_s: float | None = None
        self.start_frame = frame_index
        self.last_update = frame_index
        self.mask_frame = frame_index
        self.ref_area = 0.0
        self.mean = mean
        self.cov = cov
        self.pred_frame = frame_index
        self.lost_box: np.ndarray | None = None
        self.lost_speed = 0.0
        self.looked_at: int | None = None
        self.label: str | None = None
        self.appearance: np.ndarray | None = None
        self.full_size: np.ndarray | None = None
        self.full_area = 0.0
        self.decoded_box: np.ndarray | None = None

    @property
    def age(self) -> int:
        """Frames since the track was created."""
        return self.pred_frame - self.start_frame

    @property
    def predicted_box(self) -> np.ndarray:
        """``(4,)`` XYXY box from the motion model at frame ``pred_frame``."""
        return _cxcywh_to_xyxy(self.mean[:4])

    def __repr__(self) -> str:
        return f"Track(id={self.id}, state={self.state.value}, hits={self.hits}, misses={self.misses})"


class TrackPrompt(NamedTuple):
    """What the engine sends to the decoder for one track.

    Attributes:
        track_id: the track.
        box: ``(4,)`` float64 XYXY source pixels, clipped to the frame.
        logits: ``256x256 float32`` mask prompt aligned to the track's current
            position, or ``None`` (new or lost tracks).
    """

    track_id: int
    box: np.ndarray
    logits: np.ndarray | None


def plausible_mask(
    config: TrackerConfig, ref_area: float, looks: np.ndarray | None, area: float, appearance: np.ndarray | None,
    need: float | None = None,
) -> bool:
    """Whether a track of reference area ``ref_area`` (pixels; 0: none yet) and colour
    descriptor ``looks`` may take a mask of ``area`` pixels that looks like ``appearance``:
    within ``config.max_area_change`` of the reference area either way, and at least
    ``need`` (default ``config.min_appearance``) alike. What a track takes must look like
    what it followed, in every step: not the background a prompt decodes where its
    object just left the view, say."""
    if ref_area > 0 and not (1.0 / config.max_area_change <= area / ref_area <= config.max_area_change):
        return False
    if looks is None:
        return True
    return similarity(looks, appearance) >= (config.min_appearance if need is None else need)


class Tracker:
    """Links decoded masks to persistent track ids (see the module docstring).

    Args:
        config: association and lifecycle rules.
        ids: id source; a fresh :class:`IdCounter` when ``None``.
        motion: motion model; a default :class:`BoxKalmanFilter` when ``None``.
    """

    def __init__(self, config: TrackerConfig | None = None, ids: IdCounter | None = None, motion: BoxKalmanFilter | None = None) -> None:
        self.config = config if config is not None else TrackerConfig()
        self._ids = ids if ids is not None else IdCounter()
        self._kf = motion if motion is not None else BoxKalmanFilter()
        self._tracks: dict[int, Track] = {}
        self._shape: tuple[int, int] | None = None
        self._empty: np.ndarray | None = None
        self._frame = -1
        self._now: float | None = None  # the tracker's clock (seconds, never going back), from the first frame
        self._clock_offset = 0.0  # added to a timestamp after the source's clock stood still or went back

    # ------------------------------------------------------------------ queries

    @property
    def frame(self) -> int:
        """The newest frame index the tracker has seen (-1 before the first)."""
        return self._frame

    def tracks(self) -> list[Track]:
        """Alive tracks (not removed), ordered by id. Do not modify them."""
        return [self._tracks[k] for k in sorted(self._tracks)]

    def get(self, track_id: int) -> Track | None:
        """The alive track with this id, or ``None``."""
        return self._tracks.get(track_id)

    def __len__(self) -> int:
        return len(self._tracks)

    def prompts(self) -> list[TrackPrompt]:
        """Prompts for every live track, ordered by id.

        ``CONFIRMED`` and ``TENTATIVE`` tracks are prompted at their current
        box (propagated to this frame, else motion-predicted) with their last
        logits shifted to that position; ``LOST`` tracks at their predicted box
        with no mask prompt (their old mask would pull the decoder to where the
        object was). Tracks whose box lies entirely outside the frame are left
        out.
        """
        out: list[TrackPrompt] = []
        for t in self.tracks():
            if t.state == TrackState.LOST:
                # Where it is predicted, slid back inside the frame: an object that left
                # is looked for at the edge it left by, where it most likely comes back.
                box, logits = self._inside(t.predicted_box), None
            else:
                box = t.box.copy() if t.mask_frame >= t.pred_frame else t.predicted_box
                logits = self._aligned_logits(t, box)
            box = self._clip(box)
            if box[2] - box[0] < 1.0 or box[3] - box[1] < 1.0:
                continue
            out.append(TrackPrompt(t.id, box, logits))
        return out

    def track_at(self, x: float, y: float) -> int | None:
        """The track under pixel ``(x, y)``, or ``None``: :func:`~realtime_sam.tracking.association.track_under`
        on what :meth:`results` shows (lost tracks: no mask, their predicted box)."""
        return track_under(x, y, (
            (t.id, None if t.state == TrackState.LOST else t.mask, self._display_box(t)) for t in self.tracks()
        ))

    def results(self, frame_index: int) -> tuple[TrackResult, ...]:
        """Every alive track as a :class:`TrackResult`, ordered by id.

        ``LOST`` tracks get an all-False mask, their predicted box and score 0;
        the others their current (decoded or propagated) mask, its box and the
        last decoder score.
        """
        out = []
        for t in self.tracks():
            if t.state == TrackState.LOST or t.mask is None:
                mask, score = self._empty_mask(), 0.0
            else:
                mask, score = t.mask, t.score
            box = self._display_box(t)
            out.append(TrackResult(t.id, mask, tuple(float(v) for v in box), float(score), t.state, t.label))
        return tuple(out)

    # ------------------------------------------------------------------ edits

    def reserve_id(self) -> int:
        """An id for a track that :meth:`add` will start later (``add(..., track_id=...)``); never handed out again."""
        return self._ids.next()

    def add(self, detection: Detection, frame_index: int, track_id: int | None = None) -> int:
        """Start a ``CONFIRMED`` track from a user prompt's mask; returns its id.

        ``track_id``: an id from :meth:`reserve_id` (default: the next one).
        No quality checks: the user asked for this object. (A track started
        from an empty mask has nothing to follow and goes ``LOST`` at its
        next update.)
        """
        if track_id is not None and track_id in self._tracks:
            raise ValueError(f"track {track_id} exists already; reserve ids with reserve_id()")
        self._check_shape(detection.mask)
        box = mask_to_box(detection.mask)
        if box is None:
            box = np.asarray(detection.box, dtype=np.float64)
        t = self._new_track(TrackState.CONFIRMED, frame_index, box, track_id)
        self._hit(t, detection, box, frame_index)
        t.label = detection.label
        return t.id

    def remove(self, track_id: int) -> bool:
        """Remove a track for good; returns False when no such alive track."""
        return self._tracks.pop(track_id, None) is not None

    def clear(self) -> None:
        """Remove every track (ids keep counting up) and forget the frame size."""
        self._tracks.clear()
        self._shape = None
        self._empty = None

    def restart(self) -> None:
        """Forget the newest frame index and time seen: a new source numbers its frames from 0 again."""
        self._frame = -1
        self._now = None
        self._clock_offset = 0.0

    # ------------------------------------------------------------------ per frame

    def predict(self, frame_index: int, timestamp: float | None = None) -> None:
        """Advance every track's motion model to ``frame_index`` and expire old lost tracks.

        Call once per frame, before propagation or update. Calling it again
        for the same frame does nothing. ``timestamp``: the frame's time in seconds
        (:attr:`Frame.timestamp <realtime_sam.types.Frame.timestamp>`), which the tracker's
        clock, and so ``max_lost_s``, follows; without one, frames count at 30 a second.
        """
        if frame_index > self._frame:
            stamp = None if timestamp is None else float(timestamp) + self._clock_offset
            if self._now is None:
                self._now = 0.0 if stamp is None else stamp
            elif stamp is not None and stamp > self._now:
                self._now = stamp
            else:
                # No timestamp, one that stands still (frames given one time) or one that goes back
                # (a source that restarted its times): these frames count at 30 a second, and the
                # clock goes on from there with the source's, so no lost track is kept for ever
                # nor ended early.
                step = (frame_index - max(self._frame, 0)) / _NOMINAL_FPS
                if stamp is not None:
                    self._clock_offset += self._now + step - stamp
                self._now += step
        self._frame = max(self._frame, frame_index)
        todo = [t for t in self._tracks.values() if t.pred_frame < frame_index]
        if todo:
            means = np.stack([t.mean for t in todo])
            covs = np.stack([t.cov for t in todo])
            steps = np.array([frame_index - t.pred_frame for t in todo], dtype=np.float64)
            means, covs = self._kf.predict(means, covs, steps)
            for t, m, c in zip(todo, means, covs):
                t.mean, t.cov, t.pred_frame = m, c, frame_index
                if t.state == TrackState.LOST and self._shape is not None:
                    box = t.predicted_box
                    h, w = self._shape
                    if box[2] <= 0 or box[0] >= w or box[3] <= 0 or box[1] >= h:
                        # Left the frame: wait at the edge it left by (where it most likely returns).
                        inside = self._inside(box)
                        t.mean = t.mean.copy()
                        t.mean[0:2] = (inside[0] + inside[2]) / 2.0, (inside[1] + inside[3]) / 2.0
                        t.mean[4:6] = 0.0
        self._expire(frame_index)

    def apply_propagation(
        self,
        track_id: int,
        mask: np.ndarray,
        box: np.ndarray | Box,
        frame_index: int | None = None,
        logits: np.ndarray | None = None,
        measured: bool = True,
    ) -> bool:
        """Replace a live track's mask and box with ones propagated to the current frame.

        Neither a hit nor a miss; the motion model is corrected with the new
        box. ``frame_index`` defaults to the frame of the last :meth:`predict`.
        ``logits`` (``256x256``, the soft mask moved along with it, e.g. by
        dense flow) become the track's mask prompt as they are; without them
        the last decoded logits are shifted to the new box when prompted.
        ``measured=False`` (the box is that of a partly hidden object) leaves
        the motion model as it is: a shrinking visible part would drag it.
        Returns False (and changes nothing but the logits) for unknown or
        ``LOST`` tracks and for an empty mask (e.g. an object wholly hidden:
        its moved logits are kept, the caller coasts its mask).
        """
        t = self._tracks.get(track_id)
        if t is None or t.state == TrackState.LOST:
            return False
        mask = np.asarray(mask).astype(bool, copy=False)
        self._check_shape(mask)
        if logits is not None:
            t.logits = np.asarray(logits, dtype=np.float32)
            t.logits_box = None  # already where the object is: prompted as they are
        if not mask.any():
            return False
        frame = t.pred_frame if frame_index is None else int(frame_index)
        if frame > t.pred_frame:
            self.predict(frame)
        b = np.asarray(box, dtype=np.float64).reshape(4)
        before = float(np.count_nonzero(t.mask)) if t.mask is not None else 0.0
        t.mask, t.box, t.mask_frame = mask, b.copy(), frame
        if measured and b[2] - b[0] >= 1.0 and b[3] - b[1] >= 1.0:
            t.mean, t.cov = self._kf.update(t.mean, t.cov, b)
            area = float(np.count_nonzero(mask))
            if t.ref_area > 0 and area >= 0.75 * before:
                # The object's size as followed since the last decode: the next decoded
                # mask is judged against it (real objects may double or halve in size
                # between encodes). A sudden shrink is more likely an occluder: not followed.
                t.ref_area = 0.5 * t.ref_area + 0.5 * area
        return True

    def coast(self, track_id: int, frame_index: int | None = None) -> bool:
        """Move a live track's mask and box to where its motion model predicts them.

        For tracks whose motion could not be measured this frame (e.g. mostly
        hidden behind another object): the mask is shifted by whole pixels so
        its box centre follows the predicted one; the motion model itself is
        not corrected (nothing was observed). ``frame_index`` defaults to the
        frame of the last :meth:`predict`. Returns False (and changes nothing)
        for unknown or ``LOST`` tracks, tracks without a mask, and when the
        shifted mask would leave the frame.
        """
        t = self._tracks.get(track_id)
        if t is None or t.state == TrackState.LOST or t.mask is None:
            return False
        frame = t.pred_frame if frame_index is None else int(frame_index)
        if frame > t.pred_frame:
            self.predict(frame)
        # Absolute, not per-frame: a slow object still moves once the prediction is a pixel ahead.
        dx = int(round(float(t.mean[0]) - (t.box[0] + t.box[2]) / 2.0))
        dy = int(round(float(t.mean[1]) - (t.box[1] + t.box[3]) / 2.0))
        if dx == 0 and dy == 0:
            t.mask_frame = frame
            return True
        moved = shift_array(t.mask, dx, dy, False, extend=True)
        box = mask_to_box(moved)  # the mask's own box: part of it may have left the frame
        if box is None:
            return False
        t.mask = moved
        t.box = np.asarray(box, dtype=np.float64)
        t.mask_frame = frame
        return True

    def update(
        self,
        detections: Sequence[Detection],
        frame_index: int,
        candidates: Iterable[Detection] = (),
        whole: Mapping[int, np.ndarray] | None = None,
    ) -> None:
        """Match this frame's decoded masks to tracks and run the lifecycle.

        Args:
            detections: masks decoded from :meth:`prompts`; ``source_track``
                names the prompting track.
            frame_index: the current frame.
            candidates: auto-mode discovery masks (``source_track=None``);
                unmatched ones that overlap no live track start ``TENTATIVE``
                tracks.
            whole: ``{track id: HxW bool}`` the whole (amodal) mask of tracks
                partly hidden behind others, where known (dense flow): a
                decoded mask that overlaps one more than a track's own mask
                (and more than ``match_iou_thresh``) is not that track's to
                take, even where the track hides most of the other object.

        A detection keeps its source track when it is good (score, area,
        area change) and overlaps the track's current position at least
        ``match_iou_thresh`` (mask IoU against the track's mask moved to its
        predicted position; box IoU against the predicted box for lost
        tracks), or, for a visible track, when it is ``matched_then`` (it
        matched the track's prompt on an encode's frame: taken wherever the
        track's mask now is, its area not judged against the track's).
        Remaining tracks and good masks are matched by the Hungarian
        algorithm on ``1 - IoU`` with the same gate, then tracks still
        unmatched by the Hungarian algorithm on the motion model's
        Mahalanobis distance (95 % gate), which catches fast motion and
        lost tracks that drifted from their object. Among the matched masks,
        near-duplicates are resolved in favour of the stronger track.
        Unmatched tracks get a miss.
        """
        cfg = self.config
        self.predict(frame_index)
        dets = list(detections)
        cands = list(candidates)
        items = dets + cands
        n_det = len(dets)
        for d in items:
            self._check_shape(d.mask)
        live = self.tracks()
        if not items:
            for t in live:
                self._miss(t, frame_index)
            return

        h, w = self._shape  # type: ignore[misc]  # set by _check_shape
        masks = [d.mask for d in items]  # not stacked: full-resolution copies are costly
        areas = np.array([np.count_nonzero(m) for m in masks], dtype=np.float64)
        boxes = np.stack([_box_of(d) for d in items])
        frame_area = float(h * w)
        good = np.array([d.score >= cfg.min_score for d in items]) & (areas >= cfg.min_area_frac * frame_area) & (
            areas <= cfg.max_area_frac * frame_area
        )
        iou = self._track_iou(live, masks, boxes)
        plausible = np.ones_like(iou, dtype=bool)
        for r, t in enumerate(live):
            plausible[r] = [self.plausible(t, float(a), d.appearance, frame_index) for a, d in zip(areas, items)]
            if t.state == TrackState.LOST and t.appearance is not None:
                # Nor more than twice its whole size (a background segment around it).
                plausible[r] &= np.array([self.fits_whole_size(t, b, a, smaller=True) for b, a in zip(boxes, areas)])
        linkable = good[None, :] & plausible & (iou >= cfg.match_iou_thresh)
        # Whose object a mask is, judged on hidden tracks' whole masks too: a track whose
        # mask drifted onto another object that it hides (a lost small object's, say) would
        # otherwise take that object at the next decode, in front of the object's own track.
        # theirs[r, j]: mask j overlaps another, hidden track's whole mask more than track r's.
        theirs = np.zeros_like(iou, dtype=bool)
        hid = [r for r, t in enumerate(live) if whole and t.id in whole]
        if hid:
            iou_whole = mask_iou_matrix([whole[live[r].id] for r in hid], masks)
            for r in range(len(live)):
                rest = [k for k, q in enumerate(hid) if q != r]
                if rest:
                    theirs[r] = (iou_whole[rest] > np.maximum(iou[r], cfg.match_iou_thresh)).any(axis=0)
        linkable &= ~theirs

        # 1) A decoded mask belongs to the track that prompted it, when it is good and
        #    where the track is: its mask overlaps the track's (which may have drifted
        #    since the last decode: that is what the decode corrects) or its box the
        #    track's box.
        row_of = {t.id: r for r, t in enumerate(live)}
        pairs: dict[int, int] = {}  # row -> item
        # row -> ((in the near region, similarity), item): lost tracks found by the search
        found: dict[int, tuple[tuple[bool, float], int]] = {}
        # row -> where that lost track may be, and where first (once per track)
        regions: dict[int, tuple[np.ndarray | None, np.ndarray | None]] = {}
        for j, d in enumerate(dets):
            r = row_of.get(d.source_track) if d.source_track is not None else None
            if r is None or not good[j]:
                continue
            # A lost track's own decode away from where its motion model puts it (the model
            # coasts on the velocity of a mask that was shrinking as the object went out of
            # sight) is judged as the search's finds are: on looks, where it may be. DAVIS
            # libby played backwards: the dog, back from behind a tree trunk in the lost
            # track's prompt (J 0.69, alike 0.70), was refused at box IoU 0.20 and never
            # taken back.
            off = live[r].state == TrackState.LOST and iou[r, j] < cfg.match_iou_thresh
            if d.searched or off:
                # Its size is checked against the object's whole size, not the reference
                # area: that shrank with the sliver the object was when it left the view.
                if live[r].state == TrackState.LOST and self.fits_whole_size(live[r], boxes[j], float(areas[j])):
                    look = similarity(live[r].appearance, d.appearance)
                    if r not in regions:
                        regions[r] = (
                            self.search_region(live[r], frame_index), self.search_region(live[r], frame_index, grown=False)
                        )
                    region, first = regions[r]
                    # Where it was found: on a background encode's frame, where the search looked.
                    at = np.asarray(d.found_at if d.found_at is not None else boxes[j], dtype=np.float64)
                    cx, cy = min(int((at[0] + at[2]) / 2), w - 1), min(int((at[1] + at[3]) / 2), h - 1)
                    # A candidate where it most likely is beats a better-looking one farther off.
                    key = (first is not None and bool(first[cy, cx]), look)
                    # Farther off, more look-alikes: it must look more like the object there.
                    need = self.search_need(near=key[0])
                    if (
                        look >= need and key > found.get(r, ((False, -1.0), -1))[0]
                        and region is not None and region[cy, cx]
                        # It must look more like this track than like any other (a look-alike of
                        # another object is that object, or its double).
                        and all(similarity(o.appearance, d.appearance) < look for o in live if o is not live[r] and o.appearance is not None)
                        and not self._covers_live(masks[j], float(areas[j]))
                    ):
                        found[r] = (key, j)
                continue
            # Its size was checked where it was decoded (it matched the prompt's box there): not
            # against a reference area that shrank as the track's mask drifted off its object
            # since (scooter-black: 2976 px, the scooter's landed mask 26412 px).
            landed_own = d.matched_then and live[r].state != TrackState.LOST
            if not plausible[r, j] and not (landed_own and plausible_mask(cfg, 0.0, live[r].appearance, float(areas[j]), d.appearance)):
                continue
            others = np.delete(iou[:, j], r)
            near = iou[r, j] >= cfg.match_iou_thresh or (
                live[r].state != TrackState.LOST
                and (
                    iou[r, j] > 0.0 or box_iou_matrix(live[r].box, boxes[j])[0, 0] >= cfg.match_iou_thresh
                    # Decoded where the track's prompt was, on an encode's frame, and carried here:
                    # the track drifted off its object since (DAVIS scooter-black bounced, live: its
                    # mask followed the background and the landed mask, on the scooter, overlapped
                    # it no more; the track was lost with its object in plain view).
                    or landed_own
                )
                and not (others >= cfg.match_iou_thresh).any()  # not another track's object
            )
            near = near and not theirs[r, j]  # nor, more than this track's, the object of a track it hides
            # And it must look like what the track followed (not, say, the background around it).
            near = near and similarity(live[r].appearance, d.appearance) >= cfg.min_appearance
            if not near:
                continue
            if r not in pairs or iou[r, j] > iou[r, pairs[r]]:
                pairs[r] = j
        for r, (_, j) in found.items():
            pairs.setdefault(r, j)  # where it was expected first; else where the search found it
        # 2) Everything else by IoU, Hungarian, gated.
        free_rows = np.array([r for r in range(len(live)) if r not in pairs], dtype=np.int64)
        used = set(pairs.values())
        free_cols = np.array([j for j in range(len(items)) if good[j] and j not in used and not items[j].searched], dtype=np.int64)
        if free_rows.size and free_cols.size:
            sub = iou[np.ix_(free_rows, free_cols)]
            cost = np.where(linkable[np.ix_(free_rows, free_cols)], 1.0 - sub, np.inf)
            matches, _, _ = linear_assignment(cost, 1.0 - cfg.match_iou_thresh)
            for a, b in matches:
                pairs[int(free_rows[a])] = int(free_cols[b])
        # 3) Tracks still unmatched (lost ones coasting, or fast motion against a
        #    stale mask) may take a leftover good mask that their motion model
        #    finds likely, nearest first.
        free_rows = np.array([r for r in range(len(live)) if r not in pairs], dtype=np.int64)
        used = set(pairs.values())
        free_cols = np.array([j for j in range(len(items)) if good[j] and j not in used and not items[j].searched], dtype=np.int64)
        if free_rows.size and free_cols.size:
            dist = np.stack([self._kf.gating_distance(live[r].mean, live[r].cov, boxes[free_cols]) for r in free_rows])
            allowed = plausible[np.ix_(free_rows, free_cols)] & ~theirs[np.ix_(free_rows, free_cols)]
            for a_, r in enumerate(free_rows):
                if live[r].state == TrackState.LOST:
                    # A lost track's motion gate widens every frame it coasts: it would take
                    # whatever another track's prompt found. Only its own, or a new candidate.
                    allowed[a_] &= np.array([items[j].source_track in (None, live[r].id) for j in free_cols])
            dist = np.where(allowed, dist / CHI2_GATE_4DOF, np.inf)
            matches, _, _ = linear_assignment(dist, 1.0)
            for a, b in matches:
                pairs[int(free_rows[a])] = int(free_cols[b])
        # 4) Two tracks on one object: the weaker one misses.
        pairs = self._suppress_duplicates(pairs, masks, iou, items)

        for r, t in enumerate(live):
            j = pairs.get(r)
            if j is None:
                self._miss(t, frame_index)
            else:
                # A track partly hidden (its whole mask known) decoded its visible part: not its size.
                self._hit(t, items[j], boxes[j], frame_index, area=float(areas[j]), whole_seen=not (whole and t.id in whole))
                if t.state == TrackState.TENTATIVE and t.hits >= cfg.min_hits:
                    t.state = TrackState.CONFIRMED
                elif t.state == TrackState.LOST:
                    t.state, t.lost_since, t.lost_since_s = TrackState.CONFIRMED, None, None

        # 5) New objects: good, unmatched candidates over no live track.
        matched = set(pairs.values())
        order = sorted((j for j in range(n_det, len(items)) if good[j] and j not in matched), key=lambda j: -items[j].score)
        for j in order:
            if self._overlaps_live(masks[j], boxes[j], float(areas[j])):
                continue
            t = self._new_track(TrackState.TENTATIVE, frame_index, boxes[j])
            self._hit(t, items[j], boxes[j], frame_index, area=float(areas[j]))
            t.label = items[j].label
            if t.hits >= cfg.min_hits:
                t.state = TrackState.CONFIRMED

    # ------------------------------------------------------------------ internals

    def _check_shape(self, mask: np.ndarray) -> None:
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        if self._shape is None:
            self._shape = shape
        elif shape != self._shape:
            raise ValueError(f"mask size {shape} differs from the tracker's frame size {self._shape}; clear() the tracker first")

    def _empty_mask(self) -> np.ndarray:
        if self._empty is None or self._empty.shape != self._shape:
            self._empty = np.zeros(self._shape if self._shape else (0, 0), dtype=bool)
            self._empty.setflags(write=False)
        return self._empty

    def _clip(self, box: np.ndarray) -> np.ndarray:
        if self._shape is None:
            return box
        h, w = self._shape
        return np.array([np.clip(box[0], 0, w), np.clip(box[1], 0, h), np.clip(box[2], 0, w), np.clip(box[3], 0, h)])

    def _inside(self, box: np.ndarray) -> np.ndarray:
        """``box`` moved (not shrunk) to lie inside the frame as far as its size allows."""
        if self._shape is None:
            return box
        h, w = self._shape
        b = np.asarray(box, dtype=np.float64).copy()
        dx = max(0.0, -b[0]) - max(0.0, b[2] - w)
        dy = max(0.0, -b[1]) - max(0.0, b[3] - h)
        return b + np.array([dx, dy, dx, dy])

    def _display_box(self, t: Track) -> np.ndarray:
        if t.state == TrackState.LOST or t.mask is None:
            return self._clip(t.predicted_box)
        return t.box

    def _new_track(self, state: TrackState, frame_index: int, box: np.ndarray, track_id: int | None = None) -> Track:
        mean, cov = self._kf.initiate(box)
        t = Track(self._ids.next() if track_id is None else track_id, state, frame_index, mean, cov)
        t.pred_frame = max(frame_index, self._frame)
        self._tracks[t.id] = t
        return t

    def _hit(
        self, t: Track, d: Detection, box: np.ndarray, frame_index: int, area: float | None = None, whole_seen: bool = True
    ) -> None:
        # Where the flow (or the motion model) put the object on this frame, before the decode corrects it.
        flowed = t.box.copy() if t.mask is not None and t.state != TrackState.LOST else None
        area = float(np.count_nonzero(d.mask)) if area is None else area
        if t.hits > 0 and t.ref_area > 0:
            # A mask much smaller than usual is most likely a partly hidden
            # object: trust its box less so occlusion does not drag the
            # velocity estimate (which lost tracks coast on) towards zero.
            noise = max(1.0, t.ref_area / max(area, 1.0)) ** 2
            t.mean, t.cov = self._kf.update(t.mean, t.cov, box, noise_scale=noise)
            # Slowly adapting reference: gradual change is fine, sudden is not.
            t.ref_area = 0.7 * t.ref_area + 0.3 * area if area < t.ref_area else 0.5 * t.ref_area + 0.5 * area
        else:
            t.mean, t.cov = self._kf.initiate(box)
            t.pred_frame = max(frame_index, t.pred_frame)
            t.ref_area = area
        t.mask = d.mask
        t.box = np.asarray(box, dtype=np.float64).copy()
        t.decoded_box = t.box.copy()
        if whole_seen:
            self._note_size(t, t.box, flowed, area)
        t.score = d.score
        if d.logits is not None:
            t.logits = np.asarray(d.logits, dtype=np.float32)
            t.logits_box = t.box.copy()
        else:
            t.logits = t.logits_box = None
        if d.appearance is not None:
            a = np.asarray(d.appearance, dtype=np.float32)
            t.appearance = a if t.appearance is None or t.appearance.shape != a.shape else 0.7 * t.appearance + 0.3 * a
        t.hits += 1
        t.misses = 0
        t.last_update = t.mask_frame = frame_index
        if t.label is None and d.label is not None:
            t.label = d.label

    def _miss(self, t: Track, frame_index: int) -> None:
        t.misses += 1
        t.looked_at = frame_index
        if t.state == TrackState.TENTATIVE:
            del self._tracks[t.id]
        elif t.state == TrackState.CONFIRMED:
            t.state = TrackState.LOST
            t.lost_since = frame_index
            t.lost_since_s = self._now if self._now is not None else 0.0  # (predict() sets the clock first)
            t.lost_box, t.lost_speed = t.box.copy(), float(np.hypot(t.mean[4], t.mean[5]))
            t.mask = None
            t.logits = t.logits_box = None
            # Coast at constant size: a size trend extrapolated blindly for
            # many frames would shrink or blow up the search box. The size is
            # the object's whole size, not that of the sliver an edge left.
            t.mean = t.mean.copy()
            t.mean[6:8] = 0.0
            if t.full_size is not None:
                t.mean[2:4] = t.full_size

    def _expire(self, frame_index: int) -> None:
        """Remove the tracks lost for longer than ``max_lost_s`` (or ``max_lost_frames`` frames, where set)."""
        cfg = self.config
        for t in list(self._tracks.values()):
            if t.state != TrackState.LOST or t.lost_since is None:
                continue
            if cfg.max_lost_frames is not None:
                over = frame_index - t.lost_since > cfg.max_lost_frames
            else:
                lost_s = (self._now or 0.0) - (t.lost_since_s or 0.0)
                over = lost_s > cfg.max_lost_s + 1e-9  # (a sum of 1/30 s steps)
            if over:
                del self._tracks[t.id]

    def _note_size(self, t: Track, box: np.ndarray, flowed: np.ndarray | None = None, area: float = 0.0) -> None:
        """Remember a decoded box's size as the object's whole size, unless the frame's edge
        cuts it or it is much smaller than the object should be.

        The object should be about as large as where the flow put it on this frame
        (``flowed``, ``XYXY``): a decoded box that lost more than 15 % of that area is
        most likely an object going behind another, so its size is not noted. Without
        ``flowed`` (a new or lost track) it is judged against the size noted last.
        Only decoded boxes are noted: a box the flow moved may hold stray pixels the
        per-pixel warp carried off, and a size noted from it (hard scene seed 0: 202x271
        for an object of 190x190) stood for good, since a true size 15 % below it was
        then taken for an occlusion, and made the search for the lost object look for
        a window twice its size, where the colour evidence was too thin to find it.
        """
        if self._shape is None:
            return
        h, w = self._shape
        size = np.array([box[2] - box[0], box[3] - box[1]], dtype=np.float64)
        if any(box_edges(box, (h, w))) or size.min() < 1:
            return
        if flowed is not None:
            ref = np.array([flowed[2] - flowed[0], flowed[3] - flowed[1]], dtype=np.float64)
        else:
            ref = t.full_size
        if ref is None or size.prod() >= 0.85 * ref.prod():
            t.full_size, t.full_area = size, float(area)

    def _reference_mask(self, t: Track) -> np.ndarray | None:
        """The track's mask moved to its predicted position (``None`` without a mask)."""
        if t.state == TrackState.LOST or t.mask is None or t.ref_area <= 0:
            return None
        if t.mask_frame >= t.pred_frame:
            return t.mask
        dx = int(round(t.mean[0] - (t.box[0] + t.box[2]) / 2.0))
        dy = int(round(t.mean[1] - (t.box[1] + t.box[3]) / 2.0))
        return shift_array(t.mask, dx, dy, False, extend=True)

    def _track_iou(self, live: list[Track], masks: list[np.ndarray], boxes: np.ndarray) -> np.ndarray:
        """``(T, D)`` IoU of each track's reference (mask, else predicted box) with each item."""
        iou = np.zeros((len(live), len(masks)), dtype=np.float64)
        refs = [self._reference_mask(t) for t in live]
        mask_rows = [r for r, m in enumerate(refs) if m is not None]
        box_rows = [r for r, m in enumerate(refs) if m is None]
        if mask_rows:
            iou[mask_rows] = mask_iou_matrix([refs[r] for r in mask_rows], masks)
        if box_rows:
            iou[box_rows] = box_iou_matrix(np.stack([live[r].predicted_box for r in box_rows]), boxes)
        return iou

    def _suppress_duplicates(
        self, pairs: dict[int, int], masks: list[np.ndarray], iou: np.ndarray, items: list[Detection]
    ) -> dict[int, int]:
        if len(pairs) < 2:
            return pairs
        rows = sorted(pairs, key=lambda r: -(items[pairs[r]].score * iou[r, pairs[r]]))
        chosen = [masks[pairs[r]] for r in rows]
        overlap = mask_iou_matrix(chosen, chosen)
        kept: list[int] = []
        for k, r in enumerate(rows):
            if all(overlap[k, q] <= self.config.duplicate_iou for q in kept):
                kept.append(k)
        return {rows[k]: pairs[rows[k]] for k in kept}

    def search_need(self, *, near: bool) -> float:
        """How alike (:func:`similarity`) a mask found for a lost track must look to be it:
        ``search_appearance``, and ``_FAR_LOOK`` more beyond the near band of its search
        region (farther off, more look-alikes)."""
        return self.config.search_appearance + (0.0 if near else _FAR_LOOK)

    def plausible(self, t: Track, area: float, appearance: np.ndarray | None, frame_index: int | None = None) -> bool:
        """Whether track ``t`` may take a mask of ``area`` pixels that looks like ``appearance``
        (:func:`plausible_mask` with its reference area and looks). Lost for long, its prompt,
        where its motion model puts it slid back into the frame, is far from where it is and
        decodes whatever is there: what comes back must look as alike as the search asks."""
        frame = self._frame if frame_index is None else frame_index
        long_lost = t.state == TrackState.LOST and t.lost_since is not None and frame - t.lost_since > _LONG_LOST
        need = self.config.search_appearance if long_lost else self.config.min_appearance
        return plausible_mask(self.config, t.ref_area, t.appearance, area, appearance, need)

    def fits_whole_size(self, t: Track, box: np.ndarray, area: float = 0.0, *, smaller: bool = False) -> bool:
        """Whether ``box`` is within a factor 2 of the track's whole size in both sides
        (less where the frame's edge cuts it: an object coming back is half out of view;
        any less with ``smaller``: at most twice its size), and a mask of ``area`` pixels at
        most four times the area of the decode that size was noted from (twice as large each
        way). A box alone let a background segment through: on DAVIS libby played backwards
        the lost dog (5657 px, 144x163) was taken back as a 47568 px region of 193x287."""
        if t.full_size is None:
            return True
        if area > 0.0 and t.full_area > 0.0 and area > 4.0 * t.full_area:
            return False
        w, h = box[2] - box[0], box[3] - box[1]
        low = 0.0 if smaller else 0.1 if self._shape is not None and any(box_edges(box, self._shape)) else 0.5
        return bool(low * t.full_size[0] <= w <= 2 * t.full_size[0] and low * t.full_size[1] <= h <= 2 * t.full_size[1])

    def left_view(self, t: Track) -> bool:
        """Whether a ``LOST`` track was lost at the frame's edge (it left the view, and comes back through that edge)."""
        return (
            t.state == TrackState.LOST and t.lost_box is not None and self._shape is not None
            and any(box_edges(t.lost_box, self._shape))
        )

    def search_region(self, t: Track, frame_index: int, grown: bool = True) -> np.ndarray | None:
        """``HxW bool``: where a ``LOST`` track may plausibly be now (``None`` if not lost or unknown).

        An object lost at the frame's edge left the view: it comes back through
        that edge, so its centre is within one object size of it, plus what it
        can have travelled since the last update that did not find it (its speed
        then, plus 1 % of the frame's diagonal, per frame: encodes far apart,
        as live on a CPU, see it only after it came back). One lost
        inside the frame (hidden, or the flow let go of it) is within two object
        sizes of where it was lost, plus what it can have travelled since: its
        speed then, plus 1 % of the frame's diagonal, per frame.

        ``grown=False``: at an edge, the band of one object size alone (where it is
        looked for first: the wider band holds more look-alikes).
        """
        if t.state != TrackState.LOST or t.lost_box is None or self._shape is None or t.lost_since is None:
            return None
        h, w = self._shape
        size = t.full_size if t.full_size is not None else t.lost_box[2:] - t.lost_box[:2]
        side = int(max(4.0, float(max(size))))
        b = t.lost_box
        region = np.zeros((h, w), bool)
        edges = box_edges(b, (h, w))
        speed = t.lost_speed + 0.01 * float(np.hypot(h, w))
        if any(edges):
            looked = t.looked_at if t.looked_at is not None else t.lost_since
            side = int(side + speed * max(0, frame_index - looked)) if grown else side
            left, top, right, bottom = edges
            if left:
                region[:, :side] = True
            if top:
                region[:side, :] = True
            if right:
                region[:, max(0, w - side):] = True
            if bottom:
                region[max(0, h - side):, :] = True
            return region
        radius = 2 * side + speed * max(0, frame_index - t.lost_since)
        cx, cy = int((b[0] + b[2]) / 2), int((b[1] + b[3]) / 2)
        cv2.circle(region.view(np.uint8), (cx, cy), int(radius), 1, thickness=-1)
        return region

    def _covers_live(self, mask: np.ndarray, area: float) -> bool:
        """Whether a mask is mostly another live track's object: IoU with a visible
        track's mask of at least ``match_iou_thresh``, or more than ``max_new_overlap`` of it covered."""
        cfg = self.config
        extent = mask_to_box(mask)
        if extent is None:
            return True
        x0, y0, x1, y1 = (int(v) for v in extent)
        window = mask[y0:y1, x0:x1]
        covered = np.zeros_like(window)
        for t in self._tracks.values():
            if t.state == TrackState.LOST or t.mask is None:
                continue
            if mask_iou_matrix([t.mask], [mask])[0, 0] >= cfg.match_iou_thresh:
                return True
            covered |= t.mask[y0:y1, x0:x1]
        return float(np.count_nonzero(covered & window)) > cfg.max_new_overlap * area

    def _overlaps_live(self, mask: np.ndarray, box: np.ndarray, area: float) -> bool:
        """Whether a would-be new track is already covered by an alive track (a lost one: its predicted box)."""
        for t in self._tracks.values():
            if (t.state == TrackState.LOST or t.mask is None) and box_iou_matrix(t.predicted_box, box)[0, 0] >= self.config.match_iou_thresh:
                return True
        return self._covers_live(mask, area)

    def _aligned_logits(self, t: Track, box: np.ndarray) -> np.ndarray | None:
        """The track's last logits translated from where they were decoded to ``box``
        (:func:`~realtime_sam.tracking.dense_flow.move_logits`, no scaling: a box that
        shrank behind an occluder does not shrink the object).

        Logits without a box (``logits_box is None``) were moved with the object already.
        """
        if t.logits is None or t.logits_box is None or self._shape is None:
            return t.logits
        if np.array_equal(box, t.logits_box):
            return t.logits
        return move_logits(t.logits, t.logits_box, box, self._shape, scale=False)


def _box_of(d: Detection) -> np.ndarray:
    """A detection's box; the mask's own box when the given one is degenerate."""
    b = np.asarray(d.box, dtype=np.float64)
    if b[2] - b[0] > 0 and b[3] - b[1] > 0:
        return b
    mb = mask_to_box(d.mask)
    return mb if mb is not None else b
