"""Synthetic scenes: the ground truth matches the pixels, and clips encode and decode."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from realtime_sam.errors import ConfigError
from realtime_sam.testing.synthetic import (
    Scene,
    SceneObject,
    appearing_scene,
    crossing_scene,
    read_gt,
    shade_of,
    standard_scene,
    write_gt,
    write_video,
)

W, H = 320, 240


def _object_pixels_ok(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int]) -> bool:
    """Every pixel inside ``mask`` is one of the object's two texture tones."""
    pix = image[mask]
    light = np.all(pix == np.asarray(colour, np.uint8), axis=1)
    dark = np.all(pix == np.asarray(shade_of(colour), np.uint8), axis=1)
    return bool(np.all(light | dark)) and bool(light.any()) and bool(dark.any())


@pytest.mark.parametrize("factory", [standard_scene, crossing_scene, appearing_scene])
def test_masks_match_rendered_pixels(factory) -> None:
    scene: Scene = factory(W, H)
    for i in range(0, scene.num_frames, 7):
        image, masks = scene.render(i)
        assert image.shape == (H, W, 3) and image.dtype == np.uint8
        union = np.zeros((H, W), bool)
        for oid, mask in masks.items():
            assert mask.shape == (H, W) and mask.dtype == bool
            assert not (mask & union).any(), "visible masks must not overlap"
            union |= mask
            if mask.sum() > 0:
                assert _object_pixels_ok(image, mask, scene.get(oid).colour)
        # Outside all objects, the object colours (almost) never occur.
        bg = image[~union]
        for o in scene.objects:
            frac = np.all(bg == np.asarray(o.colour, np.uint8), axis=1).mean()
            assert frac < 0.001


def test_later_objects_occlude_earlier_ones() -> None:
    scene = standard_scene(W, H, num_frames=40)
    mid = scene.num_frames // 2
    full1 = scene.full_mask(mid, 1)
    full2 = scene.full_mask(mid, 2)
    _, masks = scene.render(mid)
    overlap = full1 & full2
    assert overlap.sum() > 50, "objects 1 and 2 cross mid-clip"
    # Object 2 is painted later: it owns the overlap, object 1 loses it.
    assert np.array_equal(masks[2], full2)
    assert np.array_equal(masks[1], full1 & ~full2)
    # At the start they are apart.
    assert not (scene.full_mask(0, 1) & scene.full_mask(0, 2)).any()


def test_crossing_scene_fully_occludes_object_1_for_a_few_frames() -> None:
    scene = crossing_scene(W, H, num_frames=40, occluded_frames=5)
    hidden = [i for i in range(scene.num_frames) if scene.render(i)[1][1].sum() == 0]
    assert 3 <= len(hidden) <= 9
    # Contiguous and around mid-clip, while the object still exists.
    assert hidden == list(range(hidden[0], hidden[-1] + 1))
    assert hidden[0] < scene.num_frames // 2 < hidden[-1]
    assert all(scene.full_mask(i, 1).sum() > 0 for i in hidden)
    assert scene.render(0)[1][1].sum() == scene.full_mask(0, 1).sum() > 0


def test_appearing_scene_adds_an_object_mid_clip() -> None:
    scene = appearing_scene(W, H, num_frames=30, appear_at=12)
    assert set(scene.render(11)[1]) == {1}
    _, masks = scene.render(12)
    assert set(masks) == {1, 2} and masks[2].sum() > 0


def test_objects_move_and_bounce_inside_the_frame() -> None:
    obj = SceneObject(1, "circle", (0, 0, 255), 20, (30.0, 50.0), (9.0, 0.0))
    scene = Scene(100, 80, 40, (obj,))
    xs = [scene.center(i, 1)[0] for i in range(40)]
    assert min(xs) >= 10 - 1e-9 and max(xs) <= 100 - 1 - 10 + 1e-9
    steps = np.diff(xs)
    assert (steps > 0).any() and (steps < 0).any(), "it bounced"
    # Mask stays the same size while fully inside.
    areas = {int(scene.render(i)[1][1].sum()) for i in range(40)}
    assert max(areas) - min(areas) <= 0.05 * max(areas)


def test_rendering_is_deterministic_and_seed_changes_background() -> None:
    a = standard_scene(W, H, 10, seed=3).render(4)[0]
    b = standard_scene(W, H, 10, seed=3).render(4)[0]
    c = standard_scene(W, H, 10, seed=4).render(4)[0]
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_background_is_textured() -> None:
    image, masks = standard_scene(W, H, 5).render(0)
    gray = image.mean(axis=2)
    # Texture everywhere: local gradients are non-zero on most of the background.
    gx = np.abs(np.diff(gray, axis=1))
    assert (gx > 0.5).mean() > 0.3


def test_invalid_objects_raise_config_error() -> None:
    with pytest.raises(ConfigError):
        SceneObject(0, "circle", (0, 0, 0), 10, (5, 5))
    with pytest.raises(ConfigError):
        SceneObject(1, "star", (0, 0, 0), 10, (5, 5))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        SceneObject(1, "rect", (0, 0, 0), 10, (5, 5), appear_at=5, disappear_at=5)
    o = SceneObject(1, "rect", (0, 0, 0), 10, (5, 5))
    with pytest.raises(ConfigError):
        Scene(64, 64, 3, (o, o))


@pytest.mark.parametrize("suffix,codec", [(".mp4", "libx264"), (".mkv", "libx264"), (".avi", "mpeg4")])
def test_written_video_decodes_to_every_frame(tmp_path: Path, suffix: str, codec: str) -> None:
    scene = standard_scene(W, H, num_frames=20)
    path = write_video(scene, tmp_path / f"clip{suffix}", fps=25, codec=codec)
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    assert len(frames) == 20
    assert frames[0].shape == (H, W, 3)
    # Lossy but close: the decoded frame resembles the rendered one, and the
    # objects' colours survive inside their masks.
    image, masks = scene.render(5)
    decoded = frames[5].astype(np.int16)
    assert np.abs(decoded - image).mean() < 8
    # Neighbouring frames differ more from frame 5 than frame 5's decode does.
    assert np.abs(frames[15].astype(np.int16) - image).mean() > np.abs(decoded - image).mean()


def test_gt_round_trip(tmp_path: Path) -> None:
    scene = appearing_scene(W, H, num_frames=8, appear_at=4)
    gt = read_gt(write_gt(scene, tmp_path / "gt.npz"))
    assert len(gt) == 8
    for i in (0, 5):
        _, masks = scene.render(i)
        assert set(gt[i]) == set(masks)
        for oid in masks:
            assert np.array_equal(gt[i][oid], masks[oid])
