"""Geometry of masks and boxes, and linking detections to tracks: IoU matrices and assignment.

The one home of the small mask and box helpers the tracking modules share:
:func:`shift_array` (a mask or logits grid moved by whole cells),
:func:`box_area`, :func:`box_motion` (the affine taking one box to another)
and :func:`track_under` (which object is at a pixel).

Conventions: masks are ``HxW bool`` (stacks ``NxHxW``); boxes are ``XYXY``
float pixels with *exclusive* far edges, so the box of a mask whose pixels
span columns ``c0..c1`` is ``x0 = c0, x1 = c1 + 1`` and a box's area equals
the pixel count of a filled rectangle.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

import lap
import numpy as np

__all__ = [
    "linear_assignment",
    "mask_iou_matrix",
    "box_iou_matrix",
    "mask_to_box",
    "masks_to_boxes",
    "shift_array",
    "box_area",
    "box_edges",
    "box_motion",
    "track_under",
    "MaskStack",
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


MaskStack = Union[np.ndarray, Sequence[np.ndarray]]
"""An ``(N, H, W)`` bool array, or a sequence of ``N`` ``HxW`` bool masks (not copied)."""


def _mask_list(masks: MaskStack, name: str) -> list[np.ndarray]:
    if isinstance(masks, np.ndarray):
        if masks.ndim == 2:
            masks = masks[None]
        if masks.ndim != 3:
            raise ValueError(f"{name} must be an (N, H, W) mask stack, got shape {masks.shape}")
    out = [np.asarray(m).astype(bool, copy=False) for m in masks]
    for m in out:
        if m.ndim != 2:
            raise ValueError(f"{name} must hold HxW masks, got one of shape {m.shape}")
    return out


def _extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(y0, y1, x0, x1)`` half-open rows/columns holding the mask, ``None`` when empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    cols = np.flatnonzero(mask[y0:y1].any(axis=0))
    return y0, y1, int(cols[0]), int(cols[-1]) + 1


def mask_iou_matrix(a: MaskStack, b: MaskStack) -> np.ndarray:
    """Pairwise IoU of two sets of masks.

    Args:
        a: ``N`` masks, ``(N, H, W)`` bool or a sequence of ``HxW`` bool.
        b: ``M`` masks of the same ``H, W``.

    Returns:
        ``(N, M)`` float64 in ``[0, 1]``; a pair of empty masks has IoU 0.
    """
    la = _mask_list(a, "a")
    lb = _mask_list(b, "b")
    n, m = len(la), len(lb)
    iou = np.zeros((n, m), dtype=np.float64)
    if n == 0 or m == 0:
        return iou
    shape = la[0].shape
    for mask in la + lb:
        if mask.shape != shape:
            raise ValueError(f"mask sizes differ: {shape} vs {mask.shape}")
    # Intersections are counted only inside the overlap of the two masks'
    # extents, so the cost follows the objects' sizes rather than the frame's,
    # and pairs that cannot touch cost nothing.
    ext_a = [_extent(x) for x in la]
    ext_b = [_extent(x) for x in lb]
    area_a = [float(np.count_nonzero(x[e[0] : e[1], e[2] : e[3]])) if e else 0.0 for x, e in zip(la, ext_a)]
    area_b = [float(np.count_nonzero(x[e[0] : e[1], e[2] : e[3]])) if e else 0.0 for x, e in zip(lb, ext_b)]
    for i, (ma, ea) in enumerate(zip(la, ext_a)):
        if ea is None:
            continue
        for j, (mb, eb) in enumerate(zip(lb, ext_b)):
            if eb is None:
                continue
            y0, y1 = max(ea[0], eb[0]), min(ea[1], eb[1])
            x0, x1 = max(ea[2], eb[2]), min(ea[3], eb[3])
            if y0 >= y1 or x0 >= x1:
                continue
            inter = float(np.count_nonzero(ma[y0:y1, x0:x1] & mb[y0:y1, x0:x1]))
            iou[i, j] = inter / (area_a[i] + area_b[j] - inter)
    return iou


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
    e = _extent(np.asarray(mask).astype(bool, copy=False))
    if e is None:
        return None
    return np.array([e[2], e[0], e[3], e[1]], dtype=np.float64)


def masks_to_boxes(masks: MaskStack) -> np.ndarray:
    """Bounding boxes of ``N`` masks (``(N, H, W)`` bool or a sequence of ``HxW``).

    Returns:
        ``(N, 4)`` float64 ``XYXY`` (exclusive far edges); empty masks get
        ``[0, 0, 0, 0]``.
    """
    out = np.zeros((len(masks), 4), dtype=np.float64)
    for k, m in enumerate(_mask_list(masks, "masks")):
        e = _extent(m)
        if e is not None:
            out[k] = (e[2], e[0], e[3], e[1])
    return out


def shift_array(a: np.ndarray, dx: int, dy: int, fill: object = 0, *, extend: bool = False) -> np.ndarray:
    """``a`` (a ``HxW`` mask or logits grid) translated by ``(dx, dy)`` whole cells; uncovered cells are ``fill``.

    With ``extend``, uncovered cells repeat the edge row or column that moved
    away from them instead: a mask cut by the frame's edge goes on beyond it,
    so an object moving into view grows by what comes in (a mask clear of the
    edge is unchanged by it). Returns a new array of ``a``'s shape and dtype;
    cells moved off the edge are dropped.
    """
    h, w = a.shape[:2]
    out = np.full_like(a, fill)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] = a[
        max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)
    ]
    if extend:
        if dx > 0:
            out[:, :dx] = out[:, dx : dx + 1]
        elif dx < 0:
            out[:, w + dx :] = out[:, w + dx - 1 : w + dx]
        if dy > 0:
            out[:dy] = out[dy : dy + 1]
        elif dy < 0:
            out[h + dy :] = out[h + dy - 1 : h + dy]
    return out


def box_area(box: Sequence[float] | np.ndarray) -> float:
    """Area of one ``XYXY`` box, each side taken as at least 1 pixel (so ratios of areas stay finite)."""
    return max(float(box[2] - box[0]), 1.0) * max(float(box[3] - box[1]), 1.0)


def box_edges(box: Sequence[float] | np.ndarray, shape: tuple[int, ...], margin: float = 2.0) -> tuple[bool, bool, bool, bool]:
    """Which sides of a frame of ``shape`` (``(H, W)``) an ``XYXY`` box touches, within ``margin``
    pixels: ``(left, top, right, bottom)``. With ``margin`` 1 a mask's box touches a side only when
    the mask reaches the frame's last pixel there."""
    h, w = shape[0], shape[1]
    return (box[0] < margin, box[1] < margin, box[2] > w - margin, box[3] > h - margin)


