"""realtime-sam: segment and track objects in live video with MobileSAM.

The SAM-compatible API (``sam_model_registry``, ``SamPredictor``,
``SamAutomaticMaskGenerator``) mirrors
``segment_anything`` so existing code switches with an import change.
Names are imported lazily so ``import realtime_sam.types`` stays light.

What this module exports is the public API; the modules below it
(``capture``, ``model``, ``tracking``, ``output``, ``app``) may move.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # SAM-compatible model API (a drop-in for ``segment_anything``)
    "sam_model_registry": "model.build",
    "build_sam_vit_t": "model.build",
    "build_sam_vit_b": "model.build",
    "build_sam_vit_l": "model.build",
    "build_sam_vit_h": "model.build",
    "build_sam": "model.build",
    "SamPredictor": "model.predictor",
    "SamAutomaticMaskGenerator": "model.automatic_mask_generator",
    "load_model": "model.loader",
    "ModelConfig": "model.config",
    # configuration
    "load_config": "config",
    "Config": "config",
    # streaming tracking
    "track": "app.api",
    "track_many": "app.multi",
    "StreamResult": "app.multi",
    "StreamsFailed": "app.multi",
    "StreamSpec": "app.streams",
    "Pipeline": "app.pipeline",
    "Engine": "tracking.engine",
    "ModelRunner": "tracking.model_runner",
    "open_source": "capture.sources",
    "make_sink": "output.sinks",
    "open_sinks": "output.sinks",
    # auto-annotation (detector boxes -> SAM masks -> YOLO / COCO labels)
    "annotate": "app.annotate",
    # values passed between stages and returned to users
    "ObjectPrompt": "types",
    "Frame": "types",
    "FrameResult": "types",
    "TrackResult": "types",
    "TrackState": "types",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
