"""A landed mask's shape brought up to date: the encoded frame aligned to now, then dense flow for the rest.

Live on a CPU a background encode lands 1-1.5 s after the frame it
embedded. Its masks are moved to the current frame as one piece (a
replay by sparse flow, or the box-to-box move the track made since), so
the shape is the object's shape of 1-1.5 s ago: a walking camel's legs, a
scooter's rider, a car turning on a roundabout have changed by then
(DAVIS camel bounced: J 0.95-0.98 on the encoded frame, 0.46-0.72 moved
to now). :class:`Reshaper` warps the landed mask once more, per pixel:

1. the similarity (translation, rotation, uniform scale) from the mask on
   the encoded frame to the mask as moved is read off their moments
   (centroids, areas, orientations; no rotation for a roundish mask,
   whose orientation is noise), so that the encoded frame can be laid
   over the current one where the object now is;
2. DIS optical flow (``medium``) from the current frame to the aligned
   encoded frame, on a crop around the moved mask shrunk to at most
   :data:`SIDE` pixels, gives what the one-piece move left: the object's
   change of shape (and any error of the move);
3. the aligned mask is pulled along that flow.

Over 1-1.5 s the flow can fail (a fast object, smoke, a wrong move to
start from), so the engine keeps the reshaped mask only where it looks at
least as much like the decoded object as the one-piece move does
(``Engine._reshaped``).

Conventions: images ``HxWx3 uint8`` BGR; masks ``HxW bool``; affines ``2x3``
in source pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from realtime_sam.tracking.association import mask_to_box

__all__ = ["SIDE", "Reshaper", "similarity_between"]

SIDE = 320
"""The crop the flow runs on is shrunk so its longest side is at most this many pixels."""

_ROUND = 0.8  # a mask whose second moments' eigenvalue ratio is above this has no orientation to speak of
_MARGIN = 0.5  # of the moved mask's box size, around it: the crop the flow sees
_PAD = 8  # pixels more around the crop


def _moments(mask: np.ndarray) -> tuple[float, float, float, float, float] | None:
    """``(cx, cy, area, orientation, roundness)`` of ``mask``, or ``None`` when empty.

    Orientation (radians) is the major axis's, from the second central
    moments; roundness is the ratio of their smaller eigenvalue to the larger
    (1 for a disc).
    """
    mo = cv2.moments(mask.astype(np.uint8), binaryImage=True)
    area = mo["m00"]
    if area <= 0:
        return None
    a, b, c = mo["mu20"] / area, mo["mu11"] / area, mo["mu02"] / area
    half = math.hypot((a - c) / 2.0, b)
    big, small = (a + c) / 2.0 + half, (a + c) / 2.0 - half
    return mo["m10"] / area, mo["m01"] / area, area, 0.5 * math.atan2(2.0 * b, a - c), small / big if big > 0 else 1.0


def similarity_between(mask_a: np.ndarray, mask_b: np.ndarray) -> np.ndarray | None:
    """The ``2x3`` similarity taking ``mask_a`` onto ``mask_b`` (``HxW bool`` each), from their moments.

    Centroid to centroid, scaled by the square root of their area ratio,
    turned by the difference of their orientations taken within a quarter
    turn (an axis has no direction); not turned when either mask is roundish
    (eigenvalue ratio above 0.8). ``None`` when either mask is empty.
    """
    ma, mb = _moments(mask_a), _moments(mask_b)
    if ma is None or mb is None:
        return None
    scale = math.sqrt(mb[2] / ma[2])
    turn = (mb[3] - ma[3] + math.pi / 2.0) % math.pi - math.pi / 2.0
    if max(ma[4], mb[4]) > _ROUND:
        turn = 0.0
    c, s = math.cos(turn) * scale, math.sin(turn) * scale
    return np.array([[c, -s, mb[0] - (c * ma[0] - s * ma[1])], [s, c, mb[1] - (s * ma[0] + c * ma[1])]])


class Reshaper:
    """Reshapes landed masks (see the module docstring). Not thread-safe: one per engine (it keeps a DIS instance)."""

    def __init__(self, side: int = SIDE) -> None:
        self.side = int(side)
        self._dis = None  # made at the first reshape: engines that never land (files, the gpu preset) run no flow here

    def __call__(
        self, image_then: np.ndarray, mask_then: np.ndarray, image_now: np.ndarray, mask_now: np.ndarray
    ) -> np.ndarray | None:
        """``mask_then`` (on ``image_then``) reshaped onto ``image_now`` where ``mask_now`` (its one-piece move) lies.

        Returns an ``HxW bool`` mask, or ``None`` when there is nothing to
        reshape (an empty mask, a crop too small for flow, a flow that
        leaves nothing). Only the crop around ``mask_now`` is reshaped; the
        mask is empty beyond it.
        """
        h, w = mask_now.shape
        m = similarity_between(mask_then, mask_now)
        box = mask_to_box(mask_now)
        if m is None or box is None:
            return None
        x0, y0, x1, y1 = box
        bw, bh = x1 - x0, y1 - y0
        cx0, cy0 = int(max(0.0, x0 - _MARGIN * bw - _PAD)), int(max(0.0, y0 - _MARGIN * bh - _PAD))
        cx1, cy1 = int(min(float(w), x1 + _MARGIN * bw + _PAD)), int(min(float(h), y1 + _MARGIN * bh + _PAD))
        cw, ch = cx1 - cx0, cy1 - cy0
        if cw < 16 or ch < 16:
            return None
        s = min(1.0, self.side / max(cw, ch))
        ww, wh = max(8, int(round(cw * s))), max(8, int(round(ch * s)))
        # Encoded frame -> (the similarity) -> current frame -> crop, shrunk: one affine.
        to_work = np.array([[s, 0.0, -s * cx0], [0.0, s, -s * cy0], [0.0, 0.0, 1.0]]) @ np.vstack([m, [0.0, 0.0, 1.0]])
        to_work = to_work[:2]
        grey_then = cv2.warpAffine(
            cv2.cvtColor(image_then, cv2.COLOR_BGR2GRAY), to_work, (ww, wh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        soft_then = cv2.warpAffine(
            mask_then.astype(np.float32), to_work, (ww, wh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0
        )
        grey_now = cv2.resize(cv2.cvtColor(image_now[cy0:cy1, cx0:cx1], cv2.COLOR_BGR2GRAY), (ww, wh), interpolation=cv2.INTER_AREA)
        if self._dis is None:
            self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        back = self._dis.calc(grey_now, grey_then, None)  # where each pixel of now was on the aligned encoded frame
        gx, gy = np.meshgrid(np.arange(ww, dtype=np.float32), np.arange(wh, dtype=np.float32))
        pulled = cv2.remap(soft_then, gx + back[..., 0], gy + back[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
        out = np.zeros((h, w), dtype=bool)
        out[cy0:cy1, cx0:cx1] = cv2.resize(pulled, (cw, ch), interpolation=cv2.INTER_LINEAR) > 0.5
        return out if out.any() else None
