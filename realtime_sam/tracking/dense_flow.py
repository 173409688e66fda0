"""Dense optical flow that carries each track's soft mask (SAM's low-res logits) between encodes.

Between two runs of the image encoder, a track is its ``256x256`` low-res
logits, the same array the decoder gives and takes back as a mask prompt.
Each frame, :class:`DenseFlowPropagator` moves every track's logits to the
new frame, per pixel, with dense optical flow:

1. DIS optical flow (OpenCV) between the previous and current frame, both
   ways, on a crop around each object shrunk so its longest side is at most
   ``max_side`` pixels (small objects get full-resolution flow), sampled at
   the centre of every low-res logit cell; objects close together share one
   crop, their union, where that costs no more and is not shrunk more;
2. forward-backward consistency marks the cells where flow is unreliable
   (occluded or newly revealed pixels, flow errors);
3. each track gets its own backward displacement field: the dense flow where
   it is reliable and not covered by a track in front of it, elsewhere the
   track's own motion (a similarity transform fitted to the reliable flow
   inside its visible mask), so a mask is not dragged along by an object
   passing in front, and the background revealed behind a moving object is
   not smeared into its mask;
4. the fields are composed since the track's last decode (the *key*
   logits), so the key logits are resampled once, not once per frame (no
   blur accumulates); from the second to the tenth frame after it, a flow
   straight from the current frame back to the key frame (DIS
   ``ultrafast``, both ways) stands in for the composition wherever it is
   forward-backward consistent and matches the key frame's colours clearly
   better (``key_flow``): the composition adds up each step's error, the
   direct flow has none to add up (but fails where the key frame is far
   away), so each cell takes whichever lands on the colours it had;
5. appearance refinement: at each decode, colour histograms (Lab,
   ``app_bins`` per channel, on the frame shrunk to the logit grid) of the
   track's mask and of a ring around it (its box grown ``app_ring`` per
   side), for the whole object and for each tile of ``app_tile`` cells near
   its edge (an object's colours often lie around it elsewhere: one model
   for the whole object moved correct edges); each frame, within
   ``app_band`` cells of the warped mask's edge, the logits are replaced by
   signed distance to the edge (cells) plus ``app_lambda`` times the clipped
   colour log-likelihood ratio of the tile the cell's content came from (the
   composed flow says where), that ratio smoothed over the neighbouring
   cells on the same side of the edge (a Gaussian of ``app_smooth`` cells);
   the key and the composition are left as they are, so nothing accumulates;
6. the visible mask is the warped logits above 0 minus what tracks in front
   cover, upsampled to the source size as the decoder's masks are;
7. for display and output (``edge_motion``), the pixels at that mask's edge
   are re-decided at source resolution by the object's and the background's
   motion (:func:`edge_by_motion`): the flow blurs the two together at the
   edge, and each edge pixel goes to whichever one carries the previous
   frame's colours onto it. Tracking goes on with the mask of step 6.

Two-way propagation of a file (:mod:`realtime_sam.tracking.two_way`) carries
masks back over frame pairs the engine's propagator has just carried them
forward over. A :class:`FlowCache` shared by the two keeps the forward
run's flow (both ways, sampled at the cells) per frame pair and crop; the
backward run takes a crop of the forward run's that holds its object with
margin to spare and reads the same two flows with their roles swapped,
instead of running DIS twice more per object and frame.

Who is in front starts as the caller's knowledge (``order``, front first;
the engine takes it from which mask won the overlap at the last decode).
Where two tracks' whole masks meet between decodes, the flow decides: only
the front object is seen there, so the track whose fitted motion explains
the shared cells' flow better goes in front (:attr:`DenseFlowPropagator.order`
is the order used). A track with less than 30 % of its cells clear of the
tracks in front of it is mostly behind one: it coasts on its last motion, not
on the flow of the sliver left in view (which is the other object's edge).
A track in front is never hidden by one behind it, however much of it the
other's whole mask holds.

Conventions: images ``HxWx3 uint8`` BGR; logits ``256x256 float32`` cover the
source image resized so its longest side is 1024 and padded bottom/right
(one cell is ``max(H, W) / 256`` source pixels); masks ``HxW bool`` at source
size; boxes ``XYXY`` float pixels, exclusive far edges.
"""

from __future__ import annotations

import math
import weakref
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass
from typing import Callable, Collection, Mapping, NamedTuple, Sequence

import cv2
import numpy as np

from realtime_sam.tracking.association import box_motion, mask_to_box
from realtime_sam.tracking.propagation import FLOW_PRESETS, _grey

__all__ = [
    "DenseFlowPropagator", "Deferred", "FlowCache", "FlowResult", "edge_by_motion", "grid_shape", "logits_to_mask", "warp_logits", "move_logits",
]

