"""Code written for ``segment_anything`` runs unchanged on ``SamPredictor`` / ``Sam``.

Each test exercises what a user of the reference API touches: attribute names,
``except`` clauses written for the reference's errors, the ``Sam`` module's own
entry points and the builders' call forms. Shapes and dtypes only: the numbers
are pinned by ``test_parity.py``.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import pytest
import torch
from fixtures_remember import remembering

from realtime_sam import SamPredictor


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def model(sam_model) -> Iterator[Any]:
    """``sam_model`` answering an encode or decode it has done before from memory (fixtures_remember.py).

    The tests below embed one image and decode the same prompts again and again (each
    parameter of a test, the embedding set again after a refused call); on a 2-core CPU
    each of those network calls took seconds. What the tests check is the code around
    the networks: any input differing by one bit runs the network.
    """
    with remembering(sam_model) as m:
        yield m


@pytest.fixture(scope="module")
def predictor(model, image) -> SamPredictor:
    p = SamPredictor(model)
    p.set_image(image)
    return p


def test_size_attributes_as_in_segment_anything(model, image):
    p = SamPredictor(model)
    assert (p.orig_h, p.orig_w, p.input_h, p.input_w) == (None, None, None, None)
    p.set_image(image)
    assert (p.orig_h, p.orig_w) == p.original_size == (300, 400)
    assert (p.input_h, p.input_w) == p.input_size == (768, 1024)
    p.reset_image()
    assert (p.orig_h, p.orig_w, p.input_h, p.input_w) == (None, None, None, None)
    assert not p.is_image_set and p.features is None


def test_get_image_embedding_before_set_image(sam_model):
    with pytest.raises(RuntimeError, match=r"to generate an embedding"):
        SamPredictor(sam_model).get_image_embedding()


def test_reference_assertions_are_catchable_as_assertion_error(predictor, image):
    from realtime_sam.errors import PromptError

    # segment_anything asserts on these; `except AssertionError` must still catch ours,
    # and the clearer types stay (ValueError / PromptError).
    with pytest.raises(AssertionError, match="image_format"):
        predictor.set_image(image, image_format="rgb")
    with pytest.raises(ValueError, match="image_format"):
        predictor.set_image(image, image_format="HSV")
    with pytest.raises(AssertionError, match="HxWx3 uint8"):
        predictor.set_image(np.zeros((30, 40, 4), np.uint8))
    with pytest.raises(AssertionError, match="longest side 1024"):
        predictor.set_torch_image(torch.zeros(1, 3, 100, 100), (100, 100))
    with pytest.raises(AssertionError, match="point_labels"):
        predictor.predict(point_coords=np.array([[10, 10]]))
    with pytest.raises(PromptError, match="point_labels"):
        predictor.predict(point_coords=np.array([[10, 10]]))
    # A refused call leaves the embedding in place.
    predictor.set_image(image)
    assert predictor.is_image_set


def test_transform_apply_image_torch(predictor):
    x = torch.rand(2, 3, 300, 400) * 255
    y = predictor.transform.apply_image_torch(x)
    assert y.shape == (2, 3, 768, 1024) and y.dtype == torch.float32
    assert predictor.transform.apply_image_torch(torch.rand(1, 3, 1024, 512)).shape == (1, 3, 1024, 512)


def test_sam_forward_batched_input(model, predictor, image):
    t = predictor.transform
    resized = torch.from_numpy(t.apply_image(image)).permute(2, 0, 1).contiguous()
    boxes = t.apply_boxes_torch(torch.tensor([[10, 20, 200, 250], [50, 50, 300, 280]]), image.shape[:2])
    coords = t.apply_coords_torch(torch.tensor([[[100, 100]]]), image.shape[:2])
    small = np.ascontiguousarray(image[:150, :200])
    batched_input = [
        {"image": resized, "original_size": image.shape[:2], "boxes": boxes},
        {
            "image": torch.from_numpy(t.apply_image(small)).permute(2, 0, 1),
            "original_size": small.shape[:2],
            "point_coords": coords,
            "point_labels": torch.ones(1, 1, dtype=torch.int),
        },
    ]
    out = model(batched_input, multimask_output=False)
    assert len(out) == 2 and set(out[0]) == {"masks", "iou_predictions", "low_res_logits"}
    assert out[0]["masks"].shape == (2, 1, 300, 400) and out[0]["masks"].dtype == torch.bool
    assert out[0]["iou_predictions"].shape == (2, 1)
    assert out[0]["low_res_logits"].shape == (2, 1, 256, 256)
    assert out[1]["masks"].shape == (1, 1, 150, 200)
    # The same image and boxes through the predictor give the same result.
    masks, iou, low = predictor.predict_torch(None, None, boxes=boxes, multimask_output=False)
    torch.testing.assert_close(out[0]["low_res_logits"], low, atol=1e-4, rtol=1e-4)
    assert (out[0]["masks"] != masks).float().mean() < 1e-3
    multi = model(batched_input[:1], True)[0]
    assert multi["masks"].shape == (2, 3, 300, 400)


def test_sam_constructed_positionally(sam_model):
    from realtime_sam.model.modeling import Sam

    sam = Sam(sam_model.image_encoder, sam_model.prompt_encoder, sam_model.mask_decoder)
    assert sam.image_encoder is sam_model.image_encoder
    assert sam.image_format == "RGB" and sam.mask_threshold == 0.0
    assert sam.pixel_mean.shape == (3, 1, 1) and sam.device == torch.device("cpu")


def test_build_sam_call_forms(monkeypatch, checkpoint_path):
    """``build_sam(checkpoint)`` is segment_anything's (ViT-H); ``build_sam("vit_t", ...)`` still names the type."""
    import realtime_sam
    from realtime_sam.model import build
    from realtime_sam.model.modeling import TinyViT

    loaded = []
    monkeypatch.setitem(build._ENCODERS, "vit_h", lambda: TinyViT(img_size=1024))  # a small stand-in for ViT-H
    monkeypatch.setattr(build, "load_checkpoint", lambda path, model_type: loaded.append((str(path), model_type)))
    assert realtime_sam.build_sam is build.build_sam
    assert not build.build_sam().training and loaded == []
    build.build_sam(str(checkpoint_path))
    build.build_sam(checkpoint=checkpoint_path)
    build.build_sam("vit_t", checkpoint_path)
    build.build_sam("default")
    assert loaded == [(str(checkpoint_path), "vit_h"), (str(checkpoint_path), "vit_h"), (str(checkpoint_path), "vit_t")]
    with pytest.raises(KeyError, match="vit_tt"):
        build.build_sam("vit_tt")
    with pytest.raises(KeyError, match="nope"):
        build.build_sam("nope", checkpoint_path)
    assert set(realtime_sam.sam_model_registry) == {"default", "vit_h", "vit_l", "vit_b", "vit_t"}
    assert realtime_sam.sam_model_registry["default"] is build.build_sam_vit_h
    assert not realtime_sam.sam_model_registry["vit_t"](None).training


