"""``SamAutomaticMaskGenerator``: the same masks as ``segment_anything``'s, and its call forms.

The parity tests run the reference generator and ours on the same realtime-sam
model and image and require the same records in the same order. Random weights
give logits in a narrow band and masks that barely depend on the point: at the
trained model's settings every mask is filtered out or is a duplicate. So the
tests binarise near the top of this model's logits (``mask_threshold``, which
both generators read from the model) with a stability offset scaled to their
spread (:func:`calibration`): then a dozen or more masks of varied size pass,
and the NMS steps have duplicates to drop, with the golden checkpoint and with
the random one the tests make where ``../shared`` is missing.
"""

from __future__ import annotations

import inspect
import sys
import types
from typing import Any, Iterator

import numpy as np
import pytest
import torch
from fixtures_remember import remembering

from realtime_sam import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from realtime_sam.errors import SamInputError
from realtime_sam.model.automatic_mask_generator import (
    _mask_boxes,
    _Masks,
    build_point_grid,
    crop_boxes,
    remove_small_regions,
)
from realtime_sam.output.rle import decode_rle, mask_to_counts


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    """240x320 RGB: two flat rectangles on a flat background, with a little noise."""
    rng = np.random.default_rng(0)
    img = np.zeros((240, 320, 3), np.uint8)
    img[:] = (40, 90, 140)
    img[30:120, 40:150] = (220, 40, 30)
    img[140:220, 180:300] = (30, 200, 60)
    return (img + rng.integers(0, 20, img.shape)).astype(np.uint8)


@pytest.fixture(scope="module")
def calibration(remembering_model, image) -> dict[str, float]:
    """Settings under which this model's random weights give a dozen or more distinct masks.

    From the decoder's logits for the generator's 6x6 grid on ``image``: the mask
    threshold at their 99.8th percentile, the stability offset at 7% of their spread;
    and the median predicted IoU, for a predicted-IoU filter that drops about half.
    """
    predictor = SamPredictor(remembering_model)
    predictor.set_image(image)
    grid = build_point_grid(6) * np.array([image.shape[1], image.shape[0]])
    coords = torch.as_tensor(predictor.transform.apply_coords(grid, image.shape[:2]))[:, None]
    labels = torch.ones((len(grid), 1), dtype=torch.int)
    logits, iou, _ = predictor.predict_torch(coords, labels, multimask_output=True, return_logits=True)
    sample = logits.flatten()[::7].float()
    return {
        "mask_threshold": float(torch.quantile(sample, 0.998)),
        "stability_score_offset": 0.07 * float(sample.std()),
        "median_iou": float(iou.median()),
    }


@pytest.fixture
def low(calibration) -> dict[str, Any]:
    """Generator settings for the calibrated model (see the module doc)."""
    return dict(
        points_per_side=6,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.5,
        stability_score_offset=calibration["stability_score_offset"],
    )


@pytest.fixture(scope="module")
def remembering_model(sam_model) -> Iterator[Any]:
    """``sam_model`` whose image encoder and mask decoder give a call with the same inputs its first output.

    The parity tests run two generators, the reference and ours, over one image:
    both call the network with the same tensors (they share our predictor), and
    on this 2-core machine those calls were most of the suite's slowest module.
    The network is deterministic on the CPU, so the second call's output is the
    one it would compute; its own parity with the reference is test_parity.py's.
    A call with any input differing by one bit runs the network (fixtures_remember.py).
    """
    with remembering(sam_model) as model:
        yield model


@pytest.fixture
def low_threshold_model(remembering_model, calibration, monkeypatch):
    monkeypatch.setattr(remembering_model, "mask_threshold", calibration["mask_threshold"])
    return remembering_model


# --- the reference -------------------------------------------------------------------------------


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """torchvision's ``batched_nms``: greedy NMS within each category, by descending score.

    Ties keep the earlier box (torchvision sorts stably); a box is dropped when its IoU
    with a kept box of its category is above the threshold; kept indices come back
    by descending score. Written as a plain loop, independent of our NMS.
    """
    b, s, c = boxes.double().tolist(), scores.double().tolist(), idxs.tolist()
    keep: list[int] = []
    for i in sorted(range(len(s)), key=lambda k: -s[k]):
        for j in keep:
            if c[j] != c[i]:
                continue
            iw = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
            ih = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
            inter = iw * ih
            union = (b[i][2] - b[i][0]) * (b[i][3] - b[i][1]) + (b[j][2] - b[j][0]) * (b[j][3] - b[j][1]) - inter
            if union > 0 and inter / union > iou_threshold:
                break
        else:
            keep.append(i)
    return torch.tensor(keep, dtype=torch.int64)


