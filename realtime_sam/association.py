"""Geometry for linking detections to tracks: IoU matrices and assignment.

Conventions: masks are ``HxW bool`` (stacks ``NxHxW``); boxes are ``XYXY``
float pixels with *exclusive* far edges, so the box of a mask whose pixels
span columns ``c0..c1`` is ``x0 = c0, x1 = c1 + 1`` and a box's area equals
the pixel count of a filled rectangle.
"""

from __future__ import annotations

import lap
import numpy as np

__all__ = [
    "linear_assignment",
    "mask_iou_matrix",
    "box_iou_matrix",
    "mask_to_box",
    "masks_to_boxes",
]


def linear_assignment(cost: np.ndarray, thresh: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Minimum-cost one-to-one matching with a per-pair cost limit.

    Args:
        cost: ``(N, M)`` float cost of linking row ``i`` to column ``j``.
            NaN or infinite entries are never matched.
        thresh: pairs whose cost exceeds this are never matched.

    Returns:
        ``(matches, unmatched_rows, unmatched_cols)``: ``matches`` is a
        ``(K, 2)`` int64 array of ``(row, col)`` pairs, sorted by row; the
        other two are int64 index arrays, sorted.
    """
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2:
        raise ValueError(f"cost must be a 2-D (N, M) array, got shape {cost.shape}")
    n, m = cost.shape
    if n == 0 or m == 0:
        return np.empty((0, 2), dtype=np.int64), np.arange(n, dtype=np.int64), np.arange(m, dtype=np.int64)
    # lapjv needs finite costs; anything above the limit is as good as forbidden.
    safe = np.where(np.isfinite(cost), cost, thresh + 1.0)
    _, x, _ = lap.lapjv(safe, extend_cost=True, cost_limit=thresh)
    rows = np.flatnonzero(x >= 0)
    cols = x[rows].astype(np.int64)
    # lapjv's limit is inclusive up to rounding; enforce the documented rule exactly.
    keep = safe[rows, cols] <= thresh
    rows, cols = rows[keep], cols[keep]
    matches = np.stack([rows, cols], axis=1).astype(np.int64)
    unmatched_rows = np.setdiff1d(np.arange(n, dtype=np.int64), rows)
    unmatched_cols = np.setdiff1d(np.arange(m, dtype=np.int64), cols)
    return matches, unmatched_rows, unmatched_cols


def _as_mask_stack(masks: np.ndarray, name: str) -> np.ndarray:
    masks = np.asarray(masks)
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"{name} must be an (N, H, W) mask stack, got shape {masks.shape}")
    return masks.astype(bool, copy=False)


def mask_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two mask stacks.

    Args:
        a: ``(N, H, W)`` bool.
        b: ``(M, H, W)`` bool, same ``H, W``.

    Returns:
        ``(N, M)`` float64 in ``[0, 1]``; a pair of empty masks has IoU 0.
    """
    a = _as_mask_stack(a, "a")
    b = _as_mask_stack(b, "b")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: {a.shape[1:]} vs {b.shape[1:]}")
    n, m = a.shape[0], b.shape[0]
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=np.float64)
    # Only the window holding any foreground matters; cropping to it makes the
    # matmul cost scale with the objects' extent rather than the frame's.
    any_fg = a.any(axis=0) | b.any(axis=0)
    rows = np.flatnonzero(any_fg.any(axis=1))
    if rows.size == 0:
        return np.zeros((n, m), dtype=np.float64)
    cols = np.flatnonzero(any_fg.any(axis=0))
    window = (slice(None), slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    fa = a[window].reshape(n, -1).astype(np.float32)
    fb = b[window].reshape(m, -1).astype(np.float32)
    # float32 sums are exact up to 2**24 pixels per mask, far beyond any frame we handle.
    inter = (fa @ fb.T).astype(np.float64)
    area_a = fa.sum(axis=1, dtype=np.float64)
    area_b = fb.sum(axis=1, dtype=np.float64)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _as_boxes(boxes: np.ndarray, name: str) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim == 1 and boxes.size == 4:
        boxes = boxes[None]
    if boxes.size == 0:
        return boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"{name} must be an (N, 4) XYXY box array, got shape {boxes.shape}")
    return boxes


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of two sets of ``XYXY`` boxes.

    Args:
        a: ``(N, 4)`` float.
        b: ``(M, 4)`` float.

    Returns:
        ``(N, M)`` float64 in ``[0, 1]``; degenerate (zero-area) pairs give 0.
    """
    a = _as_boxes(a, "a")
    b = _as_boxes(b, "b")
    wa = np.clip(a[:, 2] - a[:, 0], 0, None)
    ha = np.clip(a[:, 3] - a[:, 1], 0, None)
    wb = np.clip(b[:, 2] - b[:, 0], 0, None)
    hb = np.clip(b[:, 3] - b[:, 1], 0, None)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    union = (wa * ha)[:, None] + (wb * hb)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mask_to_box(mask: np.ndarray) -> np.ndarray | None:
    """Bounding box of an ``HxW`` bool mask.

    Returns:
        ``(4,)`` float64 ``XYXY`` with exclusive far edges, or ``None`` for an
        empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float64)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """Bounding boxes of an ``(N, H, W)`` bool stack.

    Returns:
        ``(N, 4)`` float64 ``XYXY`` (exclusive far edges); empty masks get
        ``[0, 0, 0, 0]``.
    """
    masks = _as_mask_stack(masks, "masks")
    n, h, w = masks.shape
    out = np.zeros((n, 4), dtype=np.float64)
    if n == 0:
        return out
    rows_any = masks.any(axis=2)  # (N, H)
    cols_any = masks.any(axis=1)  # (N, W)
    nonempty = rows_any.any(axis=1)
    if not nonempty.any():
        return out
    y0 = rows_any.argmax(axis=1)
    y1 = h - rows_any[:, ::-1].argmax(axis=1)
    x0 = cols_any.argmax(axis=1)
    x1 = w - cols_any[:, ::-1].argmax(axis=1)
    out[:] = np.stack([x0, y0, x1, y1], axis=1)
    out[~nonempty] = 0.0
    return out
