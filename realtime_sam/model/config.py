"""The ``model:`` section: which network, which weights, where and how it runs.

One frozen dataclass shared by the app's configuration
(:class:`realtime_sam.config.Config`) and the inference runtime
(:func:`realtime_sam.model.runtime.load_inference_model`), so the device,
precision and backend are validated and defaulted in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError
from realtime_sam.model.checkpoint import MODEL_TYPES
from realtime_sam.model.device import PRECISION_CHOICES

__all__ = ["BACKENDS", "ModelConfig"]

BACKENDS = ("auto", "eager", "torch", "onnxruntime", "openvino")
"""Inference implementations; see :mod:`realtime_sam.model.runtime.model`."""

_DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N


@dataclass(frozen=True)
class ModelConfig:
    """Which network, which weights, where it runs.

    Attributes:
        weights: checkpoint path; ``None`` = ``$REALTIME_SAM_WEIGHTS`` or the per-user cache (downloaded on first use).
        model_type: ``vit_t`` (MobileSAM) or ``vit_b``/``vit_l``/``vit_h`` (original SAM).
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        precision: ``fp32``, ``fp16``/``bf16`` (GPU) or ``auto`` (fp16 on CUDA, else fp32).
        backend: inference implementation: ``eager`` (plain PyTorch), ``torch`` (fused PyTorch), ``onnxruntime``/``openvino`` (CPU), ``auto``.
        cuda_graphs: on CUDA, replay the encoder and decoder as CUDA graphs, one per input shape
            (:mod:`realtime_sam.model.runtime.cuda_graphs`); ignored on other devices.
    """

    weights: str | None = None
    model_type: str = "vit_t"
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "auto"
    cuda_graphs: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, "model")  # by type first: "5" < 1 is a TypeError naming no key
        if self.model_type not in MODEL_TYPES:
            raise ConfigError(f"model.model_type must be one of {', '.join(MODEL_TYPES)}, not {self.model_type!r}")
        # Exactly these: `cpu:0`, `cuda:x` or `auto:1` passed a check of the part before the colon
        # and failed only when the model loaded.
        if not isinstance(self.device, str) or not re.fullmatch(r"(auto|cpu|mps|cuda(:\d+)?)", self.device):
            raise ConfigError(f"model.device must be one of {', '.join(_DEVICES)} (or cuda:N), not {self.device!r}")
        if self.precision not in PRECISION_CHOICES:
            raise ConfigError(f"model.precision must be one of {', '.join(PRECISION_CHOICES)}, not {self.precision!r}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"model.backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if not isinstance(self.cuda_graphs, bool):
            raise ConfigError(f"model.cuda_graphs must be true or false, not {self.cuda_graphs!r}")