def _box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _not_used(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the parity tests give the reference generator our SamPredictor; its resize is not used")


@pytest.fixture(scope="module")
def sa() -> Iterator[types.ModuleType]:
    """``segment_anything``, imported against a stand-in ``torchvision`` written here.

    The reference imports ``torchvision.ops.boxes.batched_nms, box_area`` (and, for its
    predictor, ``torchvision.transforms.functional``). The torchvision installed beside
    a CPU-only PyTorch cannot load, and realtime-sam does not depend on it; so, for
    this module only, ``sys.modules`` holds a ``torchvision`` whose ``batched_nms`` and
    ``box_area`` have the standard semantics (:func:`_batched_nms`). Everything else
    the reference generator runs is its own code.
    """
    saved = {k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith(("torchvision.", "segment_anything"))}
    with pytest.MonkeyPatch.context() as mp:
        for name in saved:
            mp.delitem(sys.modules, name)
        tv = types.ModuleType("torchvision")
        ops = types.ModuleType("torchvision.ops")
        boxes = types.ModuleType("torchvision.ops.boxes")
        tfs = types.ModuleType("torchvision.transforms")
        functional = types.ModuleType("torchvision.transforms.functional")
        boxes.batched_nms, boxes.box_area = _batched_nms, _box_area  # type: ignore[attr-defined]
        functional.resize = functional.to_pil_image = _not_used  # type: ignore[attr-defined]
        tv.ops, ops.boxes, tv.transforms, tfs.functional = ops, boxes, tfs, functional  # type: ignore[attr-defined]
        for module in (tv, ops, boxes, tfs, functional):
            mp.setitem(sys.modules, module.__name__, module)
        try:
            yield pytest.importorskip("segment_anything")
        finally:
            for name in [k for k in sys.modules if k.startswith("segment_anything")]:
                del sys.modules[name]
    # (the context has put back what it took out of sys.modules)


def _reference(sa: types.ModuleType, model, **kwargs: Any):
    gen = sa.SamAutomaticMaskGenerator(model, **kwargs)
    # The embedding's parity is test_parity.py's; here the generator's: both get the same predictor.
    gen.predictor = SamPredictor(model)
    return gen


def _assert_same_records(ours: list[dict], ref: list[dict]) -> None:
    assert len(ours) == len(ref)
    for i, (a, b) in enumerate(zip(ours, ref)):
        assert a.keys() == b.keys(), i
        assert np.array_equal(a["segmentation"], b["segmentation"]), f"mask {i} differs"
        assert a["area"] == b["area"] and a["bbox"] == b["bbox"] and a["crop_box"] == b["crop_box"], i
        assert np.array_equal(a["point_coords"], b["point_coords"]), i
        assert a["predicted_iou"] == pytest.approx(b["predicted_iou"], abs=1e-6), i
        assert a["stability_score"] == pytest.approx(b["stability_score"], abs=1e-6), i


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param({}, id="whole-image"),
        # 5 crops: 5 encodes, each shared by both generators; 4x4 points in each (with 3x3 points in
        # the 4 small crops no mask of theirs survives the filters on random weights; 4x4 keeps some,
        # with the golden checkpoint and a random one, and decodes less than half of 6x6's prompts).
        pytest.param(dict(crop_n_layers=1, points_per_side=4), id="crop-layer", marks=pytest.mark.slow),
        pytest.param(dict(min_mask_region_area=300), id="small-regions"),
        # 36 points in batches of 10 (the last one short); a predicted-IoU filter.
        pytest.param(dict(pred_iou_thresh="median", points_per_batch=10, box_nms_thresh=0.9), id="iou-filter-batches"),
    ],
)
def test_same_masks_as_segment_anything(sa, low_threshold_model, low, calibration, image, settings):
    kwargs = {**low, **settings}
    if kwargs["pred_iou_thresh"] == "median":
        kwargs["pred_iou_thresh"] = calibration["median_iou"]
    ref = _reference(sa, low_threshold_model, **kwargs).generate(image)
    ours = SamAutomaticMaskGenerator(low_threshold_model, **kwargs).generate(image)
    assert len(ref) >= 5, f"the settings should give enough masks to compare, got {len(ref)}"
    _assert_same_records(ours, ref)
    if "crop_n_layers" in settings:
        assert len({tuple(r["crop_box"]) for r in ours}) > 1, "masks from the crops should survive"


