"""Masks to polygons, for YOLO segmentation labels and COCO annotations.

:func:`mask_to_polygons` traces a ``HxW bool`` mask's outer contours
(OpenCV, 8-connected, holes ignored as YOLO labels cannot hold them) and
simplifies each with Douglas-Peucker within ``epsilon`` pixels. With
``segments="largest"`` only the part of largest area is kept (a mask's
stray specks are decoder noise, not object); with ``"all"`` every part is
kept. :func:`join_parts` turns several parts into the single closed ring a
YOLO label line holds, joined by zero-width bridges between their nearest
points (filled, the ring covers the same pixels as the parts).

The two formats are read back by different rules. Ultralytics fills a YOLO
polygon with ``cv2.fillPoly``, pixel centres at integer coordinates, so its
ring runs through the centres of the edge pixels (OpenCV's contour).
pycocotools (and so detectron2 and mmdetection) fills a COCO polygon with
pixel corners at integer coordinates: pixel ``(x, y)`` is the square
``[x, x+1] x [y, y+1]`` and is in when its centre ``(x+0.5, y+0.5)`` is. A
ring through the edge pixels' centres leaves out half of every edge pixel,
so :func:`outline_parts` gives COCO the outline of the pixel squares
instead, which fills back to the very pixels.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

__all__ = ["SEGMENTS", "mask_to_polygons", "kept_parts", "simplify_parts", "parts_mask", "join_parts", "normalised", "pixel_outline", "outline_parts"]

SEGMENTS = ("largest", "all")
Segments = Literal["largest", "all"]


def mask_to_polygons(
    mask: np.ndarray, *, segments: Segments = "largest", epsilon: float = 1.0, min_area: float = 0.0
) -> list[np.ndarray]:
    """The outer contours of ``mask`` as ``Kx2 float64`` pixel ``(x, y)`` rings (not closed: last != first).

    Args:
        mask: ``HxW`` bool (or 0/1).
        segments: ``"largest"`` (the part of largest area) or ``"all"`` (every part, largest first).
        epsilon: Douglas-Peucker tolerance in pixels (0: the traced contour unchanged).
        min_area: parts whose traced contour encloses fewer pixels than this are dropped.

    Returns:
        The polygons, each with at least 3 points; empty for an empty or too small mask.
    """
    return simplify_parts(kept_parts(mask, segments=segments, min_area=min_area), epsilon)


def kept_parts(mask: np.ndarray, *, segments: Segments = "largest", min_area: float = 0.0) -> list[np.ndarray]:
    """The traced outer contours (OpenCV ``Nx1x2 int32``) of the parts of ``mask`` that :func:`mask_to_polygons` keeps."""
    if segments not in SEGMENTS:
        raise ValueError(f"segments must be one of {SEGMENTS}, not {segments!r}")
    m = np.ascontiguousarray(np.asarray(mask).astype(np.uint8, copy=False))
    if m.ndim != 2:
        raise ValueError(f"mask must be HxW, got shape {m.shape}")
    if not m.any():
        return []
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    # A one-pixel-wide part has zero contour area: count its pixels instead, so a thin object is not lost.
    parts = []
    for c in contours:
        area = max(float(cv2.contourArea(c)), float(len(c)))
        if area >= min_area:
            parts.append((area, c))
    parts.sort(key=lambda p: -p[0])
    if segments == "largest":
        parts = parts[:1]
    return [c for _, c in parts]


def simplify_parts(contours: list[np.ndarray], epsilon: float = 1.0) -> list[np.ndarray]:
    """Traced contours as ``Kx2 float64`` rings simplified within ``epsilon`` pixels; rings under 3 points are dropped."""
    out = []
    for c in contours:
        ring = cv2.approxPolyDP(c, float(epsilon), True) if epsilon > 0 else c
        ring = ring.reshape(-1, 2).astype(np.float64)
        if len(ring) >= 3:
            out.append(ring)
    return out


def pixel_outline(contour: np.ndarray) -> np.ndarray:
    """The outline of the pixel squares of the part that OpenCV's outer ``contour`` traces, ``Kx2 int64``.

    Corners at integer pixel-corner coordinates (pixel ``(x, y)`` is the
    square from ``(x, y)`` to ``(x+1, y+1)``), every corner of the outline
    and no point between two corners. The part is filled (holes included, as
    the contour has none) and doubled in size: each pixel becomes a 2x2
    block, whose OpenCV contour runs through the centres of its edge
    sub-pixels, and sub-pixel ``i`` of the doubled image lies on the
    outline at corner ``(i + 1) // 2`` (a block's first sub-pixel at its
    pixel's first corner, its second at the next). Two pixels that touch
    only at a corner (one 8-connected part) share that corner on the
    outline, which passes through it twice.
    """
    c = np.asarray(contour).reshape(-1, 1, 2).astype(np.int32)
    x, y, w, h = cv2.boundingRect(c)
    part = np.zeros((h, w), np.uint8)
    cv2.drawContours(part, [c], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
    doubled = cv2.resize(part, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
    traced, _ = cv2.findContours(doubled, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    ring = (max(traced, key=len).reshape(-1, 2).astype(np.int64) + 1) // 2 + (x, y)
    ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]  # two sub-pixels map to each corner
    # Steps run along x or y; a point where the step keeps its direction is no corner.
    turn = np.any(np.sign(np.roll(ring, -1, axis=0) - ring) != np.sign(ring - np.roll(ring, 1, axis=0)), axis=1)
    return ring[turn]


def outline_parts(contours: list[np.ndarray], epsilon: float = 1.0) -> list[np.ndarray]:
    """The pixel outlines (:func:`pixel_outline`) of traced ``contours`` as ``Kx2 float64`` COCO rings.

    Each is simplified with Douglas-Peucker within ``epsilon`` pixels of the
    outline (0: every corner), so it cuts no deeper into the mask, nor
    reaches further out of it, than that. Where the simplification leaves
    less than a polygon (a line one pixel wide, a single pixel), the
    outline is kept whole: it is short, and exact.
    """
    out = []
    for c in contours:
        outline = pixel_outline(c)
        ring = outline
        if epsilon > 0:
            ring = cv2.approxPolyDP(outline.reshape(-1, 1, 2).astype(np.int32), float(epsilon), True).reshape(-1, 2)
            if len(ring) < 3:
                ring = outline
        out.append(ring.astype(np.float64))
    return out


def parts_mask(mask: np.ndarray, contours: list[np.ndarray]) -> np.ndarray:
    """The pixels of ``mask`` inside the traced ``contours``: the mask less the parts that were dropped."""
    inside = np.zeros(mask.shape[:2], np.uint8)
    if contours:
        cv2.drawContours(inside, contours, -1, 1, thickness=cv2.FILLED)
    return np.asarray(mask, bool) & inside.astype(bool)


def join_parts(parts: list[np.ndarray]) -> np.ndarray:
    """One ring from several: each further part hangs off the first by a bridge between their nearest points.

    The ring walks the first part; at the point nearest to another part it
    crosses to that part's nearest point, walks it all the way round and
    comes back the same way. ``parts[0]`` alone is returned unchanged.
    """
    if not parts:
        return np.zeros((0, 2))
    base = parts[0]
    detours: dict[int, list[np.ndarray]] = {}
    for p in parts[1:]:
        d = ((base[:, None, :] - p[None, :, :]) ** 2).sum(-1)
        i, j = np.unravel_index(int(np.argmin(d)), d.shape)
        loop = np.concatenate([p[j:], p[: j + 1]])  # round the part, back to its bridge point
        detours.setdefault(int(i), []).append(loop)
    pieces = []
    for i, point in enumerate(base):
        pieces.append(point[None])
        for loop in detours.get(i, []):
            pieces.append(loop)
            pieces.append(point[None])  # back across the bridge
    return np.concatenate(pieces)


def normalised(ring: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel ``(x, y)`` -> ``[0, 1]`` by the image ``size = (H, W)``, as YOLO labels hold them."""
    h, w = size
    return np.clip(ring / np.array([w, h], dtype=np.float64), 0.0, 1.0)
