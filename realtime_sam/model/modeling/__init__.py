"""The networks: one ``nn.Module`` family per file."""

from realtime_sam.model.modeling.image_encoder import ImageEncoderViT
from realtime_sam.model.modeling.mask_decoder import MaskDecoder
from realtime_sam.model.modeling.prompt_encoder import PromptEncoder
from realtime_sam.model.modeling.sam import Sam
from realtime_sam.model.modeling.tiny_vit import TinyViT
from realtime_sam.model.modeling.transformer import TwoWayTransformer

__all__ = ["ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam", "TinyViT", "TwoWayTransformer"]
