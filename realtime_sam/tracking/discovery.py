"""Helpers for auto mode: find new objects by prompting SAM with a point grid.

Every ``every_k_frames`` frames the engine prompts the decoder with a regular
grid of single points (``points_per_side ** 2`` of them, ``batch_size`` at a
time), then keeps the masks that SAM itself rates well
(:func:`filter_candidates`: predicted IoU, stability under a threshold shift,
size, box non-maximum suppression). The survivors go to the tracker as
discovery candidates; those that overlap no live track start new tracks.

The thresholds are the ones used with the trained SAM checkpoints; a model
with random weights predicts noise and few or none of its masks pass.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError
from realtime_sam.tracking.association import box_iou_matrix, masks_to_boxes

if TYPE_CHECKING:
    import torch

    ArrayLike = Union[np.ndarray, torch.Tensor]

__all__ = ["DiscoveryConfig", "point_grid", "stability_score", "nms", "filter_candidates"]


def _is_tensor(x: object) -> bool:
    """True for a ``torch.Tensor``, without importing torch (the engine stays torch-free).

    A tensor can only exist once torch is imported, so ``sys.modules`` is enough.
    """
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


@dataclass(frozen=True)
class DiscoveryConfig:
    """Auto-mode object discovery.

    Attributes:
        points_per_side: the grid has ``points_per_side ** 2`` point prompts
            spread evenly over the frame.
        pred_iou_thresh: keep masks whose decoder-predicted IoU is at least
            this (a trained-model value; random weights give noise).
        stability_score_thresh: keep masks whose stability score (IoU of the
            mask thresholded at ``mask_threshold +/- stability_offset``) is at
            least this.
        stability_offset: logit shift used for the stability score.
        box_nms_thresh: among masks whose boxes overlap more than this IoU,
            only the one with the highest predicted IoU is kept.
        min_mask_area_frac: drop masks smaller than this fraction of the frame.
        every_k_frames: run discovery on every k-th frame (at a re-encode).
        batch_size: point prompts decoded per decoder call (bounds memory).
        mask_threshold: logit above which a pixel is in the mask (SAM: 0).
    """

    points_per_side: int = 16
    pred_iou_thresh: float = 0.7
    stability_score_thresh: float = 0.85
    stability_offset: float = 1.0
    box_nms_thresh: float = 0.7
    min_mask_area_frac: float = 0.001
    every_k_frames: int = 30
    batch_size: int = 64
    mask_threshold: float = 0.0

    def __post_init__(self) -> None:
        check_numbers(self, "discovery")  # by type first: "5" < 1 is a TypeError naming no key
        def check(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"discovery: {message}")

        check(1 <= self.points_per_side <= 128, f"points_per_side must be in 1..128, got {self.points_per_side}")
        check(0.0 <= self.pred_iou_thresh <= 1.0, f"pred_iou_thresh must be in [0, 1], got {self.pred_iou_thresh}")
        check(
            0.0 <= self.stability_score_thresh <= 1.0,
            f"stability_score_thresh must be in [0, 1], got {self.stability_score_thresh}",
        )
        # Finite, as mask_threshold below: at +-inf every mask is empty or everything, silently.
        check(0.0 <= self.stability_offset < float("inf"), f"stability_offset must be a number >= 0, got {self.stability_offset}")
        check(0.0 < self.box_nms_thresh <= 1.0, f"box_nms_thresh must be in (0, 1], got {self.box_nms_thresh}")
        check(0.0 <= self.min_mask_area_frac < 1.0, f"min_mask_area_frac must be in [0, 1), got {self.min_mask_area_frac}")
        check(self.every_k_frames >= 1, f"every_k_frames must be >= 1, got {self.every_k_frames}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        # `abs(x) < inf` is false for NaN too: a NaN threshold makes every mask empty.
        check(abs(self.mask_threshold) < float("inf"), f"mask_threshold must be a finite logit (SAM: 0), got {self.mask_threshold}")


def point_grid(n: int) -> np.ndarray:
    """``(n * n, 2)`` float64 ``(x, y)`` points in ``[0, 1]``, at the centres of an ``n x n`` grid of cells.

    Ordered row by row (``x`` varies fastest), the layout SAM's automatic
    mask generator uses. Multiply by ``(W, H)`` for pixel coordinates.
    """
    if n < 1:
        raise ValueError(f"point grid needs n >= 1, got {n}")
    centres = (np.arange(n, dtype=np.float64) + 0.5) / n
    xs, ys = np.meshgrid(centres, centres)  # xs varies along columns
    return np.stack([xs.reshape(-1), ys.reshape(-1)], axis=1)


def stability_score(logits: ArrayLike, threshold: float = 0.0, offset: float = 1.0) -> ArrayLike:
    """How little a mask changes when its binarisation threshold moves.

    Args:
        logits: ``(..., H, W)`` mask logits (NumPy or torch).
        threshold: the binarisation threshold (SAM: 0).
        offset: the shift applied both ways.

    Returns:
        ``(...)`` float in ``[0, 1]`` (same library as the input): the IoU of
        the mask at ``threshold + offset`` with the mask at ``threshold -
        offset``; 0 when even the lower threshold gives an empty mask.
    """
    if _is_tensor(logits):
        import torch

        # Counting in int32 is exact and avoids materialising float masks.
        inter = (logits > threshold + offset).sum(dim=(-1, -2), dtype=torch.int32).float()
        union = (logits > threshold - offset).sum(dim=(-1, -2), dtype=torch.int32).float()
        return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(union))
    arr = np.asarray(logits)
    inter = (arr > threshold + offset).sum(axis=(-1, -2)).astype(np.float64)
    union = (arr > threshold - offset).sum(axis=(-1, -2)).astype(np.float64)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: ArrayLike, scores: ArrayLike, iou_thresh: float) -> np.ndarray:
    """Greedy non-maximum suppression on ``XYXY`` boxes.

    Args:
        boxes: ``(N, 4)``.
        scores: ``(N,)``; ties keep the earlier box.
        iou_thresh: a box is dropped when its IoU with an already kept,
            higher-scoring box is above this.

    Returns:
        int64 indices of the kept boxes, highest score first.
    """
    b = _numpy(boxes).astype(np.float64).reshape(-1, 4)
    s = _numpy(scores).astype(np.float64).reshape(-1)
    if b.shape[0] != s.shape[0]:
        raise ValueError(f"nms: {b.shape[0]} boxes but {s.shape[0]} scores")
    order = np.argsort(-s, kind="stable")
    iou = box_iou_matrix(b, b)
    suppressed = np.zeros(len(order), dtype=bool)
    keep: list[int] = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(int(i))
        suppressed |= iou[i] > iou_thresh
    return np.asarray(keep, dtype=np.int64)


def filter_candidates(masks: ArrayLike, ious: ArrayLike, logits: ArrayLike, config: DiscoveryConfig) -> np.ndarray:
    """Which grid-prompted masks are worth offering to the tracker.

    Args:
        masks: ``(N, H, W)`` bool masks at source resolution.
        ious: ``(N,)`` the decoder's predicted IoU per mask.
        logits: ``(N, h, w)`` the masks' logits (any resolution, e.g. the
            decoder's ``256x256`` low-res output) for the stability score.
        config: thresholds.

    Returns:
        int64 indices into the inputs, best predicted IoU first, of the masks
        that pass ``pred_iou_thresh``, ``stability_score_thresh`` and
        ``min_mask_area_frac`` and survive box NMS.
    """
    m = _numpy(masks).astype(bool, copy=False)
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {m.shape}")
    q = _numpy(ious).astype(np.float64).reshape(-1)
    n = m.shape[0]
    if q.shape[0] != n:
        raise ValueError(f"{n} masks but {q.shape[0]} predicted IoUs")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    stab = _numpy(stability_score(logits, config.mask_threshold, config.stability_offset)).reshape(-1)
    if stab.shape[0] != n:
        raise ValueError(f"{n} masks but {stab.shape[0]} logit maps")
    areas = m.reshape(n, -1).sum(axis=1)
    frame = m.shape[1] * m.shape[2]
    ok = (q >= config.pred_iou_thresh) & (stab >= config.stability_score_thresh) & (areas > 0)
    ok &= areas >= config.min_mask_area_frac * frame
    idx = np.flatnonzero(ok)
    if idx.size == 0:
        return np.empty(0, dtype=np.int64)
    kept = nms(masks_to_boxes(m[idx]), q[idx], config.box_nms_thresh)
    return idx[kept]


def _numpy(x: ArrayLike) -> np.ndarray:
    if _is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)