def test_same_parameters_and_defaults_as_segment_anything(sa):
    ours = inspect.signature(SamAutomaticMaskGenerator).parameters
    ref = inspect.signature(sa.SamAutomaticMaskGenerator).parameters
    assert list(ours) == list(ref)
    assert {k: p.default for k, p in ours.items()} == {k: p.default for k, p in ref.items()}


@pytest.mark.parametrize("size", [(240, 320), (1080, 1920), (1500, 1000), (7, 5)])
@pytest.mark.parametrize("layers", [0, 1, 2, 3])
def test_crop_boxes_as_segment_anything(sa, size, layers):
    from segment_anything.utils.amg import generate_crop_boxes

    assert crop_boxes(size, layers, 512 / 1500) == generate_crop_boxes(size, layers, 512 / 1500)


def test_small_regions_and_boxes_as_segment_anything(sa):
    from segment_anything.utils.amg import batched_mask_to_box
    from segment_anything.utils.amg import remove_small_regions as ref_remove

    rng = np.random.default_rng(1)
    masks = rng.random((12, 40, 50)) > np.linspace(0.3, 0.9, 12)[:, None, None]
    masks[0] = False  # empty: the box is [0, 0, 0, 0]
    masks[1] = True
    masks[2] = False
    masks[2, 5:9, 7:20] = True
    assert torch.equal(_mask_boxes(torch.from_numpy(masks)), batched_mask_to_box(torch.from_numpy(masks)))
    for m in masks:
        for mode in ("holes", "islands"):
            for area in (3, 30, 3000):
                got, changed = remove_small_regions(m, area, mode)
                want, want_changed = ref_remove(m, area, mode)
                assert changed == want_changed and np.array_equal(got, want), (mode, area)


def test_small_region_cleanup_as_segment_anything(sa):
    """Hand-made masks, as random weights' fragments all change: the cleaned-up duplicate of an
    untouched mask must lose to it, whichever comes first."""
    from segment_anything.utils.amg import MaskData, batched_mask_to_box, mask_to_rle_pytorch

    h, w = 60, 80
    masks = np.zeros((6, h, w), dtype=bool)
    masks[1, 10:40, 10:50] = True  # a clean rectangle
    masks[0] = masks[1]
    masks[0, 20:22, 20:22] = False  # ... with a small hole
    masks[0, 55:57, 70:72] = True  # ... and a small island: once cleaned, a duplicate of mask 1
    masks[2, 30:58, 40:78] = True
    masks[2, 45, 60] = False  # overlaps mask 1 a little; cleaned, it stays
    masks[3, 2:4, 2:4] = masks[3, 50:53, 5:8] = True  # only small islands: the largest is kept
    masks[4, 5:9, 60:75] = True  # clean, alone
    masks[5, 15:35, 15:45] = True  # clean, inside mask 1: its box IoU (0.49) is under the threshold
    order = np.array([0, 2, 3, 1, 4, 5])
    masks = masks[order]
    boxes = _mask_boxes(torch.from_numpy(masks)).numpy()
    iou_preds = np.linspace(0.9, 0.4, len(masks), dtype=np.float32)
    points = np.arange(2 * len(masks), dtype=np.float64).reshape(-1, 2)
    crops = np.tile(np.array([0, 0, w, h]), (len(masks), 1))

    ours = _Masks([mask_to_counts(m) for m in masks], boxes.copy(), iou_preds, points, iou_preds.copy(), crops)
    ours = SamAutomaticMaskGenerator._postprocess_small_regions(ours, (h, w), 10, 0.7)
    rles = mask_to_rle_pytorch(torch.from_numpy(masks))
    assert [r["counts"] for r in rles] == [c.tolist() for c in _Masks([mask_to_counts(m) for m in masks]).counts]
    ref = MaskData(
        rles=rles,
        boxes=batched_mask_to_box(torch.from_numpy(masks)).numpy(),
        iou_preds=iou_preds,
        points=points,
        stability_score=iou_preds.copy(),
        crop_boxes=crops,
    )
    ref = sa.SamAutomaticMaskGenerator.postprocess_small_regions(ref, 10, 0.7)
    assert [c.tolist() for c in ours.counts] == [r["counts"] for r in ref["rles"]]
    assert np.array_equal(ours.boxes, ref["boxes"]) and np.array_equal(ours.points, ref["points"])
    assert np.array_equal(ours.iou_preds, ref["iou_preds"])
    # Untouched masks first; the untouched rectangle (mask 1, now at 3) is kept over its
    # cleaned-up duplicate (at 0).
    kept = [int(np.flatnonzero((points == p).all(axis=1))[0]) for p in ours.points]
    assert kept == [3, 4, 5, 1, 2]


# --- output ---------------------------------------------------------------------------------------


