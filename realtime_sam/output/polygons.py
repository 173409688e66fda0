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
instead, which fills back to the very pixels. :func:`outline_parts_with_holes`
adds a part's holes (a YOLO ring has none, as Ultralytics' own labels): each
hole's outline hangs off its part's by a zero-width bridge, walked there and
back, which pycocotools' even-odd fill cancels, so the hole stays empty.
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

__all__ = ["SEGMENTS", "mask_to_polygons", "kept_parts", "simplify_parts", "parts_mask", "join_parts", "normalised", "pixel_outline", "outline_parts", "outline_parts_with_holes"]

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
    return _corner_ring(max(traced, key=len)) + (x, y)


def _corner_ring(traced: np.ndarray) -> np.ndarray:
    """OpenCV's contour of a doubled part (outer or hole) as the pixel-corner outline, ``Kx2 int64``.

    Sub-pixel ``i`` of the doubled image lies on the outline at corner ``(i + 1) // 2``; this holds
    for a hole's contour too, traced along the part's sub-pixels that border the hole.
    """
    ring = (np.asarray(traced).reshape(-1, 2).astype(np.int64) + 1) // 2
    ring = ring[np.any(ring != np.roll(ring, 1, axis=0), axis=1)]  # two sub-pixels map to each corner
    # Steps run along x or y; a point where the step keeps its direction is no corner.
    turn = np.any(np.sign(np.roll(ring, -1, axis=0) - ring) != np.sign(ring - np.roll(ring, 1, axis=0)), axis=1)
    return ring[turn]


def _simplified_outline(outline: np.ndarray, epsilon: float) -> np.ndarray:
    """``outline`` (``Kx2`` corners) within ``epsilon`` px (Douglas-Peucker); whole where that leaves under 3 points."""
    if epsilon <= 0:
        return outline
    ring = cv2.approxPolyDP(outline.reshape(-1, 1, 2).astype(np.int32), float(epsilon), True).reshape(-1, 2)
    return outline if len(ring) < 3 else ring


def outline_parts(contours: list[np.ndarray], epsilon: float = 1.0) -> list[np.ndarray]:
    """The pixel outlines (:func:`pixel_outline`) of traced ``contours`` as ``Kx2 float64`` COCO rings.

    Each is simplified with Douglas-Peucker within ``epsilon`` pixels of the
    outline (0: every corner), so it cuts no deeper into the mask, nor
    reaches further out of it, than that. Where the simplification leaves
    less than a polygon (a line one pixel wide, a single pixel), the
    outline is kept whole: it is short, and exact.
    """
    return [_simplified_outline(pixel_outline(c), epsilon).astype(np.float64) for c in contours]


def outline_parts_with_holes(mask: np.ndarray, contours: list[np.ndarray], epsilon: float = 1.0) -> list[np.ndarray]:
    """COCO rings of the parts of ``mask`` inside the traced ``contours``, their holes kept, ``Kx2 float64``.

    As :func:`outline_parts`, but a part's holes are cut out: each hole's
    pixel outline (simplified within ``epsilon``) is joined to the part's by
    a zero-width bridge (:func:`join_parts`). pycocotools fills a polygon by
    the even-odd rule, so the bridge, walked there and back, adds nothing
    and the hole stays empty. A piece of the mask inside a hole (an island)
    is a ring of its own; pycocotools unites an annotation's rings.

    Args:
        mask: ``HxW`` bool.
        contours: outer contours of ``mask`` (OpenCV ``Nx1x2``, from :func:`kept_parts`).
        epsilon: Douglas-Peucker tolerance in pixels (0: every corner; 0.5 or less reads back exactly).

    Returns:
        One ring per part and per island, in pixel-corner coordinates.
    """
    out = []
    m = np.asarray(mask, bool)
    for c in contours:
        c = np.asarray(c).reshape(-1, 1, 2).astype(np.int32)
        x, y, w, h = cv2.boundingRect(c)
        inside = np.zeros((h, w), np.uint8)
        cv2.drawContours(inside, [c], -1, 1, thickness=cv2.FILLED, offset=(-x, -y))
        part = (inside.astype(bool) & m[y : y + h, x : x + w]).astype(np.uint8)
        doubled = cv2.resize(part, (2 * w, 2 * h), interpolation=cv2.INTER_NEAREST)
        # Two levels: outer borders (the part, islands in its holes) and the holes of each.
        traced, hierarchy = cv2.findContours(doubled, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
        if hierarchy is None:
            continue
        links = hierarchy.reshape(-1, 4)  # next, previous, first child, parent
        for i, outer in enumerate(traced):
            if links[i, 3] != -1:
                continue
            rings = [_simplified_outline(_corner_ring(outer), epsilon)]
            hole = links[i, 2]
            while hole != -1:
                rings.append(_simplified_outline(_corner_ring(traced[hole]), epsilon))
                hole = links[hole, 0]
            out.append(_join_holes(rings[0], rings[1:]).astype(np.float64) + (x, y))
    return out


def _join_holes(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """``outer`` with each of ``holes`` hung off it by a zero-width bridge, as :func:`join_parts` joins parts.

    Rings are ``Kx2`` integer corners. Where :func:`join_parts` compares every
    pair of points (a mask speckled with thousands of holes took seconds), the
    outer point nearest to a hole's first point is looked up in one distance
    transform of the outer ring's points; the bridge then goes to the hole's
    point nearest to it. Any bridge reads back the same (walked there and back,
    it fills nothing); a short one keeps the polygon tidy for tools that clip it.
    """
    if not holes:
        return outer
    points = np.concatenate([outer, *holes])
    x0, y0 = points.min(0)
    w, h = points.max(0) - (x0, y0) + 1
    seeds = np.full((int(h), int(w)), 255, np.uint8)
    oy, ox = outer[:, 1] - y0, outer[:, 0] - x0
    seeds[oy, ox] = 0
    # DIST_LABEL_PIXEL numbers the zero pixels from 1 in raster order; label -> an outer point there.
    _, labels = cv2.distanceTransformWithLabels(seeds, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
    index_at = np.zeros(seeds.shape, np.int64)
    index_at[oy, ox] = np.arange(len(outer))
    zy, zx = np.nonzero(seeds == 0)
    outer_of_label = np.concatenate([[0], index_at[zy, zx]])
    detours: dict[int, list[np.ndarray]] = {}
    for hole in holes:
        i = int(outer_of_label[labels[hole[0, 1] - y0, hole[0, 0] - x0]])
        j = int(np.argmin(((hole - outer[i]) ** 2).sum(1)))
        detours.setdefault(i, []).append(np.concatenate([hole[j:], hole[: j + 1]]))  # round the hole, back to j
    return _with_detours(outer, detours)


def _with_detours(ring: np.ndarray, detours: dict[int, list[np.ndarray]]) -> np.ndarray:
    """``ring`` (``Kx2``) walked point by point; at point ``i`` each loop of ``detours[i]`` is walked
    (across a bridge to it and round) and the walk comes back across the same bridge to point ``i``."""
    pieces = []
    for i, point in enumerate(ring):
        pieces.append(point[None])
        for loop in detours.get(i, []):
            pieces.append(loop)
            pieces.append(point[None])  # back across the bridge
    return np.concatenate(pieces)


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
    return _with_detours(base, detours)


def normalised(ring: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pixel ``(x, y)`` -> ``[0, 1]`` by the image ``size = (H, W)``, as YOLO labels hold them."""
    h, w = size
    return np.clip(ring / np.array([w, h], dtype=np.float64), 0.0, 1.0)
