"""COCO RLE: round trips, agreement with pycocotools, boxes, malformed input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from realtime_sam.output.rle import (
    compress_counts,
    decode_rle,
    decompress_counts,
    encode_rle,
    mask_to_box,
    mask_to_counts,
    rle_area,
)
from realtime_sam.tracking.association import mask_to_box as association_mask_to_box

try:
    from pycocotools import mask as coco_mask
except ImportError:  # pragma: no cover - depends on the environment
    coco_mask = None

# pycocotools 2.0.x trips a numpy 2 deprecation inside its own decode; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

needs_coco = pytest.mark.skipif(
    coco_mask is None, reason="pycocotools is not installed (pip install pycocotools) - reference comparison skipped"
)


def circle(h: int, w: int, cx: float, cy: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def rect(h: int, w: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def structured_masks() -> dict[str, np.ndarray]:
    h, w = 37, 53  # odd on purpose
    corner = np.zeros((h, w), dtype=bool)
    corner[0, 0] = True
    last = np.zeros((h, w), dtype=bool)
    last[-1, -1] = True
    stripes = np.zeros((h, w), dtype=bool)
    stripes[:, ::2] = True
    checker = (np.add.outer(np.arange(h), np.arange(w)) % 2).astype(bool)
    return {
        "empty": np.zeros((h, w), dtype=bool),
        "full": np.ones((h, w), dtype=bool),
        "circle": circle(h, w, 20.3, 17.8, 11.5),
        "rect": rect(h, w, 5, 7, 40, 30),
        "two_objects": circle(h, w, 8, 8, 5) | rect(h, w, 30, 20, 50, 35),
        "first_pixel": corner,
        "last_pixel": last,
        "stripes": stripes,
        "checker": checker,
        "left_column": rect(h, w, 0, 0, 1, h),
        "right_column": rect(h, w, w - 1, 0, w, h),
        "single_row": np.ones((1, 9), dtype=bool),
        "single_col": circle(13, 1, 0, 6, 3),
        "one_by_one_set": np.ones((1, 1), dtype=bool),
        "one_by_one_clear": np.zeros((1, 1), dtype=bool),
        "hd_circle": circle(720, 1280, 640.5, 300.2, 150),
    }


def random_masks() -> list[np.ndarray]:
    rng = np.random.default_rng(1234)
    out = []
    for shape in [(1, 1), (2, 3), (31, 17), (64, 64), (101, 257), (720, 1280)]:
        for density in (0.001, 0.05, 0.5, 0.95):
            out.append(rng.random(shape) < density)
    # Smooth blobs: long runs, large counts, negative deltas.
    noise = rng.random((90, 160))
    out.append(noise > 0.4)
    return out


STRUCTURED = structured_masks()
RANDOM = random_masks()


def test_encode_gives_coco_shape_and_json_types():
    rle = encode_rle(STRUCTURED["circle"])
    assert set(rle) == {"size", "counts"}
    assert rle["size"] == [37, 53] and all(type(v) is int for v in rle["size"])
    assert isinstance(rle["counts"], str)
    assert all("0" <= ch <= "o" for ch in rle["counts"])


@pytest.mark.parametrize("name", sorted(STRUCTURED))
def test_structured_masks_round_trip(name):
    mask = STRUCTURED[name]
    rle = encode_rle(mask)
    back = decode_rle(rle)
    assert back.dtype == bool and back.shape == mask.shape and back.flags.c_contiguous
    np.testing.assert_array_equal(back, mask)
    assert rle_area(rle) == int(mask.sum())


@pytest.mark.parametrize("index", range(len(RANDOM)))
def test_random_masks_round_trip(index):
    mask = RANDOM[index]
    np.testing.assert_array_equal(decode_rle(encode_rle(mask)), mask)


def test_counts_are_column_major_runs_starting_with_zeros():
    mask = np.array([[0, 1, 1], [1, 1, 0]], dtype=bool)
    # Fortran order: 0,1 | 1,1 | 1,0  -> runs: one 0, four 1s, one 0
    np.testing.assert_array_equal(mask_to_counts(mask), [1, 4, 1])
    starts_set = np.array([[1, 0], [1, 0]], dtype=bool)
    np.testing.assert_array_equal(mask_to_counts(starts_set), [0, 2, 2])
    np.testing.assert_array_equal(mask_to_counts(np.zeros((3, 4), bool)), [12])
    np.testing.assert_array_equal(mask_to_counts(np.ones((3, 4), bool)), [0, 12])


@given(counts=st.lists(st.integers(min_value=0, max_value=2**40), min_size=0, max_size=60))
@settings(max_examples=150, deadline=None)
def test_string_compression_round_trips_any_counts(counts):
    text = compress_counts(np.array(counts, dtype=np.int64))
    np.testing.assert_array_equal(decompress_counts(text), counts)


@given(mask=hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40)))
@settings(max_examples=120, deadline=None)
def test_any_mask_round_trips(mask):
    rle = encode_rle(mask)
    np.testing.assert_array_equal(decode_rle(rle), mask)
    assert rle_area(rle) == int(mask.sum())


# -- agreement with the reference implementation -------------------------------------


def coco_encode(mask: np.ndarray) -> dict:
    return coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))


@needs_coco
@pytest.mark.parametrize("mask", list(STRUCTURED.values()) + RANDOM, ids=lambda m: f"{m.shape[0]}x{m.shape[1]}")
def test_matches_pycocotools(mask):
    ours = encode_rle(mask)
    ref = coco_encode(mask)
    assert ours["size"] == list(ref["size"])
    assert ours["counts"] == ref["counts"].decode("ascii")
    # Each side decodes the other's output.
    np.testing.assert_array_equal(decode_rle(ref), mask)
    theirs = coco_mask.decode({"size": ours["size"], "counts": ours["counts"]})
    np.testing.assert_array_equal(theirs.astype(bool), mask)
    assert rle_area(ours) == int(coco_mask.area(ref))


@needs_coco
@given(mask=hnp.arrays(bool, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=30)))
@settings(max_examples=120, deadline=None)
def test_matches_pycocotools_property(mask):
    assert encode_rle(mask)["counts"] == coco_encode(mask)["counts"].decode("ascii")


@needs_coco
def test_decodes_uncompressed_coco_rle():
    mask = STRUCTURED["two_objects"]
    counts = mask_to_counts(mask).tolist()
    uncompressed = {"size": list(mask.shape), "counts": counts}
    np.testing.assert_array_equal(decode_rle(uncompressed), mask)
    ref = coco_mask.frPyObjects(uncompressed, *mask.shape)
    assert encode_rle(mask)["counts"] == ref["counts"].decode("ascii")


@needs_coco
@pytest.mark.parametrize("name", ["circle", "rect", "two_objects", "last_pixel", "hd_circle"])
def test_box_matches_pycocotools_to_bbox(name):
    mask = STRUCTURED[name]
    x, y, w, h = coco_mask.toBbox(coco_encode(mask))
    assert mask_to_box(mask) == (x, y, x + w, y + h)


# -- boxes --------------------------------------------------------------------------


def test_box_has_exclusive_far_edges():
    mask = rect(20, 30, 4, 6, 11, 15)
    assert mask_to_box(mask) == (4.0, 6.0, 11.0, 15.0)
    single = np.zeros((5, 5), bool)
    single[2, 3] = True
    assert mask_to_box(single) == (3.0, 2.0, 4.0, 3.0)
    assert mask_to_box(np.ones((7, 9), bool)) == (0.0, 0.0, 9.0, 7.0)


def test_box_of_empty_mask_is_none():
    assert mask_to_box(np.zeros((10, 10), bool)) is None


@pytest.mark.parametrize("name", ["circle", "two_objects", "first_pixel", "last_pixel", "checker"])
def test_box_agrees_with_association_convention(name):
    mask = STRUCTURED[name]
    assert mask_to_box(mask) == tuple(float(v) for v in association_mask_to_box(mask))


# -- malformed input -------------------------------------------------------------------


def test_counts_that_do_not_fill_the_size_are_rejected():
    rle = encode_rle(STRUCTURED["circle"])
    with pytest.raises(ValueError, match="sum"):
        decode_rle({"size": [rle["size"][0] + 1, rle["size"][1]], "counts": rle["counts"]})


def test_bad_characters_and_truncation_are_rejected():
    with pytest.raises(ValueError, match="outside"):
        decode_rle({"size": [2, 2], "counts": "0 3"})
    # '`' is 48 + 0x30: the continuation bit is set, so the value never ends.
    with pytest.raises(ValueError, match="truncated"):
        decompress_counts("4`")


def test_missing_keys_and_bad_masks_are_rejected():
    with pytest.raises(ValueError, match="size"):
        decode_rle({"counts": "4"})
    with pytest.raises(ValueError, match="2-D"):
        encode_rle(np.zeros((2, 3, 4), bool))


def test_accepts_bytes_counts_and_non_bool_masks():
    mask = STRUCTURED["rect"]
    rle = encode_rle(mask.astype(np.uint8) * 255)
    assert rle == encode_rle(mask)
    as_bytes = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    np.testing.assert_array_equal(decode_rle(as_bytes), mask)