LOWRES = 256  # side of SAM's low-res logits
_IMG = 1024  # side of SAM's padded input square
_FAR = -1.0e4  # map coordinate of cells with no source (samples the fill value)
_HIDDEN = 0.3  # a track with less than this fraction of its cells clear of the tracks in front of it coasts
_MEET = 24.0  # pixels: objects whose boxes come this close get flow on crops of their own (see step)
_KNOWN_MARGIN = 0.5  # of the usual crop margin: how much room a reused forward crop must leave around the object
_APP_EPS = 1.0 / 2000  # added to both histograms' probabilities before their ratio
_TILE_PRIOR = 30.0  # cells: how strongly a tile's colour histograms lean on the whole object's
_SMOOTH_REACH = 1.5  # cells beyond the refined band whose colours the smoothing reads (its support at the band's edge)
_DEPTH_MARGIN = 1.0  # cells: how much better one track's motion must explain shared flow to be in front
# The flow straight back to the key frame (key_flow). DIS ultrafast: on DAVIS it corrects the
# composition almost as well as medium (the ground truth carried 4 frames: J 0.757 against
# 0.759, the composition alone 0.716) at an eighth of the time.
_KEY_PRESET = cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST
# How much closer (Lab, summed over the channels, on the frame shrunk to the cells) the direct
# flow must land to the key frame's colours than the composition to be taken: DIS minimises
# exactly that error, so its direct flow wins near-ties even where it is wrong (a zooming
# camera, DAVIS motocross-jump). And over how many cells the colour difference is averaged.
_KEY_MARGIN = 6.0
_KEY_SIGMA = 1.0
# Steps after the key the direct flow is tried for. Further off it is consistent and wrong on
# plain surfaces often enough to lose objects (DAVIS scooter-black played backwards, encodes
# every 30 frames: the scooter lost by frame 30; J 0.761 -> 0.440 with no limit, 0.720 with 10).
_KEY_HORIZON = 10
# Deferred shown masks (DenseFlowPropagator.defer_edges): a chain this long is worked out as it
# stands, so that what it holds (a mask and two frames a step) stays bounded when nobody asks.
_DEFER_DEPTH = 64
# The edge re-decided by motion (edge_by_motion): the band tested, either side of the warped edge,
# and the Gaussian that spreads the object's and the background's flow, in low-res cells (on DAVIS,
# 854x480, about 2 and 4 pixels: a wider band, 3-6 px, gained less, 10 px lost); the colour patch, pixels.
_EDGE_BAND = 0.6
_EDGE_SIGMA = 1.2
_EDGE_PATCH = 3
_EDGE_FAST = 0.15  # of the object's size (the root of its area) a frame: faster, its edge is left as warped
# DIS's preset by the names PropagationConfig.flow_preset takes (named once, in propagation.py).
_PRESETS = {name: getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{name.upper()}") for name in FLOW_PRESETS}


Submit = Callable[..., Future]  # submit(fn, *args) -> Future: runs fn on a thread lent by the caller


class _DisPair:
    """DIS both ways on one crop, the two directions side by side when a thread is lent.

    OpenCV spreads one DIS call over the cores only in part, and lets go of
    the GIL while it works: on 2 cores a crop's two calls took 18.9 ms one
    after the other and 16.0 ms side by side at 480x360 with ``medium``
    (5.0 against 3.7 ms at 240x180; ``ultrafast`` 2.2 against 1.7 ms).
    One instance a direction (``back``, ``fwd``: anything with DIS's
    ``calc``), as DIS keeps working buffers; it keeps nothing from one call
    to the next, so the flows are the same numbers as one instance's in turn.
    """

    def __init__(self, preset: int) -> None:
        self.back = cv2.DISOpticalFlow_create(preset)
        self.fwd = cv2.DISOpticalFlow_create(preset)

    def both(self, a: np.ndarray, b: np.ndarray, submit: Submit | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(flow b -> a, flow a -> b)`` between grey images ``a`` and ``b``, each ``(h, w, 2) float32``
        (DIS's ``calc(b, a)`` and ``calc(a, b)``): the first on the lent thread (``submit``), the second here."""
        if submit is None:
            return self.back.calc(b, a, None), self.fwd.calc(a, b, None)
        job = submit(self.back.calc, b, a, None)
        fwd = self.fwd.calc(a, b, None)
        return _result_or_run(job, self.back.calc, b, a, None), fwd


def _result_or_run(job: Future | None, fn: Callable, *args):
    """``job``'s result (``fn(*args)`` submitted to a lent thread); ``fn(*args)`` run here when there is
    no ``job``, or the thread was taken back (its owner closing) and the call cancelled before it ran."""
    if job is not None:
        try:
            return job.result()
        except CancelledError:
            pass
    return fn(*args)


class Deferred:
    """A value worked out when first asked for (``deferred()``), then kept: ``fn(*args)``, where an
    argument that is itself a :class:`Deferred` stands for its value.

    Dense flow's shown masks are made so when their edges are left to whoever
    shows them (:attr:`DenseFlowPropagator.defer_edges`): each is
    :func:`edge_by_motion` of the one before, and two-way, which blends most
    of them away, asks only for those it shows as they are. Once worked out it
    lets go of its arguments (the chain before it). Not thread-safe: ask on
    the thread that made it.

    Attributes:
        depth: at most how many values not yet worked out this one waits on,
            itself included (0 once worked out; what was made from it before
            keeps the count it had then).
    """

    __slots__ = ("_fn", "_args", "_value", "depth")

    def __init__(self, fn: Callable, *args: object) -> None:
        self._fn: Callable | None = fn
        self._args: tuple | None = args
        self._value: object = None
        self.depth = 1 + max((a.depth for a in args if isinstance(a, Deferred)), default=0)

    def __call__(self):
        if self._fn is not None:
            fn, args = self._fn, self._args or ()
            self._value = fn(*(a() if isinstance(a, Deferred) else a for a in args))
            self._fn = self._args = None
            self.depth = 0
        return self._value


def _uncovered(mask: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """``mask & ~cover`` (a new array)."""
    return mask & ~cover


@dataclass
class _Lent:
    """The thread lent to a propagator and the fresh ones made from it (see :meth:`DenseFlowPropagator.lend`)."""

    submit: Submit | None = None


def _near(a, b, pad: float) -> bool:
    """Whether boxes ``a`` and ``b`` (XYXY, or None) come within ``pad`` pixels of each other."""
    if a is None or b is None:
        return False
    return a[0] - pad < b[2] and b[0] - pad < a[2] and a[1] - pad < b[3] and b[1] - pad < a[3]


def _length(v: np.ndarray) -> np.ndarray:
    """``(..., 2)`` vectors -> their lengths (two products and a sum: ``sum(-1)`` on a last axis of two is slow)."""
    return np.sqrt(v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1])


def _resample_map(coords: np.ndarray, mx: np.ndarray, my: np.ndarray) -> np.ndarray:
    """``coords`` (``(rows, cols, 2)`` source-grid positions) read at ``(mx, my)``: a composition of maps.

    Bilinear; beyond ``coords``' edge the no-source marker ``_FAR``.
    """
    return cv2.remap(coords, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(_FAR, _FAR))


def edge_by_motion(
    before: np.ndarray, mask: np.ndarray, back: np.ndarray, lab_prev: np.ndarray, lab_cur: np.ndarray
) -> np.ndarray:
    """``mask`` with the pixels near its edge given to the object or the background by which one's motion explains them.

    A mask warped by dense flow is right inside and far outside but blurred at
    its edge, where DIS smooths the object's flow into the background's and
    back. Each pixel within about 0.6 of a low-res cell of ``mask``'s edge
    is tested against two motions: the object's (its backward flow averaged,
    Gaussian-weighted, over the mask's inside away from the edge) and the
    background's (likewise over a ring outside). The motion whose source in
    the previous frame matches the pixel's colour better (squared Lab
    difference summed over a 3x3 patch) decides, when its source lies in the
    matching part of ``before``: the object's motion from inside it makes
    the pixel the object's, the background's from outside it makes it
    background. A pixel whose background source the object covered and whose
    object source it did not is background coming into view. Where the
    better motion's source lies in the other part, ``mask`` stands.

    Args:
        before: ``HxW bool``, the object's mask on the previous frame.
        mask: ``HxW bool``, its mask on the current frame, as warped.
        back: ``(rows, cols, 2) float32`` backward flow (current -> previous
            frame) at the low-res cells, in cells (the grid of
            :func:`grid_shape`; zero where none was computed).
        lab_prev, lab_cur: ``HxWx3 uint8``, the two frames in Lab.

    Returns:
        ``HxW bool``, a new array; a copy of ``mask`` when it has no inside to
        take the object's motion from, or when the object moves more than
        ``0.15`` of its size (the square root of its area) a frame: DIS loses
        small fast objects, and the motions read from its flow are wrong there.

    On DAVIS (the ten sequences, oracle decoder) the engine's one-way J at
    N = 5 / 15 / 30 rose from 0.850 / 0.748 / 0.656 to 0.853 / 0.752 / 0.659,
    no sequence losing at N = 5; the ground truth carried frame by frame by
    DIS alone, re-decided each frame, from 0.884 / 0.823 / 0.773 / 0.729 to
    0.889 / 0.832 / 0.784 / 0.741 one to four frames on (README, the record).
    """
    h, w = mask.shape
    rows, cols = back.shape[:2]
    cell_x, cell_y = w / cols, h / rows
    cell = max(cell_x, cell_y)
    band = max(1, int(round(_EDGE_BAND * cell)))
    sigma = _EDGE_SIGMA * cell
    box = mask_to_box(mask | before)
    if box is None:
        return mask.copy()
    pad = int(math.ceil(3 * band + 3 * sigma)) + 2
    x0, y0 = max(0, int(box[0]) - pad), max(0, int(box[1]) - pad)
    x1, y1 = min(w, int(math.ceil(box[2])) + pad), min(h, int(math.ceil(box[3])) + pad)
    m = mask[y0:y1, x0:x1].astype(np.uint8)
    inner = cv2.erode(m, np.ones((2 * band + 1, 2 * band + 1), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    if not inner.any():
        return mask.copy()
    outer = cv2.dilate(m, np.ones((2 * band + 1, 2 * band + 1), np.uint8))
    ring = cv2.dilate(outer, np.ones((4 * band + 1, 4 * band + 1), np.uint8)) & (1 - outer)
    # The two motions are smooth (spread by a Gaussian of about a cell from where they are
    # measured): made on the window shrunk to about a pixel per cell, read at the band's pixels.
    k = max(1, int(cell))
    sw, sh = max(1, -(-(x1 - x0) // k)), max(1, -(-(y1 - y0) // k))
    sx, sy = (x1 - x0) / sw, (y1 - y0) / sh  # window pixels per small pixel
    map_x = (x0 + (np.arange(sw, dtype=np.float32) + 0.5) * sx) / cell_x - 0.5
    map_y = (y0 + (np.arange(sh, dtype=np.float32) + 0.5) * sy) / cell_y - 0.5
    flow = cv2.remap(
        back, np.ascontiguousarray(np.broadcast_to(map_x, (sh, sw))),
        np.ascontiguousarray(np.broadcast_to(map_y[:, None], (sh, sw))),
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE,
    ) * np.float32([cell_x, cell_y])
    small_inner = cv2.resize(inner.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    small_ring = cv2.resize(ring.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA)
    inside = small_inner > 0.5
    if inside.any():
        speed = math.hypot(*(float(v) for v in np.median(flow[inside], axis=0)))
        if speed > _EDGE_FAST * math.sqrt(float(np.count_nonzero(m))):
            # (The hard scenes' small fast object: with its edges re-decided, it was lost for good.)
            return mask.copy()

    def spread(where: np.ndarray) -> np.ndarray:
        # A motion spread from where it is measured: (its Gaussian-weighted mean flow, the weight).
        weight = cv2.GaussianBlur(where, (0, 0), sigma / sx, sigmaY=sigma / sy)
        fx = cv2.GaussianBlur(flow[..., 0] * where, (0, 0), sigma / sx, sigmaY=sigma / sy)
        fy = cv2.GaussianBlur(flow[..., 1] * where, (0, 0), sigma / sx, sigmaY=sigma / sy)
        inv = 1.0 / np.maximum(weight, 1e-4)
        return np.dstack([fx * inv, fy * inv, weight])

    tested = (outer > 0) & (inner == 0)
    near = cv2.dilate(tested.astype(np.uint8), np.ones((_EDGE_PATCH, _EDGE_PATCH), np.uint8)) > 0  # and the patches' pixels
    py, px = np.nonzero(near)
    u, v = (px + 0.5) / sx - 0.5, (py + 0.5) / sy - 0.5
    fx_, fy_ = (px + x0).astype(np.float32), (py + y0).astype(np.float32)
    cur = lab_cur[py + y0, px + x0].astype(np.float32)
    was = before.view(np.uint8)
    patch = (_EDGE_PATCH, _EDGE_PATCH)
    came, weight = [], []
    e = np.zeros((*near.shape, 2), np.float32)  # each motion's squared colour difference, a channel each
    for side, where in enumerate((small_inner, small_ring)):
        f = _sample(spread(where), u, v, cv2.BORDER_REPLICATE)
        sx_, sy_ = fx_ + f[:, 0], fy_ + f[:, 1]
        then = _sample(lab_prev, sx_, sy_, cv2.BORDER_REPLICATE).astype(np.float32)
        e[py, px, side] = ((cur - then) ** 2).sum(axis=1)
        # In the object on the previous frame, where this motion brings the pixel from.
        came.append(_sample(was, sx_, sy_, cv2.BORDER_CONSTANT)[:, 0] > 0)
        weight.append(f[:, 2])
    # Summed over each pixel's patch (both channels at once: the same sums as one by one).
    err = cv2.boxFilter(e, -1, patch, normalize=False)[py, px]
    err_obj, err_bg = err[:, 0], err[:, 1]
    in_obj, in_bg = came
    # Both motions must be measured near the pixel, and it must lie in the band.
    ok = tested[py, px] & (weight[0] > 0.05) & (weight[1] > 0.05)
    obj_better, bg_better = err_obj < err_bg, err_bg < err_obj
    is_obj = ok & in_obj & (obj_better | (in_bg & ~bg_better))
    is_bg = ok & ~is_obj & ((bg_better & ~in_bg) | (~in_obj & in_bg))
    out = mask.copy()
    out[py[is_obj] + y0, px[is_obj] + x0] = True
    out[py[is_bg] + y0, px[is_bg] + x0] = False
    return out


def _sample(image: np.ndarray, x: np.ndarray, y: np.ndarray, border: int) -> np.ndarray:
    """``(N, C)``: ``image`` (``HxW`` or ``HxWxC``) read bilinearly at the points ``(x, y)`` (``(N,)`` each).

    ``cv2.remap`` with maps laid out in rows of 1024 (it takes no side of 32767
    or more); outside the image as ``border`` says (constant: 0).
    """
    n = len(x)
    rows = max(1, -(-n // 1024))
    mx = np.zeros(rows * 1024, np.float32)
    my = np.zeros(rows * 1024, np.float32)
    mx[:n], my[:n] = x, y
    out = cv2.remap(image, mx.reshape(rows, 1024), my.reshape(rows, 1024), cv2.INTER_LINEAR, borderMode=border, borderValue=0)
    return out.reshape(rows * 1024, -1)[:n]


def _full_lab(image: np.ndarray) -> np.ndarray:
    """``HxWx3 uint8``: a frame in Lab (grey: its value thrice), as :func:`edge_by_motion` reads colours
    (the engine's steps and two-way's blended masks alike)."""
    if image.ndim == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2Lab)
    return np.repeat(image[..., None], 3, axis=2)


def grid_shape(height: int, width: int) -> tuple[int, int]:
    """``(rows, cols)`` of the low-res logit cells that cover a ``height x width`` image (the rest is padding)."""
    scale = _IMG / max(height, width)
    h1, w1 = int(height * scale + 0.5), int(width * scale + 0.5)
    return int(math.ceil(h1 * LOWRES / _IMG)), int(math.ceil(w1 * LOWRES / _IMG))


def logits_to_mask(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``256x256`` logits -> ``HxW bool`` at ``size = (H, W)``, as the decoder's masks are made.

    The padding is cropped at low resolution and the rest upsampled
    bilinearly (half-pixel centres) straight to the source size, as
    :func:`realtime_sam.tracking.engine.low_res_to_masks` does.
    """
    h, w = size
    rows, cols = grid_shape(h, w)
    valid = np.ascontiguousarray(logits[:rows, :cols], dtype=np.float32)
    up = cv2.resize(valid, (w, h), interpolation=cv2.INTER_LINEAR)
    return up > 0


def warp_logits(logits: np.ndarray, m: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``256x256`` logits moved by the 2x3 affine ``m`` given in source pixels of a ``size = (H, W)`` frame.

    Cells moved in from beyond the frame's edge repeat the edge cell (an object
    cut by the edge goes on beyond it); the padding cells take the logits' own
    background level (at most -10).
    """
    h, w = size
    rows, cols = grid_shape(h, w)
    sx, sy = cols / w, rows / h  # cells per source pixel
    # In cell units: x_cell = (x_src + 0.5) * s - 0.5.
    a = np.asarray(m, dtype=np.float64)[:, :2] * np.array([[1.0, sx / sy], [sy / sx, 1.0]])
    kx, ky = 0.5 * sx - 0.5, 0.5 * sy - 0.5
    t = np.array([m[0, 2] * sx, m[1, 2] * sy]) + np.array([kx, ky]) - a @ np.array([kx, ky])
    ml = np.concatenate([a, t[:, None]], axis=1)
    fill = float(min(float(np.min(logits)), -10.0))
    out = np.full((LOWRES, LOWRES), fill, np.float32)
    out[:rows, :cols] = cv2.warpAffine(
        np.ascontiguousarray(np.asarray(logits, np.float32)[:rows, :cols]), ml, (cols, rows), flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out


def move_logits(logits: np.ndarray, box_then, box_now, size: tuple[int, int], *, scale: bool = True) -> np.ndarray:
    """``256x256`` logits decoded where the object's box was ``box_then``, moved to ``box_now``.

    The one way the tracking code re-aligns a mask prompt with a moved box:
    :func:`warp_logits` by :func:`~realtime_sam.tracking.association.box_motion`
    (translation, and with ``scale`` the boxes' size ratio). ``size = (H, W)``.
    """
    return warp_logits(logits, box_motion(box_then, box_now, scale=scale), size)


Crop = tuple[int, int, int, int]


class _Flows(NamedTuple):
    """Flow both ways on one crop of a frame pair, sampled at the cells of ``block`` (see ``_flows``)."""

    back: np.ndarray  # (by, bx, 2) float32: cur -> prev displacement, cells
    fwd: np.ndarray  # (by, bx, 2) float32: prev -> cur displacement, cells
    block: tuple[slice, slice]  # the cells whose centres fall in the crop


class FlowCache:
    """Flow a forward run computed, per frame pair and crop, for a backward run over the same frames.

    The forward propagator records (``record_to``) every crop's flows for
    its step from ``prev`` to ``cur``; a backward propagator over the same
    frames (``reuse_from``) asks for the pair the other way round. Frames are
    matched by identity (the arrays the engine passed, which
    :class:`~realtime_sam.tracking.two_way.TwoWay` holds in its results) and
    held weakly: a pair whose frames are gone is dropped, so an engine that
    records with no backward run left (reused for a live source) keeps no
    frames alive. Only the last ``max_frames`` pairs are kept: about
    ``0.8 MB`` per object and pair at 640x480 (the flows at the cells, not
    the pixels).

    Attributes:
        hits, misses: crops a backward step found here, and those it computed anew.
    """

    def __init__(self, max_frames: int = 32) -> None:
        if max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {max_frames}")
        self.max_frames = int(max_frames)
        # (prev image, cur image, {crop: flows}), oldest first; the images by weak reference
        self._pairs: list[tuple[weakref.ref, weakref.ref, dict[Crop, _Flows]]] = []
        self.hits = 0
        self.misses = 0

    def clear(self) -> None:
        self._pairs.clear()

    def put(self, prev: np.ndarray, cur: np.ndarray, crop: Crop, flows: _Flows) -> None:
        if self._pairs and self._pairs[-1][0]() is prev and self._pairs[-1][1]() is cur:
            self._pairs[-1][2][crop] = flows
            return
        self._pairs = [e for e in self._pairs if e[0]() is not None and e[1]() is not None]
        self._pairs.append((weakref.ref(prev), weakref.ref(cur), {crop: flows}))
        del self._pairs[: max(0, len(self._pairs) - self.max_frames)]

    def get(self, prev: np.ndarray, cur: np.ndarray) -> Mapping[Crop, _Flows]:
        """The crops recorded for the step from ``prev`` to ``cur`` (empty when none)."""
        for a, b, crops in reversed(self._pairs):
            if a() is prev and b() is cur:
                return crops
        return {}

    def __len__(self) -> int:
        """Frame pairs held."""
        return len(self._pairs)


class FlowResult(NamedTuple):
    """One track moved to the current frame.

    Attributes:
        logits: ``256x256 float32``, the track's whole (amodal) soft mask now;
            hidden parts move with the track's own motion.
        mask: ``HxW bool`` visible mask (``logits > 0`` minus tracks in front);
            ``None`` from a propagator made with ``masks=False``.
        box: ``(4,)`` float64 XYXY box of ``mask``, or ``None`` when nothing is
            visible (or no mask was made).
        measured: False when too little of the object was visible and
            reliably tracked to measure its motion (it moved on its last
            measured motion).
        visible: visible fraction of the whole soft mask (cells), in ``[0, 1]``.
        shown: ``HxW bool``, ``mask`` with its edge re-decided by the object's
            and the background's motion (:func:`edge_by_motion`), for display
            and output; ``None`` with ``edge_motion`` off; a :class:`Deferred`
            giving it with ``defer_edges``. ``mask`` and ``box`` are what
            tracking reasons with.
        back: ``(rows, cols, 2) float32``, the step's backward flow (current ->
            previous frame) at the low-res cells, in cells, on the crop the
            track's flow ran on (zero elsewhere): what :func:`edge_by_motion`
            reads (two-way re-decides its blended masks' edges with it).
    """

    logits: np.ndarray
    mask: np.ndarray | None
    box: np.ndarray | None
    measured: bool
    visible: float
    shown: np.ndarray | Deferred | None = None
    back: np.ndarray | None = None


def _log_ratio(pf: np.ndarray, pb: np.ndarray, clip: float) -> np.ndarray:
    """``float32``: the clipped colour log-likelihood ratio ``log(p_fg / p_bg)`` of two histograms' probabilities
    (each plus ``_APP_EPS``), the whole object's and each tile's alike."""
    return np.clip(np.log((pf + _APP_EPS) / (pb + _APP_EPS)), -clip, clip).astype(np.float32)


class _TileCounts(NamedTuple):
    """The colour histograms of the tiles near a key mask's edge, counted; their ratios are worked out
    at the few bins read (:meth:`ratio`): a table of every bin of every tile cost 2-8 ms an object."""

    fg: np.ndarray  # (n, bins) uint16 (int32 for tiles over 127 cells): the tile's (grown) foreground cells per colour bin
    bg: np.ndarray  # (n, bins), the same for the ring's cells
    fg_total: np.ndarray  # (n,) int64: each row's sum
    bg_total: np.ndarray
    prior_fg: np.ndarray  # (bins,) float64: the whole object's histograms, normalised (the prior)
    prior_bg: np.ndarray
    clip: float

    def ratio(self, rows: np.ndarray, bins: np.ndarray) -> np.ndarray:
        """``(n,) float32``: tile ``rows``' (0-based) clipped ``log(p_fg / p_bg)`` at ``bins``, the tile's
        histograms pulled towards the whole object's by ``_TILE_PRIOR`` cells."""
        pf = (self.fg[rows, bins] + _TILE_PRIOR * self.prior_fg[bins]) / (self.fg_total[rows] + _TILE_PRIOR)
        pb = (self.bg[rows, bins] + _TILE_PRIOR * self.prior_bg[bins]) / (self.bg_total[rows] + _TILE_PRIOR)
        return _log_ratio(pf, pb, self.clip)


class _ColourModel(NamedTuple):
    """Clipped ``log(p_fg / p_bg)`` per colour bin, from the key frame (see ``DenseFlowPropagator._colour_model``)."""

    whole: np.ndarray  # (bins,) float32: the whole mask against the whole ring
    lut: np.ndarray | None  # (tiles_y, tiles_x) int32: each tile's row of tiles plus one (0: the whole's), or None
    tiles: _TileCounts | None  # one row per tile near the edge
    tile: int  # tile side, cells


@dataclass
class _State:
    key: np.ndarray  # 256x256 logits at the last decode
    map: np.ndarray  # (rows, cols, 2) float32: where each current cell was in the key grid
    out: np.ndarray  # the logits last returned (to notice a new decode by identity)
    motion: np.ndarray  # 2x3 forward similarity of the last measured step, grid units
    fill: float
    colours: _ColourModel | None = None  # the object's colours at the key frame, or None
    # (rows, cols, 2) float32: where each current cell was in the grid the colour model's tiles are laid out on,
    # when that is not the key's (logits moved some other way since the decode); else None (map).
    model_map: np.ndarray | None = None
    key_grey: np.ndarray | None = None  # the key frame, grey, full size (key_flow)
    key_lab: np.ndarray | None = None  # (rows, cols, 3) float32: the key frame's Lab, shrunk to the cells (key_flow)
    steps: int = 0  # steps since the key
    shown: np.ndarray | Deferred | None = None  # HxW bool: the mask the last step made, its edge re-decided (edge_motion)


class DenseFlowPropagator:
    """Moves tracks' low-res logits from frame to frame (see the module docstring).

    Not thread-safe: one per video stream. Keeps the last frame's grey image
    and each track's composition state.

    Args:
        max_side: flow runs on frames shrunk so the longest side is at most this.
        preset: DIS preset, ``"ultrafast"``, ``"fast"`` or ``"medium"``.
        fb_tolerance: forward-backward error allowed, in low-res cells, plus
            ``fb_relative`` times the flow's magnitude.
        min_cells: fewer reliable visible cells than this and a track's motion
            is not measured this frame.
        rigid_tolerance: a track whose flow is within this many cells (median)
            of its fitted similarity moves as one piece by it (0: never).
        app_lambda: weight of the colour log-likelihood ratio near the mask's
            edge, in cells of signed distance per nat (0 turns it off).
        app_bins: colour histogram bins per Lab channel.
        app_band: cells either side of the warped mask's edge that may change.
        app_clip: the log-likelihood ratio is clipped to ``[-app_clip, app_clip]``.
        app_ring: background ring = the mask's box grown this much per side (plus 2 cells), minus the mask.
        app_tile: side, in cells, of the tiles of the key grid with a colour model of
            their own near the mask's edge (0: one model for the whole object).
        app_smooth: sigma, in cells, of the Gaussian that smooths the colour
            log-likelihood ratio over the band, each side of the edge on its
            own (0: each cell's own).
        key_flow: from the second step after a decode, check the composition
            against a flow straight back to the key frame, cell by cell (see
            the module docstring; two ``ultrafast`` DIS calls per crop).
        edge_motion: re-decide the pixels at each visible mask's edge by the
            object's and the background's motion (:func:`edge_by_motion`),
            from the mask the step before made (the decoded one after a decode).
            The logits are left as they are.
        masks: make each track's full-size visible mask (``FlowResult.mask``,
            ``box`` and ``shown``). ``False`` for a run whose logits alone are
            read (two-way's backward run): those three are ``None``, the logits
            the same numbers, and upsampling the masks (about 0.5 ms a track and
            step at 640x480) is saved.

    Attributes:
        defer_edges: with ``edge_motion``, leave each ``FlowResult.shown`` to
            whoever shows it: a :class:`Deferred` that works the edges out
            (and those of the steps before it that nobody asked for) when
            called, the same mask as made at once. Two-way, which shows a
            blend in place of most of them, sets it (:meth:`Engine.two_way
            <realtime_sam.tracking.engine.Engine.two_way>`). Off by default;
            set before the first step and left so.
    """

    def __init__(
        self, *, max_side: int = 480, preset: str = "medium", fb_tolerance: float = 0.5, fb_relative: float = 0.1,
        min_cells: int = 4, rigid_tolerance: float = 0.0,
        app_lambda: float = 1.25, app_bins: int = 16, app_band: float = 2.5, app_clip: float = 3.0, app_ring: float = 0.3,
        app_tile: int = 8, app_smooth: float = 0.8, key_flow: bool = True, edge_motion: bool = True, masks: bool = True,
    ) -> None:
        # The arguments as given, for fresh(): one list of settings, not a copy of it elsewhere.
        self._settings = dict(
            max_side=max_side, preset=preset, fb_tolerance=fb_tolerance, fb_relative=fb_relative, min_cells=min_cells,
            rigid_tolerance=rigid_tolerance, app_lambda=app_lambda, app_bins=app_bins, app_band=app_band,
            app_clip=app_clip, app_ring=app_ring, app_tile=app_tile, app_smooth=app_smooth, key_flow=key_flow,
            edge_motion=edge_motion, masks=masks,
        )
        self.app_lambda, self.app_bins, self.app_band = float(app_lambda), int(app_bins), float(app_band)
        self.app_clip, self.app_ring = float(app_clip), float(app_ring)
        self.app_tile = int(app_tile)
        self.app_smooth = float(app_smooth)
        if preset not in _PRESETS:
            raise ValueError(f"preset must be one of {', '.join(_PRESETS)}, got {preset!r}")
        self.max_side = int(max_side)
        self.preset = preset
        self.fb_tolerance = float(fb_tolerance)
        self.fb_relative = float(fb_relative)
        self.min_cells = int(min_cells)
        self.rigid_tolerance = float(rigid_tolerance)
        self.key_flow = bool(key_flow)
        self.masks = bool(masks)
        self.edge_motion = bool(edge_motion) and self.masks  # (the edges are the masks')
        self.defer_edges = False
        self._dis = _DisPair(_PRESETS[preset])
        self._key_dis = _DisPair(_KEY_PRESET) if self.key_flow else None
        self._lent = _Lent()
        # The last frame's conversions, for the next step whose previous frame it is:
        # (frame, grey, whole frame in Lab (Deferred with defer_edges) or None, its cells in Lab or None).
        self._last: tuple[np.ndarray, np.ndarray, np.ndarray | Deferred | None, np.ndarray | None] | None = None
        self._states: dict[int, _State] = {}
        self._geometry: tuple | None = None
        self.order: tuple[int, ...] = ()  # the order the last step used, front first (see _depth)
        # Flow shared with a backward run over the same frames (FlowCache): this propagator records
        # its steps' flows to record_to, and reads the reverse pair's from reuse_from.
        self.record_to: FlowCache | None = None
        self.reuse_from: FlowCache | None = None

    def fresh(self, **changes: object) -> "DenseFlowPropagator":
        """A new propagator with the same settings but ``changes``, and no state (e.g. to carry masks backwards).

        It shares this one's lent thread (:meth:`lend`), now and later.
        """
        out = DenseFlowPropagator(**{**self._settings, **changes})
        out._lent = self._lent
        return out

    def lend(self, submit: Submit | None) -> None:
        """Lend a thread: ``submit(fn, *args) -> Future`` runs ``fn`` on it; ``None`` takes it back.

        Each crop's flow one way then runs there while the other way runs on the
        calling thread (:class:`_DisPair`: about a tenth off a step with ``medium``
        on 2 cores; the same numbers), and so does the work a step is given to
        run beside it (:meth:`step`'s ``beside``), the frame's colour conversions
        and each track's :func:`edge_by_motion` (OpenCV and numpy let go of the
        GIL for most of both; each needs nothing of the work left on the calling
        thread). The owner of the thread (the app's
        :class:`~realtime_sam.app.pipeline.Pipeline`) lends it and takes it back;
        a call it cancels when closing runs on the calling thread instead.
        """
        self._lent.submit = submit

    @property
    def lent(self) -> Submit | None:
        """The lent thread's ``submit`` (:meth:`lend`), ``None`` when none is lent: for work beside a step's."""
        return self._lent.submit

    def reset(self) -> None:
        """Forget the cached frame and every track's state."""
        self._last = None
        self._states.clear()

    def forget(self, keep: Sequence[int]) -> None:
        """Drop the state of tracks not in ``keep``."""
        for tid in [t for t in self._states if t not in keep]:
            del self._states[tid]

    # -- geometry ---------------------------------------------------------------------

    def _setup(self, h: int, w: int) -> tuple[int, int, np.ndarray]:
        """``(rows, cols, ident)`` for a ``h x w`` frame: the valid low-res grid and each
        cell's own ``(x, y)`` as a ``(rows, cols, 2) float32`` map (cached per size)."""
        if self._geometry is not None and self._geometry[0] == (h, w):
            return self._geometry[1]
        rows, cols = grid_shape(h, w)
        gx, gy = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))
        ident = np.dstack([gx, gy]).astype(np.float32)
        self._geometry = ((h, w), (rows, cols, ident))
        return self._geometry[1]

    # -- appearance -------------------------------------------------------------------

    @staticmethod
    def _lab(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
        """``(rows, cols, 3) uint8``: the frame shrunk to the low-res cells, in Lab (grey: its value thrice)."""
        small = cv2.resize(image, (cols, rows), interpolation=cv2.INTER_AREA)
        if small.ndim == 3:
            return cv2.cvtColor(small, cv2.COLOR_BGR2Lab)
        return np.repeat(small[..., None], 3, axis=2)

    def _colours(self, prev: np.ndarray, cur: np.ndarray, cached, rows: int, cols: int) -> tuple:
        """A step's colours: ``(lab_cur, idx_cur, edge_prev, edge_cur)``, the current frame's ``rows x cols``
        cells in Lab (:meth:`_lab`) and their bins (:meth:`_bins`), and both frames whole in Lab for the
        edges (:func:`_full_lab`; ``cached``: the last step's conversions, ``self._last``, or None);
        ``None`` each where not used. Reads nothing that changes during a step (it runs on the lent thread)."""
        lab_cur = self._lab(cur, rows, cols) if self.app_lambda > 0 or self.key_flow else None
        idx_cur = self._bins(lab_cur) if self.app_lambda > 0 else None
        edge_prev = edge_cur = None
        if self.edge_motion:
            # Whole frames in Lab for the edges' colours (the current one is the next step's previous);
            # with the edges deferred, converted only when an edge is worked out.
            edge_prev = cached[2] if cached is not None and cached[2] is not None else self._for_edges(_full_lab, prev)
            edge_cur = self._for_edges(_full_lab, cur)
        return lab_cur, idx_cur, edge_prev, edge_cur

    def _for_edges(self, fn: Callable, *args: object):
        """``fn(*args)``, an input of :func:`edge_by_motion`: made now, or with ``defer_edges`` a :class:`Deferred`
        made when an edge is worked out. (The arrays in ``args`` are kept as they are: a step's inputs
        are not changed after it, as ``_State.key`` already assumes.)"""
        return Deferred(fn, *args) if self.defer_edges else fn(*args)

    def _bins(self, small: np.ndarray) -> np.ndarray:
        """``(rows, cols) int32`` colour bin of every low-res cell, from its Lab (:meth:`_lab`)."""
        q = (small.astype(np.int32) * self.app_bins) >> 8
        return (q[..., 0] * self.app_bins + q[..., 1]) * self.app_bins + q[..., 2]

    def _colour_model(self, idx: np.ndarray, fg: np.ndarray) -> _ColourModel | None:
        """The colour model of the foreground ``fg`` (key-grid cells) against a ring around it; None when either is tiny.

        A global clipped per-bin ``log(p_fg / p_bg)`` over the whole mask and
        ring, and one per tile of ``app_tile`` cells (counted over the tile
        grown by half a tile per side, pulled towards the global histograms by
        a prior of ``_TILE_PRIOR`` cells) for the tiles near the mask's edge.
        """
        ys, xs = np.nonzero(fg)
        if len(xs) < 20:
            return None
        rows, cols = fg.shape
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        gx, gy = self.app_ring * (x1 - x0) + 2, self.app_ring * (y1 - y0) + 2
        ring = np.zeros_like(fg)
        ring[max(0, int(y0 - gy)):min(rows, int(math.ceil(y1 + gy))), max(0, int(x0 - gx)):min(cols, int(math.ceil(x1 + gx)))] = True
        ring &= ~fg
        if ring.sum() < 20:
            return None
        nb = self.app_bins**3
        hf = np.bincount(idx[fg], minlength=nb).astype(np.float64)
        hb = np.bincount(idx[ring], minlength=nb).astype(np.float64)
        gf, gb = hf / hf.sum(), hb / hb.sum()
        clip = self.app_clip
        whole = _log_ratio(gf, gb, clip)
        t = self.app_tile
        if t <= 0:
            return _ColourModel(whole, None, None, 0)
        ty, tx = -(-rows // t), -(-cols // t)
        lut = np.zeros((ty, tx), np.int32)  # each tile's row of the tiles' counts plus one; 0 is the whole object's
        # Only tiles whose window holds the key mask's edge get a model of their own: the band
        # round the warped mask reads tiles there (elsewhere, or off the key grid, the whole's).
        edge = cv2.dilate(fg.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        edge &= cv2.dilate((~fg).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        g = t // 2
        ey, ex = np.nonzero(edge)
        keys_f, keys_b = [], []  # each tile's cells' bins, offset by the tile's row: one count for all
        for a in range(max(0, (int(ey.min()) - g) // t), min(ty, (int(ey.max()) + g) // t + 1)):
            for b in range(max(0, (int(ex.min()) - g) // t), min(tx, (int(ex.max()) + g) // t + 1)):
                sl = (slice(max(0, a * t - g), (a + 1) * t + g), slice(max(0, b * t - g), (b + 1) * t + g))
                if not edge[sl].any():
                    continue
                keys_f.append(idx[sl][fg[sl]] + len(keys_f) * nb)
                keys_b.append(idx[sl][ring[sl]] + len(keys_b) * nb)
                lut[a, b] = len(keys_f)
        n = len(keys_f)
        if not n:
            return _ColourModel(whole, lut, None, t)
        # Kept per track until its next decode: as uint16 (a tile's window holds at most (2t)^2
        # cells) they take what the float32 tables did (a large DAVIS object: 2.4 MB).
        count = np.uint16 if (2 * t) ** 2 < 2**16 else np.int32
        counts = _TileCounts(
            np.bincount(np.concatenate(keys_f), minlength=n * nb).astype(count).reshape(n, nb),
            np.bincount(np.concatenate(keys_b), minlength=n * nb).astype(count).reshape(n, nb),
            np.array([len(k) for k in keys_f], np.int64), np.array([len(k) for k in keys_b], np.int64),
            gf, gb, clip,
        )
        return _ColourModel(whole, lut, counts, t)

    @staticmethod
    def _carry_model_map(old: _State, new_whole: np.ndarray, rows: int, cols: int) -> np.ndarray | None:
        """Where each cell of new logits moved some other way was in ``old``'s colour-model grid.

        The engine moves logits box to box (:func:`move_logits`): the cell's
        place in the old output's box, read through the old composition.
        None when either mask is empty.
        """
        prev = old.out[:rows, :cols] > 0
        if not prev.any() or not new_whole.any():
            return None
        (py, px), (ny, nx) = np.nonzero(prev), np.nonzero(new_whole)
        sx = (px.max() + 1 - px.min()) / (nx.max() + 1 - nx.min())
        sy = (py.max() + 1 - py.min()) / (ny.max() + 1 - ny.min())
        gx = ((np.arange(cols, dtype=np.float32) - nx.min()) * sx + px.min()).astype(np.float32)
        gy = ((np.arange(rows, dtype=np.float32) - ny.min()) * sy + py.min()).astype(np.float32)
        mx, my = np.meshgrid(gx, gy)
        base = old.map if old.model_map is None else old.model_map
        return _resample_map(base, mx, my)

    def _refine(self, model: _ColourModel, warped: np.ndarray, idx: np.ndarray, where: np.ndarray) -> np.ndarray:
        """Near the edge of ``warped > 0``: logits = 10 * (signed distance to the edge + app_lambda * llr), clipped to +-10.

        ``where``: ``(rows, cols, 2)`` where each cell was in the key grid (the
        composed flow), so each band cell reads the colour model of the tile
        its content came from; cells with no source read the global model.
        ``llr`` is the colour log-likelihood ratio smoothed over the cells
        around on the same side of the edge (``app_smooth``).
        """
        out = warped.copy()
        m = (warped > 0).astype(np.uint8)
        # Only cells near the edge change, so the work is done on a window round the mask:
        # the band and the cells its smoothing reads, grown by the Gaussian's reach (the
        # same numbers as over the whole grid; over the whole grid it cost 1 ms a track).
        bx, by, bw, bh = cv2.boundingRect(m)
        if bw == 0:
            return out  # nothing inside: no edge
        rows, cols = m.shape
        pad = int(math.ceil(self.app_band + _SMOOTH_REACH)) + int(math.ceil(4 * self.app_smooth)) + 2
        # Columns on multiples of 16: OpenCV's Gaussian sums a row's cells in vector lanes and
        # its last few one by one, which differ in the last bit; aligned, each cell is summed as
        # over the whole grid, and the results are the same to the bit.
        x0, x1 = (max(0, bx - pad) // 16) * 16, min(cols, -(-(bx + bw + pad) // 16) * 16)
        win = (slice(max(0, by - pad), min(rows, by + bh + pad)), slice(x0, x1))
        m, idx, where = m[win], idx[win], where[win]
        din = cv2.distanceTransform(m, cv2.DIST_L2, 3)
        dout = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
        sd = np.where(m > 0, din - 0.5, 0.5 - dout)
        band = np.abs(sd) <= self.app_band
        smooth = self.app_smooth > 0
        reach = np.abs(sd) <= self.app_band + _SMOOTH_REACH if smooth else band
        llr = self._llr(model, idx[reach], where[reach])
        if smooth:
            # One cell's colour is noisy evidence (a cell on the edge holds both sides), and an
            # edge set cell by cell on it frays into both sides at the 3-4 px a cell is. Each
            # band cell reads a normalised Gaussian of the cells on its own side of the edge:
            # averaged across the edge too, a thin part (kite-surf's kite and lines) took the
            # colours around it and was cut off (DAVIS one-way at N = 5: J 0.845 -> 0.851 but
            # F 0.878 -> 0.870; per side, J 0.849 and F 0.876, J&F up at every N).
            grid = np.zeros(m.shape, np.float32)
            grid[reach] = llr
            inside = m > 0
            llr = np.empty(int(band.sum()), np.float32)
            for side in (inside, ~inside):
                w = (reach & side).astype(np.float32)
                num = cv2.GaussianBlur(grid * w, (0, 0), self.app_smooth)
                den = cv2.GaussianBlur(w, (0, 0), self.app_smooth)
                sel = band & side
                llr[side[band]] = num[sel] / np.maximum(den[sel], 1e-3)
        score = sd[band] + self.app_lambda * llr
        out[win][band] = np.clip(score * 10.0, -10.0, 10.0)
        return out

    @staticmethod
    def _llr(model: _ColourModel, bins: np.ndarray, src: np.ndarray) -> np.ndarray:
        """``(n,) float32`` colour log-likelihood ratio of cells with colour ``bins`` whose content came from ``src``
        (``(n, 2)`` key-grid ``x, y``): their tile's model, or the whole object's (no tiles, or no source)."""
        if model.lut is None:
            return model.whole[bins]
        ty, tx = model.lut.shape
        a = np.clip((src[:, 1] + 0.5) // model.tile, 0, ty - 1).astype(np.intp)
        b = np.clip((src[:, 0] + 0.5) // model.tile, 0, tx - 1).astype(np.intp)
        row = np.where(src[:, 0] > _FAR / 2, model.lut[a, b], 0)  # no source: the whole object's
        out = model.whole[bins]
        tiled = row > 0
        if tiled.any():
            out[tiled] = model.tiles.ratio(row[tiled] - 1, bins[tiled])
        return out

    # -- the step ---------------------------------------------------------------------

    def step(
        self,
        prev: np.ndarray,
        cur: np.ndarray,
        tracks: Mapping[int, np.ndarray],
        order: Sequence[int] = (),
        decoded: Collection[int] | None = None,
        beside: Callable[[], object] | None = None,
    ) -> dict[int, FlowResult]:
        """Move every track's logits from ``prev`` to ``cur``.

        Args:
            prev, cur: consecutive frames, ``HxWx3 uint8`` BGR, same size.
                Pass the ``cur`` of the previous call as ``prev`` to reuse its
                conversion.
            tracks: ``{track_id: 256x256 logits}``; an array other than the one
                this propagator returned for the track last time starts a new
                composition from it (a fresh decode).
            order: track ids front to back (tracks not named are behind all
                named ones, in id order).
            decoded: the tracks whose new logits are a fresh decode: their
                colour model is rebuilt from them. Others handed new logits
                (moved some other way) keep theirs, so a refined mask never
                teaches the model its own errors. ``None``: every new array is a decode.
            beside: work that needs nothing of this step (the engine's sparse
                flow): run on the lent thread (:meth:`lend`) once the step's
                flows are computed, beside the rest of its work, which keeps
                one core busy; on the calling thread when none is lent. It has
                run by the time the step returns; what it raises is raised here.

        Returns:
            ``{track_id: FlowResult}`` for every input track.
        """
        if prev.shape != cur.shape:
            self.reset()
        h, w = cur.shape[:2]
        rows, cols, ident = self._setup(h, w)
        cached = self._last if self._last is not None and self._last[0] is prev else None
        g0 = cached[1] if cached is not None else _grey(prev)
        g1 = _grey(cur)
        self._last = (cur, g1, None, None)
        self.forget(list(tracks))
        if not tracks:
            # Not the last step's: the engine merges it into its own order, and a stale id
            # merged in on every frame no track had a mask made a track taken back its own
            # occluder, with an empty mask to the end (DAVIS libby backwards).
            self.order = ()
            if beside is not None:
                beside()
            return {}

        # The previous logits' extent, per track: flow is computed around each object
        # (one crop for all of them was measured: cheaper, but it lost an object passing
        # behind another in the tests' crossing clip), once for objects close together
        # whose crops share their union at no loss of resolution or cost (_share).
        prev_whole = {tid: np.asarray(lg, np.float32)[:rows, :cols] > 0 for tid, lg in tracks.items()}
        ids = list(tracks)
        boxes = [self._box(prev_whole[tid], (h, w)) for tid in ids]
        # Not for objects that meet (or nearly): DIS over a union crop is not the same
        # numbers, and who is in front, and how one passing behind the other coasts, is
        # decided on the flow there (the tests' crossing clip lost the one behind).
        apart = {(i, j) for i in range(len(ids)) for j in range(i + 1, len(ids)) if _near(boxes[i], boxes[j], _MEET)}
        crops = self._share([self._crop(b, (h, w)) for b in boxes], apart)
        # Carried back over a pair the forward run has flow for: its crop, where one holds the
        # object with margin, and its two flows with their roles swapped (no DIS at all).
        known = self.reuse_from.get(cur, prev) if self.reuse_from is not None else {}
        if known:
            crops = [self._known_crop(b, crop, known, (h, w)) for b, crop in zip(boxes, crops)]
        computed: dict[tuple[int, int, int, int], tuple] = {}
        fields = {}
        for tid, crop in zip(ids, crops):
            if crop not in computed:
                if crop in known:
                    k = known[crop]
                    computed[crop] = self._derive(_Flows(k.fwd, k.back, k.block), (h, w))
                    self.reuse_from.hits += 1  # type: ignore[union-attr]
                else:
                    flows = self._flows(g0, g1, crop, (h, w))
                    if self.record_to is not None and flows is not None:
                        self.record_to.put(prev, cur, crop, flows)
                    if self.reuse_from is not None:
                        self.reuse_from.misses += 1
                    computed[crop] = self._derive(flows, (h, w))
            fields[tid] = computed[crop]

        # The current frame's colours on the lent thread (OpenCV makes them without the GIL),
        # beside the fits and checks here, which keep one core busy; the key flows' DIS calls wait
        # for them there, but they are short.
        colours = self._lent.submit(self._colours, prev, cur, cached, rows, cols) if self._lent.submit is not None else None
        # Each track's own motion, fitted to its reliable flow away from other tracks (where
        # two overlap, the flow is the front one's).
        motions: dict[int, tuple[np.ndarray, bool, np.ndarray]] = {}
        coasting: set[int] = set()  # mostly behind a track in front: moved on their last motion
        ranked = [t for t in order if t in tracks] + sorted(t for t in tracks if t not in order)
        for tid in tracks:
            st = self._states.get(tid)
            # Too little to fit: the last measured motion, unless a fresh decode starts it over.
            fresh = st is None or (st.out is not tracks[tid] and (decoded is None or tid in decoded))
            last = np.eye(2, 3) if fresh else st.motion
            own = prev_whole[tid] & fields[tid][5]
            # Only tracks in front hide it. A track in front of a larger one whose whole mask
            # holds it is in plain view: taken as hidden, it coasted, its stale motion then
            # lost it the depth test, and the track behind took its place (hard scene, seed 2,
            # N = 5: J 0.50 -> 0.72).
            pos = ranked.index(tid)
            front = np.zeros_like(own)
            for other in ranked[:pos]:
                front |= prev_whole[other]
            others = front.copy()
            for other in ranked[pos + 1:]:
                others |= prev_whole[other]
            apart = own & ~others
            seen = own & ~front
            enough = _HIDDEN * prev_whole[tid].sum()
            if front.any() and st is not None and not fresh and seen.sum() < enough:
                # Mostly behind another object: what is left in view is a sliver at the other's
                # edge whose flow is the other's. It moves on its last motion (coasts).
                motion, measured = last, True
                coasting.add(tid)
            else:
                # Measured where no other track's whole mask is, when enough of it is (the
                # depth test compares each track's own motion, which the order given may have
                # wrong); else on all it shows (a few cells apart give a wild fit).
                cells = apart if apart.sum() >= enough else seen if seen.sum() >= self.min_cells else own
                motion, measured = self._fit(cells, fields[tid][1], last)
            motions[tid] = (motion, measured, own)
        ranked = self._depth(ranked, prev_whole, motions, fields)
        self.order = tuple(ranked)
        covered = np.zeros((rows, cols), bool)  # cells tracks in front cover now
        covered_src: np.ndarray | None = None
        lab_prev: np.ndarray | None = None  # prev in Lab at the cells (only needed at a fresh decode)
        key_lab: np.ndarray | None = None  # the same as float32, shared (read only) by the tracks decoded on it
        crop_of = dict(zip(ids, crops))
        rigid_of = {
            tid: measured and self.rigid_tolerance > 0 and self._residual(own, fields[tid][1], motion) <= self.rigid_tolerance
            for tid, (motion, measured, own) in motions.items()
        }
        # The flows straight back to the key frame, made here rather than track by track below
        # so that no DIS call is left when the work beside starts. Not for a fresh decode (its
        # first step is this one's own flow), a rigid track (it moves as one piece on purpose)
        # or one mostly hidden (what shows of it is the edge of the one in front).
        continuing = {tid for tid in ranked if (st := self._states.get(tid)) is not None and st.out is tracks[tid]}
        direct: dict[tuple, tuple | None] = {}  # (crop, key frame) -> _key_flows' result
        key_at: dict[int, tuple] = {}  # track -> its (crop, key frame) in direct
        for tid in ranked:
            st = self._states.get(tid)
            if tid in continuing and self._keyed(st) and not rigid_of[tid] and tid not in coasting:
                at = key_at[tid] = (crop_of[tid], id(st.key_grey))
                if at not in direct:
                    direct[at] = self._key_flows(st.key_grey, g1, crop_of[tid], (h, w))
        # Every DIS call of the step is made (the key flows just above): what is left keeps one
        # core busy, so work that needs nothing of it runs on the lent thread from here.
        job = self._lent.submit(beside) if beside is not None and self._lent.submit is not None else None
        lab_cur, idx_cur, edge_prev, edge_cur = _result_or_run(colours, self._colours, prev, cur, cached, rows, cols)
        self._last = (cur, g1, edge_cur, lab_cur)
        out: dict[int, FlowResult] = {}
        edges: dict[int, tuple] = {}  # track -> (edge job or None, edge_by_motion's args or None, its mask, covered_src then)
        for tid in ranked:
            logits = tracks[tid]
            st = self._states.get(tid)
            if tid not in continuing:
                fill = float(min(float(np.min(logits)), -10.0))
                old = st
                st = _State(np.asarray(logits, np.float32), ident.copy(), logits, np.eye(2, 3), fill)
                self._states[tid] = st
                if lab_prev is None and (self.key_flow or self.app_lambda > 0):
                    lab_prev = cached[3] if cached is not None and cached[3] is not None else self._lab(prev, rows, cols)
                if self.key_flow:
                    if key_lab is None:
                        key_lab = lab_prev.astype(np.float32)
                    st.key_grey, st.key_lab = g0, key_lab
                if old is not None and decoded is not None and tid not in decoded:
                    st.colours = old.colours
                    if old.colours is not None and old.colours.lut is not None:
                        st.model_map = self._carry_model_map(old, st.key[:rows, :cols] > 0, rows, cols)
                        if st.model_map is None:
                            st.colours = old.colours._replace(lut=None, tiles=None)  # the whole object's alone
                elif self.app_lambda > 0:
                    # Not the cells tracks in front cover: there the key is this track's hidden part.
                    st.colours = self._colour_model(self._bins(lab_prev), (st.key[:rows, :cols] > 0) & ~covered)
            b, f, tx, ty, reliable, reliable_prev = fields[tid]
            motion, measured, own = motions[tid]
            st.motion = motion
            rigid = rigid_of[tid]
            # Backward field: dense flow where it is reliable and the track is not
            # behind another one; the track's own motion elsewhere.
            inv = cv2.invertAffineTransform(motion)
            # (Over a row of x and a column of y, broadcast: the grid's own positions are separable.)
            gx, gy = ident[:1, :, 0], ident[:, :1, 1]
            px = inv[0, 0] * gx + inv[0, 1] * gy + inv[0, 2]
            py = inv[1, 0] * gx + inv[1, 1] * gy + inv[1, 2]
            # A rigid object (its flow is its fitted motion, give or take) moves as one
            # piece: per-pixel flow would only add noise at its edges.
            use_flow = reliable & ~covered & (not rigid)
            sx = np.where(use_flow, tx, px).astype(np.float32)
            sy = np.where(use_flow, ty, py).astype(np.float32)
            # Nothing comes in from beyond the frame's edge here, unlike the rigid moves
            # (warp_logits, sparse flow): filling in from the edge, by the flow or by the
            # object's own motion, made masks stick to the edge and grow frame after frame
            # (DAVIS breakdance at N = 30: 0.41 -> 0.16-0.22).
            st.map = _resample_map(st.map, sx, sy)
            if st.model_map is not None:
                st.model_map = _resample_map(st.model_map, sx, sy)
            # One step after the key the composition is the step's own flow; after that it has
            # added up the steps' errors (which tracks are checked: above, where direct is made).
            at = key_at.get(tid)
            if at is not None and direct[at] is not None:
                self._take_key_flow(st, direct[at], lab_cur, ident, use_flow)
            st.steps += 1
            warped = cv2.remap(
                st.key, st.map[..., 0], st.map[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=st.fill
            )
            if st.colours is not None and idx_cur is not None:
                warped = self._refine(st.colours, warped, idx_cur, st.map if st.model_map is None else st.model_map)
            full = np.full((LOWRES, LOWRES), st.fill, np.float32)
            full[:rows, :cols] = warped
            st.out = full
            whole = warped > 0
            visible_cells = whole & ~covered
            frac = float(visible_cells.sum()) / max(1.0, float(whole.sum()))
            covered |= whole
            if not self.masks:
                out[tid] = FlowResult(full, None, None, measured, frac, None, b)
                continue
            mask = logits_to_mask(full, (h, w))
            if self.edge_motion:
                # From the mask the step before showed, or after a decode (new logits) the decoded one.
                if tid in continuing and st.shown is not None:
                    before = st.shown
                else:
                    before = self._for_edges(logits_to_mask, logits, (h, w))
                # (Not for a track whose motion went unmeasured: its flow is not to be trusted.) Needs
                # nothing of the tracks after this one: on the lent thread, beside their work.
                args = (before, mask, b, edge_prev, edge_cur) if measured else None
                lent = self._lent.submit is not None and args is not None and not self.defer_edges
                edges[tid] = (self._lent.submit(edge_by_motion, *args) if lent else None, args, mask, covered_src)
            if covered_src is not None:
                mask = mask & ~covered_src  # a new array: the edge job reads the one it was given
            covered_src = mask.copy() if covered_src is None else covered_src | mask
            box = mask_to_box(mask)
            out[tid] = FlowResult(full, mask, box, measured, frac, None, b)
        for tid, (edge_job, args, warped_mask, hide) in edges.items():
            st = self._states[tid]
            if args is None:
                st.shown = warped_mask.copy()
            elif self.defer_edges:
                if isinstance(args[0], Deferred) and args[0].depth >= _DEFER_DEPTH:
                    args[0]()
                st.shown = Deferred(edge_by_motion, *args)
            else:
                st.shown = _result_or_run(edge_job, edge_by_motion, *args)
            shown = st.shown
            if hide is not None:
                shown = Deferred(_uncovered, shown, hide) if isinstance(shown, Deferred) else _uncovered(shown, hide)
            out[tid] = out[tid]._replace(shown=shown)
        if beside is not None:
            _result_or_run(job, beside)
        return out

    def _depth(self, ranked: list[int], whole, motions, fields) -> list[int]:
        """``ranked`` (front first) with pairs whose whole masks now meet put in the order the flow shows.

        Where two objects overlap, only the front one is seen, so the flow there
        follows its motion: the track whose fitted motion explains the backward
        flow of the shared cells better (median error, cells, by ``_DEPTH_MARGIN``)
        goes in front. Pairs that do not meet, move alike, or share too few
        reliable cells keep their order.
        """
        ranked = list(ranked)
        ids = [t for t in ranked if motions[t][1]]
        for i, a in enumerate(ids):
            for b in ids[i + 1:]:
                both = whole[a] & whole[b]
                if int(both.sum()) < self.min_cells:
                    continue
                ma, mb = motions[a][0], motions[b][0]
                # The shared cells as seen now: where each track's motion takes them.
                ys, xs = np.nonzero(both)
                _, _, tx, ty, rel, _ = fields[a]  # a's crop covers the shared cells
                err = []
                for m in (ma, mb):
                    nx = m[0, 0] * xs + m[0, 1] * ys + m[0, 2]
                    ny = m[1, 0] * xs + m[1, 1] * ys + m[1, 2]
                    ix = np.clip(np.rint(nx).astype(int), 0, tx.shape[1] - 1)
                    iy = np.clip(np.rint(ny).astype(int), 0, tx.shape[0] - 1)
                    ok = rel[iy, ix]
                    if int(ok.sum()) < self.min_cells:
                        err = []
                        break
                    # Backward flow at the moved cell should bring it back to where it was.
                    err.append(np.hypot(tx[iy, ix] - xs, ty[iy, ix] - ys)[ok])
                if not err:
                    continue
                ea, eb = float(np.median(err[0])), float(np.median(err[1]))
                if abs(ea - eb) < _DEPTH_MARGIN:
                    continue
                front, back = (a, b) if ea < eb else (b, a)
                if ranked.index(front) > ranked.index(back):
                    ranked.remove(front)
                    ranked.insert(ranked.index(back), front)
        return ranked

    def _box(self, extent: np.ndarray, size: tuple[int, int]) -> tuple[float, float, float, float] | None:
        """The box, source pixels, of the cells ``extent`` (``(rows, cols) bool``); None when empty."""
        h, w = size
        rows, cols, _ = self._setup(h, w)
        cell_x, cell_y = w / cols, h / rows
        ys, xs = np.nonzero(extent)
        if not len(xs):
            return None
        return xs.min() * cell_x, ys.min() * cell_y, (xs.max() + 1) * cell_x, (ys.max() + 1) * cell_y

    @staticmethod
    def _crop(box: tuple[float, float, float, float] | None, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(x0, y0, x1, y1)`` source pixels the flow for one object runs on: its ``box``
        grown by the motion it may make (the whole frame when it has none)."""
        h, w = size
        if box is None:
            return 0, 0, w, h
        x0, y0, x1, y1 = box
        margin = max(48.0, 0.5 * max(x1 - x0, y1 - y0))
        x0, y0 = max(0, int(x0 - margin)), max(0, int(y0 - margin))
        x1, y1 = min(w, int(math.ceil(x1 + margin))), min(h, int(math.ceil(y1 + margin)))
        return x0, y0, x1, y1

    def _work(self, crop: tuple[int, int, int, int]) -> tuple[int, int]:
        """``(width, height)`` the crop is shrunk to for the flow (longest side at most ``max_side``)."""
        cw, ch = crop[2] - crop[0], crop[3] - crop[1]
        s = min(1.0, self.max_side / max(cw, ch)) if self.max_side > 0 else 1.0
        return max(16, int(round(cw * s))), max(16, int(round(ch * s)))

    def _share(
        self, crops: list[tuple[int, int, int, int]], apart: set[tuple[int, int]] | None = None
    ) -> list[tuple[int, int, int, int]]:
        """Each crop, or the union of it with others, where flow over the union costs no
        more (fewer work pixels than the crops apart) and is as fine (not shrunk more).

        Objects close together have crops that mostly overlap: one flow each way over
        their union costs less than one per crop, at the same resolution (DIS gives
        slightly different numbers on a larger crop, see ``apart``). ``apart``: pairs
        ``(i, j)``, ``i < j``, never put in one union.
        """
        apart = apart or set()
        groups = [[i] for i in range(len(crops))]
        rects = list(crops)
        merged = True
        while merged and len(rects) > 1:
            merged = False
            for i in range(len(rects)):
                for j in range(i + 1, len(rects)):
                    if any((min(p, q), max(p, q)) in apart for p in groups[i] for q in groups[j]):
                        continue
                    a, b = rects[i], rects[j]
                    u = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    wa, wb, wu = self._work(a), self._work(b), self._work(u)
                    finer = wu[0] / (u[2] - u[0]) >= max(wa[0] / (a[2] - a[0]), wb[0] / (b[2] - b[0])) - 1e-9
                    if finer and wu[0] * wu[1] <= wa[0] * wa[1] + wb[0] * wb[1]:
                        rects[i] = u
                        groups[i] += groups[j]
                        del rects[j], groups[j]
                        merged = True
                        break
                if merged:
                    break
        out: list[tuple[int, int, int, int]] = list(crops)
        for rect, members in zip(rects, groups):
            for k in members:
                out[k] = rect
        return out

    def _known_crop(self, box, crop: Crop, known: Mapping[Crop, _Flows], size: tuple[int, int]) -> Crop:
        """The smallest of the ``known`` crops that holds ``box`` grown by half the usual margin; else ``crop``.

        A larger crop than the object's own is shrunk more for a large object
        (coarser flow): measured against computing every backward flow anew,
        DAVIS two-way mean J moved by at most 0.002 (horsejump-high lost 0.012
        at N = 15, 0.016 at N = 30; requiring a crop as fine as its own kept
        that but read only 15 % of the flows instead of about half).
        """
        if box is None:
            return crop
        h, w = size
        x0, y0, x1, y1 = box
        margin = _KNOWN_MARGIN * max(48.0, 0.5 * max(x1 - x0, y1 - y0))
        need = (max(0.0, x0 - margin), max(0.0, y0 - margin), min(float(w), x1 + margin), min(float(h), y1 + margin))
        holding = [c for c in known if c[0] <= need[0] and c[1] <= need[1] and c[2] >= need[2] and c[3] >= need[3]]
        return min(holding, key=lambda c: (c[2] - c[0]) * (c[3] - c[1])) if holding else crop

    def _flows(self, g0: np.ndarray, g1: np.ndarray, crop: Crop, size: tuple[int, int], dis=None) -> _Flows | None:
        """DIS both ways on a crop, sampled at the centres of the low-res cells that fall in it.

        ``g0``, ``g1``: full-size grey frames; ``crop``: ``(x0, y0, x1, y1)``
        source pixels (:meth:`_crop`) around one or more objects. The crop
        is shrunk so its longest side is at most ``max_side``: small
        objects get full-resolution flow, large ones the same as a
        whole-frame flow. ``dis``: the :class:`_DisPair` (default: the step's,
        ``preset``). ``None`` when no cell centre falls in the crop.
        """
        dis = self._dis if dis is None else dis
        cells = self._cells_in(crop, size)
        if cells is None:
            return None
        size_w, wx, wy, to_cells, block = cells
        x0, y0, x1, y1 = crop
        c0 = cv2.resize(g0[y0:y1, x0:x1], size_w, interpolation=cv2.INTER_AREA)
        c1 = cv2.resize(g1[y0:y1, x0:x1], size_w, interpolation=cv2.INTER_AREA)
        back, fwd = dis.both(c0, c1, self._lent.submit)
        bb = cv2.remap(back, wx, wy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) * to_cells
        fb = cv2.remap(fwd, wx, wy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) * to_cells
        return _Flows(bb, fb, block)

    def _cells_in(self, crop: Crop, size: tuple[int, int]):
        """Where the low-res cells of a crop lie in its work image: ``(work_size, wx, wy, to_cells, block)``.

        ``work_size``: ``(w, h)`` the crop is shrunk to (:meth:`_work`);
        ``wx``, ``wy``: ``float32`` work-pixel position of each cell centre of
        ``block`` (the ``(rows, cols)`` slices of the cells whose centres fall
        in the crop); ``to_cells``: ``(2,)`` work pixels -> cells. ``None``
        when no cell centre falls in the crop.
        """
        h, w = size
        rows, cols, _ = self._setup(h, w)
        cell_x, cell_y = w / cols, h / rows
        x0, y0, x1, y1 = crop
        size_w = self._work(crop)
        sx, sy = size_w[0] / (x1 - x0), size_w[1] / (y1 - y0)
        # Only the cells whose centres fall in the crop have flow (the rest stay
        # unreliable), so the work is done on that block of cells alone: over
        # the whole grid it cost more than the flow itself for small objects.
        # cell centre -> source pixel -> crop work pixel
        wx1 = (((np.arange(cols, dtype=np.float32) + 0.5) * cell_x - x0) * sx - 0.5).astype(np.float32)
        wy1 = (((np.arange(rows, dtype=np.float32) + 0.5) * cell_y - y0) * sy - 0.5).astype(np.float32)
        okx = np.flatnonzero((wx1 >= 0) & (wx1 <= size_w[0] - 1))
        oky = np.flatnonzero((wy1 >= 0) & (wy1 <= size_w[1] - 1))
        if not len(okx) or not len(oky):
            return None
        cx0, cx1, cy0, cy1 = int(okx[0]), int(okx[-1]) + 1, int(oky[0]), int(oky[-1]) + 1
        wx = np.ascontiguousarray(np.broadcast_to(wx1[cx0:cx1], (cy1 - cy0, cx1 - cx0)))
        wy = np.ascontiguousarray(np.broadcast_to(wy1[cy0:cy1, None], (cy1 - cy0, cx1 - cx0)))
        to_cells = np.array([1.0 / sx / cell_x, 1.0 / sy / cell_y], np.float32)
        return size_w, wx, wy, to_cells, (slice(cy0, cy1), slice(cx0, cx1))

    def _keyed(self, st: _State) -> bool:
        """Whether a track's step checks its composition against a flow straight back to its key frame."""
        return self.key_flow and st.key_grey is not None and 1 <= st.steps <= _KEY_HORIZON

    def _key_flows(self, gkey: np.ndarray, g1: np.ndarray, crop: Crop, size: tuple[int, int]):
        """DIS (``ultrafast``) between the key frame and the current frame on ``crop``, both ways, at its cells.

        ``gkey``, ``g1``: full-size grey frames. Returns ``(d, block, reliable)``:
        ``d`` the ``(len rows, len cols, 2) float32`` displacement in cells of
        each cell of ``block`` (:meth:`_cells_in`) back to the key frame, and
        ``reliable`` (``bool``, same shape) where it ends on the grid and the
        forward flow from there comes back (:meth:`_reliable_back`); ``None``
        when no cell centre falls in the crop.
        """
        flows = self._flows(gkey, g1, crop, size, self._key_dis)
        if flows is None:
            return None
        # Checked as the step's own flow is: over many frames the direct flow is wrong in places
        # (a zooming camera, an object passing in front), and there it can still land on
        # similar colours.
        return flows.back, flows.block, self._reliable_back(flows, self._setup(*size)[2])

    @staticmethod
    def _take_key_flow(
        st: _State, key_flow: tuple[np.ndarray, tuple[slice, slice], np.ndarray], lab_cur: np.ndarray,
        ident: np.ndarray, followed: np.ndarray,
    ) -> None:
        """Put the direct flow's source (``key_flow``: :meth:`_key_flows`) in ``st.map`` on the cells of its block
        where it lands clearly closer to the key frame's colours than the composition does (by
        ``_KEY_MARGIN``, averaged over ``_KEY_SIGMA`` cells). ``st.map[block]`` is changed in place.

        Only where the direct flow is reliable (ends on the grid, forward-backward consistent); only on the cells ``followed``
        (``(rows, cols) bool``: moved by this step's flow, which is reliable there and not under a
        track in front; elsewhere the track's hidden or doubtful part moves by its own motion, and
        the colours there are the front object's); and where the composition has a source (cells
        from beyond the frame's edge stay so: see ``step``).
        """
        d, block, reliable = key_flow
        composed = st.map[block]
        straight = ident[block] + d
        here = lab_cur[block].astype(np.float32)

        def mismatch(m: np.ndarray) -> np.ndarray:
            then = cv2.remap(st.key_lab, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            return cv2.GaussianBlur(np.abs(then - here).sum(-1), (0, 0), _KEY_SIGMA)

        take = (mismatch(straight) < mismatch(composed) - _KEY_MARGIN) & reliable
        take &= (composed[..., 0] > _FAR / 2) & followed[block]
        composed[take] = straight[take]

    def _derive(self, flows: _Flows | None, size: tuple[int, int]):
        """The step's fields from a crop's flows: ``(b, f, tx, ty, reliable, reliable_prev)``.

        Backward/forward displacement in cells, the cells the backward flow
        points to, and the forward-backward checks from the current and the
        previous frame's side (cells outside the crop are unreliable).
        """
        rows, cols, ident = self._setup(*size)
        b = np.zeros((rows, cols, 2), np.float32)
        f = np.zeros((rows, cols, 2), np.float32)
        tx, ty = ident[..., 0].copy(), ident[..., 1].copy()
        reliable = np.zeros((rows, cols), bool)
        reliable_prev = np.zeros((rows, cols), bool)
        if flows is None:
            return b, f, tx, ty, reliable, reliable_prev
        bb, fb, block = flows
        cy0, cx0 = block[0].start, block[1].start
        gx, gy = ident[block][..., 0], ident[block][..., 1]
        btx, bty = gx + bb[..., 0], gy + bb[..., 1]
        reliable[block] = self._reliable_back(flows, ident)
        b_at = cv2.remap(bb, gx + fb[..., 0] - cx0, gy + fb[..., 1] - cy0, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        reliable_prev[block] = _length(fb + b_at) <= self.fb_tolerance + self.fb_relative * _length(fb)
        b[block], f[block], tx[block], ty[block] = bb, fb, btx, bty
        return b, f, tx, ty, reliable, reliable_prev

    def _reliable_back(self, flows: _Flows, ident: np.ndarray) -> np.ndarray:
        """``(by, bx) bool`` over ``flows.block``: the cells whose backward flow ends on the grid and whose
        forward flow, read there, comes back within ``fb_tolerance`` cells plus ``fb_relative`` of its length.

        ``ident``: the grid's own ``(rows, cols, 2)`` cell positions (:meth:`_setup`).
        """
        bb, fb, block = flows
        rows, cols = ident.shape[:2]
        btx, bty = ident[block][..., 0] + bb[..., 0], ident[block][..., 1] + bb[..., 1]
        # The backward flow's end, sampled on the block (its replicated border stands
        # for the crop's edge, as the crop's own border does for the flow).
        f_at = cv2.remap(fb, btx - block[1].start, bty - block[0].start, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        inside = (btx >= -0.5) & (btx <= cols - 0.5) & (bty >= -0.5) & (bty <= rows - 0.5)
        return (_length(bb + f_at) <= self.fb_tolerance + self.fb_relative * _length(bb)) & inside

    @staticmethod
    def _residual(own: np.ndarray, f: np.ndarray, motion: np.ndarray) -> float:
        """Median distance (cells) between the forward flow of the cells ``own`` and where ``motion`` takes them."""
        ys, xs = np.nonzero(own)
        if not len(xs):
            return float("inf")
        px = motion[0, 0] * xs + motion[0, 1] * ys + motion[0, 2] - xs
        py = motion[1, 0] * xs + motion[1, 1] * ys + motion[1, 2] - ys
        return float(np.median(np.hypot(f[ys, xs, 0] - px, f[ys, xs, 1] - py)))

    def _fit(self, own: np.ndarray, f: np.ndarray, last: np.ndarray) -> tuple[np.ndarray, bool]:
        """A 2x3 similarity (grid units) from the forward flow of the reliable cells ``own``; ``last`` when too few."""
        ys, xs = np.nonzero(own)
        if len(xs) < self.min_cells:
            return last, False
        a = np.stack([xs, ys], axis=1).astype(np.float32)
        d = f[ys, xs]
        t = np.median(d, axis=0)
        translation = np.array([[1.0, 0.0, t[0]], [0.0, 1.0, t[1]]])
        if len(xs) < 3 * self.min_cells:
            return translation, True
        m, inl = cv2.estimateAffinePartial2D(a, a + d, method=cv2.RANSAC, ransacReprojThreshold=0.5, maxIters=200)
        if m is None or inl is None or int(inl.sum()) < self.min_cells:
            return translation, True
        scale = math.hypot(m[0, 0], m[1, 0])
        if not 0.8 <= scale <= 1.25:
            return translation, True
        return m, True
