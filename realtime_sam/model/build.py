"""Model builders and the ``sam_model_registry`` (same names as ``segment_anything``).

``sam_model_registry["vit_t"](checkpoint="mobile_sam.pt")`` returns an
``eval()``-mode :class:`~realtime_sam.model.modeling.Sam` on the CPU with the
checkpoint loaded strictly (that bare name, when no such file is in the current
folder, from where the app keeps its weights); ``checkpoint=None`` gives random weights.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import torch
from torch import nn

from realtime_sam.model.checkpoint import load_checkpoint
from realtime_sam.model.weights import locate_checkpoint
from realtime_sam.model.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TinyViT,
    TwoWayTransformer,
)

__all__ = ["sam_model_registry", "build_sam", "build_sam_vit_t", "build_sam_vit_b", "build_sam_vit_l", "build_sam_vit_h"]

_IMG = 1024
_EMB = 256
_GRID = _IMG // 16


def _sam(image_encoder: nn.Module) -> Sam:
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=PromptEncoder(
            embed_dim=_EMB, image_embedding_size=(_GRID, _GRID), input_image_size=(_IMG, _IMG), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=_EMB,
            transformer=TwoWayTransformer(depth=2, embedding_dim=_EMB, mlp_dim=2048, num_heads=8),
            num_multimask_outputs=3,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
    )


def _vit(embed_dim: int, depth: int, num_heads: int, global_attn: Sequence[int]) -> ImageEncoderViT:
    return ImageEncoderViT(
        img_size=_IMG,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        global_attn_indexes=tuple(global_attn),
        window_size=14,
        out_chans=_EMB,
    )


_ENCODERS: dict[str, Callable[[], nn.Module]] = {
    "vit_t": lambda: TinyViT(img_size=_IMG),
    "vit_b": lambda: _vit(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": lambda: _vit(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": lambda: _vit(1280, 32, 16, (7, 15, 23, 31)),
}


def build_sam(
    model_type: str | os.PathLike | None = None, checkpoint: str | os.PathLike | None = None
) -> Sam:
    """Build ``model_type`` and load ``checkpoint`` strictly (``None``: random init).

    ``build_sam("vit_t", "mobile_sam.pt")`` names the model; without a model type it is
    ``segment_anything``'s ``build_sam`` (= ``build_sam_vit_h``): ``build_sam()``,
    ``build_sam("sam_vit_h_4b8939.pth")`` and ``build_sam(checkpoint=...)`` build ViT-H.
    ``checkpoint`` is a path; the official file's bare name (``mobile_sam.pt``) not in
    the current folder is looked for where the app keeps weights
    (:func:`~realtime_sam.model.weights.locate_checkpoint`: ``$REALTIME_SAM_WEIGHTS``,
    the cache, downloaded there for ``vit_t``).

    Raises:
        KeyError: an unknown model type (``vit_t``, ``vit_b``, ``vit_l``, ``vit_h``, ``default``).
        CheckpointError: the file is missing, damaged, or of another model.
        WeightsDownloadError: the official file had to be downloaded and could not be.
    """
    if model_type is None or model_type == "default":
        model_type = "vit_h"
    elif model_type not in _ENCODERS:
        name = os.fspath(model_type)
        if checkpoint is not None or _looks_like_model_type(name):
            raise KeyError(f"unknown model type {name!r}; one of {', '.join(sam_model_registry)}")
        model_type, checkpoint = "vit_h", model_type  # segment_anything's build_sam(checkpoint)
    if checkpoint is not None:
        checkpoint = locate_checkpoint(checkpoint, model_type=model_type)
    state = load_checkpoint(checkpoint, model_type) if checkpoint is not None else None
    with torch.device("cpu"):
        model = _sam(_ENCODERS[model_type]())
    if state is not None:
        model.load_state_dict(state, strict=True)
    return model.eval()


def _looks_like_model_type(name: str) -> bool:
    """A misspelt model type (``vit_tt``), not a file name: no folder, no suffix, ``vit`` in front."""
    return name.lower().startswith("vit") and os.sep not in name and "/" not in name and "." not in name


def build_sam_vit_t(checkpoint: str | os.PathLike | None = None) -> Sam:
    """MobileSAM (TinyViT-5M encoder)."""
    return build_sam("vit_t", checkpoint)


def build_sam_vit_b(checkpoint: str | os.PathLike | None = None) -> Sam:
    """SAM ViT-B."""
    return build_sam("vit_b", checkpoint)


def build_sam_vit_l(checkpoint: str | os.PathLike | None = None) -> Sam:
    """SAM ViT-L."""
    return build_sam("vit_l", checkpoint)


def build_sam_vit_h(checkpoint: str | os.PathLike | None = None) -> Sam:
    """SAM ViT-H."""
    return build_sam("vit_h", checkpoint)


sam_model_registry: dict[str, Callable[..., Sam]] = {
    "default": build_sam_vit_h,
    "vit_h": build_sam_vit_h,
    "vit_l": build_sam_vit_l,
    "vit_b": build_sam_vit_b,
    "vit_t": build_sam_vit_t,
}
