"""Fast inference: device/precision/backend selection and the :class:`InferenceModel` entry point.

``load_inference_model(weights, "vit_t", InferenceConfig(backend="auto"))``
returns a model whose ``encode``/``decode``/``upscale`` the engine calls, and
whose ``.sam`` is a drop-in :class:`~realtime_sam.modeling.Sam` for
:class:`~realtime_sam.predictor.SamPredictor`.
"""

from .model import BACKENDS, Embedding, InferenceConfig, InferenceModel, load_inference_model, resolve_backend

__all__ = ["BACKENDS", "Embedding", "InferenceConfig", "InferenceModel", "load_inference_model", "resolve_backend"]