def test_rle_output_modes_decode_to_the_binary_masks(low_threshold_model, low, image, monkeypatch):
    gen = SamAutomaticMaskGenerator(low_threshold_model, **low)
    binary = gen.generate(image)
    assert len(binary) >= 5
    gen.output_mode = "uncompressed_rle"
    plain = gen.generate(image)
    gen.output_mode = "coco_rle"
    # COCO's string encoding is ours: pycocotools need not be installed.
    with monkeypatch.context() as mp:
        mp.setitem(sys.modules, "pycocotools", None)
        mp.setitem(sys.modules, "pycocotools.mask", None)
        coco = gen.generate(image)
    for b, p, c in zip(binary, plain, coco, strict=True):
        mask = b["segmentation"]
        assert mask.dtype == bool and mask.shape == image.shape[:2]
        assert p["segmentation"]["size"] == c["segmentation"]["size"] == [240, 320]
        assert all(isinstance(n, int) for n in p["segmentation"]["counts"])
        assert isinstance(c["segmentation"]["counts"], str)
        assert np.array_equal(decode_rle(p["segmentation"]), mask)
        assert np.array_equal(decode_rle(c["segmentation"]), mask)
        assert b["area"] == p["area"] == c["area"] == int(mask.sum())
        # bbox: XYWH, far edges inclusive (as segment_anything's).
        ys, xs = np.nonzero(mask)
        assert b["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min(), ys.max() - ys.min()]
    mask_utils = pytest.importorskip("pycocotools.mask")
    for b, p, c in zip(binary, plain, coco):
        assert np.array_equal(mask_utils.decode({**c["segmentation"], "counts": c["segmentation"]["counts"].encode()}), b["segmentation"])
        assert mask_utils.frPyObjects(p["segmentation"], 240, 320)["counts"].decode() == c["segmentation"]["counts"]


def test_readme_example_through_sam_model_registry(checkpoint_path, image):
    sam = sam_model_registry["vit_t"](checkpoint=str(checkpoint_path))
    mask_generator = SamAutomaticMaskGenerator(sam, points_per_side=4, pred_iou_thresh=0, stability_score_thresh=0)
    assert isinstance(mask_generator.predictor, SamPredictor) and mask_generator.predictor.model is sam
    masks = mask_generator.generate(image)
    assert masks, "with no thresholds, the grid's masks are not all filtered out"
    for m in masks:
        assert set(m) == {"segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"}
        assert m["segmentation"].shape == (240, 320) and m["segmentation"].dtype == bool
        assert isinstance(m["area"], int) and m["area"] == int(m["segmentation"].sum())
        assert all(isinstance(v, int) for v in m["bbox"]) and m["crop_box"] == [0, 0, 320, 240]
        assert isinstance(m["predicted_iou"], float) and isinstance(m["stability_score"], float)
        (x, y), = m["point_coords"]
        assert 0 <= x < 320 and 0 <= y < 240
    # The predictor is left without an image, as the reference leaves it.
    assert not mask_generator.predictor.is_image_set


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(points_per_side=None), "exactly one of points_per_side and point_grids"),
        (dict(point_grids=[np.zeros((4, 2))]), "exactly one of points_per_side and point_grids"),
        (dict(output_mode="png"), "output_mode must be one of binary_mask, uncompressed_rle, coco_rle"),
        (dict(points_per_side=4, crop_n_layers=2, crop_n_points_downscale_factor=4), "leaves no points in crop layer 2"),
        (dict(points_per_side=None, point_grids=[np.zeros((4, 2))], crop_n_layers=1), "one Nx2 grid"),
        (dict(points_per_batch=0), "points_per_batch must be an int >= 1"),
        (dict(crop_n_layers=-1), "crop_n_layers must be an int >= 0"),
    ],
)
def test_bad_arguments_are_one_line_errors(sam_model, kwargs, message):
    # ValueError, and AssertionError where segment_anything asserts.
    with pytest.raises(SamInputError, match=message) as err:
        SamAutomaticMaskGenerator(sam_model, **kwargs)
    assert isinstance(err.value, ValueError) and isinstance(err.value, AssertionError)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "bad", [np.zeros((30, 40), np.uint8), np.zeros((30, 40, 4), np.uint8), np.zeros((30, 40, 3), np.float32), [[0, 0, 0]]]
)
def test_bad_images_are_one_line_errors(sam_model, bad):
    with pytest.raises(SamInputError, match=r"^generate expects an HxWx3 uint8 array, got shape") as err:
        SamAutomaticMaskGenerator(sam_model).generate(bad)
    assert "\n" not in str(err.value)
