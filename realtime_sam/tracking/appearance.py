"""What an object looks like, and where in a frame something looks like it.

A track's appearance is a colour histogram of the pixels under its mask
(:func:`appearance_of`): hue-saturation for coloured pixels, brightness for
dark and grey ones. It is cheap, and steady under the lighting changes,
rotation and deformation that defeat a template. Two uses:

* **checking** a mask (:func:`similarity`): a lost track takes a mask back,
  and a track keeps a decoded mask, only when the mask looks like the track;
* **searching** a frame for a lost object (:func:`search_boxes`): where the
  object left the view or was hidden, it rarely comes back where its motion
  model coasted to. The frame's pixels are scored by how much more typical
  their colour is of the object than of the frame as a whole (the
  histogram ratio, Swain and Ballard's back-projection), averaged over a
  window of the object's size; the best windows become box prompts, and the
  masks the decoder gives there are checked as above.

Conventions: images ``HxWx3 uint8`` BGR; masks ``HxW bool``; boxes ``XYXY``
float source pixels.
"""

from __future__ import annotations

import cv2
import numpy as np

from realtime_sam.tracking.association import mask_to_box

__all__ = ["NUM_BINS", "colour_bins", "appearance_of", "similarity", "search_boxes"]

_HUE_BINS, _SAT_BINS, _GREY_BINS = 16, 4, 4
NUM_BINS = _HUE_BINS * _SAT_BINS + _GREY_BINS
"""Length of an appearance descriptor."""
_MIN_SAT = _MIN_VAL = 40  # below either, a pixel counts as grey (its hue is noise)
_POOL = 4  # windows scored by colour ratio per one kept: the kept ones are the most alike of them
_SEARCH_SIDE = 160  # the search scores a copy of the frame this long on its longest side


