"""The hard synthetic scene: exact ground truth, the difficulties it promises, and its DAVIS writer."""

from __future__ import annotations

import itertools

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from realtime_sam.errors import ConfigError
from realtime_sam.testing.hard_scene import HardScene, hard_scene, write_davis
from realtime_sam.testing.synthetic import pick_object, read_gt, write_gt, write_video
from realtime_sam.tracking.association import mask_to_box


@pytest.fixture(scope="module")
def scene() -> HardScene:
    return hard_scene()  # the default: 640x480, 30 fps, 10 s, seed 0


@pytest.fixture(scope="module")
def clip_stats(scene):
    """One pass over the whole clip, judged from the rendered ground truth only.

    ``visible[oid]``: visible pixels per frame; ``full[oid]``: silhouette
    pixels per frame (occlusion ignored); ``fronts[(a, b)]``: ``{frame:
    id}`` of the object whose pixels show where the two silhouettes overlap
    by at least ``crossing_min_px``.
    """
    n, ids = scene.num_frames, scene.ids
    visible = {oid: np.zeros(n, np.int64) for oid in ids}
    full = {oid: np.zeros(n, np.int64) for oid in ids}
    fronts: dict[tuple[int, int], dict[int, int]] = {pair: {} for pair in itertools.combinations(ids, 2)}
    for i in range(n):
        _, masks = scene.render(i)
        sil = {oid: scene.full_mask(i, oid) for oid in ids}
        for oid in ids:
            visible[oid][i] = masks[oid].sum()
            full[oid][i] = sil[oid].sum()
            assert not (masks[oid] & ~sil[oid]).any(), "a visible mask lies within the object's silhouette"
        for a, b in fronts:
            both = sil[a] & sil[b]
            if both.sum() < scene.crossing_min_px:
                continue
            va, vb = (masks[a] & both).sum(), (masks[b] & both).sum()
            assert not (va and vb), f"frame {i}: objects {a} and {b} both show where they overlap"
            if va or vb:
                fronts[(a, b)][i] = a if va else b
    return visible, full, fronts


def test_interface_and_determinism(scene) -> None:
    assert (scene.width, scene.height, scene.num_frames, scene.fps) == (640, 480, 300, 30.0)
    assert scene.ids == (1, 2, 3, 4, 5)
    assert scene.leaving_object == 3 and scene.small_fast_object == 4
    again = hard_scene(seed=0)
    other = hard_scene(seed=1)
    for i in (0, 137, 299):
        image, masks = scene.render(i)
        assert image.shape == (480, 640, 3) and image.dtype == np.uint8
        assert set(masks) == set(scene.ids)
        assert all(m.shape == (480, 640) and m.dtype == bool for m in masks.values())
        image2, masks2 = again.render(i)
        assert np.array_equal(image, image2)
        assert all(np.array_equal(masks[k], masks2[k]) for k in masks)
        assert np.abs(image.astype(int) - other.render(i)[0].astype(int)).mean() > 20  # another seed, another clip
    with pytest.raises(IndexError):
        scene.render(300)
    with pytest.raises(ConfigError):
        hard_scene(num_objects=6)
    small = hard_scene(320, 240, seconds=1, num_objects=2)
    assert small.ids == (1, 2) and small.leaving_object is None and small.num_frames == 30


def test_ground_truth_is_exactly_the_drawn_pixels(scene) -> None:
    # The same clip with objects in flat colours and no lighting/noise: each
    # object's mask is exactly the pixels of its colour.
    solid = hard_scene(solid=True, effects=False)
    for i in (0, 40, 75, 150, 225, 262):
        image, masks = scene.render(i)
        s_image, s_masks = solid.render(i)
        union = np.zeros((480, 640), bool)
        for oid in scene.ids:
            assert np.array_equal(masks[oid], s_masks[oid]), "the solid variant has the same geometry"
            assert not (masks[oid] & union).any(), "visible masks are disjoint"
            union |= masks[oid]
            if masks[oid].any():
                colour = s_image[masks[oid]][0]
                painted = np.all(s_image == colour, axis=-1)
                assert np.array_equal(painted, masks[oid]), f"frame {i} object {oid}"
        # The front-most object shows whole.
        front = next(oid for oid in reversed(scene.depth_order(i)) if masks[oid].any())
        assert np.array_equal(masks[front], scene.full_mask(i, front))
        # In the textured clip, every pixel outside the masks is the background's
        # (same camera, lighting and noise) and nearly every pixel inside is not.
        background = scene.render_background(i)
        assert np.array_equal(image[~union], background[~union])
        for oid in scene.ids:
            if masks[oid].sum() > 100:
                changed = np.any(image[masks[oid]] != background[masks[oid]], axis=-1).mean()
                assert changed > 0.95, f"frame {i} object {oid}: only {changed:.1%} of its mask differs from the background"


