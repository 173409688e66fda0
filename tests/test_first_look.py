"""The first look at a new object (``tracking/first_look.py``): a rough mask from the frame's colours."""

from __future__ import annotations

import cv2
import numpy as np

from realtime_sam.tracking.first_look import first_look
from realtime_sam.types import ObjectPrompt


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A 480x640 frame of noisy green-grey texture with a red five-pointed star on it; the star's mask."""
    rng = np.random.default_rng(seed)
    image = np.empty((480, 640, 3), np.uint8)
    image[...] = (60, 120, 80)
    image = np.clip(image + rng.normal(0, 18, image.shape), 0, 255).astype(np.uint8)
    angles = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
    radii = np.where(np.arange(10) % 2 == 0, 110, 45)
    star = np.stack([320 + radii * np.cos(angles), 240 + radii * np.sin(angles)], axis=1).astype(np.int32)
    mask = np.zeros((480, 640), np.uint8)
    cv2.fillPoly(mask, [star], 1)
    red = np.clip(np.array((40, 40, 200)) + rng.normal(0, 18, image.shape), 0, 255).astype(np.uint8)
    image[mask > 0] = red[mask > 0]
    return image, mask > 0


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def _ellipse(box, shape) -> np.ndarray:
    out = np.zeros(shape, np.uint8)
    x0, y0, x1, y1 = box
    cv2.ellipse(out, (int((x0 + x1) / 2), int((y0 + y1) / 2)), (int((x1 - x0) / 2), int((y1 - y0) / 2)), 0, 0, 360, 1, -1)
    return out > 0


def test_the_first_look_follows_the_objects_colours_not_its_box():
    image, star = _scene()
    box = _box(star)
    mask = first_look(image, ObjectPrompt(box=box))
    assert mask is not None and mask.shape == star.shape and mask.dtype == bool
    # A star fills about half its box: the box, and the ellipse GrabCut starts from, score far lower.
    assert _iou(mask, star) > 0.8
    assert _iou(mask, star) > _iou(_ellipse(box, star.shape), star) + 0.15


def test_nothing_outside_the_box_and_the_ellipse_where_the_colours_tell_nothing():
    # A flat frame: GrabCut has nothing to tell apart, and the first look is the box's ellipse.
    image = np.full((240, 320, 3), 128, np.uint8)
    box = (100.0, 50.0, 220.0, 130.0)
    mask = first_look(image, ObjectPrompt(box=box))
    assert mask is not None
    ys, xs = np.nonzero(mask)
    assert xs.min() >= 100 and xs.max() < 220 and ys.min() >= 50 and ys.max() < 130
    assert _iou(mask, _ellipse(box, mask.shape)) > 0.9


def test_a_click_has_no_extent_and_a_box_off_the_frame_nothing_to_look_at():
    image, star = _scene()
    assert first_look(image, ObjectPrompt(points=((320.0, 240.0),), labels=(1,))) is None
    assert first_look(image, ObjectPrompt(box=(700.0, 10.0, 800.0, 90.0))) is None
    # Half off the frame: what is in the frame is looked at.
    half = first_look(image, ObjectPrompt(box=(600.0, 400.0, 700.0, 520.0)))
    assert half is not None and half[400:, 600:].any() and not half[:400].any() and not half[:, :600].any()


def test_a_background_click_with_the_box_keeps_its_spot_out():
    # The star's lower-left arm, marked as background by a label-0 click, stays out of the mask.
    image, star = _scene(1)
    box = _box(star)
    arm = (int(320 + 110 * np.cos(np.radians(126)) * 0.8), int(240 + 110 * np.sin(np.radians(126)) * 0.8))
    assert star[arm[1], arm[0]]
    plain = first_look(image, ObjectPrompt(box=box))
    clicked = first_look(image, ObjectPrompt(box=box, points=(arm,), labels=(0,)))
    assert plain is not None and clicked is not None
    assert plain[arm[1], arm[0]] and not clicked[arm[1], arm[0]]