def test_submodule_attributes(sam_model):
    pe, md = sam_model.prompt_encoder, sam_model.mask_decoder
    assert (pe.embed_dim, pe.num_point_embeddings, len(pe.point_embeddings)) == (256, 4, 4)
    assert pe.image_embedding_size == (64, 64) and pe.input_image_size == (1024, 1024)
    assert pe.mask_input_size == (256, 256) and pe.get_dense_pe().shape == (1, 256, 64, 64)
    assert (md.num_multimask_outputs, md.num_mask_tokens, md.transformer_dim) == (3, 4, 256)
    assert sam_model.image_encoder.img_size == 1024


def test_missing_checkpoint_is_file_not_found(tmp_path):
    """segment_anything's builders open() the file: `except FileNotFoundError` must still work."""
    from realtime_sam import sam_model_registry
    from realtime_sam.errors import CheckpointError, describe_error

    missing = tmp_path / "nowhere" / "sam.pt"
    with pytest.raises(FileNotFoundError, match="checkpoint not found") as info:
        sam_model_registry["vit_t"](checkpoint=str(missing))
    assert isinstance(info.value, CheckpointError)
    assert str(info.value) == f"checkpoint not found: {missing}"
    assert describe_error(info.value) == str(info.value)


def test_several_boxes_in_predict_are_refused_not_cut_to_the_first(predictor):
    """segment_anything's ``predict`` takes one box; several silently gave the first box's masks only."""
    boxes = np.array([[10, 20, 200, 250], [50, 50, 300, 280]])
    with pytest.raises(ValueError, match=r"one box.*predict_torch") as info:
        predictor.predict(box=boxes)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=r"one box.*predict_torch"):
        predictor.predict(point_coords=[[100, 100]], point_labels=[1], box=boxes)
    for one in (boxes[0], boxes[:1], boxes[0].tolist()):
        masks, iou, low = predictor.predict(box=one, multimask_output=False)
        assert masks.shape == (1, 300, 400) and masks.dtype == bool
    with pytest.raises(ValueError, match=r"box must be 4 numbers \(XYXY\), got shape \(3,\)"):
        predictor.predict(box=np.array([1, 2, 3]))


