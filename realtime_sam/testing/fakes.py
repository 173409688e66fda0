"""Stand-ins for the model and the camera, for tests, benchmarks and soak runs.

* :class:`BoxRunner`: a :class:`~realtime_sam.tracking.model_runner.ModelRunner`
  that "segments" the prompt's box, so the rest of the system can run
  thousands of frames fast;
* :class:`GroundTruthRunner`: a runner that answers from a synthetic scene's
  ground truth of the encoded frame (a perfect decoder for easy scenes; for
  real video see :class:`realtime_sam.testing.oracle.GroundTruthOracle`);
* :class:`LoopingSceneSource`: a synthetic scene played in a loop as a paced
  live source (like a camera that never ends);
* :class:`FixedBoxDetector`: a detector (``--detect``, ``annotate``) that
  returns given boxes, for exact tests without Ultralytics.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

from realtime_sam.model.transforms import preprocess_shape
from realtime_sam.testing.synthetic import (
    Scene,
    mask_logits,
    pick_object,
    standard_scene,
)
from realtime_sam.types import BoxDetections, Frame

__all__ = ["BoxRunner", "GroundTruthRunner", "LoopingSceneSource", "FixedBoxDetector"]

_LOWRES = 256  # side of SAM's low-resolution logits
_IMG = 1024  # side of SAM's padded input image


class BoxRunner:
    """A :class:`~realtime_sam.tracking.engine.ModelRunner` whose "mask" is the prompt's box.

    Costs well under a millisecond per prompt, so a run measures everything
    but the network. The answer for one prompt row is:

    * a box: the box, filled;
    * points and no box: a square of side ``point_extent * max(H, W)`` around
      the label-1 points (their bounding box, grown by half that side);
    * only label-0 points with a mask prompt: the mask prompt itself;
    * anything else: an empty mask.

    With ``strict=True`` (the default) it raises ``ValueError`` when the
    engine hands it a non-finite coordinate or a coordinate outside the frame
    by more than a pixel: the engine is supposed to have clamped them.

    Attributes:
        encodes: number of :meth:`encode` calls.
        decoded_prompts: number of prompt rows decoded.
    """

    def __init__(self, *, point_extent: float = 1.0 / 6.0, strict: bool = True) -> None:
        self.point_extent = float(point_extent)
        self.strict = strict
        self.encodes = 0
        self.decoded_prompts = 0
        self._size: tuple[int, int] | None = None  # (H, W) of the encoded image
        self._input: tuple[int, int] = (0, 0)  # (h, w) after the longest-side resize to 1024

    def encode(self, image_bgr: np.ndarray) -> None:
        """Remember the frame size (``image_bgr``: ``HxWx3 uint8`` BGR)."""
        h, w = image_bgr.shape[:2]
        self._size = (int(h), int(w))
        self._input = preprocess_shape(h, w, _IMG)
        self.encodes += 1

    def embed(self, image_bgr: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
        """Like :meth:`encode` without making it current (the engine's background worker calls this)."""
        h, w = image_bgr.shape[:2]
        self.encodes += 1
        return (int(h), int(w)), preprocess_shape(h, w, _IMG)

    def use(self, embedding: tuple[tuple[int, int], tuple[int, int]]) -> None:
        """Make an :meth:`embed` result current."""
        self._size, self._input = embedding

    def _check(self, values: np.ndarray, what: str) -> None:
        if not self.strict:
            return
        if not np.all(np.isfinite(values)):
            raise ValueError(f"BoxRunner got a non-finite {what}: {values.tolist()}")
        h, w = self._size  # type: ignore[misc]
        xs, ys = values[..., 0::2], values[..., 1::2]
        if xs.size and (xs.min() < -1 or xs.max() > w + 1 or ys.min() < -1 or ys.max() > h + 1):
            raise ValueError(f"BoxRunner got a {what} outside the {w}x{h} frame: {values.tolist()}")

    def _region_logits(self, box: np.ndarray) -> np.ndarray:
        """``256x256 float32`` logits: +10 inside ``box`` (source pixels, XYXY), -10 elsewhere."""
        out = np.full((_LOWRES, _LOWRES), -10.0, np.float32)
        h, w = self._size  # type: ignore[misc]
        s = _LOWRES / float(max(h, w))  # source pixels -> low-res cells
        x0, y0 = int(math.floor(max(0.0, box[0]) * s)), int(math.floor(max(0.0, box[1]) * s))
        x1, y1 = int(math.ceil(min(float(w), box[2]) * s)), int(math.ceil(min(float(h), box[3]) * s))
        if x1 > x0 and y1 > y0:
            out[y0:y1, x0:x1] = 10.0
        return out

    def decode(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``points BxNx2``, ``labels BxN``, ``boxes Bx4``, ``mask_input Bx256x256`` ->
        ``(logits BxCx256x256 float32, iou BxC float32)``, ``C`` = 3 with ``multimask`` else 1."""
        if self._size is None:
            raise RuntimeError("BoxRunner.decode before encode")
        n = len(boxes) if boxes is not None else len(points)  # type: ignore[arg-type]
        if boxes is not None:
            boxes = np.asarray(boxes, dtype=np.float64).reshape(n, 4)
            self._check(boxes, "box")
        if points is not None:
            points = np.asarray(points, dtype=np.float64).reshape(n, -1, 2)
            self._check(points, "point")
            labels = np.asarray(labels).reshape(n, -1)
        h, w = self._size
        half = self.point_extent * max(h, w) / 2.0
        c = 3 if multimask else 1
        low = np.full((n, c, _LOWRES, _LOWRES), -10.0, np.float32)
        iou = np.full((n, c), 0.05, np.float32)
        for i in range(n):
            region = None
            if boxes is not None:
                region = boxes[i]
            elif points is not None:
                pos = points[i][labels[i] == 1]
                if len(pos):
                    region = np.array([pos[:, 0].min() - half, pos[:, 1].min() - half, pos[:, 0].max() + half, pos[:, 1].max() + half])
            if region is not None:
                logits = self._region_logits(region)
            elif mask_input is not None:
                logits = np.asarray(mask_input[i], dtype=np.float32)
            else:
                continue
            low[i, :] = logits
            if (logits > 0).any():
                iou[i, :] = np.array([0.9, 0.8, 0.7][:c], np.float32)
        self.decoded_prompts += n
        return low, iou

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``Bx256x256`` logits -> ``BxHxW bool`` at ``size = (H, W)``."""
        if len(low_res) == 0:
            return np.zeros((0, *size), dtype=bool)
        h_in, w_in = self._input
        ch, cw = math.ceil(h_in * _LOWRES / _IMG), math.ceil(w_in * _LOWRES / _IMG)
        out = np.empty((len(low_res), *size), dtype=bool)
        for i, lr in enumerate(low_res):
            valid = np.ascontiguousarray(lr[:ch, :cw], dtype=np.float32)
            out[i] = cv2.resize(valid, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) > 0
        return out


class GroundTruthRunner:
    """A :class:`ModelRunner` that answers from the scene's ground truth of the encoded frame."""

    def __init__(self, scene):
        self.scene = scene
        self.current = 0
        self.encoded: list[int] = []
        self.decode_batches: list[int] = []
        self._gt: dict[int, np.ndarray] = {}

    def encode(self, image_bgr):
        self.encoded.append(self.current)
        self._gt = self.scene.render(self.current)[1]
        h, w = image_bgr.shape[:2]
        self._input = preprocess_shape(h, w, 1024)

    def _logits(self, mask):
        return mask_logits(mask, self._input)

    def _pick(self, point=None, box=None):
        return pick_object(self._gt, box=box, point=point)

    def decode(self, points, labels, boxes, mask_input, multimask):
        n = len(boxes) if boxes is not None else len(points)
        self.decode_batches.append(n)
        c = 3 if multimask else 1
        low = np.full((n, c, 256, 256), -10.0, np.float32)
        iou = np.full((n, c), 0.05, np.float32)
        for i in range(n):
            oid = self._pick(box=boxes[i]) if boxes is not None else self._pick(point=points[i][0])
            if oid is not None:
                low[i, :] = self._logits(self._gt[oid])
                iou[i, :] = 0.95
        return low, iou

    def masks(self, low_res, size):
        h, w = self._input
        out = []
        for lr in low_res:
            up = cv2.resize(lr, (1024, 1024), interpolation=cv2.INTER_LINEAR)[:h, :w]
            out.append(cv2.resize(up, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) > 0)
        return np.stack(out) if out else np.zeros((0, *size), bool)


class LoopingSceneSource:
    """A synthetic scene played in a loop as an endless source (``HxWx3 uint8`` BGR frames).

    Frames are rendered once (``scene.num_frames`` of them) and replayed with
    increasing indices and timestamps forever. With ``fps > 0`` it is paced
    like a camera and ``live`` (a pipeline keeps only the newest frame and
    counts drops); with ``fps=0`` it is not live, so a pipeline reads it
    through its bounded queue as fast as the engine goes (a live source
    without pacing would only spin the capture thread).
    """

    def __init__(self, scene: Scene | None = None, *, fps: float = 30.0) -> None:
        self.scene = scene if scene is not None else standard_scene(640, 480, num_frames=90)
        self._frames = [self.scene.render(i)[0] for i in range(self.scene.num_frames)]
        for f in self._frames:
            f.setflags(write=False)
        self.fps = float(fps) if fps > 0 else None
        self.live = self.fps is not None
        self.size = (self.scene.width, self.scene.height)
        self.name = f"synthetic:{self.scene.width}x{self.scene.height}"
        self.num_frames = None
        self._index = 0
        self._start: float | None = None
        self._stopped = False

    def read(self) -> Frame | None:
        """The next frame (waiting for its time when paced), or ``None`` after :meth:`interrupt`/:meth:`close`."""
        if self._stopped:
            return None
        now = time.monotonic()
        if self._start is None:
            self._start = now
        if self.fps:
            due = self._start + self._index / self.fps
            while now < due and not self._stopped:
                time.sleep(min(due - now, 0.05))
                now = time.monotonic()
            if self._stopped:
                return None
        i = self._index
        self._index += 1
        image = self._frames[i % len(self._frames)]
        ts = i / self.fps if self.fps else now - self._start
        return Frame(i, image, ts, time.monotonic())

    def interrupt(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self._stopped = True


class FixedBoxDetector:
    """A :class:`~realtime_sam.tracking.detection.Detector` that returns given boxes.

    Args:
        boxes: ``Nx4`` XYXY pixels, the same for every image; or a callable
            ``boxes(image_bgr) -> Nx4`` (e.g. a scene's ground truth of the frame shown).
        class_ids: ``N`` class indices (with a callable ``boxes``: one per row it returns, or one for all).
        names: class index -> name.
        scores: ``N`` confidences (default 0.9 each).

    Attributes:
        calls: images seen; threads: the name of the thread of each call.
    """

    def __init__(
        self,
        boxes: Sequence[Sequence[float]] | Callable[[np.ndarray], Sequence[Sequence[float]]],
        class_ids: Sequence[int],
        names: Mapping[int, str],
        scores: Sequence[float] | None = None,
    ) -> None:
        self.boxes = boxes
        self.class_ids = list(class_ids)
        self.names = dict(names)
        self.scores = None if scores is None else list(scores)
        self.calls = 0
        self.threads: list[str] = []

    def __call__(self, image_bgr: np.ndarray) -> BoxDetections:
        self.calls += 1
        self.threads.append(threading.current_thread().name)
        xyxy = np.asarray(self.boxes(image_bgr) if callable(self.boxes) else self.boxes, dtype=np.float64).reshape(-1, 4)
        n = len(xyxy)
        cls = self.class_ids if len(self.class_ids) == n else self.class_ids[:1] * n
        scores = self.scores if self.scores is not None and len(self.scores) == n else [0.9] * n
        return BoxDetections(xyxy, scores, cls, self.names)