def box_motion(box_then: Sequence[float] | np.ndarray, box_now: Sequence[float] | np.ndarray, *, scale: bool = True) -> np.ndarray:
    """The ``2x3`` affine (source pixels) taking ``box_then`` to ``box_now``: centre to centre, and
    with ``scale`` a uniform scale by the square root of their area ratio, clipped to ``[0.5, 2]``."""
    b0, b1 = np.asarray(box_then, dtype=np.float64), np.asarray(box_now, dtype=np.float64)
    s = float(np.clip(np.sqrt(box_area(b1) / box_area(b0)), 0.5, 2.0)) if scale else 1.0
    c0 = ((b0[0] + b0[2]) / 2.0, (b0[1] + b0[3]) / 2.0)
    c1 = ((b1[0] + b1[2]) / 2.0, (b1[1] + b1[3]) / 2.0)
    return np.array([[s, 0.0, c1[0] - s * c0[0]], [0.0, s, c1[1] - s * c0[1]]])


def track_under(x: float, y: float, tracks: Iterable[tuple[int, np.ndarray | None, Sequence[float]]]) -> int | None:
    """Which track is at pixel ``(x, y)``: the rule of the window's ``d`` key and right-click.

    ``tracks`` are ``(track_id, mask, box)``: ``HxW bool`` mask (``None`` or
    all False when nothing is shown, e.g. a lost track) and ``XYXY`` box.
    Among the masks that contain the pixel, the highest id wins: the
    renderer draws tracks in id order, so that is the one on top. Failing
    that, among the boxes that contain the point, the one whose centre is
    nearest (ties: the higher id). ``None`` when neither, or for a
    non-finite point.
    """
    if not (np.isfinite(x) and np.isfinite(y)):
        return None
    col, row = int(np.floor(x)), int(np.floor(y))
    items = sorted(tracks, key=lambda item: -item[0])
    for tid, mask, _ in items:
        if mask is not None and 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and mask[row, col]:
            return int(tid)
    best: tuple[float, int] | None = None
    for tid, _, b in items:
        if b[0] <= x <= b[2] and b[1] <= y <= b[3]:
            d = float(np.hypot(x - (b[0] + b[2]) / 2.0, y - (b[1] + b[3]) / 2.0))
            if best is None or d < best[0]:
                best = (d, int(tid))
    return best[1] if best is not None else None
