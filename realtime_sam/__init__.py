"""realtime-sam: segment and track objects in live video with MobileSAM.

The SAM-compatible API (``sam_model_registry``, ``SamPredictor``) mirrors
``segment_anything`` so existing code switches with an import change.
Names are imported lazily so ``import realtime_sam.types`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "sam_model_registry": "build",
    "build_sam_vit_t": "build",
    "build_sam_vit_b": "build",
    "build_sam_vit_l": "build",
    "build_sam_vit_h": "build",
    "build_sam": "build",
    "SamPredictor": "predictor",
    "track": "api",
    "Engine": "engine",
    "Pipeline": "pipeline",
    "load_config": "config",
    "ObjectPrompt": "types",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
