"""Fast inference: device/precision/backend selection and the :class:`InferenceModel` entry point.

``load_inference_model(weights, ModelConfig(device="cpu"), InferenceOptions(num_threads=2))``
returns a model whose ``encode``/``decode``/``upscale`` the engine calls, and
whose ``.sam`` is a drop-in :class:`~realtime_sam.model.modeling.Sam` for
:class:`~realtime_sam.model.predictor.SamPredictor`.
"""

from realtime_sam.model.config import BACKENDS, ModelConfig
from realtime_sam.model.runtime.model import (
    Embedding,
    InferenceModel,
    InferenceOptions,
    load_inference_model,
    resolve_backend,
)

__all__ = [
    "BACKENDS",
    "Embedding",
    "InferenceModel",
    "InferenceOptions",
    "ModelConfig",
    "load_inference_model",
    "resolve_backend",
]
