"""Turning a :class:`~realtime_sam.config.ModelConfig` into a ready model.

Resolves the weights (explicit path, ``$REALTIME_SAM_WEIGHTS``, cache,
download), the device, the precision and the backend, then builds either the
engine's :class:`~realtime_sam.engine.ModelRunner` (:func:`load_runner`) or a
SAM-compatible :class:`~realtime_sam.predictor.SamPredictor`
(:func:`load_predictor`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from .device import resolve_device
from .engine import ModelRunner, low_res_to_masks
from .predictor import SamPredictor
from .runtime import Embedding, InferenceConfig, InferenceModel, load_inference_model
from .weights import resolve_weights

__all__ = ["InferenceRunner", "load_model", "load_runner", "load_predictor", "resolve_device"]


def load_model(model_config, *, progress: bool = True) -> InferenceModel:
    """The :class:`InferenceModel` that ``model_config`` names (weights resolved, downloaded if needed)."""
    weights = resolve_weights(model_config.weights, model_type=model_config.model_type, progress=progress)
    cfg = InferenceConfig(
        device=model_config.device, precision=model_config.precision, backend=model_config.backend
    )
    return load_inference_model(weights, model_config.model_type, cfg)


def load_predictor(model_config, *, progress: bool = True) -> SamPredictor:
    """A :class:`SamPredictor` for ``model_config``.

    The predictor keeps SAM's fp32 interface, so it runs the chosen backend's
    networks only in fp32; half precision is for the engine (:func:`load_runner`).
    """
    # SamPredictor feeds fp32 tensors straight into the encoder: build it in fp32 at once.
    model = load_model(replace(model_config, precision="fp32"), progress=progress)
    return SamPredictor(model.sam)


def load_runner(model_config, *, progress: bool = True) -> ModelRunner:
    """The engine's model interface for ``model_config`` (any backend, device and precision)."""
    return InferenceRunner(load_model(model_config, progress=progress))


class InferenceRunner:
    """:class:`~realtime_sam.engine.ModelRunner` over an :class:`InferenceModel`.

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
        return low_res_to_masks(low_res, self._embedding.input_size, self.model.img_size, size)
