"""``SamAutomaticMaskGenerator``: masks for everything in an image, as in ``segment_anything``.

Usage is identical to the original (and to MobileSAM's README)::

    mask_generator = SamAutomaticMaskGenerator(sam_model_registry["vit_t"](checkpoint="mobile_sam.pt"))
    masks = mask_generator.generate(image_rgb)          # HxWx3 uint8, RGB
    # [{"segmentation": HxW bool, "area": int, "bbox": [x, y, w, h], "predicted_iou": float,
    #   "point_coords": [[x, y]], "stability_score": float, "crop_box": [x, y, w, h]}, ...]

The algorithm is the reference's, step for step, so the same model gives the same
masks in the same order:

1. crops: the whole image, then for each crop layer ``i`` a ``2**i x 2**i`` grid of
   overlapping crops (:func:`crop_boxes`);
2. per crop: embed it, prompt the decoder with a regular point grid (one
   foreground point per prompt, three masks each, ``points_per_batch`` prompts per
   decoder call), drop masks under ``pred_iou_thresh`` or ``stability_score_thresh``
   and masks whose box runs along a crop edge that is not an image edge, then box
   NMS by predicted IoU;
3. across crops: box NMS preferring the smaller crop's mask;
4. optionally (``min_mask_region_area > 0``): fill small holes and drop small islands
   (OpenCV's connected components), then box NMS preferring untouched masks.

Boxes follow ``segment_anything``'s convention, not :mod:`realtime_sam.output.rle`'s:
integer ``XYXY`` whose far edges are the *last* covered column and row (inclusive),
so ``bbox``'s width and height are one less than the pixel extent, and an empty mask
has the box ``[0, 0, 0, 0]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import product
from typing import Any

import cv2
import numpy as np
import torch

from realtime_sam.errors import SamInputError
from realtime_sam.model.modeling import Sam
from realtime_sam.model.predictor import SamPredictor
from realtime_sam.model.transforms import check_image
from realtime_sam.output.rle import compress_counts, counts_to_mask, mask_to_counts
from realtime_sam.tracking.discovery import nms, stability_score

__all__ = ["SamAutomaticMaskGenerator", "build_point_grid", "crop_boxes", "remove_small_regions"]

_OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# A mask whose box comes within this many pixels of a crop's inner edge is cut by the
# crop: a larger crop (or the whole image) sees that object whole.
_CROP_EDGE_TOL = 20.0


def build_point_grid(n_per_side: int) -> np.ndarray:
    """``(n*n, 2)`` float64 ``(x, y)`` in ``[0, 1]``: the centres of an ``n x n`` grid of cells, row by row.

    ``np.linspace`` rather than ``(i + 0.5) / n`` (as
    :func:`realtime_sam.tracking.discovery.point_grid`): the two differ in the last
    bit, and the reference's points are linspace's; the same bits give the same masks.
    """
    if n_per_side < 1:
        raise SamInputError(f"a point grid needs at least 1 point per side, got {n_per_side}")
    half = 1 / (2 * n_per_side)
    side = np.linspace(half, 1 - half, n_per_side)
    xs = np.tile(side[None, :], (n_per_side, 1))
    ys = np.tile(side[:, None], (1, n_per_side))
    return np.stack([xs, ys], axis=-1).reshape(-1, 2)


def crop_boxes(image_size: tuple[int, int], n_layers: int, overlap_ratio: float) -> tuple[list[list[int]], list[int]]:
    """The crops the generator prompts, and each one's layer.

    Args:
        image_size: ``(H, W)``.
        n_layers: crop layers below the whole image; layer ``i`` (from 1) has
            ``2**i x 2**i`` crops.
        overlap_ratio: in layer 1, neighbouring crops overlap by this fraction of the
            image's short side; deeper layers overlap proportionally less.

    Returns:
        ``(boxes, layers)``: integer ``XYXY`` boxes (far edges exclusive), the whole
        image first, then layer by layer with ``x`` in the outer loop; and the layer
        index of each.
    """
    h, w = image_size
    short = min(h, w)
    boxes, layers = [[0, 0, w, h]], [0]
    for layer in range(1, n_layers + 1):
        n = 2**layer
        overlap = int(overlap_ratio * short * (2 / n))
        # Equal crops that together with their overlaps span the side exactly (rounded up).
        crop_w = int(math.ceil((overlap * (n - 1) + w) / n))
        crop_h = int(math.ceil((overlap * (n - 1) + h) / n))
        x0s = [int((crop_w - overlap) * i) for i in range(n)]
        y0s = [int((crop_h - overlap) * i) for i in range(n)]
        for x0, y0 in product(x0s, y0s):
            boxes.append([x0, y0, min(x0 + crop_w, w), min(y0 + crop_h, h)])
            layers.append(layer)
    return boxes, layers


def remove_small_regions(mask: np.ndarray, min_area: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes (``mode="holes"``) or drop islands (``"islands"``) under ``min_area`` pixels.

    Regions are 8-connected. Where every island is small the largest is kept, so a
    mask never empties here.

    Args:
        mask: ``HxW`` bool.

    Returns:
        ``(HxW bool, changed)``; ``mask`` itself when nothing changed.
    """
    if mode not in ("holes", "islands"):
        raise ValueError(f"mode must be 'holes' or 'islands', got {mode!r}")
    holes = mode == "holes"
    # Holes are the islands of the complement.
    work = (mask != holes).astype(np.uint8)
    n_labels, labels, stats, _ = cv2.connectedComponentsWithStats(work, connectivity=8)
    sizes = stats[1:, cv2.CC_STAT_AREA]  # label 0 is work's background
    small = np.flatnonzero(sizes < min_area) + 1
    if small.size == 0:
        return mask, False
    if holes:
        # Keep the mask (work's background) and the small holes, now filled.
        keep = np.zeros(n_labels, dtype=bool)
        keep[0] = True
        keep[small] = True
    else:
        keep = np.ones(n_labels, dtype=bool)
        keep[0] = False
        keep[small] = False
        if not keep.any():
            keep[int(np.argmax(sizes)) + 1] = True
    return keep[labels], True


