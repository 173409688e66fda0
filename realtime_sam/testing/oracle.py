"""A perfect decoder over the real network: prompts answered from the ground truth.

:class:`GroundTruthOracle` implements the engine's ``ModelRunner`` protocol
(``encode``, ``decode``, ``masks``, plus ``embed``/``use`` for background
encoding). It stands in for trained weights: the checkpoint in tests has
random weights, whose masks are noise, but the engine's tracking can only be
judged with sensible masks. Every call still runs the real network when an
``inner`` runner is given (so a live round pays every real cost); only its
answers are replaced:

* a **box** prompt means the object whose ground-truth mask's bounding box
  has the highest box IoU with it (above ``min_box_iou`` = 0.1); the answer
  is that mask clipped to the prompt box grown by ``grow`` (15 %) of its
  width and height on each side;
* a **point** prompt (no box) means the object under its first label-1 point;
* a prompt on **no object** gets a background region under its centre: the
  Felzenszwalb segment (:func:`skimage.segmentation.felzenszwalb`) holding
  the centre, less every object's pixels; so discovery and re-acquisition
  meet distractors. It is segmented within the prompt box grown like an
  object's answer (a point: a square a third of the frame's longer side
  around it), which is also where it is clipped: segmenting the whole frame
  took about a second, which a live round would have counted as the
  engine's time;
* predicted IoU: ``object_iou`` (0.92) for an object, ``background_iou``
  (0.85) for a background region, 0.05 for an empty answer;
* the answer goes through SAM's ``256x256`` low-resolution logits of the
  padded 1024 square (:func:`realtime_sam.testing.synthetic.mask_logits`), and
  :meth:`masks` upsamples them as the real runner does; ``mask_input`` is
  ignored; ``multimask`` returns three copies.

The ground truth used is that of the frame that was encoded, found by the
SHA-1 of its pixels among ``images`` (decode a video once beforehand: the
decoding is deterministic), or given with ``encode(image, index=...)``.

Example (a synthetic scene)::

    frames = [scene.render(i)[0] for i in range(scene.num_frames)]
    oracle = GroundTruthOracle(lambda i: scene.render(i)[1], frames, inner=None)
"""

from __future__ import annotations

import hashlib
import math
import time
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from realtime_sam.model.transforms import preprocess_shape
from realtime_sam.testing.synthetic import mask_logits
from realtime_sam.tracking.association import mask_to_box

__all__ = ["GroundTruthOracle", "frame_digest", "grow_box", "box_iou", "upsample_logits"]

_IMG = 1024  # SAM's padded input side
_LOWRES = 256  # side of the decoder's low-res logits

GroundTruth = Callable[[int], Mapping[int, np.ndarray]]