def colour_bins(image: np.ndarray) -> np.ndarray:
    """``HxW int32`` appearance bin of every pixel of ``image`` (``HxWx3 uint8`` BGR), in ``[0, NUM_BINS)``.

    Coloured pixels (saturation and value at least 40): ``hue_bin * 4 + sat_bin``
    (16 hue bins over OpenCV's 0..180, 4 saturation bins over 40..256); grey
    and dark ones: ``64 + value_bin`` (4 bins over 0..256). The bins of
    :func:`appearance_of` (which counts with ``cv2.calcHist``: a value on a bin
    edge may fall on the other side there).
    """
    hsv = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_BGR2HSV)
    h, s, v = (hsv[..., k].astype(np.int32) for k in range(3))
    chroma = (s >= _MIN_SAT) & (v >= _MIN_VAL)
    colour = (h * _HUE_BINS // 180) * _SAT_BINS + np.clip((s - _MIN_SAT) * _SAT_BINS // (256 - _MIN_SAT), 0, _SAT_BINS - 1)
    grey = _HUE_BINS * _SAT_BINS + v * _GREY_BINS // 256
    return np.where(chroma, colour, grey)


def appearance_of(image: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """``(NUM_BINS,) float32`` colour histogram of the pixels of ``image`` under ``mask``, summing to 1.

    See :func:`colour_bins` for the bins. At most about 64 samples along the
    mask's longer side are taken (a few thousand pixels are plenty). ``None``
    for an empty mask.
    """
    ext = mask_to_box(mask)
    if ext is None:
        return None
    x0, y0, x1, y1 = (int(v) for v in ext)
    step = max(1, int(max(x1 - x0, y1 - y0) // 64))
    crop = np.ascontiguousarray(image[y0:y1:step, x0:x1:step])
    m = np.ascontiguousarray(mask[y0:y1:step, x0:x1:step]).astype(np.uint8)
    hsv = cv2.cvtColor(crop, cv2.COLOR_BGR2HSV)
    chroma = (hsv[..., 1] >= _MIN_SAT) & (hsv[..., 2] >= _MIN_VAL)
    colour = cv2.calcHist([hsv], [0, 1], (m & chroma).astype(np.uint8), [_HUE_BINS, _SAT_BINS], [0, 180, _MIN_SAT, 256])
    grey = cv2.calcHist([hsv], [2], (m & ~chroma).astype(np.uint8), [_GREY_BINS], [0, 256])
    hist = np.concatenate([colour.reshape(-1), grey.reshape(-1)]).astype(np.float32)
    total = float(hist.sum())
    return hist / total if total > 0 else None


def similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Histogram intersection of two :func:`appearance_of` descriptors in ``[0, 1]``; 1 when either is missing."""
    if a is None or b is None or np.shape(a) != np.shape(b):
        return 1.0
    return float(np.minimum(a, b).sum())


def search_boxes(
    image: np.ndarray,
    appearance: np.ndarray,
    size: tuple[float, float],
    *,
    exclude: np.ndarray | None = None,
    count: int = 2,
    min_ratio: float = 2.0,
    partly_out: bool = False,
) -> list[np.ndarray]:
    """Up to ``count`` boxes of ``size = (w, h)`` source pixels where ``image`` looks most like ``appearance``.

    Each pixel of a copy of the frame shrunk to 160 px (longest side) scores
    ``p_object(colour) / p_frame(colour)``, clipped to 10; a window of the
    object's size is scored by its mean; the best windows, each at least one
    object size from the ones before and scoring at least ``min_ratio``
    (colours at least that much more typical of the object than of the
    frame), are candidates, four per box asked for; of those the ``count``
    whose middle's colours look most like ``appearance`` are returned, most
    alike first. (The ratio favours what holds the object's rarest colour
    alone; a small object's own window, holding all of its colours, was
    outscored by such look-alikes and never decoded: hard scene N = 5
    0.804 -> 0.870.) ``exclude`` (``HxW bool``, e.g. what
    the live tracks' masks cover) scores 0: another track's object is not
    this one. Boxes are clipped to the frame. ``partly_out``: an object that
    may be partly out of view (it left by an edge): a window is scored by its
    mean over the part of it inside the frame, so one half out of view at the
    edge scores as its visible half does.
    """
    h, w = image.shape[:2]
    s = min(1.0, _SEARCH_SIDE / max(h, w))
    sw, sh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    bins = colour_bins(small)
    frame_hist = np.bincount(bins.ravel(), minlength=NUM_BINS).astype(np.float64)
    frame_hist /= max(1.0, frame_hist.sum())
    ratio = np.minimum(np.asarray(appearance, np.float64) / np.maximum(frame_hist, 1e-6), 10.0).astype(np.float32)
    score = ratio[bins]
    if exclude is not None and exclude.any():
        score[cv2.resize(exclude.astype(np.uint8), (sw, sh), interpolation=cv2.INTER_NEAREST) > 0] = 0.0
    bw, bh = max(1, int(round(size[0] * s))), max(1, int(round(size[1] * s)))
    if partly_out:
        # Over the part of the window inside the frame: an object coming back into view is
        # partly out of it, and what lies beyond the edge is no evidence against it.
        total = cv2.boxFilter(score, -1, (bw, bh), normalize=False, borderType=cv2.BORDER_CONSTANT)
        inside = cv2.boxFilter(np.ones_like(score), -1, (bw, bh), normalize=False, borderType=cv2.BORDER_CONSTANT)
        mean = total / np.maximum(inside, 1.0)
    else:
        mean = cv2.boxFilter(score, -1, (bw, bh), normalize=True, borderType=cv2.BORDER_CONSTANT)
    out: list[np.ndarray] = []
    for _ in range(_POOL * count):
        _, best, _, (cx, cy) = cv2.minMaxLoc(mean)
        if best < min_ratio:
            break
        x, y = (cx + 0.5) / s, (cy + 0.5) / s
        box = np.array([x - size[0] / 2, y - size[1] / 2, x + size[0] / 2, y + size[1] / 2], dtype=np.float64)
        out.append(np.clip(box, 0, [w, h, w, h]))
        mean[max(0, cy - bh):cy + bh + 1, max(0, cx - bw):cx + bw + 1] = 0.0
    if len(out) > count:
        looks = [similarity(appearance, _window_look(image, b)) for b in out]
        out = [out[i] for i in np.argsort(-np.asarray(looks), kind="stable")[:count]]
    return out


def _window_look(image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
    """The colours of a window's middle (its central 60 %, less of the background around an object)."""
    h, w = image.shape[:2]
    c, half = (box[:2] + box[2:]) / 2.0, 0.3 * (box[2:] - box[:2])
    x0, y0 = (int(v) for v in np.clip(np.floor(c - half), 0, [w - 1, h - 1]))
    x1, y1 = (int(v) for v in np.clip(np.ceil(c + half), [x0 + 1, y0 + 1], [w, h]))
    return appearance_of(image[y0:y1, x0:x1], np.ones((y1 - y0, x1 - x0), bool))
