"""scripts/eval_vos.py: DAVIS figures (and their agreement with TrackEval), the ground-truth
oracle, and end-to-end runs on a DAVIS-layout folder written here and on ../shared/davis."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from script_loader import load_script

ev = load_script("eval_vos")
import realtime_sam.testing.oracle as oracle_mod

SHARED_DAVIS = Path(__file__).resolve().parents[1].parent / "shared" / "davis"


def _square(shape, y, x, side):
    m = np.zeros(shape, bool)
    m[y : y + side, x : x + side] = True
    return m


# -- figures -------------------------------------------------------------------------------


def test_identical_masks_score_one_and_disjoint_masks_zero():
    a = _square((120, 160), 20, 30, 40)
    b = _square((120, 160), 70, 100, 30)
    assert ev.region_j(a, a) == 1.0 and ev.boundary_f(a, a) == 1.0
    assert ev.region_j(a, b) == 0.0 and ev.boundary_f(a, b) == 0.0
    empty = np.zeros_like(a)
    assert ev.region_j(empty, empty) == 1.0 and ev.boundary_f(empty, empty) == 1.0  # DAVIS: nothing vs nothing
    assert ev.boundary_f(empty, a) == 0.0 and ev.boundary_f(a, empty) == 0.0
    assert ev.region_j(a, _square((120, 160), 20, 30, 20)) == pytest.approx(400 / 1600)


def test_boundary_map_is_a_one_pixel_ring():
    b = ev.boundary_map(_square((50, 50), 10, 10, 20))
    # The ring sits half a pixel towards the origin: rows/cols 9..29, 4 * 20 pixels.
    assert np.count_nonzero(b) == 80
    ys, xs = np.nonzero(b)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (9, 29, 9, 29)


def test_shifted_square_boundary_f():
    # 200x200: tolerance ceil(0.008 * 282.8) = 3 px. A 40 px square.
    gt = _square((200, 200), 80, 60, 40)
    # Shifted by 2 px: every boundary pixel lies within 3 px of the other boundary.
    assert ev.boundary_f(_square((200, 200), 80, 62, 40), gt) == 1.0
    # Shifted by 10 px: of each 4*40-pixel ring, the top and bottom rows match over
    # 40 + 3 - 10 + 1 = 34 pixels each and the near side only within 3 px of the corners:
    # 2 * 34 + 2 * 3 = 74 of 160, for precision and recall alike.
    assert ev.boundary_f(_square((200, 200), 80, 70, 40), gt) == pytest.approx(74 / 160)
    # J of the same pair: 30 * 40 overlap over 50 * 40 union.
    assert ev.region_j(_square((200, 200), 80, 70, 40), gt) == pytest.approx(30 / 50)


def _blob(shape, cy, cx, ry, rx, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    r = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2
    wobble = rng.normal(0, 0.15, shape)
    wobble = cv2.GaussianBlur(wobble, (0, 0), 3)
    return r + wobble < 1.0


def _mask_pairs():
    shape = (96, 128)  # tolerance ceil(0.008 * 160) = 2 px
    pairs = [
        (_blob(shape, 48, 64, 20, 30, 0), _blob(shape, 50, 60, 22, 28, 1)),
        (_blob(shape, 10, 10, 25, 25, 2), _blob(shape, 12, 14, 20, 30, 3)),  # touches the top-left edge
        (_blob(shape, 90, 120, 30, 30, 4), _blob(shape, 85, 118, 25, 20, 5)),  # bottom-right edge and corner
        (np.zeros(shape, bool), _blob(shape, 48, 64, 10, 10, 6)),  # nothing predicted
        (_blob(shape, 30, 30, 8, 8, 7), _blob(shape, 70, 100, 8, 8, 8)),  # disjoint
        (_square(shape, 0, 0, 96) , _square(shape, 0, 0, 96)),  # fills the left part to the bottom edge
    ]
    return pairs


def test_figures_agree_with_trackeval():
    pytest.importorskip("trackeval")
    mask_utils = pytest.importorskip("pycocotools.mask")
    from trackeval.metrics import JAndF

    pairs = _mask_pairs()
    # Frame by frame against TrackEval's own F (and J through its sequence evaluation below).
    enc = lambda m: mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # noqa: E731
    f_theirs = JAndF._compute_f([[enc(g)] for _, g in pairs], [[enc(p)] for p, _ in pairs], 0, 0, 0.008)
    f_ours = [ev.boundary_f(p, g) for p, g in pairs]
    np.testing.assert_allclose(f_ours, f_theirs, rtol=0, atol=1e-12)
    assert 0.0 < np.mean(f_ours) < 1.0

    data = {
        "num_timesteps": len(pairs), "num_tracker_ids": 1, "num_gt_ids": 1,
        "gt_dets": [[enc(g)] for _, g in pairs], "tracker_dets": [[enc(p)] for p, _ in pairs],
        "gt_ids": [np.array([0]) for _ in pairs], "tracker_ids": [np.array([0]) for _ in pairs],
    }
    res = JAndF().eval_sequence(data)
    j_ours = [ev.region_j(p, g) for p, g in pairs]
    assert res["J-Mean"] == pytest.approx(np.mean(j_ours), abs=1e-9)
    assert res["F-Mean"] == pytest.approx(np.mean(f_ours), abs=1e-9)
    assert res["J&F"] == pytest.approx((np.mean(j_ours) + np.mean(f_ours)) / 2, abs=1e-9)


def _toy_sequence(areas_visible, fps=10.0):
    """A one-object sequence of 40x40 frames: a 20x20 square where ``areas_visible`` is true, else nothing."""
    labels = []
    for v in areas_visible:
        lab = np.zeros((40, 40), np.uint8)
        if v:
            lab[10:30, 10:30] = 1
        labels.append(lab)
    frames = [np.zeros((40, 40, 3), np.uint8) for _ in labels]
    return ev.VosSequence("toy", frames, labels, fps)


def test_reacquisition_delay_and_id_switches():
    vis = [1, 1, 1, 1, 0, 0, 1, 1, 1, 1]
    seq = _toy_sequence(vis)
    assert seq.objects == (1,) and seq.start == {1: 0}
    scorer = ev.SequenceScorer(seq)
    gt = seq.labels[0] == 1
    for i in range(len(vis)):
        if i in (6, 7):
            tracks = {7: gt}  # a new track covers it; the original (3) is absent
        else:
            tracks = {3: gt if vis[i] else np.zeros_like(gt)}
        scorer.add(i, tracks, {1: 3})
    s = scorer.summary()
    assert s["J"] == pytest.approx(6 / 8)  # 8 scored frames, the original track right in 6
    assert s["recall"] == pytest.approx(6 / 8)
    assert s["id_switches"] == 2  # 3 -> 7 -> 3
    (event,) = s["reacquisition"]
    assert event["gone"] == [4, 5] and event["back"] == 6
    assert event["delay_s"] == pytest.approx(2 / 10)  # found again at frame 8, at 10 fps

    # Never found again: "never" (None).
    scorer = ev.SequenceScorer(seq)
    for i in range(len(vis)):
        scorer.add(i, {3: gt} if i < 4 else {}, {1: 3})
    (event,) = scorer.summary()["reacquisition"]
    assert event["delay_s"] is None


# -- the oracle ----------------------------------------------------------------------------


def _oracle_scene():
    h, w = 120, 160
    image = np.zeros((h, w, 3), np.uint8)
    image[:, : w // 2] = (40, 160, 40)  # two flat background halves
    image[:, w // 2 :] = (200, 60, 60)
    a = np.zeros((h, w), bool)
    a[40:50, 10:150] = True  # a long bar
    b = np.zeros((h, w), bool)
    b[80:110, 100:130] = True  # a square
    image[a] = (255, 255, 255)
    image[b] = (0, 0, 255)
    return image, {1: a, 2: b}


def test_oracle_box_picks_the_object_and_clips_to_the_grown_box():
    image, gt = _oracle_scene()
    oracle = oracle_mod.GroundTruthOracle(lambda i: gt, [image])
    oracle.encode(image)
    box = np.array([10.0, 38.0, 90.0, 52.0])  # the bar's left part; IoU with its box 80*10/(80*14+140*10-800) > 0.1
    mask, iou, oid = oracle.answer(box=box)
    assert oid == 1 and iou == pytest.approx(0.92)
    grown = oracle_mod.grow_box(box, 0.15)  # x: 10 - 12 = -2 .. 90 + 12 = 102
    assert grown[2] == pytest.approx(102.0)
    expected = gt[1].copy()
    expected[:, 102:] = False
    np.testing.assert_array_equal(mask, expected)
    # Through the decoder's 256x256 logits and back: the same mask up to resampling, C=1 or 3.
    low, ious = oracle.decode(None, None, box[None], np.zeros((1, 256, 256), np.float32), False)
    assert low.shape == (1, 1, 256, 256) and low.dtype == np.float32 and ious.shape == (1, 1)
    up = oracle.masks(low[:, 0], (120, 160))[0]
    assert ev.region_j(up, expected) > 0.9
    low3, ious3 = oracle.decode(None, None, np.stack([box, [95.0, 78.0, 135.0, 112.0]]), None, True)
    assert low3.shape == (2, 3, 256, 256) and np.allclose(ious3, 0.92)
    sq = oracle.masks(low3[1], (120, 160))
    assert all(ev.region_j(m, gt[2]) > 0.9 for m in sq)  # the square, three copies


def test_oracle_point_and_background_answers():
    image, gt = _oracle_scene()
    oracle = oracle_mod.GroundTruthOracle(lambda i: gt, [image])
    oracle.encode(image)
    mask, iou, oid = oracle.answer(points=np.array([[20.0, 20.0], [110.0, 95.0]]), labels=np.array([0, 1]))
    assert oid == 2 and iou == pytest.approx(0.92)  # the first label-1 point, on the square
    np.testing.assert_array_equal(mask, gt[2])
    # A point on no object: the background segment under it, less the objects, IoU 0.85.
    mask, iou, oid = oracle.answer(points=np.array([[20.0, 90.0]]), labels=np.array([1]))
    assert oid is None and iou == pytest.approx(0.85)
    assert mask[90, 20] and not (mask & (gt[1] | gt[2])).any()
    # The left half's segment, within a square a third of the longer side around the point (it
    # is segmented there: the whole frame took a second of a live round); not the right half.
    half = 160 / 6.0
    window = np.zeros_like(mask)
    window[int(90 - half) : int(np.ceil(90 + half + 1)), : int(np.ceil(20 + half + 1))] = True
    assert mask[window & ~(gt[1] | gt[2])].mean() > 0.8 and not (mask & ~window).any() and not mask[:, 82:].any()
    # A box on no object: the segment under its centre; the runner reports 0.85.
    low, ious = oracle.decode(None, None, np.array([[100.0, 5.0, 150.0, 30.0]]), None, False)
    assert ious[0, 0] == pytest.approx(0.85)
    m = oracle.masks(low[:, 0], (120, 160))[0]
    assert m[15, 125] and not m[:, :70].any()
    assert oracle.answers["background"] == 2


def test_oracle_recognises_frames_and_serves_background_embeddings():
    image, gt = _oracle_scene()
    other = image.copy()
    other[0, 0] = 1
    seen = []
    oracle = oracle_mod.GroundTruthOracle(lambda i: seen.append(i) or (gt if i == 1 else {}), [image, other])
    emb = oracle.embed(other)
    oracle.encode(image)  # frame 0: no objects
    _, iou, oid = oracle.answer(box=np.array([95.0, 78.0, 135.0, 112.0]))
    assert oid is None
    oracle.use(emb)  # frame 1 current
    assert oracle.current_index == 1
    assert oracle.answer(box=np.array([95.0, 78.0, 135.0, 112.0]))[2] == 2
    assert sorted(seen) == [0, 1]
    with pytest.raises(RuntimeError, match="not among the images"):
        oracle.encode(np.zeros_like(image))
    oracle.encode(np.zeros_like(image), index=1)  # an index passed in instead
    assert oracle.current_index == 1


# -- end to end ----------------------------------------------------------------------------


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    t = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3)).astype(np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(t, (0, 0), 1.0)


def _write_davis(root: Path, frames: int = 12):
    """A DAVIS-layout folder: 'one' (a binary 0/255 PNG, one object) and 'two' (an indexed PNG, two
    objects, object 2 hidden in frames 5-6)."""
    from PIL import Image

    h, w = 120, 160
    bg = _texture(h, w, 0)
    obj = _texture(h, w, 1)
    yy, xx = np.mgrid[:h, :w]
    for name in ("one", "two"):
        (root / "JPEGImages" / "480p" / name).mkdir(parents=True)
        (root / "Annotations" / "480p" / name).mkdir(parents=True)
        for i in range(frames):
            image = bg.copy()
            lab = np.zeros((h, w), np.uint8)
            disk = (yy - 60) ** 2 + (xx - (40 + 4 * i)) ** 2 < 18**2
            image[disk] = np.roll(obj, 4 * i, axis=1)[disk]  # the texture moves with the disk
            if name == "one":
                lab[disk] = 255
                png = Image.fromarray(lab, mode="L")
            else:
                lab[disk] = 1
                if i not in (5, 6):
                    sq = (yy >= 85) & (yy < 110) & (xx >= 110 - 2 * i) & (xx < 135 - 2 * i)
                    image[sq] = 255 - np.roll(obj, -2 * i, axis=1)[sq]
                    lab[sq] = 2
                png = Image.fromarray(lab, mode="P")
                png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (253 * 3))
            cv2.imwrite(str(root / "JPEGImages" / "480p" / name / f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
            png.save(root / "Annotations" / "480p" / name / f"{i:05d}.png")


def test_end_to_end_on_a_davis_layout_folder(tmp_path, capsys):
    from PIL import Image

    _write_davis(tmp_path / "data")
    out = tmp_path / "out.json"
    rc = ev.main([
        "--root", str(tmp_path / "data"), "--network", "none", "--no-live", "--reencode", "1,5", "--flow", "5",
        "--json", str(out), "--save-masks", str(tmp_path / "masks"),
    ])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| engine N=1 |" in text and "| flow N=5 |" in text and "| two |" in text
    res = json.loads(out.read_text())
    assert res["sequences"] == ["one", "two"]
    confs = res["configurations"]
    assert list(confs) == ["engine N=1", "engine N=5", "flow N=5"]
    for name, conf in confs.items():
        for seq in ("one", "two"):
            s = conf["sequences"][seq]
            assert 0.0 <= s["J"] <= 1.0 and 0.0 <= s["F"] <= 1.0 and s["J&F"] == pytest.approx((s["J"] + s["F"]) / 2)
        assert set(conf["sequences"]["two"]["objects"]) == {"1", "2"}
        assert set(conf["sequences"]["one"]["objects"]) == {"255"}
    n1 = confs["engine N=1"]
    assert n1["sequences"]["one"]["J"] > 0.8 and n1["sequences"]["two"]["J"] > 0.8
    assert n1["mean"]["recall"] > 0.9
    assert confs["flow N=5"]["mean"]["J"] > 0.7
    two = n1["sequences"]["two"]["objects"]["2"]
    assert two["frames"] == 10  # hidden in 2 of 12 frames
    (event,) = n1["sequences"]["two"]["reacquisition"]
    assert event["object"] == 2 and event["gone"] == [5, 6] and event["back"] == 7
    assert event["delay_s"] is None or event["delay_s"] >= 0
    # The masks as DAVIS indexed PNGs with the ground truth's ids.
    png = tmp_path / "masks" / "engine-N1" / "two" / "00003.png"
    with Image.open(png) as im:
        assert im.mode == "P"
        values = set(np.unique(np.asarray(im)).tolist())
    assert values == {0, 1, 2}
    assert len(list((tmp_path / "masks" / "flow-N5" / "one").glob("*.png"))) == 12


def test_reverse_plays_each_sequence_backwards(tmp_path, capsys):
    _write_davis(tmp_path / "data")
    root = tmp_path / "data"
    fwd = ev.load_sequence(root, "two", None)
    back = ev.load_sequence(root, "two", None, reverse=True)
    assert len(back) == len(fwd) == 12
    for i in range(12):
        assert np.array_equal(back.frames[i], fwd.frames[11 - i]) and np.array_equal(back.labels[i], fwd.labels[11 - i])
    # Object 2 is hidden in frames 5-6 forwards, so in frames 5-6 backwards too; object 1's
    # disk now moves left, and the engine follows it (its prompt: its box on the last frame).
    out = tmp_path / "out.json"
    assert ev.main(["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", "", "--reverse", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["reverse"] is True
    two = res["configurations"]["engine N=5"]["sequences"]["two"]
    (event,) = two["reacquisition"]
    assert event["gone"] == [5, 6]
    assert two["objects"]["1"]["J"] > 0.8


def test_bounce_plays_each_sequence_there_and_back(tmp_path, capsys):
    # Three legs: forward, backward, forward, each turn's frame shown once (12 -> 34 frames).
    _write_davis(tmp_path / "data")
    root = tmp_path / "data"
    fwd = ev.load_sequence(root, "two", None)
    bounced = ev.load_sequence(root, "two", None, legs=3)
    order = list(range(12)) + list(range(10, -1, -1)) + list(range(1, 12))
    assert len(bounced) == len(order) == 34
    for i, k in enumerate(order):
        assert np.array_equal(bounced.frames[i], fwd.frames[k]) and np.array_equal(bounced.labels[i], fwd.labels[k])
    # Object 2, hidden in frames 5-6, is hidden three times; each time back, the engine finds it.
    out = tmp_path / "out.json"
    args = ["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", "", "--bounce", "3"]
    assert ev.main([*args, "--sequences", "two", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["bounce"] == 3
    two = res["configurations"]["engine N=5"]["sequences"]["two"]
    assert [e["gone"] for e in two["reacquisition"]] == [[5, 6], [16, 17], [27, 28]]
    assert two["objects"]["1"]["frames"] == 34 and two["objects"]["1"]["J"] > 0.8
    assert ev.main([*args[:-2], "--bounce", "0"]) == 2
    assert "--bounce must be >= 1" in capsys.readouterr().err


def test_stride_and_scale_make_faster_smaller_clips_of_the_same_footage(tmp_path, capsys):
    # Every third frame at a third of the frame rate, and frames and labels at 3/4 size: a clip with
    # three times the motion a frame at 120x90, that the engine still follows.
    _write_davis(tmp_path / "data")
    root = tmp_path / "data"
    fwd = ev.load_sequence(root, "two", None, fps=24.0)
    fast = ev.load_sequence(root, "two", None, fps=24.0, stride=3, scale=0.75)
    assert len(fast) == 4 and fast.fps == 8.0 and fast.size == (90, 120)
    for i, k in enumerate(range(0, 12, 3)):
        assert np.array_equal(fast.labels[i], cv2.resize(fwd.labels[k], (120, 90), interpolation=cv2.INTER_NEAREST))
        assert np.array_equal(fast.frames[i], cv2.resize(fwd.frames[k], (120, 90), interpolation=cv2.INTER_AREA))
    assert not fast.frames[0].flags.writeable  # as every loaded frame: the engine must not draw on them
    out = tmp_path / "out.json"
    args = ["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", "", "--sequences", "one"]
    assert ev.main([*args, "--stride", "2", "--scale", "0.75", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["stride"] == 2 and res["scale"] == 0.75
    (one,) = res["configurations"]["engine N=5"]["sequences"]["one"]["objects"].values()
    assert one["frames"] == 6 and one["J"] > 0.8
    assert ev.main([*args, "--stride", "0"]) == 2
    assert "--stride must be >= 1" in capsys.readouterr().err
    assert ev.main([*args, "--scale", "0"]) == 2
    assert "--scale must be between" in capsys.readouterr().err


def test_bad_input_exits_2(tmp_path, capsys):
    assert ev.main(["--root", str(tmp_path / "nope"), "--no-live"]) == 2
    assert "data folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ev.main(["--root", str(tmp_path / "empty"), "--no-live"]) == 2
    assert "Annotations/480p" in capsys.readouterr().err
    (tmp_path / "empty" / "Annotations" / "480p").mkdir(parents=True)
    assert ev.main(["--root", str(tmp_path / "empty"), "--no-live"]) == 2
    assert "no sequences found" in capsys.readouterr().err
    _write_davis(tmp_path / "data", frames=2)
    assert ev.main(["--root", str(tmp_path / "data"), "--no-live", "--sequences", "one,zzz"]) == 2
    assert "unknown sequence(s) zzz" in capsys.readouterr().err
    assert ev.main(["--root", str(tmp_path / "data"), "--network", "none", "--no-live", "--sequences", ","]) == 2
    assert "names no sequence" in capsys.readouterr().err
    # The model's inputs are checked before it loads: a missing --weights, a device not here.
    real = ["--root", str(tmp_path / "data"), "--network", "real", "--no-live"]
    assert ev.main([*real, "--weights", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: weights file not found") and "Traceback" not in "\n".join(err)
    if not torch.cuda.is_available():
        assert ev.main([*real, "--device", "cuda"]) == 2
        assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: device 'cuda' is not available")
    assert ev.main(["--root", str(tmp_path / "data"), "--network", "none"]) == 2
    assert "--no-live" in capsys.readouterr().err
    # A sequence's video that is not a video: one line naming it, exit 2.
    broken = tmp_path / "broken"
    (broken / "Annotations" / "480p" / "x").mkdir(parents=True)
    label = tmp_path / "data" / "Annotations" / "480p" / "one" / "00000.png"
    (broken / "Annotations" / "480p" / "x" / "00000.png").write_bytes(label.read_bytes())
    (broken / "x.mp4").write_bytes(b"\x00" * 4096)
    assert ev.main(["--root", str(broken), "--network", "none", "--no-live"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: sequence x:") and "x.mp4" in err[-1]


def test_shared_davis_first_frames(tmp_path):
    if not (SHARED_DAVIS / "goat.mp4").exists():
        pytest.skip(f"the shared DAVIS sequences are not at {SHARED_DAVIS} (they exist only on the project's machines)")
    out = tmp_path / "out.json"
    rc = ev.main([
        "--root", str(SHARED_DAVIS), "--sequences", "goat", "--max-frames", "10", "--network", "none", "--no-live",
        "--reencode", "1", "--flow", "5", "--json", str(out),
    ])
    assert rc == 0
    confs = json.loads(out.read_text())["configurations"]
    goat = confs["engine N=1"]["sequences"]["goat"]
    assert goat["objects"]["255"]["frames"] == 10
    assert goat["J"] > 0.85 and goat["F"] > 0.85
    assert confs["flow N=5"]["sequences"]["goat"]["J"] > 0.8


def test_live_round_with_the_real_network(tmp_path, checkpoint_path):
    # The file played at 4 fps through a real-time pipeline, the real (random-weight) network
    # paying every cost: frames are dropped while it encodes, every frame is still scored.
    _write_davis(tmp_path / "data", frames=12)
    out = tmp_path / "out.json"
    rc = ev.main([
        "--root", str(tmp_path / "data"), "--sequences", "two", "--network", "real", "--weights", str(checkpoint_path),
        "--reencode", "5", "--flow", "", "--fps", "4", "--json", str(out),
    ])
    assert rc == 0
    confs = json.loads(out.read_text())["configurations"]
    assert list(confs) == ["engine N=5", "live"]
    live = confs["live"]
    stats = live["live"]["two"]
    assert 1 <= stats["processed"] <= stats["frames"] == 12
    objects = live["sequences"]["two"]["objects"]
    assert objects["1"]["frames"] == 12 and objects["2"]["frames"] == 10  # every source frame scored
    assert 0.0 < live["mean"]["J"] <= 1.0  # the prompts' background encode landed within the 3 s clip
    assert confs["engine N=5"]["mean"]["J"] > 0.8  # the oracle answers alike over the real network


def test_simulated_live_clock_drops_frames_while_encodes_run(tmp_path):
    # The CPU preset on the simulated clock: at 10 fps an encode of 50 ms lands before the next
    # frame, one of 450 ms lands 5 frames later. Without first looks, frames before the first
    # landing show nothing; the figures do not depend on the machine's load.
    _write_davis(tmp_path / "data", frames=12)
    seq = ev.load_sequence(tmp_path / "data", "one", None, fps=10.0)
    from realtime_sam.config import load_config

    config = load_config("cpu", ["engine.first_look=false"])
    quick, slow = [
        ev.run_engine_simulated(seq, oracle_mod.GroundTruthOracle(seq.gt, seq.frames), config, encode_ms=ms)
        for ms in (50.0, 450.0)
    ]
    q, s = quick[0].summary(), slow[0].summary()
    assert q["objects"]["255"]["frames"] == s["objects"]["255"]["frames"] == 12  # every source frame scored
    assert q["J"] > 0.8
    assert s["J"] < q["J"] - 0.2  # about 5 of 12 frames pass before the first mask
    assert 1 <= slow[1]["processed"] <= quick[1]["processed"] <= 12
    # With the oracle's own work left out, the same run gives the same figures again.
    again = ev.run_engine_simulated(seq, oracle_mod.GroundTruthOracle(seq.gt, seq.frames), config, encode_ms=450.0)
    assert again[0].summary()["J"] == pytest.approx(s["J"], abs=0.05)
    # With first looks (the preset's default) the object is shown meanwhile, by GrabCut in its box.
    looked = ev.run_engine_simulated(seq, oracle_mod.GroundTruthOracle(seq.gt, seq.frames), load_config("cpu"), encode_ms=450.0)
    assert looked[0].summary()["J"] > s["J"] + 0.2


def test_simulated_shared_encoder_queues_encodes_and_caps_the_frames(tmp_path, capsys):
    # One of four streams on one encoder: an encode starts three encodes (300 ms) after it was
    # asked for, and the frame budget lets the stream process 4 of its 10 frames a second.
    _write_davis(tmp_path / "data", frames=30)
    seq = ev.load_sequence(tmp_path / "data", "one", None, fps=10.0)
    from realtime_sam.config import load_config

    config = load_config("cpu", ["engine.first_look=false"])
    oracles = [oracle_mod.GroundTruthOracle(seq.gt, seq.frames) for _ in range(2)]
    alone = ev.run_engine_simulated(seq, oracles[0], config, encode_ms=100.0)
    shared = ev.run_engine_simulated(seq, oracles[1], config, encode_ms=100.0, streams=4)
    assert alone[1]["processed"] >= 25
    assert 10 <= shared[1]["processed"] <= 13  # 4 frames a second over 3 s
    # Fewer encodes, the first one later (its start waits 300 ms): fewer frames show the object.
    assert 1 <= oracles[1].encodes < oracles[0].encodes
    assert shared[0].summary()["J"] < alone[0].summary()["J"]
    assert ev.main(["--root", str(tmp_path / "data"), "--no-live", "--live-sim", "--sim-streams", "0"]) == 2
    assert "--sim-streams must be >= 1" in capsys.readouterr().err


def test_live_sim_row_in_the_report(tmp_path, capsys):
    _write_davis(tmp_path / "data", frames=8)
    rc = ev.main(["--root", str(tmp_path / "data"), "--sequences", "one", "--network", "none", "--no-live",
                  "--live-sim", "--encode-ms", "100", "--reencode", "1", "--flow", "", "--fps", "10"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "| live-sim |" in out and "live-sim: " in out
    assert ev.main(["--root", str(tmp_path / "data"), "--no-live", "--live-sim", "--encode-ms", "0"]) == 2
    assert "--encode-ms must be > 0" in capsys.readouterr().err


def test_a_frame_or_annotation_missing_in_the_middle_keeps_the_rest_paired(tmp_path, capsys):
    # Frames and annotations are paired by number: one missing used to shift every later pair
    # (on DAVIS motocross-jump without 00010.png, J at N = 5 fell from 0.899 to 0.787).
    root = tmp_path / "data"
    _write_davis(root)
    full = ev.load_sequence(root, "two", None)
    (root / "Annotations" / "480p" / "two" / "00004.png").unlink()
    (root / "JPEGImages" / "480p" / "two" / "00008.jpg").unlink()
    seq = ev.load_sequence(root, "two", None)
    kept = [k for k in range(12) if k not in (4, 8)]
    assert len(seq) == len(kept)
    for i, k in enumerate(kept):
        assert np.array_equal(seq.frames[i], full.frames[k]) and np.array_equal(seq.labels[i], full.labels[k])
    err = capsys.readouterr().err
    assert "frame(s) 00004 have no annotation" in err and "annotation(s) 00008 have no frame" in err
    # --max-frames cuts the frames; the annotations past the cut are no fault.
    assert len(ev.load_sequence(root, "two", None, max_frames=3)) == 3
    assert "warning" not in capsys.readouterr().err


def test_an_annotation_or_frame_of_another_size_is_a_one_line_error(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "data"
    _write_davis(root)
    png = root / "Annotations" / "480p" / "one" / "00006.png"
    with Image.open(png) as im:
        im.resize((80, 60)).save(png)  # a later frame's: it used to end the run with a traceback
    args = ["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", "5"]
    assert ev.main([*args, "--sequences", "one"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: sequence one: annotation 00006.png is 80x60 but the frames are 160x120; give annotations of the frames' size"
    jpg = root / "JPEGImages" / "480p" / "two" / "00003.jpg"
    cv2.imwrite(str(jpg), np.zeros((60, 80, 3), np.uint8))
    assert ev.main([*args, "--sequences", "two"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("error: sequence two: frame 00003.jpg is 80x60 but the first is 160x120")


def test_stride_and_bounce_together(tmp_path):
    # Every other frame (6 of 12), then there and back three times: 3 * (6 - 1) + 1 frames
    # (the bounce used the length before the stride: an IndexError).
    _write_davis(tmp_path / "data")
    fwd = ev.load_sequence(tmp_path / "data", "two", None)
    seq = ev.load_sequence(tmp_path / "data", "two", None, stride=2, legs=3)
    order = [0, 2, 4, 6, 8, 10, 8, 6, 4, 2, 0, 2, 4, 6, 8, 10]
    assert len(seq) == len(order)
    assert all(np.array_equal(seq.labels[i], fwd.labels[k]) for i, k in enumerate(order))


def _strict_json(path: Path):
    """The file as strict JSON (NaN or Infinity in it is an error, as in every non-Python reader)."""
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_ctrl_c_part_way_reports_and_keeps_the_finished_sequences(tmp_path, capsys, monkeypatch):
    # Ctrl-C during the second sequence: the first one's figures are printed and in --json (written
    # after every sequence, whole), the half-run one is in neither; exit status 130. It used to end
    # with a traceback and no JSON at all.
    _write_davis(tmp_path / "data")
    out = tmp_path / "res" / "out.json"
    seen = []
    real_flow = ev.run_flow

    def flow(seq, *a, **k):
        if seq.name == "two":
            seen.append(_strict_json(out))  # already there, whole, with the first sequence
            raise KeyboardInterrupt
        return real_flow(seq, *a, **k)

    monkeypatch.setattr(ev, "run_flow", flow)
    try:
        rc = ev.main(["--root", str(tmp_path / "data"), "--network", "none", "--no-live", "--reencode", "5",
                      "--flow", "5", "--json", str(out)])
    except KeyboardInterrupt:
        pytest.fail("Ctrl-C escaped main: no report, no JSON")
    assert rc == 130
    (partial,) = seen
    assert partial["sequences"] == ["one"] and partial["complete"] is False
    res = _strict_json(out)
    assert res["sequences"] == ["one"] and res["complete"] is False
    for conf in res["configurations"].values():
        assert list(conf["sequences"]) == ["one"]
        assert conf["mean"]["J"] == pytest.approx(conf["sequences"]["one"]["J"])
    text = capsys.readouterr()
    assert "| one |" in text.out and "| two |" not in text.out
    assert text.err.strip().splitlines()[-1].startswith("interrupted: reported the 1 of 2 sequence(s)")
    assert not list(out.parent.glob("*.part"))


@pytest.mark.parametrize("when", ["mid-run", "at the end"])
def test_a_json_file_that_cannot_be_written_is_a_one_line_error(tmp_path, capsys, monkeypatch, when):
    # --json's folder removed during the run: the figures finished are printed, then one error line,
    # exit 1. Mid-run (the write after sequence 'one'), the run stops there; at the end (the folder
    # gone as the report prints), after both. Before: a FileNotFoundError traceback.
    import shutil

    _write_davis(tmp_path / "data", frames=6)
    out = tmp_path / "res" / "out.json"
    if when == "mid-run":
        real = ev.run_engine_file

        def run(seq, *a, **k):
            if seq.name == "one":
                shutil.rmtree(out.parent)
            return real(seq, *a, **k)

        monkeypatch.setattr(ev, "run_engine_file", run)
    else:
        real = ev.report

        def report(*a, **k):
            shutil.rmtree(out.parent)
            return real(*a, **k)

        monkeypatch.setattr(ev, "report", report)
    rc = ev.main(["--root", str(tmp_path / "data"), "--network", "none", "--no-live", "--reencode", "5",
                  "--flow", "", "--json", str(out)])
    assert rc == 1
    text = capsys.readouterr()
    assert "| one |" in text.out and (("| two |" in text.out) == (when == "at the end"))
    last = text.err.strip().splitlines()[-1]
    assert last.startswith(f"error: --json {out}: cannot write it (No such file or directory)")
    assert ("stopped after 1 of 2 sequence(s)" in last) == (when == "mid-run")
    assert "Traceback" not in text.err and not out.parent.exists()


def test_json_is_strict_and_a_sequence_with_nothing_to_score_says_so(tmp_path, capsys):
    # A sequence whose objects never reach 150 pixels has no figures: null in --json (it was NaN,
    # which only Python reads back), '-' in the tables, and a warning naming it.
    from PIL import Image

    root = tmp_path / "data"
    _write_davis(root)
    for png in (root / "Annotations" / "480p" / "one").glob("*.png"):
        Image.fromarray(np.zeros((120, 160), np.uint8), mode="L").save(png)
    out = tmp_path / "out.json"
    assert ev.main(["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", "",
                    "--json", str(out)]) == 0
    res = _strict_json(out)
    assert res["complete"] is True
    conf = res["configurations"]["engine N=5"]
    assert conf["sequences"]["one"]["J"] is None and conf["sequences"]["one"]["objects"] == {}
    assert conf["mean"]["J"] == pytest.approx(conf["sequences"]["two"]["J"])  # the mean over the scored one
    text = capsys.readouterr()
    assert "| one | - |" in text.out
    assert "warning: one: no object has 150 pixels in any frame" in text.err
    assert ev.main(["--root", str(root), "--network", "none", "--no-live", "--json", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def _trackeval_per_object(gt_maps, pred_maps, oid):
    """TrackEval's JAndF for object ``oid`` over the frames where its ground truth has >= 150 pixels."""
    from trackeval.metrics import JAndF
    from pycocotools import mask as mask_utils

    enc = lambda m: mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))  # noqa: E731
    frames = [i for i, g in enumerate(gt_maps) if np.count_nonzero(g == oid) >= ev.MIN_AREA]
    data = {
        "num_timesteps": len(frames), "num_tracker_ids": 1, "num_gt_ids": 1,
        "gt_dets": [[enc(gt_maps[i] == oid)] for i in frames], "tracker_dets": [[enc(pred_maps[i] == oid)] for i in frames],
        "gt_ids": [np.array([0]) for _ in frames], "tracker_ids": [np.array([0]) for _ in frames],
    }
    res = JAndF().eval_sequence(data)
    return res["J-Mean"], res["F-Mean"]