def test_points_of_the_wrong_shape_are_named_as_such(predictor):
    """A 2x3 array was read as three points and refused as "3 points but 2 labels"."""
    with pytest.raises(ValueError, match=r"point_coords must be Nx2 \(x, y\), got shape \(2, 3\)"):
        predictor.predict(point_coords=np.ones((2, 3)), point_labels=[1, 0])
    masks, _, _ = predictor.predict(point_coords=np.array([[[100, 100], [150, 120]]]), point_labels=[1, 0])
    assert masks.shape == (3, 300, 400)


@pytest.mark.parametrize("shape", [(3, 256, 256), (1, 64, 64), (1, 300, 400), (2, 1, 256, 256)])
def test_mask_input_of_the_wrong_shape_is_a_clear_error(predictor, shape):
    """The reference (and we, before) failed deep in a convolution; passing all three logits is the usual slip."""
    with pytest.raises(ValueError, match=r"mask_input must be 1x256x256.*scores\.argmax\(\)") as info:
        predictor.predict(point_coords=[[100, 100]], point_labels=[1], mask_input=np.zeros(shape, np.float32))
    assert "\n" not in str(info.value) and str(shape) in str(info.value)


def test_mask_input_from_a_previous_call(predictor):
    masks, scores, logits = predictor.predict(point_coords=[[100, 100]], point_labels=[1])
    best = logits[scores.argmax()]
    first = predictor.predict(point_coords=[[100, 100]], point_labels=[1], mask_input=best[None], multimask_output=False)
    for mask_input in (best, best[None, None]):  # 256x256 and 1x1x256x256 are the same mask
        again = predictor.predict(point_coords=[[100, 100]], point_labels=[1], mask_input=mask_input, multimask_output=False)
        np.testing.assert_array_equal(again[2], first[2])


def test_get_preprocess_shape_keywords_as_in_segment_anything(predictor):
    from realtime_sam.model.transforms import ResizeLongestSide

    assert ResizeLongestSide.get_preprocess_shape(oldh=300, oldw=400, long_side_length=1024) == (768, 1024)
    assert predictor.transform.get_preprocess_shape(333, 1000, long_side_length=1024) == (341, 1024)


def test_empty_image_and_numpy_torch_image_are_clear_errors(predictor, image):
    with pytest.raises(ValueError, match=r"set_image got an empty image of shape \(0, 10, 3\)"):
        predictor.set_image(np.zeros((0, 10, 3), np.uint8))
    resized = predictor.transform.apply_image(image).transpose(2, 0, 1)[None]
    with pytest.raises(ValueError, match=r"set_torch_image expects a torch\.Tensor.*torch\.from_numpy"):
        predictor.set_torch_image(resized, image.shape[:2])
    predictor.set_image(image)
    assert predictor.is_image_set