def _mask_boxes(masks: torch.Tensor) -> torch.Tensor:
    """``Nx4`` int64 ``XYXY`` of ``NxHxW`` bool masks, far edges inclusive; ``[0, 0, 0, 0]`` when empty."""
    n, h, w = masks.shape
    if n == 0:
        return torch.zeros((0, 4), dtype=torch.int64, device=masks.device)

    def span(occupied: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(size, device=occupied.device)
        last = torch.where(occupied, idx, -1).amax(-1)
        first = torch.where(occupied, idx, size).amin(-1)
        return first, last

    x0, x1 = span(masks.any(dim=-2), w)
    y0, y1 = span(masks.any(dim=-1), h)
    boxes = torch.stack([x0, y0, x1, y1], dim=-1)
    return torch.where((x1 < 0)[:, None], torch.zeros_like(boxes), boxes)


def _near_crop_edge(boxes: np.ndarray, crop: list[int], image_size: tuple[int, int]) -> np.ndarray:
    """``N`` bool: boxes (image frame) within the tolerance of an edge of ``crop`` that is not near an image edge."""
    h, w = image_size
    b = boxes.astype(np.float64)
    near_crop = np.abs(b - np.asarray(crop, dtype=np.float64)) <= _CROP_EDGE_TOL
    near_image = np.abs(b - np.array([0, 0, w, h], dtype=np.float64)) <= _CROP_EDGE_TOL
    return (near_crop & ~near_image).any(axis=1)


@dataclass
class _Masks:
    """Candidate masks as a struct of arrays (one row per mask), in the full image's frame.

    Attributes:
        counts: uncompressed COCO run lengths of each ``HxW`` mask.
        boxes: ``Nx4`` int64 ``XYXY``, far edges inclusive.
        iou_preds: ``N`` float32, the decoder's predicted IoU.
        points: ``Nx2`` float64 ``XY``, the point prompt.
        stability: ``N`` float32 stability scores.
        crops: ``Nx4`` int64 ``XYXY`` crop the mask came from.
    """

    counts: list[np.ndarray] = field(default_factory=list)
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))
    iou_preds: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float64))
    stability: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    crops: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.int64))

    def __len__(self) -> int:
        return len(self.counts)

    def take(self, idx: np.ndarray) -> _Masks:
        """The rows ``idx`` (int indices, in that order)."""
        return _Masks(
            [self.counts[i] for i in idx],
            self.boxes[idx],
            self.iou_preds[idx],
            self.points[idx],
            self.stability[idx],
            self.crops[idx],
        )

    @staticmethod
    def concat(parts: list[_Masks]) -> _Masks:
        if not parts:
            return _Masks()
        return _Masks(
            [c for p in parts for c in p.counts],
            np.concatenate([p.boxes for p in parts]),
            np.concatenate([p.iou_preds for p in parts]),
            np.concatenate([p.points for p in parts]),
            np.concatenate([p.stability for p in parts]),
            np.concatenate([p.crops for p in parts]),
        )


