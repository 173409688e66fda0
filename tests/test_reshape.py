"""A landed mask's shape brought up to date (realtime_sam.tracking.reshape) and the engine's check on it."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from test_engine import _iou

from realtime_sam.model.transforms import preprocess_shape
from realtime_sam.testing.fakes import GroundTruthRunner
from realtime_sam.testing.synthetic import mask_logits, standard_scene
from realtime_sam.tracking.appearance import appearance_of
from realtime_sam.tracking.association import box_motion, mask_to_box
from realtime_sam.tracking.dense_flow import logits_to_mask
from realtime_sam.tracking.engine import Engine, EngineConfig
from realtime_sam.tracking.reshape import Reshaper, similarity_between
from realtime_sam.tracking.tracks import Detection

H, W = 240, 320


def _texture(seed: int, tint: tuple[int, int, int]) -> np.ndarray:
    """``HxWx3 uint8`` smooth random texture (DIS needs something to match), tinted."""
    rng = np.random.default_rng(seed)
    grey = cv2.GaussianBlur(rng.random((H, W)).astype(np.float32), (0, 0), 2.0)
    grey = (grey - grey.min()) / (grey.max() - grey.min())
    return np.clip(grey[..., None] * 160 + np.array(tint, np.float32)[None, None], 0, 255).astype(np.uint8)


def _frame(affine: np.ndarray, background: np.ndarray, skin: np.ndarray, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The object (``shape``, textured with ``skin``) moved by ``affine`` over ``background``: (image, mask)."""
    mask = cv2.warpAffine(shape.astype(np.uint8), affine, (W, H), flags=cv2.INTER_NEAREST) > 0
    moved_skin = cv2.warpAffine(skin, affine, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    image = background.copy()
    image[mask] = moved_skin[mask]
    return image, mask


def _rectangle(x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    m = np.zeros((H, W), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def _similarity(angle: float, scale: float, centre: tuple[float, float], to: tuple[float, float]) -> np.ndarray:
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, to[0] - (c * centre[0] - s * centre[1])], [s, c, to[1] - (s * centre[0] + c * centre[1])]])


def test_similarity_between_two_masks_is_read_off_their_moments():
    bar = _rectangle(100, 100, 180, 130)  # 80 x 30, centre (139.5, 114.5)
    truth = _similarity(0.4, 1.2, (139.5, 114.5), (170.0, 120.0))
    moved = cv2.warpAffine(bar.astype(np.uint8), truth, (W, H), flags=cv2.INTER_NEAREST) > 0
    m = similarity_between(bar, moved)
    assert m is not None
    assert math.atan2(m[1, 0], m[0, 0]) == pytest.approx(0.4, abs=0.03)
    assert math.hypot(m[0, 0], m[1, 0]) == pytest.approx(1.2, abs=0.03)
    # The bar's corners land where the true motion takes them (within a couple of pixels).
    corners = np.array([[100, 100, 1], [179, 100, 1], [179, 129, 1], [100, 129, 1]], float)
    assert np.abs(corners @ m.T - corners @ truth.T).max() < 2.5


def test_a_roundish_mask_is_not_turned_and_an_empty_one_has_no_similarity():
    yy, xx = np.mgrid[:H, :W]
    disc = (xx - 100) ** 2 + (yy - 120) ** 2 <= 30**2
    # A disc grown and moved: its orientation is noise, so only the move and the scale count.
    later = (xx - 200) ** 2 + (yy - 110) ** 2 <= 36**2
    m = similarity_between(disc, later)
    assert m is not None
    assert m[0, 1] == pytest.approx(0.0, abs=1e-9) and m[1, 0] == pytest.approx(0.0, abs=1e-9)
    assert m[0, 0] == pytest.approx(1.2, abs=0.02)
    assert m @ np.array([100.0, 120.0, 1.0]) == pytest.approx([200.0, 110.0], abs=0.5)
    assert similarity_between(disc, np.zeros((H, W), bool)) is None


