"""IoU matrices, mask boxes and gated Hungarian assignment."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from realtime_sam.tracking.association import (
    box_area,
    box_iou_matrix,
    box_motion,
    linear_assignment,
    mask_iou_matrix,
    mask_to_box,
    masks_to_boxes,
    shift_array,
    track_under,
)


def _brute_force_objective(cost: np.ndarray, thresh: float) -> float:
    """Smallest total cost over all partial one-to-one matchings.

    Matching a pair costs its entry (allowed only up to ``thresh``); leaving
    a row or a column unmatched costs ``thresh / 2`` each, which is the
    objective ``lapjv(extend_cost=True, cost_limit=thresh)`` minimises.
    """
    n, m = cost.shape
    best = (n + m) * thresh / 2.0
    for k in range(1, min(n, m) + 1):
        for rows in itertools.combinations(range(n), k):
            for cols in itertools.permutations(range(m), k):
                pairs = [cost[r, c] for r, c in zip(rows, cols)]
                if all(np.isfinite(p) and p <= thresh for p in pairs):
                    best = min(best, sum(pairs) + (n + m - 2 * k) * thresh / 2.0)
    return best


def _objective(cost: np.ndarray, thresh: float, matches: np.ndarray) -> float:
    n, m = cost.shape
    return float(sum(cost[r, c] for r, c in matches)) + (n + m - 2 * len(matches)) * thresh / 2.0


class TestLinearAssignment:
    def test_picks_the_cheapest_overall_matching_not_the_greedy_one(self):
        # Greedy would take (0, 0) at 0.1 and then be left with (1, 1) at 0.9 > thresh.
        cost = np.array([[0.1, 0.2], [0.3, 0.9]])
        matches, ur, uc = linear_assignment(cost, 0.5)
        assert matches.tolist() == [[0, 1], [1, 0]]
        assert ur.size == 0 and uc.size == 0

    def test_pairs_above_the_threshold_stay_unmatched(self):
        cost = np.array([[0.95, 0.2], [0.9, 0.99]])
        matches, ur, uc = linear_assignment(cost, 0.7)
        assert matches.tolist() == [[0, 1]]
        assert ur.tolist() == [1]
        assert uc.tolist() == [0]

    @pytest.mark.parametrize("shape", [(0, 0), (0, 3), (4, 0)])
    def test_empty_matrices_return_everything_unmatched(self, shape):
        matches, ur, uc = linear_assignment(np.zeros(shape), 0.5)
        assert matches.shape == (0, 2)
        assert ur.tolist() == list(range(shape[0]))
        assert uc.tolist() == list(range(shape[1]))

    def test_non_finite_costs_are_never_matched(self):
        cost = np.array([[np.inf, 0.1], [0.2, np.nan]])
        matches, _, _ = linear_assignment(cost, 0.5)
        assert matches.tolist() == [[0, 1], [1, 0]]
        matches, ur, uc = linear_assignment(np.full((2, 2), np.inf), 0.5)
        assert matches.shape == (0, 2) and ur.tolist() == [0, 1] and uc.tolist() == [0, 1]

    def test_rejects_a_non_matrix(self):
        with pytest.raises(ValueError, match="2-D"):
            linear_assignment(np.zeros(3), 0.5)

    @settings(max_examples=120, deadline=None)
    @given(
        cost=st.integers(1, 4).flatmap(
            lambda n: st.integers(1, 4).flatmap(
                lambda m: arrays(np.float64, (n, m), elements=st.floats(0.0, 1.0, allow_nan=False))
            )
        ),
        thresh=st.floats(0.05, 1.0),
    )
    def test_matches_the_brute_force_optimum(self, cost, thresh):
        matches, ur, uc = linear_assignment(cost, thresh)
        n, m = cost.shape
        # A valid partial matching that partitions rows and columns.
        assert len(set(matches[:, 0])) == len(matches) and len(set(matches[:, 1])) == len(matches)
        assert sorted(matches[:, 0].tolist() + ur.tolist()) == list(range(n))
        assert sorted(matches[:, 1].tolist() + uc.tolist()) == list(range(m))
        assert all(cost[r, c] <= thresh for r, c in matches)
        assert _objective(cost, thresh, matches) == pytest.approx(_brute_force_objective(cost, thresh), abs=1e-9)


def _reference_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


class TestMaskIou:
    @settings(max_examples=40, deadline=None)
    @given(
        a=arrays(bool, (3, 12, 17)),
        b=arrays(bool, (2, 12, 17)),
    )
    def test_equals_the_per_pair_definition(self, a, b):
        got = mask_iou_matrix(a, b)
        want = np.array([[_reference_iou(x, y) for y in b] for x in a])
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)

    def test_objects_far_apart_in_a_large_frame(self):
        a = np.zeros((2, 720, 1280), bool)
        b = np.zeros((1, 720, 1280), bool)
        a[0, 10:60, 10:60] = True
        a[1, 600:700, 1100:1250] = True
        b[0, 610:700, 1100:1250] = True
        got = mask_iou_matrix(a, b)
        assert got[0, 0] == 0.0
        assert got[1, 0] == pytest.approx(_reference_iou(a[1], b[0]))

    def test_empty_masks_and_empty_stacks(self):
        empty = np.zeros((1, 8, 8), bool)
        full = np.ones((1, 8, 8), bool)
        assert mask_iou_matrix(empty, empty)[0, 0] == 0.0
        assert mask_iou_matrix(empty, full)[0, 0] == 0.0
        assert mask_iou_matrix(np.zeros((0, 8, 8), bool), full).shape == (0, 1)

    def test_size_mismatch_is_an_error(self):
        with pytest.raises(ValueError, match="sizes differ"):
            mask_iou_matrix(np.zeros((1, 8, 8), bool), np.zeros((1, 8, 9), bool))


class TestBoxes:
    def test_box_iou_values(self):
        a = np.array([[0, 0, 10, 10]], float)
        b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8]], float)
        # identical, half-shifted (overlap 50 of union 150), disjoint, degenerate
        np.testing.assert_allclose(box_iou_matrix(a, b), [[1.0, 1 / 3, 0.0, 0.0]])

    @settings(max_examples=40, deadline=None)
    @given(arrays(bool, (4, 9, 11)))
    def test_box_iou_of_filled_boxes_equals_their_mask_iou(self, masks):
        boxes = masks_to_boxes(masks)
        filled = np.zeros_like(masks)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            filled[k, y0:y1, x0:x1] = True
        np.testing.assert_allclose(box_iou_matrix(boxes, boxes), mask_iou_matrix(filled, filled), atol=1e-12)

    @settings(max_examples=40, deadline=None)
    @given(arrays(bool, (3, 10, 13)))
    def test_mask_boxes_enclose_the_mask_tightly(self, masks):
        boxes = masks_to_boxes(masks)
        for m, box in zip(masks, boxes):
            single = mask_to_box(m)
            if not m.any():
                assert single is None and box.tolist() == [0, 0, 0, 0]
                continue
            ys, xs = np.nonzero(m)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            assert single.tolist() == box.tolist()


# ------------------------------------------------------------------ shared mask and box helpers


@pytest.mark.parametrize("dx, dy", [(0, 0), (3, 0), (-2, 1), (1, -4), (9, 0), (0, -7)])
def test_shift_array_moves_cells_and_fills_what_it_uncovers(dx, dy):
    a = np.arange(8 * 9, dtype=np.float32).reshape(8, 9)
    out = shift_array(a, dx, dy, -1.0)
    assert out.shape == a.shape and out.dtype == a.dtype
    for y in range(8):
        for x in range(9):
            sy, sx = y - dy, x - dx
            expected = a[sy, sx] if 0 <= sy < 8 and 0 <= sx < 9 else -1.0
            assert out[y, x] == expected
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = True
    assert shift_array(mask, 2, 3, False)[4, 3] and shift_array(mask, 2, 3, False).sum() == 1


def test_box_area_and_box_motion():
    assert box_area((10, 10, 30, 20)) == 200.0
    assert box_area((5, 5, 5, 9)) == 4.0  # a degenerate side counts as 1 pixel
    m = box_motion((0, 0, 10, 10), (20, 10, 40, 30))  # twice the size, centre (5, 5) -> (30, 20)
    np.testing.assert_allclose(m, [[2, 0, 20], [0, 2, 10]])
    np.testing.assert_allclose(box_motion((0, 0, 10, 10), (20, 10, 40, 30), scale=False), [[1, 0, 25], [0, 1, 15]])
    assert box_motion((0, 0, 10, 10), (0, 0, 100, 100))[0, 0] == 2.0  # clipped to [0.5, 2]


def test_track_under_is_the_mask_drawn_on_top_then_the_nearest_box():
    h = w = 100
    big = np.zeros((h, w), bool)
    big[10:90, 10:90] = True
    small = np.zeros((h, w), bool)
    small[40:50, 40:50] = True
    # The renderer draws in id order: where masks overlap, the higher id is on top, whatever its size.
    assert track_under(45, 45, [(1, small, (40, 40, 50, 50)), (2, big, (10, 10, 90, 90))]) == 2
    assert track_under(45, 45, [(1, big, (10, 10, 90, 90)), (2, small, (40, 40, 50, 50))]) == 2
    assert track_under(20, 20, [(1, big, (10, 10, 90, 90)), (2, small, (40, 40, 50, 50))]) == 1
    # No mask there (lost tracks show none): the box whose centre is nearest.
    lost = [(3, None, (0, 0, 60, 60)), (4, np.zeros((h, w), bool), (20, 20, 100, 100))]
    assert track_under(25, 25, lost) == 3 and track_under(55, 55, lost) == 4
    assert track_under(95, 5, lost) is None
    assert track_under(float("nan"), 5, lost) is None and track_under(5, float("inf"), lost) is None
    assert track_under(-1, -1, [(1, big, (10, 10, 90, 90))]) is None  # outside every mask and box