class SamAutomaticMaskGenerator:
    """Prompts SAM with a point grid over the image (and its crops) and keeps the good, distinct masks.

    Same parameters, defaults and output as ``segment_anything``'s generator; the
    defaults suit trained SAM / MobileSAM weights.

    Args:
        model: the SAM model (``sam_model_registry[...]``).
        points_per_side: the grid has ``points_per_side**2`` points on the image;
            ``None`` when ``point_grids`` gives them.
        points_per_batch: point prompts per decoder call (more: faster, more memory;
            each holds three full-size float masks of the crop).
        pred_iou_thresh: keep masks whose predicted IoU is above this (0 keeps all).
        stability_score_thresh: keep masks whose stability score (the IoU of the mask
            binarised at ``mask_threshold +- stability_score_offset``) is at least this.
        stability_score_offset: that logit shift.
        box_nms_thresh: box IoU above which, within a crop, the mask with the lower
            predicted IoU is dropped.
        crop_n_layers: layers of crops below the whole image (layer ``i`` has
            ``2**i x 2**i`` crops); 0 prompts the whole image only.
        crop_nms_thresh: box IoU above which, between crops, the mask from the larger
            crop is dropped.
        crop_overlap_ratio: overlap of neighbouring layer-1 crops as a fraction of the
            image's short side (deeper layers overlap proportionally less).
        crop_n_points_downscale_factor: layer ``i`` gets
            ``points_per_side / factor**i`` points per side.
        point_grids: instead of ``points_per_side``, one ``Nx2`` grid per layer of
            ``(x, y)`` in ``[0, 1]``.
        min_mask_region_area: above 0, fill holes and drop islands smaller than this
            many pixels, then drop the duplicates this makes.
        output_mode: ``"binary_mask"`` (``HxW`` bool), ``"uncompressed_rle"``
            (``{"size": [h, w], "counts": [int, ...]}``) or ``"coco_rle"`` (``counts``
            a string, as ``pycocotools.mask.encode`` writes it; pycocotools is not needed).

    Attributes:
        predictor: the :class:`SamPredictor` that embeds each crop and decodes prompts.
        point_grids: the ``Nx2`` grid used in each crop layer.

    Bad arguments raise :class:`~realtime_sam.errors.SamInputError`, which is a
    ``ValueError`` and, where the reference asserts, still an ``AssertionError``.
    """

    def __init__(
        self,
        model: Sam,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: list[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise SamInputError("give exactly one of points_per_side and point_grids")
        if output_mode not in _OUTPUT_MODES:
            raise SamInputError(f"output_mode must be one of {', '.join(_OUTPUT_MODES)}; got {output_mode!r}")
        if not isinstance(crop_n_layers, int) or crop_n_layers < 0:
            raise SamInputError(f"crop_n_layers must be an int >= 0, got {crop_n_layers!r}")
        if not isinstance(points_per_batch, int) or points_per_batch < 1:
            raise SamInputError(f"points_per_batch must be an int >= 1, got {points_per_batch!r}")
        if points_per_side is not None:
            if crop_n_points_downscale_factor < 1:
                raise SamInputError(f"crop_n_points_downscale_factor must be >= 1, got {crop_n_points_downscale_factor}")
            sides = [int(points_per_side / crop_n_points_downscale_factor**i) for i in range(crop_n_layers + 1)]
            if min(sides) < 1:
                raise SamInputError(
                    f"points_per_side={points_per_side} with crop_n_points_downscale_factor="
                    f"{crop_n_points_downscale_factor} leaves no points in crop layer {sides.index(min(sides))}; "
                    "give more points or fewer crop layers"
                )
            self.point_grids = [build_point_grid(n) for n in sides]
        else:
            assert point_grids is not None
            grids = [np.asarray(g, dtype=np.float64) for g in point_grids]
            if len(grids) < crop_n_layers + 1 or any(g.ndim != 2 or g.shape[1] != 2 for g in grids):
                raise SamInputError(
                    f"point_grids must hold one Nx2 grid of (x, y) in [0, 1] per crop layer "
                    f"({crop_n_layers + 1}), got {len(grids)} with shapes {[g.shape for g in grids]}"
                )
            self.point_grids = grids

        self.predictor = SamPredictor(model)
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = box_nms_thresh
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = crop_nms_thresh
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = crop_n_points_downscale_factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode

    @torch.no_grad()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for everything in ``image``.

        Args:
            image: ``HxWx3 uint8``, RGB.

        Returns:
            One dict per mask:

            * ``segmentation``: ``HxW`` bool, or an RLE dict (see ``output_mode``);
            * ``area``: int pixels;
            * ``bbox``: ``[x, y, w, h]`` ints (far edges inclusive, see the module doc);
            * ``predicted_iou``, ``stability_score``: floats;
            * ``point_coords``: ``[[x, y]]``, the point prompt in image pixels;
            * ``crop_box``: ``[x, y, w, h]`` ints, the crop the mask came from.
        """
        check_image(image, "RGB", "generate")
        size = (int(image.shape[0]), int(image.shape[1]))
        masks = self._generate_masks(image, size)
        if self.min_mask_region_area > 0:
            masks = self._postprocess_small_regions(
                masks, size, self.min_mask_region_area, max(self.box_nms_thresh, self.crop_nms_thresh)
            )
        h, w = size
        records = []
        for i, counts in enumerate(masks.counts):
            if self.output_mode == "binary_mask":
                segmentation: Any = counts_to_mask(counts, size)
            elif self.output_mode == "coco_rle":
                segmentation = {"size": [h, w], "counts": compress_counts(counts)}
            else:
                segmentation = {"size": [h, w], "counts": counts.tolist()}
            records.append(
                {
                    "segmentation": segmentation,
                    "area": int(counts[1::2].sum()),
                    "bbox": _xyxy_to_xywh(masks.boxes[i]),
                    "predicted_iou": float(masks.iou_preds[i]),
                    "point_coords": [masks.points[i].tolist()],
                    "stability_score": float(masks.stability[i]),
                    "crop_box": _xyxy_to_xywh(masks.crops[i]),
                }
            )
        return records

    def _generate_masks(self, image: np.ndarray, size: tuple[int, int]) -> _Masks:
        crops, layers = crop_boxes(size, self.crop_n_layers, self.crop_overlap_ratio)
        masks = _Masks.concat([self._process_crop(image, crop, layer, size) for crop, layer in zip(crops, layers)])
        if len(crops) > 1 and len(masks):
            # A smaller crop sees an object at a higher resolution: prefer its mask.
            area = (masks.crops[:, 2] - masks.crops[:, 0]) * (masks.crops[:, 3] - masks.crops[:, 1])
            masks = masks.take(nms(masks.boxes, 1.0 / area, self.crop_nms_thresh))
        return masks

    def _process_crop(self, image: np.ndarray, crop: list[int], layer: int, size: tuple[int, int]) -> _Masks:
        x0, y0, x1, y1 = crop
        crop_size = (y1 - y0, x1 - x0)
        self.predictor.set_image(image[y0:y1, x0:x1])
        points = self.point_grids[layer] * np.array(crop_size)[None, ::-1]  # (x, y) in crop pixels
        parts = [
            self._process_batch(points[i : i + self.points_per_batch], crop, crop_size, size)
            for i in range(0, len(points), self.points_per_batch)
        ]
        self.predictor.reset_image()
        masks = _Masks.concat(parts)
        if len(masks):
            masks = masks.take(nms(masks.boxes, masks.iou_preds, self.box_nms_thresh))
        return masks

    def _process_batch(
        self, points: np.ndarray, crop: list[int], crop_size: tuple[int, int], size: tuple[int, int]
    ) -> _Masks:
        """Decode ``Bx2`` crop-pixel points (three masks each) and keep the good masks, in the image frame."""
        device = self.predictor.device
        coords = self.predictor.transform.apply_coords(points, crop_size)
        # float64 as the reference passes them (the prompt encoder rounds to float32 only after
        # normalising), so that its masks come out bit for bit; MPS has no float64.
        dtype = torch.float32 if device.type == "mps" else torch.float64
        in_points = torch.as_tensor(coords, dtype=dtype, device=device)[:, None, :]
        in_labels = torch.ones((len(points), 1), dtype=torch.int, device=device)
        logits, iou, _ = self.predictor.predict_torch(in_points, in_labels, multimask_output=True, return_logits=True)
        n_out = logits.shape[1]
        logits = logits.flatten(0, 1)  # (B*3)xhxw, each point's masks together
        iou = iou.flatten(0, 1)
        pts = np.repeat(points, n_out, axis=0)

        keep = torch.ones_like(iou, dtype=torch.bool)
        if self.pred_iou_thresh > 0.0:
            keep = iou > self.pred_iou_thresh
        logits, iou, pts = logits[keep], iou[keep], pts[keep.cpu().numpy()]
        threshold = self.predictor.model.mask_threshold
        stability = stability_score(logits, threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0.0:
            keep = stability >= self.stability_score_thresh
            logits, iou, stability, pts = logits[keep], iou[keep], stability[keep], pts[keep.cpu().numpy()]
        masks = logits > threshold
        del logits

        x0, y0 = crop[0], crop[1]
        boxes = _mask_boxes(masks).cpu().numpy() + np.array([x0, y0, x0, y0], dtype=np.int64)
        inside = ~_near_crop_edge(boxes, crop, size)
        masks_np = masks.cpu().numpy()[inside]
        h, w = size
        full = np.zeros((h, w), dtype=bool)
        counts = []
        for m in masks_np:
            # Run lengths of the mask pasted into the whole image.
            full[y0 : y0 + m.shape[0], x0 : x0 + m.shape[1]] = m
            counts.append(mask_to_counts(full))
        return _Masks(
            counts,
            boxes[inside],
            iou.cpu().numpy()[inside].astype(np.float32),
            pts[inside] + np.array([x0, y0], dtype=np.float64),
            stability.cpu().numpy()[inside].astype(np.float32),
            np.tile(np.asarray(crop, dtype=np.int64), (len(counts), 1)),
        )

    @staticmethod
    def _postprocess_small_regions(masks: _Masks, size: tuple[int, int], min_area: int, nms_thresh: float) -> _Masks:
        """Fill small holes and drop small islands, then box NMS that prefers the masks left as they were."""
        if not len(masks):
            return masks
        cleaned, unchanged = [], []
        for counts in masks.counts:
            m, filled = remove_small_regions(counts_to_mask(counts, size), min_area, "holes")
            m, dropped = remove_small_regions(m, min_area, "islands")
            cleaned.append(m)
            unchanged.append(not (filled or dropped))
        boxes = _mask_boxes(torch.from_numpy(np.stack(cleaned))).numpy()
        keep = nms(boxes, np.asarray(unchanged, dtype=np.float64), nms_thresh)
        for i in keep:
            if not unchanged[i]:
                masks.counts[i] = mask_to_counts(cleaned[i])
                masks.boxes[i] = boxes[i]
        return masks.take(keep)


def _xyxy_to_xywh(box: np.ndarray) -> list[int]:
    x0, y0, x1, y1 = (int(v) for v in box)
    return [x0, y0, x1 - x0, y1 - y0]