def test_multi_object_figures_are_those_of_the_masks_written(tmp_path):
    # Several objects whose tracks overlap: the figures must be those of the one-id-per-pixel PNGs
    # that --save-masks writes (what TrackEval's DAVIS loader reads). Each object's own mask used
    # to be scored, overlap and all, while the PNG gave the pixel to the higher id: on the hard
    # scene (seed 0, 4 s) the flow baseline's object 1 scored J 0.591, its PNGs 0.274.
    pytest.importorskip("trackeval")
    pytest.importorskip("pycocotools.mask")
    from PIL import Image

    shape = (96, 128)
    labels, preds = [], []
    for i in range(6):
        lab = np.zeros(shape, np.uint8)
        big = _blob(shape, 48, 50 + 2 * i, 26, 34, i)
        small = _blob(shape, 50, 80, 12, 14, 10 + i)
        lab[big] = 1
        lab[small] = 2  # in front of the big one
        labels.append(lab)
        # The big object's track covers the small one too (as a mask carried past an occluder
        # does); the small one's is shifted; a third, unprompted track lies over both.
        preds.append({10: (cv2.dilate(big.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0) | small,
                      11: np.roll(small, 2 + i, axis=1), 12: big | small})
    seq = ev.VosSequence("ov", [np.zeros((*shape, 3), np.uint8)] * 6, labels, 24.0)
    assert seq.objects == (1, 2) and set(seq.start) == {1, 2}
    scorer = ev.SequenceScorer(seq)
    writer = ev.MaskWriter(tmp_path / "ov")
    original = {1: 10, 2: 11}
    for i, tracks in enumerate(preds):
        scorer.add(i, tracks, original)
        writer.write(i, shape, tracks, original)
    written = [np.asarray(Image.open(tmp_path / "ov" / f"{i:05d}.png")) for i in range(6)]
    assert any(((p[10] & p[11]) & (lab == 1)).any() for p, lab in zip(preds, labels))  # the overlap is real
    s = scorer.summary()
    for oid in (1, 2):
        j, f = _trackeval_per_object(labels, written, oid)
        assert s["objects"][str(oid)]["J"] == pytest.approx(j, abs=1e-9)
        assert s["objects"][str(oid)]["F"] == pytest.approx(f, abs=1e-9)
    assert 0.3 < s["J"] < 0.95

    # And end to end: what the script wrote for the two-object sequence, read back by TrackEval.
    _write_davis(tmp_path / "data")
    out = tmp_path / "out.json"
    assert ev.main(["--root", str(tmp_path / "data"), "--sequences", "two", "--network", "none", "--no-live",
                    "--reencode", "15", "--flow", "5", "--json", str(out), "--save-masks", str(tmp_path / "m")]) == 0
    gts = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "data" / "Annotations" / "480p" / "two").glob("*.png"))]
    for conf, folder in (("engine N=15", "engine-N15"), ("flow N=5", "flow-N5")):
        objects = json.loads(out.read_text())["configurations"][conf]["sequences"]["two"]["objects"]
        written = [np.asarray(Image.open(p)) for p in sorted((tmp_path / "m" / folder / "two").glob("*.png"))]
        assert len(written) == len(gts) == 12
        for oid in (1, 2):
            j, f = _trackeval_per_object(gts, written, oid)
            assert objects[str(oid)]["J"] == pytest.approx(j, abs=1e-9) and objects[str(oid)]["F"] == pytest.approx(f, abs=1e-9)


