"""A first look at a new object, shown until the decoder's mask lands.

With background encodes (the CPU preset, live) a new object's mask comes
from an encode that lands 1-1.5 s after the prompt on two cores: until
then the user saw nothing where they had just drawn a box, and an
evaluation counted those frames as misses (a sixth of the hard scene, half
of a short DAVIS clip). A first look is a rough mask made from the frame's
own colours, at once: GrabCut (Rother et al., 2004) inside the prompt's
box, started from the ellipse the box inscribes, on a copy of the region
shrunk to :data:`SIDE` pixels (10-20 ms on two cores). Where GrabCut keeps
too little of the ellipse (an object that fills its box leaves GrabCut no
background inside it to tell apart), the ellipse itself is the first look.
On the first frames of the ten DAVIS sequences, with their ground-truth
boxes, it scores J 0.55 (the ellipse alone 0.51, the box 0.46); the
decoder's mask, when it lands, replaces it. The engine also takes a first
look at a lost object coming back into view through the edge it left by,
in the window where the band along that edge looks most like it
(``Engine._watch_edges``).

Conventions: images ``HxWx3 uint8`` BGR; masks ``HxW bool``; boxes ``XYXY``
float source pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from realtime_sam.types import ObjectPrompt

__all__ = ["SIDE", "first_look"]

SIDE = 96
"""GrabCut runs on the box's region (with a margin) shrunk to this many pixels on its
longer side: 64 px scored 0.02 J lower on DAVIS, 128 px no higher at twice the time."""

_MARGIN = 0.25  # of the box's longer side, around it: the background GrabCut learns from
_ITERATIONS = 3
_MIN_KEPT = 0.3  # of the ellipse's area: GrabCut keeping less has failed (see above)
_POINT_RADIUS = 2  # pixels of the shrunk region marked around each clicked point


def first_look(image: np.ndarray, prompt: ObjectPrompt) -> np.ndarray | None:
    """``HxW bool`` a rough mask of the object ``prompt`` boxes in ``image``, or ``None``.

    ``None`` for a prompt without a box (a click says where the object is,
    not how large it is) and for a box that lies outside the frame. The
    prompt's points, where given with the box, are kept in (label 1) or out
    (label 0) of the mask.
    """
    if prompt.box is None:
        return None
    h, w = image.shape[:2]
    x0, y0, x1, y1 = (float(v) for v in prompt.box)
    x0, x1 = max(0.0, min(x0, x1)), min(float(w), max(x0, x1))
    y0, y1 = max(0.0, min(y0, y1)), min(float(h), max(y0, y1))
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        return None
    m = _MARGIN * max(x1 - x0, y1 - y0) + 2.0
    X0, Y0 = int(max(0.0, x0 - m)), int(max(0.0, y0 - m))
    X1, Y1 = int(min(float(w), np.ceil(x1 + m))), int(min(float(h), np.ceil(y1 + m)))
    region = np.ascontiguousarray(image[Y0:Y1, X0:X1])
    if region.ndim == 2:
        region = cv2.cvtColor(region, cv2.COLOR_GRAY2BGR)
    s = min(1.0, SIDE / max(region.shape[:2]))
    small = cv2.resize(region, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1.0 else region

    def at(x: float, y: float) -> tuple[int, int]:
        return int(round((x - X0) * s)), int(round((y - Y0) * s))

    (bx0, by0), (bx1, by1) = at(x0, y0), at(x1, y1)
    centre = ((bx0 + bx1) // 2, (by0 + by1) // 2)
    axes = (max(1, (bx1 - bx0) // 2), max(1, (by1 - by0) // 2))
    prior = np.zeros(small.shape[:2], np.uint8)
    cv2.ellipse(prior, centre, axes, 0, 0, 360, 1, -1)
    labels = np.full(small.shape[:2], cv2.GC_BGD, np.uint8)  # outside the box: background
    labels[by0:by1, bx0:bx1] = cv2.GC_PR_BGD
    labels[prior > 0] = cv2.GC_PR_FGD
    for (px, py), label in zip(prompt.points, prompt.labels):
        cv2.circle(labels, at(px, py), _POINT_RADIUS, cv2.GC_FGD if label == 1 else cv2.GC_BGD, -1)
    kept = prior > 0
    try:
        bgd, fgd = np.zeros((1, 65)), np.zeros((1, 65))
        cv2.grabCut(small, labels, None, bgd, fgd, _ITERATIONS, cv2.GC_INIT_WITH_MASK)
        cut = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        if np.count_nonzero(cut) >= _MIN_KEPT * np.count_nonzero(kept):
            kept = cut
    except cv2.error:
        pass  # too few pixels of one kind to model (a box at the frame's edge, a flat frame): the ellipse
    whole = cv2.resize(kept.astype(np.uint8), (X1 - X0, Y1 - Y0), interpolation=cv2.INTER_LINEAR) > 0
    # Only the box's part: what it marks outside the box is not what the user boxed.
    u0, v0, u1, v1 = int(x0), int(y0), int(np.ceil(x1)), int(np.ceil(y1))
    mask = np.zeros((h, w), dtype=bool)
    mask[v0:v1, u0:u1] = whole[v0 - Y0:v1 - Y0, u0 - X0:u1 - X0]
    return mask if mask.any() else None