def frame_digest(image: np.ndarray) -> str:
    """SHA-1 of an image's pixels (how the oracle recognises a frame)."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


def upsample_logits(low_res: np.ndarray, input_size: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
    """Decoder logits ``Bx256x256`` -> ``BxHxW bool`` at ``size``, exactly as the real runner upsamples them."""
    from realtime_sam.model.runners import low_res_to_masks

    return low_res_to_masks(np.asarray(low_res), input_size, _IMG, size)


def grow_box(box: Sequence[float], frac: float) -> np.ndarray:
    """``XYXY`` box grown by ``frac`` of its width and height on each side."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dw, dh = frac * (x1 - x0), frac * (y1 - y0)
    return np.array([x0 - dw, y0 - dh, x1 + dw, y1 + dh], dtype=np.float64)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two ``XYXY`` boxes (0 when the union is empty)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = max(0.0, a[2] - a[0]) * max(0.0, a[3] - a[1]) + max(0.0, b[2] - b[0]) * max(0.0, b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _clip_to_box(mask: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``mask`` with every pixel outside ``box`` (``XYXY``, exclusive far edges) cleared."""
    h, w = mask.shape
    x0, y0 = max(0, int(math.floor(box[0]))), max(0, int(math.floor(box[1])))
    x1, y1 = min(w, int(math.ceil(box[2]))), min(h, int(math.ceil(box[3])))
    out = np.zeros_like(mask)
    if x1 > x0 and y1 > y0:
        out[y0:y1, x0:x1] = mask[y0:y1, x0:x1]
    return out


class _Encoded:
    """The oracle's view of one encoded frame: its ground truth and (lazily) its background segments."""

    def __init__(self, index: int, image: np.ndarray, gt: Mapping[int, np.ndarray], felz: dict) -> None:
        self.index = index
        self.image = image
        self.size = (int(image.shape[0]), int(image.shape[1]))
        self.input_size = preprocess_shape(self.size[0], self.size[1], _IMG)
        self.gt = {int(k): np.asarray(v, dtype=bool) for k, v in gt.items()}
        self.boxes = {k: mask_to_box(m) for k, m in self.gt.items() if m.any()}
        self._felz = felz
        self._segments: np.ndarray | None = None
        self._objects: np.ndarray | None = None

    def segments(self) -> np.ndarray:
        """Felzenszwalb segments of the whole frame (computed once; only without clipping)."""
        if self._segments is None:
            from skimage.segmentation import felzenszwalb

            rgb = cv2.cvtColor(self.image, cv2.COLOR_BGR2RGB)
            self._segments = felzenszwalb(rgb, **self._felz)
        return self._segments

    def segment_at(self, x: int, y: int, region: tuple[int, int, int, int]) -> np.ndarray:
        """``HxW bool``: the Felzenszwalb segment holding ``(x, y)`` of the crop ``region``
        (``x0, y0, x1, y1``, pixels, containing the point)."""
        from skimage.segmentation import felzenszwalb

        x0, y0, x1, y1 = region
        rgb = cv2.cvtColor(np.ascontiguousarray(self.image[y0:y1, x0:x1]), cv2.COLOR_BGR2RGB)
        seg = felzenszwalb(rgb, **self._felz)
        out = np.zeros(self.size, dtype=bool)
        out[y0:y1, x0:x1] = seg == seg[y - y0, x - x0]
        return out

    def objects(self) -> np.ndarray:
        """Union of every object's ground truth."""
        if self._objects is None:
            out = np.zeros(self.size, dtype=bool)
            for m in self.gt.values():
                out |= m
            self._objects = out
        return self._objects


class GroundTruthOracle:
    """A ``ModelRunner`` whose decoder answers from the ground truth (see the module docstring).

    Args:
        gt: ``gt(index) -> {object id: HxW bool}``, the ground truth of frame ``index``.
        images: the frames (``HxWx3 uint8`` BGR) as the engine will see them;
            each is recognised by its pixel digest. May be ``None`` when every
            encode passes ``index=``.
        inner: the real runner (``realtime_sam.model.loader.load_runner(...)``) whose
            network runs on every call, for its cost; ``None`` skips the network
            (same answers, much faster; no real cost in live rounds).
        object_iou, background_iou: predicted IoU of an object / background answer.
        grow: an object's answer is clipped to the prompt box grown by this
            fraction of its width and height on each side.
        min_box_iou: a box means an object only above this box IoU.
        felzenszwalb: keyword arguments of :func:`skimage.segmentation.felzenszwalb`.
        clip_background: clip a background answer to a box prompt's grown box too.

    Attributes:
        encodes: number of encode/embed calls; decoded: prompt rows answered;
        answers: ``{"object": n, "background": n, "empty": n}``;
        own_time_s: CPU seconds (of the calling threads) the oracle spent on
            its answers, which a real decoder does not spend (background
            segments above all): a simulated clock subtracts them.
    """

    def __init__(
        self,
        gt: GroundTruth,
        images: Sequence[np.ndarray] | None = None,
        *,
        inner=None,
        object_iou: float = 0.92,
        background_iou: float = 0.85,
        grow: float = 0.15,
        min_box_iou: float = 0.1,
        felzenszwalb: Mapping[str, float] | None = None,
        clip_background: bool = True,
    ) -> None:
        if inner is not None and (not callable(getattr(inner, "embed", None)) or not callable(getattr(inner, "use", None))):
            raise TypeError("GroundTruthOracle needs an inner runner with embed() and use() (background encoding calls them)")
        self.gt = gt
        self.inner = inner
        self.object_iou = float(object_iou)
        self.background_iou = float(background_iou)
        self.grow = float(grow)
        self.min_box_iou = float(min_box_iou)
        self.clip_background = bool(clip_background)
        self.felzenszwalb = dict(felzenszwalb or {"scale": 300.0, "sigma": 0.8, "min_size": 300})
        self.index_of: dict[str, int] = {}
        for i, image in enumerate(images or ()):
            self.index_of.setdefault(frame_digest(image), i)
        self.encodes = 0
        self.decoded = 0
        self.answers = {"object": 0, "background": 0, "empty": 0}
        self.own_time_s = 0.0
        self._current: _Encoded | None = None

    # -- encoding ------------------------------------------------------------------------

    def _state(self, image_bgr: np.ndarray, index: int | None) -> _Encoded:
        if index is None:
            index = self.index_of.get(frame_digest(image_bgr))
            if index is None:
                raise RuntimeError("GroundTruthOracle got a frame that is not among the images it was given")
        return _Encoded(int(index), image_bgr, self.gt(int(index)), self.felzenszwalb)

    def encode(self, image_bgr: np.ndarray, index: int | None = None) -> None:
        """Encode ``image_bgr`` (the real network when ``inner``); its ground truth becomes current."""
        state = self._state(image_bgr, index)
        if self.inner is not None:
            self.inner.encode(image_bgr)
        self._current = state
        self.encodes += 1

    def embed(self, image_bgr: np.ndarray, index: int | None = None) -> tuple[object, _Encoded]:
        """Like :meth:`encode` without making it current (the engine's worker thread calls this)."""
        state = self._state(image_bgr, index)
        real = self.inner.embed(image_bgr) if self.inner is not None else None
        self.encodes += 1
        return real, state

    def use(self, embedding: tuple[object, _Encoded]) -> None:
        """Make an :meth:`embed` result current."""
        real, state = embedding
        if self.inner is not None:
            self.inner.use(real)
        self._current = state

    @property
    def current_index(self) -> int | None:
        """Index of the frame whose ground truth answers prompts now."""
        return None if self._current is None else self._current.index

    # -- decoding ------------------------------------------------------------------------

    def answer(
        self, box: Sequence[float] | None = None, points: np.ndarray | None = None, labels: np.ndarray | None = None
    ) -> tuple[np.ndarray, float, int | None]:
        """The full-resolution answer to one prompt: ``(HxW bool mask, predicted IoU, object id or None)``."""
        st = self._current
        if st is None:
            raise RuntimeError("GroundTruthOracle.decode before encode")
        h, w = st.size
        oid = None
        centre = None
        if box is not None:
            box = np.asarray(box, dtype=np.float64).reshape(4)
            best = 0.0
            for k, b in st.boxes.items():
                score = box_iou(box, b)
                if score > best:
                    oid, best = k, score
            if best <= self.min_box_iou:
                oid = None
            centre = ((box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0)
        elif points is not None and len(points):
            pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
            lab = np.ones(len(pts), np.int64) if labels is None else np.asarray(labels).reshape(-1)
            pos = pts[lab == 1]
            p = pos[0] if len(pos) else pts[0]
            centre = (float(p[0]), float(p[1]))
            if len(pos):
                x, y = int(p[0]), int(p[1])
                if 0 <= x < w and 0 <= y < h:
                    oid = next((k for k, m in st.gt.items() if m[y, x]), None)
        if oid is not None:
            mask = st.gt[oid]
            if box is not None:
                mask = _clip_to_box(mask, grow_box(box, self.grow))
            self.answers["object"] += 1
            return mask, self.object_iou, oid
        if centre is None or not np.all(np.isfinite(centre)):
            self.answers["empty"] += 1
            return np.zeros((h, w), dtype=bool), 0.05, None
        x = min(max(int(centre[0]), 0), w - 1)
        y = min(max(int(centre[1]), 0), h - 1)
        if box is not None and not self.clip_background:
            seg = st.segments()
            mask = (seg == seg[y, x]) & ~st.objects()
        else:
            if box is not None:
                region = grow_box(box, self.grow)
            else:
                half = max(h, w) / 6.0
                region = np.array([x - half, y - half, x + half + 1, y + half + 1])
            x0, y0 = max(0, min(x, int(np.floor(region[0])))), max(0, min(y, int(np.floor(region[1]))))
            x1, y1 = min(w, max(x + 1, int(np.ceil(region[2])))), min(h, max(y + 1, int(np.ceil(region[3]))))
            mask = st.segment_at(x, y, (x0, y0, x1, y1)) & ~st.objects()
        if not mask.any():
            self.answers["empty"] += 1
            return mask, 0.05, None
        self.answers["background"] += 1
        return mask, self.background_iou, None

    def decode(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``points BxNx2``, ``labels BxN``, ``boxes Bx4``, ``mask_input Bx256x256`` (ignored) ->
        ``(logits BxCx256x256 float32, iou BxC float32)``, ``C`` = 3 with ``multimask`` else 1."""
        if self._current is None:
            raise RuntimeError("GroundTruthOracle.decode before encode")
        if self.inner is not None:
            self.inner.decode(points, labels, boxes, mask_input, multimask)  # for its cost only
        t = time.thread_time()
        n = len(boxes) if boxes is not None else len(points)  # type: ignore[arg-type]
        c = 3 if multimask else 1
        low = np.full((n, c, _LOWRES, _LOWRES), -10.0, np.float32)
        iou = np.zeros((n, c), np.float32)
        for i in range(n):
            mask, score, _ = self.answer(
                box=None if boxes is None else boxes[i],
                points=None if points is None else points[i],
                labels=None if labels is None else labels[i],
            )
            if mask.any():
                low[i, :] = mask_logits(mask, self._current.input_size)
            iou[i, :] = score
        self.decoded += n
        self.own_time_s += time.thread_time() - t
        return low, iou

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``Bx256x256`` logits -> ``BxHxW bool`` at ``size = (H, W)``, upsampled as the real runner does."""
        if self.inner is not None:
            return self.inner.masks(low_res, size)
        input_size = self._current.input_size if self._current is not None else preprocess_shape(size[0], size[1], _IMG)
        return upsample_logits(low_res, input_size, size)
