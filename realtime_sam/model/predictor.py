"""``SamPredictor``: per-image state and prompt-to-mask calls, as in ``segment_anything``.

Usage is identical to the original::

    predictor = SamPredictor(sam_model_registry["vit_t"](checkpoint="mobile_sam.pt"))
    predictor.set_image(image_rgb)                      # HxWx3 uint8, RGB
    masks, scores, logits = predictor.predict(point_coords=np.array([[x, y]]),
                                              point_labels=np.array([1]))

Prompts are in original-image pixels (XY points, XYXY boxes); masks come back
at the original size.
"""

from __future__ import annotations

import numpy as np
import torch

from realtime_sam.errors import PromptError, SamInputError, SamPromptError
from realtime_sam.model.modeling import Sam
from realtime_sam.model.transforms import ResizeLongestSide, check_image

__all__ = ["SamPredictor"]

# segment_anything ignores point_labels given alone, so a forgotten point_coords went unnoticed.
_LABELS_WITHOUT_COORDS = "point_labels given without point_coords; give the points too, or leave point_labels out"
_COORDS_WITHOUT_LABELS = "point_labels must be given with point_coords (1 = foreground, 0 = background)"


class SamPredictor:
    """Computes an image embedding once, then answers any number of prompts.

    Attributes:
        model: the wrapped :class:`Sam`.
        features: ``1x256x64x64`` embedding of the current image (``None`` before ``set_image``).
        original_size: ``(H, W)`` of the image given to ``set_image``.
        input_size: ``(h, w)`` after the longest-side resize to 1024.
        orig_h, orig_w, input_h, input_w: the same sizes as single ints (``None``
            before ``set_image``); ``segment_anything`` has these names too.
        is_image_set: whether ``set_image``/``set_torch_image`` has run.

    Where ``segment_anything`` asserts (a bad ``image_format`` or ``set_torch_image``
    shape, ``point_coords`` without ``point_labels``), the error raised here is also an
    ``AssertionError``, so ``except`` clauses written for it still catch it.
    """

    def __init__(self, sam_model: Sam) -> None:
        self.model = sam_model
        self.transform = ResizeLongestSide(sam_model.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @torch.no_grad()
    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed ``image``: ``HxWx3 uint8`` in ``image_format`` order ("RGB" or "BGR")."""
        check_image(image, image_format, "set_image")
        if image_format != self.model.image_format:
            image = image[..., ::-1]
        target = self.transform.get_preprocess_shape(image.shape[0], image.shape[1], self.transform.target_length)
        t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device)
        resized = self.transform.apply_image_torch_uint8(t, target)
        self.set_torch_image(resized, image.shape[:2])

    @torch.no_grad()
    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]) -> None:
        """Embed an already resized ``1x3xhxw`` image (RGB, 0-255, longest side 1024)."""
        if not isinstance(transformed_image, torch.Tensor):
            raise SamInputError(
                f"set_torch_image expects a torch.Tensor, got {type(transformed_image).__name__}; "
                "convert with torch.from_numpy(...) or call set_image with the HxWx3 uint8 array"
            )
        if (
            transformed_image.ndim != 4
            or transformed_image.shape[1] != 3
            or max(*transformed_image.shape[2:]) != self.model.img_size
        ):
            raise SamInputError(
                f"set_torch_image expects 1x3xHxW with the longest side {self.model.img_size}, "
                f"got {tuple(transformed_image.shape)}"
            )
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(transformed_image.shape[-2]), int(transformed_image.shape[-1]))
        self.orig_h, self.orig_w = self.original_size
        self.input_h, self.input_w = self.input_size
        x = self.model.preprocess(transformed_image.to(self.device, torch.float32))
        encoder = self.model.image_encoder
        dtype = next(encoder.parameters()).dtype
        self.features = encoder(x.to(dtype)).float()
        self.is_image_set = True

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for one set of prompts, in original-image pixels.

        Args:
            point_coords: ``Nx2`` XY points.
            point_labels: ``N`` labels, 1 foreground, 0 background, -1 padding, ignored (any other value is refused).
            box: one box, ``4`` (or ``1x4``) XYXY; several boxes go through :meth:`predict_torch`.
            mask_input: ``1x256x256`` low-res logits from a previous call (one of its masks;
                ``256x256`` and ``1x1x256x256`` are taken too).
            multimask_output: three masks instead of one (better for a single ambiguous point).
            return_logits: return logits instead of booleans.

        Returns:
            ``(masks CxHxW bool, iou_predictions C, low_res_logits Cx256x256)`` with ``C`` 3 or 1.
        """
        self._require_image()
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is None and point_labels is not None:
            raise PromptError(_LABELS_WITHOUT_COORDS)
        if point_coords is not None:
            if point_labels is None:
                raise SamPromptError(_COORDS_WITHOUT_LABELS)
            coords = np.asarray(point_coords, dtype=np.float64)
            if coords.ndim == 0 or coords.shape[-1] != 2:
                raise PromptError(f"point_coords must be Nx2 (x, y), got shape {coords.shape}")
            coords = coords.reshape(-1, 2)
            labels = np.asarray(point_labels).reshape(-1)
            if len(labels) != len(coords):
                raise PromptError(f"{len(coords)} points but {len(labels)} labels; give one label per point")
            _check_labels(labels)
            _check_finite(coords, "point_coords")
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float32, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int64, device=self.device)[None]
        if box is not None:
            b = np.asarray(box, dtype=np.float64)
            if b.ndim == 2 and b.shape[1] == 4 and b.shape[0] > 1:
                raise PromptError(
                    f"predict takes one box (4 numbers, XYXY), got {b.size // 4} (shape {b.shape}); for several "
                    "boxes at once use predict_torch(None, None, boxes=predictor.transform.apply_boxes_torch(boxes, "
                    "predictor.original_size))"
                )
            if b.size != 4:
                raise PromptError(f"box must be 4 numbers (XYXY), got shape {b.shape}")
            b = b.reshape(1, 4)
            _check_finite(b, "box")
            box_t = torch.as_tensor(self.transform.apply_boxes(b, self.original_size), dtype=torch.float32, device=self.device)
        if mask_input is not None:
            m = np.asarray(mask_input)
            size = self.model.prompt_encoder.mask_input_size
            if m.ndim < 2 or m.ndim > 4 or m.shape[-2:] != tuple(size) or m.size != size[0] * size[1]:
                raise PromptError(
                    f"mask_input must be 1x{size[0]}x{size[1]} (one mask of the low-res logits a previous predict "
                    f"returned, e.g. logits[scores.argmax()][None]), got shape {m.shape}"
                )
            mask_t = torch.as_tensor(m.reshape(1, 1, *size), dtype=torch.float32, device=self.device)
        masks, iou, low = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output=multimask_output, return_logits=return_logits
        )
        return masks[0].cpu().numpy(), iou[0].float().cpu().numpy(), low[0].float().cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Batched prompts in one decoder call; coordinates already in the *resized* frame.

        Args:
            point_coords: ``BxNx2``; point_labels: ``BxN``, 1 foreground, 0 background, -1 padding
                (no point, to fill shorter rows); boxes: ``Bx4``; mask_input: ``Bx1x256x256``.

        Returns:
            ``(masks BxCxHxW, iou BxC, low_res_logits BxCx256x256)``.
        """
        self._require_image()
        _check_batch(point_coords, point_labels, boxes, mask_input, self.model.prompt_encoder.mask_input_size)
        points = (point_coords, point_labels) if point_coords is not None else None
        low, iou = self.decode(points, boxes, mask_input, multimask_output)
        masks = self.model.postprocess_masks(low, self.input_size, self.original_size)
        if not return_logits:
            masks = masks > self.model.mask_threshold
        return masks, iou, low

    @torch.no_grad()
    def decode(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        mask_input: torch.Tensor | None,
        multimask_output: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder on the current embedding: ``(BxCx256x256 logits, BxC iou)``."""
        self._require_image()
        pe = self.model.prompt_encoder
        sparse, dense = pe(points=points, boxes=boxes, masks=mask_input)
        dtype = next(self.model.mask_decoder.parameters()).dtype
        low, iou = self.model.mask_decoder(
            image_embeddings=self.features.to(dtype),
            image_pe=pe.get_dense_pe().to(dtype),
            sparse_prompt_embeddings=sparse.to(dtype),
            dense_prompt_embeddings=dense.to(dtype),
            multimask_output=multimask_output,
        )
        return low.float(), iou.float()

    def get_image_embedding(self) -> torch.Tensor:
        """The current ``1x256x64x64`` image embedding."""
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) to generate an embedding.")
        assert self.features is not None
        return self.features

    def reset_image(self) -> None:
        """Forget the current image."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        self.orig_h: int | None = None
        self.orig_w: int | None = None
        self.input_h: int | None = None
        self.input_w: int | None = None

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")


def _check_batch(
    point_coords: torch.Tensor | None,
    point_labels: torch.Tensor | None,
    boxes: torch.Tensor | None,
    mask_input: torch.Tensor | None,
    mask_size: tuple[int, int],
) -> None:
    """Refuse ``predict_torch`` prompts whose shapes or batch sizes do not fit, naming the argument."""
    batch: dict[str, int] = {}
    if point_coords is None and point_labels is not None:
        raise PromptError(_LABELS_WITHOUT_COORDS)
    if point_coords is not None:
        if point_labels is None:
            raise SamPromptError(_COORDS_WITHOUT_LABELS)
        if point_coords.ndim != 3 or point_coords.shape[-1] != 2:
            raise PromptError(
                f"point_coords must be BxNx2, got {tuple(point_coords.shape)}; for one set of points add the batch axis ([None])"
            )
        if tuple(point_labels.shape) != tuple(point_coords.shape[:2]):
            raise PromptError(f"point_labels must be BxN = {tuple(point_coords.shape[:2])}, got {tuple(point_labels.shape)}")
        _check_labels(point_labels)
        batch["point_coords"] = point_coords.shape[0]
    if boxes is not None:
        if boxes.ndim == 0 or boxes.shape[-1] != 4 or boxes.numel() != 4 * boxes.shape[0]:
            raise PromptError(f"boxes must be Bx4 (XYXY), got {tuple(boxes.shape)}")
        batch["boxes"] = boxes.shape[0]
    if mask_input is not None:
        if mask_input.ndim not in (3, 4) or tuple(mask_input.shape[-3:]) != (1, *mask_size):
            raise PromptError(f"mask_input must be Bx1x{mask_size[0]}x{mask_size[1]}, got {tuple(mask_input.shape)}")
        batch["mask_input"] = mask_input.shape[0] if mask_input.ndim == 4 else 1
    if len(set(batch.values())) > 1:
        raise PromptError("batch sizes differ: " + ", ".join(f"{k} {v}" for k, v in batch.items()))


def _check_labels(labels: np.ndarray | torch.Tensor) -> None:
    """Refuse a point label other than 1, 0 and -1, naming the first one, for ``predict`` (numpy)
    and ``predict_torch`` (a tensor) alike.

    -1 is a point the decoder ignores (SAM's padding for rows with fewer points), which
    ``segment_anything`` takes in both; any other value gets no label embedding there.
    """
    known = (labels == 1) | (labels == 0) | (labels == -1)
    if not bool(known.all()):
        raise PromptError(
            "point_labels must be 1 (foreground), 0 (background) or -1 (padding, ignored), "
            f"got {_label_text(labels[~known][0])}"
        )


def _label_text(value: object) -> str:
    """A refused label as the user wrote it: ``5`` for the 5.0 a float array or tensor holds, ``0.5`` as is."""
    if isinstance(value, (np.generic, torch.Tensor)):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _check_finite(a: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(a)):
        raise PromptError(f"{name} contains NaN or infinite values; give finite pixel coordinates")
