"""COCO labels of masks with holes, read back by pycocotools' own COCO API.

A mask with a hole (a ring, a person's arm on the hip, a cup's handle) was
written with its outer outline only: ``annToMask`` of the ``segmentation``
filled the hole, so it disagreed with the annotation's own ``area`` and
``rle`` (measured: 2000 pixels read back for a 1400-pixel ring). The holes
are now cut out of the polygon, and the segmentation reads back as the mask.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from realtime_sam.app.annotate import annotate
from realtime_sam.output.polygons import kept_parts
from realtime_sam.testing.fakes import FixedBoxDetector

H, W = 67, 91  # odd and not square


class _OneMaskModel:
    """``InferenceModel``'s encode/decode/upscale where box ``k`` of an image gets ``masks[k]``."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = masks

    def encode(self, image, image_format="RGB"):
        return image.shape[:2]

    def decode(self, embedding, boxes=None, multimask_output=False, **_):
        # The "logits" carry each box's index; upscale turns it into that box's mask.
        return torch.arange(len(boxes), dtype=torch.float32)[:, None, None], torch.ones(len(boxes), 1)

    def upscale(self, low, embedding):
        picked = [self.masks[int(k)] for k in low[:, 0, 0].tolist()]
        return torch.stack([torch.as_tensor(np.where(m, 1.0, -1.0), dtype=torch.float32)[None] for m in picked])


def _coco():
    try:
        from pycocotools.coco import COCO
    except ImportError:
        pytest.skip("pycocotools is not installed (it is in the test extra: pip install -e '.[test]')")
    return COCO


def _frame_with_holes() -> np.ndarray:
    """A frame with two holes, an island inside one of them, and a ring touching the right border."""
    mask = np.zeros((H, W), bool)
    mask[5:45, 4:60] = True
    mask[12:38, 10:30] = False  # a hole ...
    mask[20:28, 16:22] = True  # ... with an island in it
    mask[14:20, 40:52] = False  # a second hole
    mask[50:66, 70:] = True
    mask[55:60, 78:84] = False  # a hole in a part cut by the border
    return mask


def _random_mask_with_holes(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((H, W), np.uint8)
    cv2.ellipse(mask, (45, 33), (38, 26), 15, 0, 360, 1, -1)
    holes = rng.random((H, W)) < 0.15
    return mask.astype(bool) & ~holes  # many holes, some diagonal to each other, pinches


@pytest.mark.parametrize("simplify", [1.0, 0.5])
def test_coco_segmentation_of_a_mask_with_holes_reads_back_as_the_mask(tmp_path: Path, simplify: float):
    COCO = _coco()
    data = tmp_path / "images"
    data.mkdir()
    cv2.imwrite(str(data / "a.png"), np.full((H, W, 3), 80, np.uint8))
    masks = [_frame_with_holes(), _random_mask_with_holes(3)]
    out = tmp_path / "coco"
    annotate(
        data, detector=FixedBoxDetector([[0, 0, W, H], [0, 0, W, H]], [0, 1], {0: "frame", 1: "sieve"}),
        model=_OneMaskModel(masks), output_dir=out, format="coco", segments="all", simplify=simplify,
        min_area=0, progress=False,
    )
    coco = COCO(str(out / "annotations.json"))
    (image,) = coco.dataset["images"]
    assert (image["height"], image["width"]) == (H, W)
    anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
    assert [a["category_id"] for a in anns] == [1, 2]
    for ann, mask in zip(anns, masks):
        filled = coco.annToMask(ann).astype(bool)
        if ann["category_id"] == 1 or simplify <= 0.5:
            # Straight edges read back exactly at the default tolerance; any mask at 0.5.
            assert np.array_equal(filled, mask), f"{int((filled != mask).sum())} pixels differ"
        else:
            # Within 1 px of the outline, a speckled ellipse is close, and its holes are empty.
            assert (filled & mask).sum() / (filled | mask).sum() > 0.9
        assert ann["area"] == int(mask.sum())
        x, y, w, h = ann["bbox"]
        ys, xs = np.nonzero(mask)
        assert (x, y, w, h) == (xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
    # The ring of the first mask: the hole's pixels are not in the object, the island's are.
    frame = coco.annToMask(anns[0]).astype(bool)
    assert not frame[12:20, 10:16].any() and frame[20:28, 16:22].all() and not frame[14:20, 40:52].any()
    # Plain polygon lists, as detectron2 and mmdetection take them (no RLE in segmentation).
    raw = json.loads((out / "annotations.json").read_text())
    for ann in raw["annotations"]:
        assert isinstance(ann["segmentation"], list)
        assert all(len(p) >= 6 and len(p) % 2 == 0 for p in ann["segmentation"])


def test_rings_with_holes_fill_back_exactly_under_pycocotools_on_random_masks():
    mask_api = pytest.importorskip("pycocotools.mask")
    from realtime_sam.output.polygons import outline_parts_with_holes

    rng = np.random.default_rng(0)
    for trial in range(150):
        h, w = (int(v) for v in rng.integers(4, 48, 2))
        mask = rng.random((h, w)) < rng.uniform(0.3, 0.85)
        if trial % 2:
            mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((2, 2), np.uint8)).astype(bool)
        contours = kept_parts(mask, segments="all")
        for epsilon in (0.0, 0.5):
            rings = outline_parts_with_holes(mask, contours, epsilon)
            rles = mask_api.frPyObjects([r.reshape(-1).tolist() for r in rings], h, w)
            filled = mask_api.decode(mask_api.merge(rles)).astype(bool)
            assert np.array_equal(filled, mask), (trial, epsilon, int((filled != mask).sum()))