def test_the_leaving_object_is_out_of_frame_for_over_two_seconds(scene, clip_stats) -> None:
    visible, full, _ = clip_stats
    area = visible[scene.leaving_object]
    out = area < 150
    # Longest run of frames with (almost) nothing of it visible.
    best, start = (0, 0), None
    for i, o in enumerate(np.append(out, False)):
        if o and start is None:
            start = i
        elif not o and start is not None:
            best = max(best, (start, i), key=lambda r: r[1] - r[0])
            start = None
    first, stop = best
    assert stop - first >= 2 * scene.fps
    assert 0 < first and stop < scene.num_frames
    assert area[:first].max() > 3000 and area[stop:].max() > 3000, "present before and after"
    assert area[: first // 2].min() > 1000 and area[stop + (scene.num_frames - stop) // 2 :].min() > 1000
    # The metadata names the frames where not one of its pixels is in the frame.
    meta = scene.out_of_frame
    assert len(meta) >= 2 * scene.fps and first <= meta.start and meta.stop <= stop
    assert full[scene.leaving_object][meta.start : meta.stop].max() == 0
    assert full[scene.leaving_object][meta.start - 1] > 0 and full[scene.leaving_object][meta.stop] > 0


def test_each_crossing_pair_takes_turns_in_front(scene, clip_stats) -> None:
    _, _, fronts = clip_stats
    crossing = {pair: seen for pair, seen in fronts.items() if seen}
    assert len(crossing) >= 3 and (1, 2) in crossing
    for (a, b), seen in crossing.items():
        assert set(seen.values()) == {a, b}, f"objects {a} and {b} cross, but only {set(seen.values())} is ever in front"
    # The metadata agrees with the pixels.
    assert {(c.a, c.b) for c in scene.crossings} == set(crossing)
    for c in scene.crossings:
        judged = {crossing[(c.a, c.b)].get(i) for i in range(c.start, c.stop)} - {None}
        assert judged == {c.front}
    # Objects 1 and 2: 1 in front the first time, 2 the second.
    one_two = [c.front for c in scene.crossings if (c.a, c.b) == (1, 2)]
    assert one_two == [1, 2]


def test_the_camera_moves(scene) -> None:
    still = hard_scene(effects=False)  # no noise or flicker: background differences are motion
    for i in (10, 100, 200):
        a, b = still.render_background(i), still.render_background(i + 5)
        assert np.abs(a.astype(int) - b.astype(int)).mean() > 10
    cam = np.array([scene.camera(i) for i in range(scene.num_frames)])
    zoom = np.sqrt(np.linalg.det(cam[:, :, :2]))
    roll = np.degrees(np.arctan2(cam[:, 1, 0], cam[:, 0, 0]))
    assert zoom.max() / zoom.min() > 1.2
    assert roll.max() - roll.min() > 6
    # Where the canvas point under the frame centre is: the pan.
    centre = np.array([np.linalg.solve(c[:, :2], np.array([319.5, 239.5]) - c[:, 2]) for c in cam])
    assert np.ptp(centre[:, 0]) > 0.5 * scene.width and np.ptp(centre[:, 1]) > 0.2 * scene.height
    # Shake: frame-to-frame jitter on top of the smooth path.
    assert np.abs(np.diff(cam[:, :, 2], n=2, axis=0)).max() > 1.0
    gains = np.array([scene.gain(i) for i in range(scene.num_frames)])
    assert gains.max() - gains.min() > 0.2
    assert np.abs(np.diff(gains)).max() > 0.1  # an exposure step


def test_objects_move_rotate_and_deform(scene, clip_stats) -> None:
    _, full, _ = clip_stats
    for oid in (1, 2, 3, 5):
        hu, areas = [], []
        for i in range(0, scene.num_frames, 6):
            m = scene.full_mask(i, oid)
            ys, xs = np.nonzero(m)
            if not len(xs) or xs.min() == 0 or ys.min() == 0 or xs.max() == 639 or ys.max() == 479:
                continue  # clipped by the frame edge
            hu.append(cv2.HuMoments(cv2.moments(m.astype(np.uint8), True))[0, 0])
            areas.append(m.sum())
        assert max(areas) / min(areas) > 1.4, f"object {oid} changes size"
        # Hu's first invariant ignores position, rotation and scale: it changes only when the shape does.
        assert max(hu) - min(hu) > 0.004, f"object {oid} deforms"
    fast = scene.small_fast_object
    centres = np.array([scene.center(i, fast) for i in range(scene.num_frames)])
    speed = np.hypot(*np.diff(centres, axis=0).T)
    assert speed.max() > 18 and speed.min() < 5  # fast, and accelerating
    assert np.median(full[fast]) < 1500 and full[fast].min() > 0  # small, always in the frame
    # The non-rigid texture: the same object's pixels are not a rigid copy of the last frame's.
    tex = [scene._warped_texture(i, 1) for i in (0, 1)]
    assert np.abs(tex[0].astype(int) - tex[1].astype(int)).mean() > 1.0


def test_write_davis_reads_back(tmp_path) -> None:
    short = hard_scene(seconds=1)
    video, folder = write_davis(short, tmp_path, "hardclip")
    assert video == tmp_path / "hardclip.mp4" and folder == tmp_path / "Annotations" / "480p" / "hardclip"
    pngs = sorted(folder.glob("*.png"))
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(short.num_frames)]
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
    assert len(decoded) == short.num_frames
    for i in (0, 13, short.num_frames - 1):
        image, masks = short.render(i)
        png = Image.open(pngs[i])
        assert png.mode == "P" and png.getpalette()[3:6] == [128, 0, 0]
        label = np.asarray(png)
        assert set(np.unique(label)) <= {0, *short.ids}
        for oid, m in masks.items():
            assert np.array_equal(label == oid, m)
        mse = np.mean((decoded[i].astype(float) - image.astype(float)) ** 2)
        assert 10 * np.log10(255**2 / mse) > 28  # compressed, but the same picture


