"""Resizing images and prompts to the model's input frame (longest side 1024).

SAM was trained on images resized with an antialiased bilinear filter (PIL's),
and the network is sensitive to the filter: a plain bilinear resize moves the
embedding visibly. We use PyTorch's antialiased bilinear interpolation on
``uint8`` input, which follows the same separable triangle filter.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from realtime_sam.errors import SamInputError

__all__ = ["ResizeLongestSide", "check_image", "preprocess_shape"]


def check_image(image: object, image_format: str, caller: str) -> None:
    """Refuse anything but an ``HxWx3 uint8`` array in "RGB" or "BGR" order, naming ``caller``.

    Raises:
        SamInputError: a bad ``image_format`` or array (a ``ValueError`` and, as
            ``segment_anything`` asserts these, an ``AssertionError``).
    """
    if image_format not in ("RGB", "BGR"):
        raise SamInputError(f"image_format must be 'RGB' or 'BGR', not {image_format!r}")
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise SamInputError(f"{caller} expects an HxWx3 uint8 array, got shape {shape} dtype {dtype}")
    if 0 in image.shape:
        raise SamInputError(f"{caller} got an empty image of shape {image.shape}; give an HxWx3 uint8 array with H, W > 0")


def preprocess_shape(old_h: int, old_w: int, long_side: int) -> tuple[int, int]:
    """``(h, w)`` after scaling so the longest side is ``long_side`` (rounded half up)."""
    scale = long_side / max(old_h, old_w)
    return int(old_h * scale + 0.5), int(old_w * scale + 0.5)


class ResizeLongestSide:
    """Maps images, points and boxes from original pixels to the resized model input.

    Same names and semantics as ``segment_anything.utils.transforms.ResizeLongestSide``.
    """

    def __init__(self, target_length: int) -> None:
        self.target_length = target_length

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        """``(h, w)`` after scaling so the longest side is ``long_side_length``."""
        return preprocess_shape(oldh, oldw, long_side_length)

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        """``HxWx3 uint8`` -> ``hxwx3 uint8`` with the longest side at ``target_length``."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an HxWx3 uint8 image, got shape {image.shape} dtype {image.dtype}")
        h, w = preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None]
        return self.apply_image_torch_uint8(t, (h, w))[0].permute(1, 2, 0).numpy()

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        """``BxCxHxW`` float -> ``BxCxhxw`` float with the longest side at ``target_length``.

        Antialiased bilinear, as ``segment_anything``'s; like there, it may differ slightly
        from :meth:`apply_image` (what ``set_image`` uses).
        """
        if image.ndim != 4:
            raise ValueError(f"apply_image_torch expects a BxCxHxW tensor, got shape {tuple(image.shape)}")
        size = preprocess_shape(image.shape[-2], image.shape[-1], self.target_length)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)

    @staticmethod
    def apply_image_torch_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``Bx3xHxW uint8`` -> ``Bx3xhxw uint8``, antialiased bilinear."""
        if tuple(image.shape[-2:]) == tuple(size):
            return image.clone()
        if image.device.type == "cpu":
            return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)
        # CUDA has no uint8 kernel for antialiased bilinear (NotImplementedError): resample in float32
        # and round; the CPU's fixed-point uint8 kernel gives the same image within one grey level.
        out = F.interpolate(image.float(), size, mode="bilinear", align_corners=False, antialias=True)
        return out.round_().clamp_(0, 255).to(torch.uint8)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``...x2`` XY in original pixels -> resized pixels (float)."""
        old_h, old_w = original_size
        new_h, new_w = preprocess_shape(old_h, old_w, self.target_length)
        coords = np.array(coords, dtype=np.float64, copy=True)
        coords[..., 0] *= new_w / old_w
        coords[..., 1] *= new_h / old_h
        return coords

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``Nx4`` XYXY in original pixels -> resized pixels."""
        return self.apply_coords(np.asarray(boxes).reshape(-1, 2, 2), original_size).reshape(-1, 4)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        old_h, old_w = original_size
        new_h, new_w = preprocess_shape(old_h, old_w, self.target_length)
        scale = torch.tensor([new_w / old_w, new_h / old_h], dtype=torch.float32, device=coords.device)
        return coords.to(torch.float32) * scale

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        return self.apply_coords_torch(boxes.reshape(-1, 2, 2), original_size).reshape(-1, 4)
