"""Turning a :class:`~realtime_sam.config.ModelConfig` into a ready model.

Resolves the weights (explicit path, ``$REALTIME_SAM_WEIGHTS``, cache,
download), the device, the precision and the backend, then builds either the
engine's :class:`~realtime_sam.tracking.model_runner.ModelRunner` (:func:`load_runner`) or a
SAM-compatible :class:`~realtime_sam.model.predictor.SamPredictor`
(:func:`load_predictor`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from realtime_sam.model.device import resolve_device
from realtime_sam.model.predictor import SamPredictor
from realtime_sam.model.runners import InferenceRunner
from realtime_sam.model.runtime import InferenceModel, load_inference_model
from realtime_sam.model.weights import resolve_weights

if TYPE_CHECKING:
    from realtime_sam.config import ModelConfig
    from realtime_sam.tracking.model_runner import ModelRunner

__all__ = ["InferenceRunner", "load_model", "load_runner", "load_predictor", "resolve_device"]


def load_model(model_config: ModelConfig, *, progress: bool = True) -> InferenceModel:
    """The :class:`InferenceModel` that ``model_config`` names (weights resolved, downloaded if needed)."""
    weights = resolve_weights(model_config.weights, model_type=model_config.model_type, progress=progress)
    return load_inference_model(weights, model_config)


def load_predictor(model_config: ModelConfig, *, progress: bool = True) -> SamPredictor:
    """A :class:`SamPredictor` for ``model_config``.

    The predictor keeps SAM's fp32 interface, so it runs the chosen backend's
    networks only in fp32; half precision is for the engine (:func:`load_runner`).
    """
    # SamPredictor feeds fp32 tensors straight into the encoder: build it in fp32 at once.
    model = load_model(replace(model_config, precision="fp32"), progress=progress)
    return SamPredictor(model.sam)


def load_runner(model_config: ModelConfig, *, progress: bool = True) -> ModelRunner:
    """The engine's model interface for ``model_config`` (any backend, device and precision)."""
    return InferenceRunner(load_model(model_config, progress=progress))
