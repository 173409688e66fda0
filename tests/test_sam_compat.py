"""Code written for ``segment_anything`` runs unchanged on ``SamPredictor`` / ``Sam``.

Each test exercises what a user of the reference API touches: attribute names,
``except`` clauses written for the reference's errors, the ``Sam`` module's own
entry points and the builders' call forms. Shapes and dtypes only: the numbers
are pinned by ``test_parity.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from realtime_sam import SamPredictor


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((300, 400, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def predictor(sam_model, image) -> SamPredictor:
    p = SamPredictor(sam_model)
    p.set_image(image)
    return p


def test_size_attributes_as_in_segment_anything(sam_model, image):
    p = SamPredictor(sam_model)
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
