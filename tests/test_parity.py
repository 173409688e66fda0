"""Number-for-number parity with the reference MobileSAM (``../shared/golden``)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from realtime_sam.model.predictor import SamPredictor
from realtime_sam.model.transforms import ResizeLongestSide

pytestmark = pytest.mark.slow


def _cases(golden_cases, image_index):
    return [c for c in golden_cases["cases"] if c["image"] == image_index]


def _golden_masks(golden_arrays, key, width):
    return np.unpackbits(golden_arrays[f"{key}_masks_packed"], axis=-1)[..., :width].astype(bool)


def _run_cases(predictor, golden_cases, image_index):
    """Run every case of one image through ``predictor``; returns ``{key: (masks, iou, low)}``."""
    out, low_by_name = {}, {}
    for c in _cases(golden_cases, image_index):
        if c["name"] == "batched_boxes":
            boxes = predictor.transform.apply_boxes(np.array(c["boxes"]), predictor.original_size)
            m, iou, low = predictor.predict_torch(
                None, None, torch.as_tensor(boxes, dtype=torch.float32), multimask_output=False
            )
            res = (m.numpy(), iou.numpy(), low.numpy())
        else:
            res = predictor.predict(
                point_coords=np.array(c["point_coords"]) if "point_coords" in c else None,
                point_labels=np.array(c["point_labels"]) if "point_labels" in c else None,
                box=np.array(c["box"]) if "box" in c else None,
                mask_input=low_by_name[c["mask_input_from"]] if c.get("mask_input_from") else None,
                multimask_output=c["multimask"],
            )
        low_by_name[c["name"]] = res[2]
        out[c["key"]] = res
    return out


@pytest.fixture(scope="module")
def golden_predictor(golden_dir):
    from realtime_sam.model.build import build_sam

    return SamPredictor(build_sam("vit_t", golden_dir / "mobile_sam_random_seed0.pt"))


@pytest.mark.parametrize("image_index", [0, 1])
def test_encoder_matches_reference(golden_predictor, golden_arrays, golden_cases, image_index):
    resized = golden_arrays[f"img{image_index}_resized"]
    t = torch.from_numpy(resized).permute(2, 0, 1)[None]
    golden_predictor.set_torch_image(t, tuple(golden_cases["images"][image_index]["original_hw"]))
    emb = golden_predictor.get_image_embedding()
    ref = torch.from_numpy(golden_arrays[f"img{image_index}_embedding"])
    assert emb.shape == (1, 256, 64, 64)
    assert (emb - ref).abs().max().item() <= 1e-3

    # Final masks from the reference's own resized image: >= 99.9 % of pixels equal.
    width = golden_cases["images"][image_index]["original_hw"][1]
    for key, (masks, _, _) in _run_cases(golden_predictor, golden_cases, image_index).items():
        ref_masks = _golden_masks(golden_arrays, key, width)
        assert (masks.reshape(ref_masks.shape) == ref_masks).mean() >= 0.999, key


@pytest.mark.parametrize("image_index", [0, 1])
def test_decoder_matches_reference_from_golden_embedding(golden_predictor, golden_arrays, golden_cases, image_index):
    info = golden_cases["images"][image_index]
    p = golden_predictor
    p.reset_image()
    p.features = torch.from_numpy(golden_arrays[f"img{image_index}_embedding"])
    p.original_size, p.input_size = tuple(info["original_hw"]), tuple(info["resized_hw"])
    p.is_image_set = True
    results = _run_cases(p, golden_cases, image_index)
    assert len(results) == 6
    for key, (masks, iou, low) in results.items():
        ref_low = golden_arrays[f"{key}_lowres_logits"]
        ref_iou = golden_arrays[f"{key}_iou"]
        assert low.shape == ref_low.shape, key
        assert np.abs(low - ref_low).max() <= 1e-4, key
        assert np.abs(iou.reshape(ref_iou.shape) - ref_iou).max() <= 1e-4, key


@pytest.mark.parametrize("image_index", [0, 1])
def test_masks_from_original_image_through_our_resize(golden_predictor, golden_dir, golden_arrays, golden_cases, image_index):
    info = golden_cases["images"][image_index]
    bgr = cv2.imread(str(golden_dir / info["file"]))
    assert bgr.shape[:2] == tuple(info["original_hw"])
    # Our resize alone is close to the reference's PIL antialiased resize.
    ours = ResizeLongestSide(1024).apply_image(bgr[..., ::-1].copy())
    ref_resized = golden_arrays[f"img{image_index}_resized"]
    assert ours.shape == ref_resized.shape
    assert np.abs(ours.astype(int) - ref_resized.astype(int)).max() <= 1

    golden_predictor.set_image(bgr, image_format="BGR")
    assert golden_predictor.input_size == tuple(info["resized_hw"])
    for key, (masks, _, _) in _run_cases(golden_predictor, golden_cases, image_index).items():
        ref_masks = _golden_masks(golden_arrays, key, info["original_hw"][1])
        assert (masks.reshape(ref_masks.shape) == ref_masks).mean() >= 0.99, key
