"""The engine's model adapters: :class:`~realtime_sam.tracking.model_runner.ModelRunner` implementations.

* :class:`InferenceRunner` over an :class:`~realtime_sam.model.runtime.InferenceModel`
  (any backend, device and precision; what :func:`~realtime_sam.model.loader.load_runner`
  returns), with ``embed``/``use`` for background encoding.
* :class:`PredictorRunner` over a SAM-compatible
  :class:`~realtime_sam.model.predictor.SamPredictor` (the eager fp32 reference).
* :func:`low_res_to_masks`: decoder logits to full-size masks, shared by both.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from realtime_sam.model.predictor import SamPredictor
    from realtime_sam.model.runtime import Embedding, InferenceModel

__all__ = ["InferenceRunner", "PredictorRunner", "low_res_to_masks"]


class InferenceRunner:
    """:class:`~realtime_sam.tracking.model_runner.ModelRunner` over an :class:`InferenceModel`.

    Holds one image embedding at a time; all coordinates are source pixels.
    """

    def __init__(self, model: InferenceModel) -> None:
        self.model = model
        self._embedding: Embedding | None = None

    def __repr__(self) -> str:
        return f"InferenceRunner({self.model!r})"

    def encode(self, image_bgr: np.ndarray) -> None:
        """Embed ``image_bgr`` (``HxWx3 uint8``, BGR as OpenCV and PyAV's bgr24 give it) and make it current."""
        self._embedding = self.model.encode(image_bgr, image_format="BGR")

    def embed(self, image_bgr: np.ndarray) -> Embedding:
        """Embed ``image_bgr`` without making it current (the engine's background worker calls this)."""
        return self.model.encode(image_bgr, image_format="BGR")

    def use(self, embedding: Embedding) -> None:
        """Make an embedding from :meth:`embed` current for :meth:`decode` and :meth:`masks`."""
        self._embedding = embedding

    def decode(self, points, labels, boxes, mask_input, multimask):
        """``points BxNx2``, ``labels BxN``, ``boxes Bx4``, ``mask_input Bx256x256`` (any may be None)
        -> ``(low_res_logits BxCx256x256 float32, iou BxC float32)`` as numpy arrays."""
        if self._embedding is None:
            raise RuntimeError("decode called before encode")
        mi = None if mask_input is None else np.asarray(mask_input, dtype=np.float32)[:, None]
        low, iou = self.model.decode(
            self._embedding, point_coords=points, point_labels=labels, boxes=boxes,
            mask_input=mi, multimask_output=multimask,
        )
        return low.cpu().numpy(), iou.cpu().numpy()

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``Bx256x256`` logits -> ``BxHxW bool`` at ``size = (H, W)``."""
        if self._embedding is None:
            raise RuntimeError("masks called before encode")
        # On a GPU the upsampling runs there: five 720p masks took 6-22 ms a frame on two CPU cores.
        return low_res_to_masks(low_res, self._embedding.input_size, self.model.img_size, size, device=self.model.device)


class PredictorRunner:
    """:class:`~realtime_sam.tracking.model_runner.ModelRunner` over a :class:`~realtime_sam.model.predictor.SamPredictor`."""

    def __init__(self, predictor: SamPredictor) -> None:
        self.predictor = predictor

    def encode(self, image_bgr: np.ndarray) -> None:
        self.predictor.set_image(image_bgr, image_format="BGR")

    @torch.no_grad()
    def decode(self, points, labels, boxes, mask_input, multimask):
        p = self.predictor
        dev = p.device
        pts = None
        if points is not None:
            coords = p.transform.apply_coords(np.asarray(points, dtype=np.float64), p.original_size)
            pts = (
                torch.as_tensor(coords, dtype=torch.float32, device=dev),
                torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=dev),
            )
        bx = None
        if boxes is not None:
            bx = torch.as_tensor(p.transform.apply_boxes(np.asarray(boxes), p.original_size), dtype=torch.float32, device=dev)
        mi = None
        if mask_input is not None:
            mi = torch.as_tensor(np.asarray(mask_input, dtype=np.float32), device=dev)[:, None]
        low, iou = p.decode(pts, bx, mi, multimask)
        return low.cpu().numpy(), iou.cpu().numpy()

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        p = self.predictor
        return low_res_to_masks(low_res, p.input_size, p.model.img_size, size)


@torch.inference_mode()
def low_res_to_masks(
    low_res: np.ndarray,
    input_size: tuple[int, int],
    img_size: int,
    size: tuple[int, int],
    device: torch.device | None = None,
) -> np.ndarray:
    """Decoder logits ``Bx256x256`` -> ``BxHxW bool`` masks at ``size = (H, W)``, upsampled on ``device`` (default the CPU).

    ``input_size`` is the image's ``(h, w)`` inside the padded ``img_size``
    square. The padding is cropped at low resolution and the rest upsampled
    straight to the source size: one interpolation of the visible region
    instead of SAM's 1024x1024 round trip (the same masks up to sub-pixel
    edges, at a fraction of the cost for a 640x480 frame).
    """
    if len(low_res) == 0:
        return np.zeros((0, *size), dtype=bool)
    scale = low_res.shape[-1] / img_size
    h = int(np.ceil(input_size[0] * scale))
    w = int(np.ceil(input_size[1] * scale))
    t = torch.from_numpy(np.ascontiguousarray(low_res[:, None, :h, :w], dtype=np.float32))
    if device is not None and device.type != "cpu":
        t = t.to(device)
    up = F.interpolate(t, size, mode="bilinear", align_corners=False)
    return (up[:, 0] > 0).cpu().numpy()