def test_a_root_one_level_off_says_what_layout_is_expected_and_where_it_is(tmp_path, capsys):
    # The standard DAVIS zip unpacks to DAVIS/; giving its parent, or JPEGImages/480p itself, is a
    # one-line error that says what --root must hold and names the folder meant.
    _write_davis(tmp_path / "DAVIS", frames=2)
    for wrong in (tmp_path, tmp_path / "DAVIS" / "JPEGImages" / "480p"):
        assert ev.main(["--root", str(wrong), "--network", "none", "--no-live"]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert line.startswith(f"error: no Annotations/480p/ in {wrong} (--root must hold Annotations/480p/<seq>/00000.png")
        assert "JPEGImages/480p/<seq>/00000.jpg" in line and "<seq>.mp4" in line
        assert line.endswith(f"did you mean --root {tmp_path / 'DAVIS'}?")


def test_imageset_selects_the_split_of_a_standard_davis_folder(tmp_path, capsys):
    # Standard DAVIS holds train and val sequences in one Annotations/480p: --imageset 2017/val
    # takes ImageSets/2017/val.txt (one name a line), 2016's own files list frame paths.
    root = tmp_path / "DAVIS"
    _write_davis(root, frames=6)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("two\n")
    (root / "ImageSets" / "480p").mkdir(parents=True)
    (root / "ImageSets" / "480p" / "val.txt").write_text(
        "".join(f"/JPEGImages/480p/one/{i:05d}.jpg /Annotations/480p/one/{i:05d}.png\n" for i in range(6)))
    assert ev.imageset_names(root, "480p/val") == ["one"]
    out = tmp_path / "out.json"
    args = ["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", ""]
    assert ev.main([*args, "--imageset", "2017/val", "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["sequences"] == ["two"] and res["imageset"] == "2017/val"
    assert list(res["configurations"]["engine N=5"]["sequences"]) == ["two"]
    capsys.readouterr()
    assert ev.main([*args, "--imageset", "2016/val"]) == 2
    assert capsys.readouterr().err.strip() == f"error: --imageset 2016/val: no {root / 'ImageSets' / '2016' / 'val.txt'}; there are: 2017/val, 480p/val"
    assert ev.main([*args, "--imageset", "2017/val", "--sequences", "one"]) == 2
    assert "not both" in capsys.readouterr().err


def test_an_annotated_sequence_without_frames_is_named_not_dropped_silently(tmp_path, capsys):
    # A DAVIS folder whose JPEGImages/480p lacks a sequence that Annotations/480p holds (a partial
    # unpack): scoring "every sequence" used to leave it out without a word, so the mean was over
    # fewer sequences than the folder holds, and naming it said "unknown sequence".
    import shutil

    root = tmp_path / "DAVIS"
    _write_davis(root, frames=4)
    shutil.rmtree(root / "JPEGImages" / "480p" / "two")
    args = ["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", ""]
    out = tmp_path / "out.json"
    assert ev.main([*args, "--json", str(out)]) == 0
    err = capsys.readouterr().err
    warning = [line for line in err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "have no frames (two)" in warning[0], err
    assert str(root / "JPEGImages" / "480p" / "two") in warning[0] and "left out" in warning[0]
    assert json.loads(out.read_text())["sequences"] == ["one"]
    # Named, it is a one-line error that says what is missing (not "unknown sequence").
    assert ev.main([*args, "--sequences", "one,two"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: 1 annotated sequence(s) have no frames (two): add ") and "two.mp4" in line
    # No sequence with frames at all: the error says which have none.
    shutil.rmtree(root / "JPEGImages" / "480p" / "one")
    assert ev.main(args) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"error: no sequences found in {root}: 2 annotated sequence(s) have no frames (one, two)")


def test_a_sequence_annotated_in_its_first_frame_only_is_a_one_line_error(tmp_path, capsys):
    # DAVIS's test-dev and challenge sets (and a user's clip with one mask) annotate the first frame
    # only: it used to be "scored" on that frame alone, the given mask, J 0.97 with no tracking at all.
    root = tmp_path / "data"
    _write_davis(root, frames=6)
    for png in sorted((root / "Annotations" / "480p" / "one").glob("*.png"))[1:]:
        png.unlink()
    args = ["--root", str(root), "--network", "none", "--no-live", "--reencode", "5", "--flow", "5"]
    assert ev.main([*args, "--sequences", "one"]) == 2
    captured = capsys.readouterr()
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("error: sequence one: only frame 00000 of its 6 has an annotation") and "test-dev" in line
    assert "| one |" not in captured.out
    # A one-frame clip (--max-frames 1) is scored as before: its one frame is all there is.
    assert ev.main([*args, "--sequences", "one", "--max-frames", "1"]) == 0


def test_a_sequence_named_twice_is_run_once(tmp_path, capsys):
    _write_davis(tmp_path / "data", frames=4)
    out = tmp_path / "out.json"
    args = ["--root", str(tmp_path / "data"), "--network", "none", "--no-live", "--reencode", "5", "--flow", ""]
    assert ev.main([*args, "--sequences", "two,one,two", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["sequences"] == ["two", "one"]
    assert capsys.readouterr().out.count("| two |") == 1