def test_the_scene_tools_work_on_it(tmp_path) -> None:
    short = hard_scene(320, 240, seconds=0.5, seed=3)
    frames = read_gt(write_gt(short, tmp_path / "gt.npz"))
    assert len(frames) == short.num_frames
    _, masks = short.render(7)
    assert all(np.array_equal(frames[7][k], masks[k]) for k in masks)
    for oid, m in masks.items():
        if m.sum() > 50:
            assert pick_object(masks, box=mask_to_box(m)) == oid
    path = write_video(short, tmp_path / "clip.mp4", fps=short.fps)
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == short.num_frames


def test_make_hard_scene_script(tmp_path, capsys) -> None:
    from script_loader import load_script

    script = load_script("make_hard_scene")
    assert script.main([str(tmp_path), "--name", "tiny", "--seconds", "0.5", "--size", "160x120", "--seed", "2"]) == 0
    assert (tmp_path / "tiny.mp4").stat().st_size > 0
    assert len(list((tmp_path / "Annotations" / "480p" / "tiny").glob("*.png"))) == 15
    assert "tiny.mp4" in capsys.readouterr().out


def test_make_hard_scene_script_refuses_an_unwritable_folder_in_one_line(tmp_path, capsys) -> None:
    from script_loader import load_script

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    script = load_script("make_hard_scene")
    assert script.main([str(blocker / "out"), "--seconds", "0.2", "--size", "160x120"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot write the scene to") and "writable folder" in err[0]