def test_predict_torch_shape_errors_name_the_shapes(predictor):
    """The reference fails in the prompt encoder ("'NoneType' object has no attribute 'new_ones'",
    "Sizes of tensors must match ..."); these say which argument is wrong."""
    t = predictor.transform
    boxes = t.apply_boxes_torch(torch.tensor([[10.0, 20, 200, 250], [50, 50, 300, 280]]), predictor.original_size)
    coords = t.apply_coords_torch(torch.tensor([[[100.0, 100]], [[200, 150]]]), predictor.original_size)
    labels = torch.ones(2, 1, dtype=torch.int)
    with pytest.raises(AssertionError, match="point_labels must be given with point_coords"):
        predictor.predict_torch(coords, None)
    with pytest.raises(ValueError, match=r"point_coords must be BxNx2.*\(2, 2\).*\[None\]"):
        predictor.predict_torch(coords[:, 0], labels[:, 0])
    with pytest.raises(ValueError, match=r"point_labels must be BxN = \(2, 1\), got \(2,\)"):
        predictor.predict_torch(coords, labels[:, 0])
    with pytest.raises(ValueError, match=r"batch sizes differ: point_coords 1, boxes 2"):
        predictor.predict_torch(coords[:1], labels[:1], boxes)
    with pytest.raises(ValueError, match=r"batch sizes differ: boxes 2, mask_input 3"):
        predictor.predict_torch(None, None, boxes, torch.zeros(3, 1, 256, 256))
    with pytest.raises(ValueError, match=r"mask_input must be Bx1x256x256, got \(2, 3, 256, 256\)"):
        predictor.predict_torch(None, None, boxes, torch.zeros(2, 3, 256, 256))
    masks, iou, low = predictor.predict_torch(coords, labels, boxes, torch.zeros(2, 1, 256, 256), multimask_output=False)
    assert masks.shape == (2, 1, 300, 400) and iou.shape == (2, 1) and low.shape == (2, 1, 256, 256)


def test_checkpoint_of_another_model_names_the_registry_key(checkpoint_path):
    """The advice was the command line's alone ("use --model-type vit_t"), confusing from Python."""
    from realtime_sam import sam_model_registry
    from realtime_sam.errors import CheckpointError

    with pytest.raises(CheckpointError, match=r"""use --model-type vit_t \(sam_model_registry\["vit_t"\] in Python\)""") as info:
        sam_model_registry["vit_b"](checkpoint_path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [5, 2, -2, 0.5])
def test_predict_refuses_point_labels_other_than_0_1_and_ignored(predictor, bad):
    """segment_anything gives a label it does not know no label embedding (0.5 was even cast to 0,
    background), so class ids passed as labels gave masks without an error. -1 (a point the decoder
    ignores) is taken, as segment_anything's predict takes it: code that pads with it keeps working."""
    with pytest.raises(ValueError, match=rf"point_labels must be 1 \(foreground\), 0 \(background\) or -1 \(padding, ignored\), got {bad}$"):
        predictor.predict(point_coords=[[100, 100], [150, 120]], point_labels=[1, bad])
    masks, _, _ = predictor.predict(point_coords=[[100, 100], [150, 120]], point_labels=np.array([1.0, 0.0]))
    assert masks.shape == (3, 300, 400)
    padded, _, _ = predictor.predict(point_coords=[[100, 100], [0, 0]], point_labels=[1, -1], multimask_output=False)
    assert padded.shape == (1, 300, 400)


@pytest.mark.parametrize("bad", [5, 2, -2, 0.5])
def test_predict_torch_refuses_point_labels_other_than_padding_0_and_1(predictor, bad):
    t = predictor.transform
    coords = t.apply_coords_torch(torch.tensor([[[100.0, 100], [150, 120]], [[200, 150], [0, 0]]]), predictor.original_size)
    with pytest.raises(ValueError, match=rf"point_labels must be 1 \(foreground\), 0 \(background\) or -1 \(padding, ignored\), got {bad}$"):
        predictor.predict_torch(coords, torch.tensor([[1, 0], [1, bad]]))
    masks, _, _ = predictor.predict_torch(coords, torch.tensor([[1, 0], [1, -1]]), multimask_output=False)
    assert masks.shape == (2, 1, 300, 400)


def test_point_labels_and_coords_only_together(predictor):
    """segment_anything ignored point_labels given without point_coords: the labels were lost without a word."""
    with pytest.raises(ValueError, match="point_labels given without point_coords"):
        predictor.predict(point_labels=[1], box=[10, 20, 200, 250])
    with pytest.raises(ValueError, match="point_labels given without point_coords"):
        predictor.predict_torch(None, torch.ones(1, 1, dtype=torch.int))
    with pytest.raises(AssertionError, match="point_labels must be given with point_coords"):
        predictor.predict(point_coords=[[100, 100]], box=[10, 20, 200, 250])
