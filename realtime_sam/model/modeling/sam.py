"""The SAM model: image encoder + prompt encoder + mask decoder, with SAM's pre/post-processing."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from realtime_sam.model.modeling.mask_decoder import MaskDecoder
from realtime_sam.model.modeling.prompt_encoder import PromptEncoder


class Sam(nn.Module):
    """Holds the three networks; ``preprocess`` and ``postprocess_masks`` follow ``segment_anything``.

    Images are RGB; ``pixel_mean``/``pixel_std`` are in 0-255 units.
    """

    mask_threshold: float = 0.0
    image_format: str = "RGB"

    def __init__(
        self,
        image_encoder: nn.Module,
        prompt_encoder: PromptEncoder,
        mask_decoder: MaskDecoder,
        pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53),
        pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375),
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), persistent=False)

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def img_size(self) -> int:
        return int(self.image_encoder.img_size)

    @torch.no_grad()
    def forward(self, batched_input: list[dict[str, Any]], multimask_output: bool) -> list[dict[str, torch.Tensor]]:
        """End to end, as ``segment_anything``'s ``Sam.forward``: one dict per image in, one out.

        Each input dict has ``image`` (``3xhxw``, RGB 0-255, already resized with
        ``ResizeLongestSide``), ``original_size`` (``(H, W)``) and optionally the prompts,
        in the resized frame: ``point_coords`` (``BxNx2``) with ``point_labels`` (``BxN``),
        ``boxes`` (``Bx4``), ``mask_inputs`` (``Bx1x256x256``). Each output dict has
        ``masks`` (``BxCxHxW`` bool), ``iou_predictions`` (``BxC``) and ``low_res_logits``
        (``BxCx256x256``). For several prompt rounds on one image ``SamPredictor`` is faster.
        """
        if not batched_input:
            return []
        dtype = next(self.image_encoder.parameters()).dtype
        images = torch.stack(
            [self.preprocess(rec["image"].to(self.device, torch.float32)) for rec in batched_input]
        )
        embeddings = self.image_encoder(images.to(dtype))
        dec_dtype = next(self.mask_decoder.parameters()).dtype  # fp16 where a fast backend's decoder runs in it
        outputs = []
        for rec, embedding in zip(batched_input, embeddings):
            points = (rec["point_coords"], rec["point_labels"]) if "point_coords" in rec else None
            sparse, dense = self.prompt_encoder(points=points, boxes=rec.get("boxes"), masks=rec.get("mask_inputs"))
            low, iou = self.mask_decoder(
                image_embeddings=embedding[None].to(dec_dtype),
                image_pe=self.prompt_encoder.get_dense_pe().to(dec_dtype),
                sparse_prompt_embeddings=sparse.to(dec_dtype),
                dense_prompt_embeddings=dense.to(dec_dtype),
                multimask_output=multimask_output,
            )
            low, iou = low.float(), iou.float()
            input_size = tuple(int(s) for s in rec["image"].shape[-2:])
            original_size = tuple(int(s) for s in rec["original_size"])
            masks = self.postprocess_masks(low, input_size, original_size) > self.mask_threshold
            outputs.append({"masks": masks, "iou_predictions": iou, "low_res_logits": low})
        return outputs

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``Bx3xhxw`` (0-255, RGB, resized) -> normalised and zero-padded to ``Bx3x1024x1024``."""
        x = (x - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits ``BxCx256x256`` -> logits ``BxCxHxW`` at the original image size.

        Upsample to the padded 1024 square, crop the padding, then resize to the original.
        """
        masks = F.interpolate(masks, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        masks = masks[..., : input_size[0], : input_size[1]]
        return F.interpolate(masks, tuple(original_size), mode="bilinear", align_corners=False)
