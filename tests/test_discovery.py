"""Auto-mode helpers: point grid, stability score, NMS, candidate filtering."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from realtime_sam.errors import ConfigError
from realtime_sam.tracking.discovery import (
    DiscoveryConfig,
    filter_candidates,
    nms,
    point_grid,
    stability_score,
)


class TestPointGrid:
    @pytest.mark.parametrize("n", [1, 2, 5, 16])
    def test_cell_centres_row_by_row_with_x_fastest(self, n):
        grid = point_grid(n)
        want = [((col + 0.5) / n, (row + 0.5) / n) for row in range(n) for col in range(n)]
        assert grid.shape == (n * n, 2)
        np.testing.assert_allclose(grid, np.array(want), atol=1e-12)

    def test_points_are_inside_the_unit_square_and_symmetric(self):
        grid = point_grid(16)
        assert grid.min() > 0 and grid.max() < 1
        np.testing.assert_allclose(np.sort(grid[:, 0]), np.sort(1.0 - grid[:, 0]), atol=1e-12)

    def test_rejects_zero(self):
        with pytest.raises(ValueError):
            point_grid(0)


class TestStabilityScore:
    def test_a_ramp_counts_the_pixels_between_thresholds(self):
        # Logit = column - 50 on a 10x100 map: > +1 from column 52 (48 columns), > -1 from column 50 (50 columns).
        logits = np.tile(np.arange(100, dtype=np.float32) - 50.0, (10, 1))
        assert stability_score(logits, 0.0, 1.0) == pytest.approx(48 / 50)
        # A wider offset makes the same mask less stable.
        assert stability_score(logits, 0.0, 5.0) == pytest.approx(44 / 54)

    def test_a_sharp_mask_is_perfectly_stable_and_an_empty_one_scores_zero(self):
        sharp = np.full((2, 16, 16), -20.0, np.float32)
        sharp[0, 4:12, 4:12] = 20.0
        np.testing.assert_allclose(stability_score(sharp, 0.0, 1.0), [1.0, 0.0])

    def test_torch_and_numpy_agree_on_a_batch(self):
        rng = np.random.default_rng(0)
        logits = rng.normal(0, 3, size=(5, 3, 32, 32)).astype(np.float32)
        np_score = stability_score(logits, 0.5, 1.0)
        t_score = stability_score(torch.from_numpy(logits), 0.5, 1.0)
        assert isinstance(t_score, torch.Tensor) and t_score.shape == (5, 3)
        np.testing.assert_allclose(t_score.numpy(), np_score, rtol=1e-6)
        # Against the definition, one map at a time.
        a = (logits[2, 1] > 1.5).sum() / (logits[2, 1] > -0.5).sum()
        assert np_score[2, 1] == pytest.approx(a)


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _reference_nms(boxes, scores, thresh) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties keep input order
    keep: list[int] = []
    for i in order:
        if all(_iou(boxes[i], boxes[k]) <= thresh for k in keep):
            keep.append(i)
    return keep


@st.composite
def _boxes(draw):
    n = draw(st.integers(0, 30))
    boxes = []
    for _ in range(n):
        x0, y0 = draw(st.floats(0, 90)), draw(st.floats(0, 90))
        boxes.append([x0, y0, x0 + draw(st.floats(1, 40)), y0 + draw(st.floats(1, 40))])
    scores = draw(st.lists(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]) | st.floats(0, 1), min_size=n, max_size=n))
    return np.array(boxes, dtype=np.float64).reshape(-1, 4), np.array(scores, dtype=np.float64)


class TestNms:
    @settings(max_examples=150, deadline=None)
    @given(_boxes(), st.floats(0.05, 0.95))
    def test_matches_a_brute_force_reference(self, data, thresh):
        boxes, scores = data
        got = nms(boxes, scores, thresh)
        assert got.dtype == np.int64
        assert got.tolist() == _reference_nms(boxes.tolist(), scores.tolist(), thresh)

    def test_accepts_torch_tensors(self):
        boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float32)
        scores = torch.tensor([0.5, 0.9, 0.7])
        assert nms(boxes, scores, 0.5).tolist() == [1, 2]

    def test_length_mismatch_is_an_error(self):
        with pytest.raises(ValueError, match="scores"):
            nms(np.zeros((3, 4)), np.zeros(2), 0.5)


def _blob(h, w, x0, y0, x1, y1, soft: bool = False):
    """A rectangle mask and logits for it: sharp (stable) or a shallow slope (unstable)."""
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    if soft:
        # Logits hover within +/-1 of the threshold: shifting it changes the mask a lot.
        logits = np.where(mask, 0.5, -0.5).astype(np.float32)
    else:
        logits = np.where(mask, 10.0, -10.0).astype(np.float32)
    return mask, logits


class TestFilterCandidates:
    def test_keeps_good_distinct_masks_best_first(self):
        h, w = 64, 64
        specs = [
            ((4, 4, 20, 20), 0.80, False),  # 0: good
            ((30, 30, 60, 60), 0.95, False),  # 1: good, best score
            ((5, 5, 21, 21), 0.90, False),  # 2: near-duplicate of 0 with a better score: wins over 0
            ((40, 2, 60, 20), 0.50, False),  # 3: low predicted IoU
            ((2, 40, 20, 60), 0.90, True),  # 4: unstable
            ((62, 62, 63, 63), 0.99, False),  # 5: too small
        ]
        masks, logits, ious = [], [], []
        for box, q, soft in specs:
            m, lg = _blob(h, w, *box, soft=soft)
            masks.append(m)
            logits.append(lg)
            ious.append(q)
        cfg = DiscoveryConfig(min_mask_area_frac=0.001)
        keep = filter_candidates(np.stack(masks), np.array(ious), np.stack(logits), cfg)
        assert keep.tolist() == [1, 2]
        # Torch inputs give the same answer.
        keep_t = filter_candidates(torch.from_numpy(np.stack(masks)), torch.tensor(ious), torch.from_numpy(np.stack(logits)), cfg)
        assert keep_t.tolist() == [1, 2]
        # Loosen the thresholds and the others come back.
        loose = DiscoveryConfig(pred_iou_thresh=0.0, stability_score_thresh=0.0, min_mask_area_frac=0.0, box_nms_thresh=0.99)
        assert sorted(filter_candidates(np.stack(masks), np.array(ious), np.stack(logits), loose).tolist()) == list(range(6))

    def test_mask_threshold_is_where_stability_is_measured(self):
        # Logits 10 inside a square, -10 outside: stable around 0, a cliff around 9.5.
        m, lg = _blob(64, 64, 10, 10, 40, 40)
        args = (m[None], np.array([0.95]), lg[None])
        assert filter_candidates(*args, DiscoveryConfig()).tolist() == [0]
        # Thresholded at 9.5 +/- 1 the mask is all or nothing: unstable, dropped.
        assert filter_candidates(*args, DiscoveryConfig(mask_threshold=9.5)).tolist() == []

    def test_stability_offset_is_how_far_the_threshold_is_moved(self):
        m, _ = _blob(64, 64, 10, 10, 40, 40)
        lg = np.where(m, 3.0, -3.0).astype(np.float32)  # the mask holds for thresholds within +/-3
        args = (m[None], np.array([0.95]), lg[None])
        assert filter_candidates(*args, DiscoveryConfig(stability_offset=1.0)).tolist() == [0]
        assert filter_candidates(*args, DiscoveryConfig(stability_offset=4.0)).tolist() == []

    def test_empty_input_and_shape_errors(self):
        cfg = DiscoveryConfig()
        assert filter_candidates(np.zeros((0, 8, 8), bool), np.zeros(0), np.zeros((0, 4, 4)), cfg).size == 0
        with pytest.raises(ValueError):
            filter_candidates(np.zeros((2, 8, 8), bool), np.zeros(3), np.zeros((2, 4, 4)), cfg)
        with pytest.raises(ValueError):
            filter_candidates(np.zeros((2, 8, 8), bool), np.zeros(2), np.zeros((3, 4, 4)), cfg)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"points_per_side": 0},
        {"pred_iou_thresh": 1.5},
        {"stability_score_thresh": -0.1},
        {"stability_offset": -1.0},
        {"box_nms_thresh": 0.0},
        {"min_mask_area_frac": 1.0},
        {"every_k_frames": 0},
        {"batch_size": 0},
    ],
)
def test_bad_config_is_a_one_line_config_error(kwargs):
    with pytest.raises(ConfigError) as info:
        DiscoveryConfig(**kwargs)
    assert "\n" not in str(info.value) and next(iter(kwargs)) in str(info.value)
