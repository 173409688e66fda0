"""Turning a :class:`ModelConfig` into a ready :class:`~realtime_sam.engine.ModelRunner`.

Resolves the weights (explicit path, ``$REALTIME_SAM_WEIGHTS``, cache,
download), the device and precision, builds the model and wraps it.
"""

from __future__ import annotations

import torch

from .build import build_sam
from .engine import ModelRunner, PredictorRunner
from .errors import ConfigError
from .predictor import SamPredictor
from .weights import resolve_weights

__all__ = ["load_runner", "load_predictor", "resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA, then MPS, then CPU; an unavailable device is a one-line ConfigError."""
    try:
        from .device import resolve_device as _resolve  # richer checks when present

        return _resolve(name)
    except ImportError:
        pass
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available here; use --device cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ConfigError("device 'mps' requested but Apple MPS is not available here; use --device cpu")
    return torch.device(name)


def load_predictor(model_config, *, progress: bool = True) -> SamPredictor:
    """Build a :class:`SamPredictor` for ``model_config`` (a :class:`~realtime_sam.config.ModelConfig`)."""
    weights = resolve_weights(model_config.weights, model_type=model_config.model_type, progress=progress)
    device = resolve_device(model_config.device)
    model = build_sam(model_config.model_type, weights).to(device)
    return SamPredictor(model)


def load_runner(model_config, *, progress: bool = True) -> ModelRunner:
    """The engine's model interface for ``model_config``."""
    return PredictorRunner(load_predictor(model_config, progress=progress))