def _stretching_object():
    """A textured bar decoded on one frame that, by now, has moved and stretched to 1.5x its width only."""
    background, skin = _texture(1, (20, 60, 20)), _texture(2, (120, 40, 90))
    bar = _rectangle(60, 90, 140, 150)  # 80 x 60
    then_image, then_mask = _frame(np.array([[1.0, 0, 0], [0, 1.0, 0]]), background, skin, bar)
    # Now: 30 px to the right, 10 px down, 1.5x as wide about its left edge (a non-rigid change).
    stretch = np.array([[1.5, 0.0, 30.0 - 0.5 * 60.0], [0.0, 1.0, 10.0]])
    now_image, now_mask = _frame(stretch, background, skin, bar)
    return then_image, then_mask, now_image, now_mask


def test_a_landed_mask_moved_as_one_piece_takes_the_objects_new_shape():
    then_image, then_mask, now_image, now_mask = _stretching_object()
    # The one-piece move a landing makes: box to box, a uniform scale (it cannot stretch).
    rigid = cv2.warpAffine(
        then_mask.astype(np.uint8), box_motion(mask_to_box(then_mask), mask_to_box(now_mask)), (W, H), flags=cv2.INTER_NEAREST
    ) > 0
    reshaped = Reshaper()(then_image, then_mask, now_image, rigid)
    assert reshaped is not None
    assert _iou(rigid, now_mask) < 0.8
    assert _iou(reshaped, now_mask) > 0.9
    assert _iou(reshaped, now_mask) > _iou(rigid, now_mask) + 0.1


def test_nothing_to_reshape_gives_none():
    then_image, then_mask, now_image, now_mask = _stretching_object()
    empty = np.zeros((H, W), bool)
    assert Reshaper()(then_image, empty, now_image, now_mask) is None
    assert Reshaper()(then_image, then_mask, now_image, empty) is None
    tiny = _rectangle(0, 0, 2, 2)  # in the corner: its crop (9 px) is too small for flow
    assert Reshaper()(then_image, tiny, now_image, tiny) is None


def _engine_at(now_image: np.ndarray) -> Engine:
    engine = Engine(GroundTruthRunner(standard_scene(W, H, num_frames=4, num_objects=1, seed=1)), EngineConfig())
    engine._prev_image = now_image  # the frame a landing moves its masks to
    return engine


def _detection(image: np.ndarray, mask: np.ndarray, logits: np.ndarray | None = None) -> Detection:
    box = mask_to_box(mask)
    return Detection(mask=mask, box=box, score=0.9, logits=logits, source_track=1, appearance=appearance_of(image, mask))


def _centre(mask: np.ndarray) -> np.ndarray:
    """``(x, y)`` centre of a mask's box."""
    b = mask_to_box(mask)
    return np.array([(b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0])


def test_the_engine_keeps_a_reshaped_landing_only_where_it_looks_like_the_decode(monkeypatch):
    then_image, then_mask, now_image, now_mask = _stretching_object()
    engine = _engine_at(now_image)
    then = _detection(then_image, then_mask)
    # The one-piece move a landing makes, here 20 px short of the object (the track drifted).
    short = mask_to_box(now_mask) - np.array([20.0, 0.0, 20.0, 0.0])
    rigid = cv2.warpAffine(
        then_mask.astype(np.uint8), box_motion(mask_to_box(then_mask), short), (W, H), flags=cv2.INTER_NEAREST
    ) > 0
    moved = _detection(now_image, rigid, logits=mask_logits(rigid, preprocess_shape(H, W, 1024)))

    taken = engine._reshaped(then, moved, then_image)
    assert taken is not moved
    assert _iou(taken.mask, now_mask) > 0.9
    assert taken.box == pytest.approx(mask_to_box(taken.mask))
    assert taken.source_track == 1
    # The logits (the next decode's mask prompt) follow the reshaped box, where the tracker takes
    # them to lie; as moved they sat 20 px to the left of it.
    assert _centre(logits_to_mask(taken.logits, (H, W))) == pytest.approx(_centre(taken.mask), abs=2.0)
    assert abs(_centre(logits_to_mask(moved.logits, (H, W)))[0] - _centre(taken.mask)[0]) > 15.0

    # A reshape that went onto the background (the flow lost the object) is refused.
    off = _rectangle(200, 20, 300, 80)
    monkeypatch.setattr(engine, "_reshaper", lambda *args: off)
    assert engine._reshaped(then, moved, then_image) is moved
    # Without the encoded frame (or a decode's looks) there is nothing to reshape from.
    assert engine._reshaped(then, moved, None) is moved
