"""Auto-annotation: ``realtime-sam annotate`` and ``realtime_sam.annotate``.

Exact behaviour with a fixed-box detector and a model whose mask of a box is
the box (so every polygon, count and file is known in advance); the real
model (random checkpoint) for the one-batched-decode-per-image contract; an
Ultralytics YOLO built from its bundled YAML (random weights: a very low
``--conf`` makes it return boxes) for the integration, with the labels read
back by Ultralytics' own dataset loader.
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import realtime_sam
from realtime_sam.app.annotate import annotate, default_output_dir
from realtime_sam.app.cli import main
from realtime_sam.errors import ConfigError, DetectorError, SinkError, SourceError
from realtime_sam.output.labels import CocoWriter, LabeledObject
from realtime_sam.output.polygons import join_parts, kept_parts, mask_to_polygons, outline_parts
from realtime_sam.output.rle import decode_rle
from realtime_sam.testing.fakes import FixedBoxDetector

NAMES = {0: "person", 1: "bicycle", 2: "car"}


class BoxModel:
    """``InferenceModel``'s encode/decode/upscale where the mask of a box prompt is the box."""

    def __init__(self) -> None:
        self.decode_batches: list[int] = []
        self.encodes = 0

    def encode(self, image, image_format="RGB"):
        self.encodes += 1
        return image.shape[:2]

    def decode(self, embedding, boxes=None, multimask_output=False, **_):
        self.decode_batches.append(len(boxes))
        # The "logits" carry the boxes; upscale turns them into filled boxes.
        return torch.as_tensor(np.asarray(boxes, dtype=np.float32))[:, None, :], torch.ones(len(boxes), 1)

    def upscale(self, low, embedding):
        h, w = embedding
        out = torch.full((len(low), 1, h, w), -1.0)
        for i, (x0, y0, x1, y1) in enumerate(low[:, 0].round().int().tolist()):
            out[i, 0, y0:y1, x0:x1] = 1.0
        return out


class MaskModel(BoxModel):
    """Every box prompt gives the one ``mask``."""

    def __init__(self, mask: np.ndarray) -> None:
        super().__init__()
        self.mask = mask

    def upscale(self, low, embedding):
        logits = torch.as_tensor(np.where(self.mask, 1.0, -1.0), dtype=torch.float32)
        return logits[None, None].repeat(len(low), 1, 1, 1)


def _pycocotools_mask():
    try:
        import pycocotools.mask as coco_mask
    except ImportError:
        pytest.skip("pycocotools is not installed (it is in the test extra: pip install -e '.[test]'); it reads the COCO polygons back")
    return coco_mask


def _images(folder: Path, n: int = 3, size=(120, 160)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        img = np.full((*size, 3), 60 + 40 * i, np.uint8)
        cv2.rectangle(img, (10, 20), (60, 80), (20, 200, 30), -1)
        p = folder / f"img{i}.png"
        cv2.imwrite(str(p), img)
        paths.append(p)
    return paths


def _read_yolo(path: Path) -> list[tuple[int, np.ndarray]]:
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        rows.append((int(parts[0]), np.array([float(v) for v in parts[1:]]).reshape(-1, 2)))
    return rows


# ---------------------------------------------------------------- polygons


def test_largest_part_simplified_within_a_pixel_and_all_parts_on_request():
    mask = np.zeros((100, 120), bool)
    mask[10:60, 20:90] = True  # a rectangle: 4 corners once simplified
    mask[80:90, 100:110] = True  # a smaller second part
    largest = mask_to_polygons(mask)
    assert len(largest) == 1 and len(largest[0]) == 4
    assert {tuple(p) for p in largest[0].astype(int)} == {(20, 10), (89, 10), (89, 59), (20, 59)}
    both = mask_to_polygons(mask, segments="all")
    assert len(both) == 2 and len(both[1]) == 4
    # A disc: the simplified ring stays within 1 px of the traced contour.
    disc = np.zeros((200, 200), np.uint8)
    cv2.circle(disc, (100, 100), 60, 1, -1)
    ring = mask_to_polygons(disc.astype(bool))[0]
    traced = cv2.findContours(disc, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)[0][0].reshape(-1, 2)
    assert len(ring) < len(traced) / 5
    poly = ring.astype(np.float32).reshape(-1, 1, 2)
    assert max(abs(cv2.pointPolygonTest(poly, (float(x), float(y)), True)) for x, y in traced) <= 1.0 + 1e-6


def test_parts_joined_into_one_ring_cover_the_same_pixels():
    mask = np.zeros((100, 120), bool)
    mask[10:40, 10:40] = True
    mask[60:90, 70:110] = True
    mask[10:30, 80:100] = True
    ring = join_parts(mask_to_polygons(mask, segments="all", epsilon=0))
    filled = np.zeros(mask.shape, np.uint8)
    cv2.fillPoly(filled, [ring.round().astype(np.int32)], 1)
    inter = (filled.astype(bool) & mask).sum()
    assert inter == mask.sum()  # every pixel of every part
    assert filled.sum() - inter < 0.05 * mask.sum()  # plus the zero-width bridges' pixels only


def test_coco_outlines_fill_back_to_the_very_pixels_under_pycocotools_rule():
    # pycocotools fills a polygon with pixel corners at integer coordinates; outlines of the pixel
    # squares, pinches between diagonal neighbours included, must give back each part exactly.
    coco_mask = _pycocotools_mask()
    rng = np.random.default_rng(0)
    parts = 0
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 30, 2))
        mask = (rng.random((h, w)) < rng.uniform(0.2, 0.9)).astype(np.uint8)
        contours = kept_parts(mask, segments="all")
        for contour, ring in zip(contours, outline_parts(contours, epsilon=0)):
            steps = np.sign(np.diff(np.vstack([ring, ring[:1]]), axis=0))
            assert ((steps == 0).sum(1) == 1).all()  # along x or y,
            assert (np.any(steps != np.roll(steps, 1, axis=0), axis=1)).all()  # corner to corner
            part = np.zeros((h, w), np.uint8)
            cv2.drawContours(part, [contour], -1, 1, cv2.FILLED)
            back = coco_mask.decode(coco_mask.frPyObjects([ring.reshape(-1).tolist()], h, w))[:, :, 0]
            np.testing.assert_array_equal(back, part)
            parts += 1
    assert parts > 1000


def test_tiny_and_empty_masks_give_no_polygon():
    assert mask_to_polygons(np.zeros((10, 10), bool)) == []
    speck = np.zeros((50, 50), bool)
    speck[5:7, 5:7] = True
    assert mask_to_polygons(speck, min_area=10) == []


# ---------------------------------------------------------------- the dataset flow


def test_yolo_labels_one_batched_decode_per_image_and_a_summary(tmp_path: Path):
    data = tmp_path / "shots"
    _images(data, 3)
    boxes = [[10, 20, 61, 81], [80, 10, 150, 110], [100, 100, 102, 102]]  # the last one is tiny
    detector = FixedBoxDetector(boxes, [0, 2, 2], NAMES, scores=[0.9, 0.8, 0.7])
    model = BoxModel()
    summary = annotate(data, detector=detector, model=model, progress=False)
    out = tmp_path / "shots_auto_annotate_labels"
    assert summary.output_dir == out == default_output_dir(data)
    assert model.decode_batches == [3, 3, 3]  # every box of an image in one decoder call
    assert sorted(p.name for p in out.iterdir()) == ["img0.txt", "img1.txt", "img2.txt"]
    rows = _read_yolo(out / "img0.txt")
    assert [c for c, _ in rows] == [0, 2]
    # The filled box, as normalised corners (x / W, y / H).
    expected = {(10 / 160, 20 / 120), (60 / 160, 20 / 120), (60 / 160, 80 / 120), (10 / 160, 80 / 120)}
    assert {tuple(np.round(p, 5)) for p in rows[0][1]} == {tuple(np.round(p, 5)) for p in expected}
    assert all((xy >= 0).all() and (xy <= 1).all() for _, xy in rows)
    assert summary.images == summary.annotated == 3 and summary.skipped == 0
    assert summary.objects == {"person": 3, "car": 3}
    assert summary.too_small == 3 and summary.empty == 0
    assert "masks too small to keep: 3" in summary.text() and "person: 3" in summary.text()


def test_conf_classes_and_max_det_apply_to_any_detector(tmp_path: Path):
    data = tmp_path / "d"
    _images(data, 1)
    boxes = [[0, 0, 40, 40], [50, 0, 90, 40], [100, 0, 140, 40], [0, 60, 40, 100]]
    detector = FixedBoxDetector(boxes, [0, 2, 2, 1], NAMES, scores=[0.9, 0.3, 0.8, 0.95])
    out = tmp_path / "o"
    annotate(data, detector=detector, model=BoxModel(), output_dir=out, conf=0.5, classes="person,car", progress=False)
    assert [c for c, _ in _read_yolo(out / "img0.txt")] == [0, 2]  # bicycle: not asked for; car 0.3: below conf
    out2 = tmp_path / "o2"
    annotate(data, detector=detector, model=BoxModel(), output_dir=out2, conf=0.0, classes=[2, 0], max_det=2, progress=False)
    assert [c for c, _ in _read_yolo(out2 / "img0.txt")] == [0, 2]  # the two best of those classes
    with pytest.raises(DetectorError, match="no class 'zebra'"):
        annotate(data, detector=detector, model=BoxModel(), output_dir=tmp_path / "o3", classes="zebra", progress=False)


def test_a_plain_function_detector_needs_names_and_says_so_before_any_output(tmp_path: Path):
    # README: annotate(detector=fn) takes a callable that returns BoxDetections and has `names`. A plain
    # function without them raised AttributeError ("'function' object has no attribute 'names'") once the
    # first image was detected; now a one-line TypeError at the call says what to add, and nothing is made.
    from realtime_sam.types import BoxDetections

    data = tmp_path / "d"
    _images(data, 1)

    def my_detector(image_bgr):
        return BoxDetections([[0, 0, 40, 40]], [0.9], [2], NAMES)

    out = tmp_path / "o"
    with pytest.raises(TypeError, match=r"my_detector has no names .*my_detector\.names = ") as info:
        annotate(data, detector=my_detector, model=BoxModel(), output_dir=out, progress=False)
    assert "\n" not in str(info.value) and not out.exists()
    my_detector.names = NAMES
    summary = annotate(data, detector=my_detector, model=BoxModel(), output_dir=out, progress=False)
    assert [c for c, _ in _read_yolo(out / "img0.txt")] == [2] and "car: 1" in summary.text()


def test_classes_may_be_one_id_as_ultralytics_takes_it(tmp_path: Path):
    # auto_annotate(classes=0) hands 0 to YOLO's predict, which keeps class 0: the same here.
    data = tmp_path / "d"
    _images(data, 1)
    detector = FixedBoxDetector([[0, 0, 40, 40], [50, 0, 90, 40]], [0, 2], NAMES)
    for one in (0, np.int64(0)):
        out = tmp_path / f"o{type(one).__name__}"
        annotate(data, detector=detector, model=BoxModel(), output_dir=out, classes=one, progress=False)
        assert [c for c, _ in _read_yolo(out / "img0.txt")] == [0]


def test_a_double_star_glob_reaches_nested_folders(tmp_path: Path):
    # Ultralytics globs sources with recursive=True: "d/**/*.png" is every PNG under d, at any depth.
    for sub in ("", "a", "a/b"):
        folder = tmp_path / "d" / sub
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"top{len(sub)}.png"), np.full((48, 64, 3), 90, np.uint8))
    (tmp_path / "d" / "a" / "notes.txt").write_text("not an image")
    detector = FixedBoxDetector([[5, 5, 30, 30]], [0], NAMES)
    out = tmp_path / "o"
    summary = annotate(str(tmp_path / "d" / "**" / "*.png"), detector=detector, model=BoxModel(), output_dir=out, progress=False)
    assert summary.images == 3 and sorted(p.name for p in out.iterdir()) == ["top0.txt", "top1.txt", "top3.txt"]
    assert default_output_dir(str(tmp_path / "d" / "**" / "*.png")) == tmp_path / "d_auto_annotate_labels"


def test_image_formats_ultralytics_lists_and_opencv_reads_are_annotated(tmp_path: Path):
    data = tmp_path / "d"
    data.mkdir()
    image = np.full((48, 64, 3), 90, np.uint8)
    _, jpeg = cv2.imencode(".jpg", image)
    (data / "multi.mpo").write_bytes(jpeg.tobytes())  # a multi-picture JPEG: its first picture is a JPEG
    expected = ["multi.txt"]
    for ext in (".jp2", ".avif"):  # where this OpenCV build writes them
        try:
            written = cv2.imwrite(str(data / f"x{ext[1:]}{ext}"), image)
        except cv2.error:
            written = False
        if written and cv2.imread(str(data / f"x{ext[1:]}{ext}")) is not None:
            expected.append(f"x{ext[1:]}.txt")
    detector = FixedBoxDetector([[5, 5, 30, 30]], [0], NAMES)
    summary = annotate(data, detector=detector, model=BoxModel(), output_dir=tmp_path / "o", progress=False)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == sorted(expected)
    assert summary.annotated == len(expected) and summary.unreadable == 0


def test_a_phone_photo_is_labelled_upright_as_ultralytics_reads_it(tmp_path: Path):
    """A JPEG stored 64x48 with EXIF orientation 6 is shown (and read by ``cv2.imread``, so by
    Ultralytics' training) 48x64: the detector sees it so and the labels are fractions of it."""
    Image = pytest.importorskip("PIL.Image")
    data = tmp_path / "d"
    data.mkdir()
    im = Image.fromarray(np.full((48, 64, 3), 90, np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # stored landscape, shown turned 90 degrees clockwise
    im.save(data / "IMG_0001.JPG", exif=exif.tobytes())
    upright = cv2.imread(str(data / "IMG_0001.JPG"))
    assert upright.shape == (64, 48, 3)
    seen: list[tuple[int, ...]] = []

    def boxes(image: np.ndarray) -> list[list[float]]:
        seen.append(image.shape)
        return [[4, 4, 44, 60]]

    annotate(data, detector=FixedBoxDetector(boxes, [0], NAMES), model=BoxModel(), output_dir=tmp_path / "o", progress=False)
    assert seen == [(64, 48, 3)]
    (row,) = _read_yolo(tmp_path / "o" / "IMG_0001.txt")
    xs, ys = row[1][:, 0], row[1][:, 1]
    # The box's corners as fractions of the upright 48x64 picture (of the stored 64x48 they would be 44/64 and 60/48 > 1).
    assert np.isclose(min(xs), 4 / 48, atol=0.03) and np.isclose(max(xs), 44 / 48, atol=0.03)
    assert np.isclose(min(ys), 4 / 64, atol=0.03) and np.isclose(max(ys), 60 / 64, atol=0.03)


def test_images_with_labels_are_skipped_so_a_run_resumes(tmp_path: Path):
    data = tmp_path / "d"
    _images(data, 3)
    out = tmp_path / "labels"
    detector = FixedBoxDetector([[10, 20, 61, 81]], [0], NAMES)
    annotate(data, detector=detector, model=BoxModel(), output_dir=out, progress=False)
    assert detector.calls == 3
    first = (out / "img0.txt").read_text()
    (out / "img1.txt").unlink()  # as if the run had stopped before img1
    summary = annotate(data, detector=detector, model=BoxModel(), output_dir=out, progress=False)
    assert detector.calls == 4  # only img1 again
    assert (summary.skipped, summary.annotated) == (2, 1)
    assert (out / "img1.txt").read_text() == first and not list(out.glob("*.tmp"))


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_ctrl_c_keeps_complete_labels_and_the_run_resumes(tmp_path: Path, fmt: str):
    data = tmp_path / "d"
    _images(data, 3)
    out = tmp_path / "l"
    inner = FixedBoxDetector([[10, 20, 61, 81]], [0], NAMES)

    def interrupted(image):
        if inner.calls == 1:
            raise KeyboardInterrupt  # Ctrl-C while the second image is being detected
        return inner(image)

    interrupted.names = NAMES
    with pytest.raises(KeyboardInterrupt):
        annotate(data, detector=interrupted, model=BoxModel(), output_dir=out, format=fmt, progress=False)
    assert not list(out.glob("*.tmp"))
    if fmt == "yolo":
        assert sorted(p.name for p in out.iterdir()) == ["img0.txt"] and len(_read_yolo(out / "img0.txt")) == 1
    else:
        coco = json.loads((out / "annotations.json").read_text())
        assert [im["file_name"] for im in coco["images"]] == [str(data / "img0.png")] and len(coco["annotations"]) == 1
    summary = annotate(data, detector=inner, model=BoxModel(), output_dir=out, format=fmt, progress=False)
    assert (summary.skipped, summary.annotated, inner.calls) == (1, 2, 3)


_SLOW_CLI = """
import sys, time
from pathlib import Path
sys.path.insert(0, {tests!r})
import realtime_sam.app.annotate as a
from realtime_sam.app.cli import main
from realtime_sam.testing.fakes import FixedBoxDetector
from test_annotate import NAMES, BoxModel

inner = FixedBoxDetector([[10, 20, 61, 81]], [0], NAMES)
def detector(image):
    with open({calls!r}, "a") as f:
        f.write("call\\n")
    time.sleep(0.5)
    return inner(image)
detector.names = NAMES
a.load_yolo = lambda *args, **kw: detector
a._load_sam = lambda *args, **kw: BoxModel()
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or sys.platform == "win32", reason="SIGTERM is POSIX")
def test_sigterm_keeps_every_coco_image_labelled_so_far_and_the_run_resumes(tmp_path: Path):
    # SIGTERM (`timeout`, `docker stop`) ended the process at once: annotations.json, rewritten every
    # 5 s, lost the images labelled since (measured with the real CLI: 12 labelled, 9 in the file), and nothing was said.
    data, out, calls = tmp_path / "d", tmp_path / "l", tmp_path / "calls"
    _images(data, 5)
    script = _SLOW_CLI.format(tests=str(Path(__file__).parent), calls=str(calls))
    argv = [sys.executable, "-c", script, "annotate", str(data), "--format", "coco", "--output-dir", str(out)]
    env = {**os.environ, "PYTHONPATH": str(Path(realtime_sam.__file__).parents[1])}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not calls.exists() or len(calls.read_text().splitlines()) < 3:  # two images labelled
            assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() is not None else "slow"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    assert proc.returncode == 143, err
    assert err.splitlines()[-1].startswith("stopped by SIGTERM: the labels written so far are kept"), err
    detected = len(calls.read_text().splitlines())
    coco = json.loads((out / "annotations.json").read_text())
    assert detected - 1 <= len(coco["images"]) <= detected and len(coco["images"]) >= 2
    assert len(coco["annotations"]) == len(coco["images"]) and not list(out.glob("*.tmp"))
    done = len(coco["images"])
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert f"images: 5 ({5 - done} annotated, {done} already labelled)" in again.stderr
    coco = json.loads((out / "annotations.json").read_text())
    assert sorted(Path(im["file_name"]).name for im in coco["images"]) == [f"img{i}.png" for i in range(5)]


def test_coco_image_interrupted_while_its_objects_are_added_is_not_left_half_listed(tmp_path: Path):
    # The image went into the list before its objects: Ctrl-C or SIGTERM between two of them left the
    # image listed (so "done" to the next run) with only some of its objects, once closed.
    class Interrupting(dict):
        def __iter__(self):  # dict(rle) copies it: Ctrl-C arrives then
            raise KeyboardInterrupt

        def keys(self):
            raise KeyboardInterrupt

    ring = np.array([[10.0, 20.0], [60.0, 20.0], [60.0, 80.0]])

    def obj(rle):
        return LabeledObject(0, [ring], ring, (10.0, 20.0, 61.0, 81.0), 100, rle, 0.9)

    writer = CocoWriter(tmp_path, NAMES, None)
    writer.write("a", "a.png", (120, 160), [obj({})])
    with pytest.raises(KeyboardInterrupt):
        writer.write("b", "b.png", (120, 160), [obj({}), obj(Interrupting())])
    writer.close()
    coco = json.loads((tmp_path / "annotations.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png"] and len(coco["annotations"]) == 1
    assert not writer.done("b") and CocoWriter(tmp_path, NAMES, None).done("a")


def test_empty_images_get_an_empty_label_and_are_counted(tmp_path: Path):
    data = tmp_path / "d"
    _images(data, 2)
    (data / "broken.jpg").write_bytes(b"not an image")
    detector = FixedBoxDetector(lambda img: [] if img[0, 0, 0] == 60 else [[10, 20, 61, 81]], [0], NAMES)
    summary = annotate(data, detector=detector, model=BoxModel(), output_dir=tmp_path / "l", progress=False)
    assert (tmp_path / "l" / "img0.txt").read_text() == ""
    assert (summary.empty, summary.unreadable, summary.annotated) == (1, 1, 2)
    assert not (tmp_path / "l" / "broken.txt").exists()


def test_a_float_tiff_is_labelled_as_a_viewer_shows_it(tmp_path: Path, capsys):
    # OpenCV reads a 32-bit float TIFF as float32 (IMREAD_ANYDEPTH); converting it as an integer image raised
    # ValueError ("Invalid integer data type 'f'"), a traceback that ended the run at that file, every time.
    # It was then skipped as "floating-point pixels"; it is read now as image sources read it: 0..1 as 0..255.
    data = tmp_path / "d"
    _images(data, 2)
    image = np.full((120, 160, 3), 0.5, np.float32)
    assert cv2.imwrite(str(data / "depth.tiff"), image)
    seen = []
    detector = FixedBoxDetector(lambda img: seen.append(img.copy()) or [[10, 20, 61, 81]], [0], NAMES)
    summary = annotate(data, detector=detector, model=BoxModel(), output_dir=tmp_path / "l")
    assert (summary.annotated, summary.unreadable) == (3, 0)
    assert sorted(p.name for p in (tmp_path / "l").iterdir()) == ["depth.txt", "img0.txt", "img1.txt"]
    assert any(s.dtype == np.uint8 and s.shape == (120, 160, 3) and (s == 128).all() for s in seen)
    assert "skipped" not in capsys.readouterr().err


def test_segments_all_writes_every_part_in_one_line(tmp_path: Path):
    class TwoParts(BoxModel):
        def upscale(self, low, embedding):
            out = super().upscale(low, embedding)
            out[:, 0, 100:110, 140:150] = 1.0  # a second part far from the box
            return out

    data = tmp_path / "d"
    _images(data, 1)
    detector = FixedBoxDetector([[10, 20, 61, 81]], [0], NAMES)
    for segments, parts in (("largest", 1), ("all", 2)):
        out = tmp_path / segments
        annotate(data, detector=detector, model=TwoParts(), output_dir=out, segments=segments, progress=False)
        (cls, xy), = _read_yolo(out / "img0.txt")
        filled = np.zeros((120, 160), np.uint8)
        cv2.fillPoly(filled, [(xy * [160, 120]).round().astype(np.int32)], 1)
        assert bool(filled[105, 145]) == (parts == 2) and filled[50, 30] == 1


def test_coco_json_with_images_categories_polygons_and_rle(tmp_path: Path):
    pycocotools = pytest.importorskip("pycocotools.mask")
    data = tmp_path / "d"
    _images(data, 2)
    detector = FixedBoxDetector([[10, 20, 61, 81], [80, 10, 150, 110]], [0, 2], NAMES, scores=[0.9, 0.6])
    out = tmp_path / "coco"
    summary = annotate(data, detector=detector, model=BoxModel(), output_dir=out, format="coco", classes="person,car", progress=False)
    coco = json.loads((out / "annotations.json").read_text())
    assert [c["name"] for c in coco["categories"]] == ["person", "car"] and [c["id"] for c in coco["categories"]] == [1, 3]
    assert [im["file_name"] for im in coco["images"]] == [str(data / "img0.png"), str(data / "img1.png")]
    assert len(coco["annotations"]) == 4 and summary.objects == {"person": 2, "car": 2}
    a = coco["annotations"][0]
    assert a["category_id"] == 1 and a["bbox"] == [10.0, 20.0, 51.0, 61.0] and a["area"] == 51 * 61
    mask = decode_rle(a["rle"])
    assert mask.sum() == a["area"] and pycocotools.decode(a["rle"]).sum() == a["area"]
    assert len(a["segmentation"]) == 1 and len(a["segmentation"][0]) == 8
    # Resumed: nothing is done twice, the file keeps every image once.
    annotate(data, detector=detector, model=BoxModel(), output_dir=out, format="coco", progress=False)
    again = json.loads((out / "annotations.json").read_text())
    assert len(again["images"]) == 2 and len(again["annotations"]) == 4


def _coco_read_back(tmp_path: Path, mask: np.ndarray, **kwargs) -> np.ndarray:
    """``mask`` through ``annotate --format coco``, its segmentation filled back by pycocotools."""
    coco_mask = _pycocotools_mask()
    data = tmp_path / "d"
    data.mkdir(exist_ok=True)
    cv2.imwrite(str(data / "a.png"), np.zeros((*mask.shape, 3), np.uint8))
    out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
    annotate(data, detector=FixedBoxDetector([[0, 0, 8, 8]], [0], NAMES), model=MaskModel(mask), output_dir=out,
             format="coco", min_area=0, progress=False, **kwargs)
    (a,) = json.loads((out / "annotations.json").read_text())["annotations"]
    h, w = mask.shape
    return coco_mask.decode(coco_mask.merge(coco_mask.frPyObjects(a["segmentation"], h, w))).astype(bool)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def test_coco_polygons_read_back_by_pycocotools_are_the_mask(tmp_path: Path):
    # The polygons ran through the centres of the edge pixels, and pycocotools (detectron2,
    # mmdetection) fills pixel squares with corners at integer coordinates: half a pixel was lost
    # on every side (61x81 read back as 60x80, 10x10 as 9x9, a 1-pixel line as nothing).
    h, w = 120, 160
    boxes = {
        "rectangle": (slice(20, 101), slice(30, 91)),
        "square 10x10": (slice(50, 60), slice(50, 60)),
        "square 2x2": (slice(50, 52), slice(50, 52)),
        "line across": (slice(60, 61), slice(10, 150)),
        "line down": (slice(5, 115), slice(100, 101)),
        "at the bottom right border": (slice(80, h), slice(120, w)),
        "the whole image": (slice(0, h), slice(0, w)),
    }
    for name, box in boxes.items():
        mask = np.zeros((h, w), bool)
        mask[box] = True
        for simplify in (1.0, 0.0):  # the default, and none: the outline of a box is its 4 corners
            back = _coco_read_back(tmp_path, mask, simplify=simplify)
            assert np.array_equal(back, mask), (name, simplify, int(back.sum()), int(mask.sum()))
    two = np.zeros((h, w), np.uint8)
    cv2.circle(two, (40, 40), 20, 1, -1)
    two[70:110, 100:150] = 1
    assert np.array_equal(_coco_read_back(tmp_path, two.astype(bool), segments="all", simplify=0), two.astype(bool))
    assert _iou(_coco_read_back(tmp_path, two.astype(bool), segments="all"), two.astype(bool)) >= 0.98
    for r, default_iou in ((2, 0.99), (3, 0.85), (4, 0.85), (10, 0.93), (20, 0.95), (50, 0.98)):
        disc = np.zeros((h, w), np.uint8)
        cv2.circle(disc, (80, 60), r, 1, -1)
        disc = disc.astype(bool)
        # Within 0.5 px of the pixels' outline no pixel centre changes side: exact, as with none.
        for simplify in (0.0, 0.5):
            assert np.array_equal(_coco_read_back(tmp_path, disc, simplify=simplify), disc), (r, simplify)
        assert _iou(_coco_read_back(tmp_path, disc), disc) >= default_iou, r


def test_coco_resumed_with_another_detectors_classes_is_refused_not_mislabelled(tmp_path: Path):
    # Category ids are class index + 1: a second run whose detector numbers its classes otherwise
    # wrote its cars as category 1, which the file's categories (from the first run) call "person".
    data, out = tmp_path / "d", tmp_path / "l"
    _images(data, 2)
    annotate(data, detector=FixedBoxDetector([[10, 20, 61, 81]], [0], NAMES), model=BoxModel(), output_dir=out,
             format="coco", progress=False)
    before = (out / "annotations.json").read_bytes()
    _images(data, 3)
    other = FixedBoxDetector([[10, 20, 61, 81]], [0], {0: "car", 1: "person"})
    with pytest.raises(SinkError, match=r"category 1 is 'person' there but class 0 of this detector is 'car'"):
        annotate(data, detector=other, model=BoxModel(), output_dir=out, format="coco", progress=False)
    assert (out / "annotations.json").read_bytes() == before
    # The same detector, or one with more classes after the same ones, goes on.
    more = FixedBoxDetector([[10, 20, 61, 81]], [0], {**NAMES, 3: "motorcycle"})
    summary = annotate(data, detector=more, model=BoxModel(), output_dir=out, format="coco", progress=False)
    assert (summary.skipped, summary.annotated) == (2, 1)
    coco = json.loads((out / "annotations.json").read_text())
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "person"), (2, "bicycle"), (3, "car"), (4, "motorcycle")]


def test_coco_lists_a_class_the_detector_names_after_the_first_image(tmp_path: Path):
    # The categories were those the detector named on the first image: an open-vocabulary detector
    # given a new class later wrote category 2 with no such category (pycocotools: KeyError 2).
    data = tmp_path / "d"
    _images(data, 2)

    class Growing:
        names = {0: "person"}

        def __call__(self, image):
            if image[0, 0, 0] == 60:  # img0
                return FixedBoxDetector([[10, 20, 61, 81]], [0], self.names)(image)
            self.names = {0: "person", 1: "dog"}
            return FixedBoxDetector([[10, 20, 61, 81]], [1], self.names)(image)

    annotate(data, detector=Growing(), model=BoxModel(), output_dir=tmp_path / "l", format="coco", progress=False)
    coco = json.loads((tmp_path / "l" / "annotations.json").read_text())
    assert [(c["id"], c["name"]) for c in coco["categories"]] == [(1, "person"), (2, "dog")]
    assert [a["category_id"] for a in coco["annotations"]] == [1, 2]


def test_coco_bbox_area_and_rle_are_those_of_the_parts_the_segmentation_keeps(tmp_path: Path):
    class Speck(BoxModel):  # every mask has a stray 5x5 speck far from its box
        def upscale(self, low, embedding):
            out = super().upscale(low, embedding)
            out[:, 0, 110:115, 150:155] = 1.0
            return out

    data = tmp_path / "d"
    _images(data, 1)
    detector = FixedBoxDetector([[10, 20, 61, 81]], [0], NAMES)
    for segments, bbox, area in (("largest", [10.0, 20.0, 51.0, 61.0], 51 * 61), ("all", [10.0, 20.0, 145.0, 95.0], 51 * 61 + 25)):
        out = tmp_path / segments
        annotate(data, detector=detector, model=Speck(), output_dir=out, format="coco", segments=segments, progress=False)
        (a,) = json.loads((out / "annotations.json").read_text())["annotations"]
        assert len(a["segmentation"]) == (1 if segments == "largest" else 2)
        # The speck left out of the polygon is left out of the box, the area and the RLE too.
        assert a["bbox"] == bbox and a["area"] == area and decode_rle(a["rle"]).sum() == area
        assert bool(decode_rle(a["rle"])[111, 151]) == (segments == "all")


def test_a_video_gives_every_kth_frame_as_images_and_labels(tmp_path: Path):
    from realtime_sam.testing.synthetic import standard_scene, write_video

    video = write_video(standard_scene(160, 120, num_frames=10, num_objects=1), tmp_path / "clip.mp4")
    detector = FixedBoxDetector([[10, 20, 61, 81]], [2], NAMES)
    summary = annotate(video, detector=detector, model=BoxModel(), every=3, progress=False)
    out = tmp_path / "clip_auto_annotate_labels"
    assert sorted(p.name for p in (out / "labels").iterdir()) == [f"clip_{i:06d}.txt" for i in (0, 3, 6, 9)]
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"clip_{i:06d}.jpg" for i in (0, 3, 6, 9)]
    assert cv2.imread(str(out / "images" / "clip_000003.jpg")).shape == (120, 160, 3)
    assert summary.images == 4 and summary.objects == {"car": 4}


def test_a_frame_image_that_cannot_be_written_is_one_line_naming_why(tmp_path: Path):
    from realtime_sam.testing.synthetic import standard_scene, write_video

    video = write_video(standard_scene(160, 120, num_frames=4, num_objects=1), tmp_path / "clip.mp4")
    blocked = tmp_path / "clip_auto_annotate_labels" / "images" / "clip_000002.jpg"
    blocked.mkdir(parents=True)  # a folder where the frame's image goes: open() fails, as on a full disk
    detector = FixedBoxDetector([[10, 20, 61, 81]], [2], NAMES)
    with pytest.raises(SinkError) as err:
        annotate(video, detector=detector, model=BoxModel(), progress=False)
    assert str(err.value).startswith(f"cannot write the frame image {blocked}: ") and "\n" not in str(err.value)


def test_the_real_model_decodes_all_boxes_of_an_image_in_one_call(tmp_path: Path, random_checkpoint: Path):
    from realtime_sam.model.config import ModelConfig
    from realtime_sam.model.loader import load_model

    model = load_model(ModelConfig(weights=str(random_checkpoint), device="cpu"), progress=False)
    calls = []
    decode = model.decode

    def counting(embedding, **kw):
        calls.append(len(kw["boxes"]))
        return decode(embedding, **kw)

    model.decode = counting
    data = tmp_path / "d"
    _images(data, 1)
    detector = FixedBoxDetector([[10, 20, 61, 81], [80, 10, 150, 110], [5, 5, 50, 50]], [0, 1, 2], NAMES)
    summary = annotate(data, detector=detector, model=model, output_dir=tmp_path / "l", min_area=0, progress=False)
    assert calls == [3]
    rows = _read_yolo(tmp_path / "l" / "img0.txt")
    assert len(rows) + summary.too_small == 3 and all(len(xy) >= 3 for _, xy in rows)


def test_masks_of_a_huge_image_are_upsampled_a_few_at_a_time(tmp_path: Path):
    # 16 full-size float masks at a time: a 48 MP photo with 16 boxes peaked at 4.5 GB of memory
    # (measured, random MobileSAM on the CPU), a 100 MP one at about 9 GB (on a GPU: its memory).
    class Recording(BoxModel):
        def __init__(self):
            super().__init__()
            self.upscaled: list[int] = []

        def upscale(self, low, embedding):
            self.upscaled.append(len(low))
            return super().upscale(low, embedding)

    data = tmp_path / "d"
    data.mkdir()
    h, w = 3000, 4000  # 12 MP
    cv2.imwrite(str(data / "big.png"), np.zeros((h, w, 3), np.uint8))
    boxes = [[100 + 200 * i, 100, 250 + 200 * i, 2900] for i in range(18)]
    model = Recording()
    summary = annotate(data, detector=FixedBoxDetector(boxes, [0], NAMES), model=model, output_dir=tmp_path / "l", progress=False)
    assert sum(model.upscaled) == 18 and model.decode_batches == [18]  # still one batched decode
    assert max(model.upscaled) * h * w <= 2**25, model.upscaled
    assert summary.objects == {"person": 18}
    # A small image keeps its chunks of 16.
    small = Recording()
    annotate(_images(tmp_path / "s", 1)[0], detector=FixedBoxDetector(
        [[5 + i, 5, 40 + i, 60] for i in range(18)], [0], NAMES), model=small, output_dir=tmp_path / "l2", progress=False)
    assert small.upscaled == [16, 2]


def test_python_api_has_auto_annotates_parameters():
    assert realtime_sam.annotate is annotate
    params = list(inspect.signature(annotate).parameters)
    assert params[:10] == ["data", "det_model", "sam_model", "device", "conf", "iou", "imgsz", "max_det", "classes", "output_dir"]
    defaults = {k: v.default for k, v in inspect.signature(annotate).parameters.items()}
    assert (defaults["conf"], defaults["iou"], defaults["imgsz"], defaults["max_det"]) == (0.25, 0.45, 640, 300)


# ---------------------------------------------------------------- the command


def test_cli_errors_are_one_line_and_exit_2(tmp_path: Path, capsys):
    assert main(["annotate", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "not found" in err and "\n" not in err
    assert main(["annotate", str(tmp_path), "--conf", "2"]) == 2
    assert "must be in [0, 1]" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images"):
        annotate(tmp_path / "empty", detector=FixedBoxDetector([], [], NAMES), model=BoxModel(), progress=False)
    # A file that is neither image nor video (Ultralytics reads list.txt as a list of paths; not here).
    (tmp_path / "list.txt").write_text("shots/a.jpg\n")
    assert main(["annotate", str(tmp_path / "list.txt"), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "list.txt is not a video" in err and "give a folder of images, a glob" in err and "\n" not in err
    assert not default_output_dir(tmp_path / "list.txt").exists()
    assert main(["annotate", "--help"]) == 0
    assert "--det-model" in capsys.readouterr().out


def test_every_on_images_is_refused_not_ignored(tmp_path: Path, capsys):
    """``--every 3`` on a folder labelled every image (it applies to a video's frames only)."""
    shots = tmp_path / "shots"
    shots.mkdir()
    for i in range(3):
        cv2.imwrite(str(shots / f"{i}.png"), np.full((32, 32, 3), 60 * i, np.uint8))
    for data in (shots, shots / "0.png", f"{shots}/*.png"):
        assert main(["annotate", str(data), "--every", "3", "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: --every is for a video file") and "\n" not in err, err
    assert not default_output_dir(shots).exists()
    with pytest.raises(ConfigError, match="--every is for a video file"):
        annotate(shots, every=2, detector=FixedBoxDetector([], [], NAMES), model=BoxModel(), progress=False)


def test_a_missing_detector_checkpoint_offline_says_where_to_put_it(tmp_path: Path, monkeypatch):
    pytest.importorskip("ultralytics")
    import ultralytics.utils.downloads as downloads

    def offline(*a, **k):  # what Ultralytics raises without a network (measured here: after 10 s of retries)
        raise ConnectionError("Download failure for https://github.com/... Environment may be offline.")

    monkeypatch.setattr(downloads, "safe_download", offline)
    monkeypatch.chdir(tmp_path)
    from realtime_sam.model.detector import load_yolo

    with pytest.raises(DetectorError) as info:
        load_yolo("yolo11n.pt")
    message = str(info.value)
    assert str(tmp_path / "yolo11n.pt") in message and "releases/download" in message and "\n" not in message
    # The library is behind two flags (annotate's --det-model, the app's --detect): it names neither.
    assert "--" not in message
    with pytest.raises(DetectorError, match="not found"):
        load_yolo(str(tmp_path / "sub" / "mine.pt"))


def test_a_mistyped_detector_name_is_an_error_without_asking_github(tmp_path: Path, monkeypatch, capsys):
    pytest.importorskip("ultralytics")
    import ultralytics.utils.downloads as downloads

    def asked(*a, **k):  # offline this printed two long warnings before the error
        raise AssertionError("Ultralytics was asked to find a name it does not publish")

    monkeypatch.setattr(downloads, "attempt_download_asset", asked)
    monkeypatch.setattr(downloads, "get_github_assets", asked)
    monkeypatch.chdir(tmp_path)
    from realtime_sam.model.detector import load_yolo

    with pytest.raises(DetectorError) as info:
        load_yolo("yolo11nn.pt")
    message = str(info.value)
    assert message.startswith(f"detector checkpoint not found: {tmp_path / 'yolo11nn.pt'}")
    assert "not an Ultralytics release name" in message and "\n" not in message
    # What Ultralytics finds without a path is no typo: yolov5n.pt (its yolov5nu.pt), a file in its weights folder.
    import ultralytics.utils
    from realtime_sam.model.detector import _is_release_name

    monkeypatch.setattr(ultralytics.utils, "SETTINGS", {"weights_dir": str(tmp_path / "weights")})
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "mine.pt").write_bytes(b"x")
    assert _is_release_name("yolov5n.pt") and _is_release_name("yolo11n.pt") and _is_release_name("mine.pt")
    assert not _is_release_name("yolo11nn.pt") and not _is_release_name("theirs.pt")
    cv2.imwrite(str(tmp_path / "shot.jpg"), np.full((48, 64, 3), 128, np.uint8))
    assert main(["annotate", str(tmp_path), "--det-model", "yolo11nn.pt"]) == 2
    out, err = capsys.readouterr()
    # What a terminal shows: each line as its last carriage return left it (the progress bar is wiped).
    shown = [line.split("\r")[-1] for line in err.splitlines() if line.split("\r")[-1].strip()]
    assert len(shown) == 1 and shown[0].startswith("error: detector checkpoint not found") and out == ""
    # Nothing was labelled: the run leaves no empty labels folder behind.
    assert not default_output_dir(str(tmp_path)).exists()


def test_a_run_that_fails_leaves_the_folders_it_made_only_if_it_wrote_in_them(tmp_path: Path):
    (tmp_path / "shots").mkdir()
    for i in range(3):
        cv2.imwrite(str(tmp_path / "shots" / f"{i}.jpg"), np.full((48, 64, 3), 60 * i, np.uint8))

    class Failing:  # a detector that fails on its n-th image
        names = NAMES

        def __init__(self, n: int) -> None:
            self.n, self.calls = n, 0

        def __call__(self, image):
            self.calls += 1
            if self.calls == self.n:
                raise RuntimeError("detector failed")
            return FixedBoxDetector([], [], NAMES)(image)

    out = tmp_path / "new" / "labels"
    with pytest.raises(RuntimeError):
        annotate(tmp_path / "shots", detector=Failing(1), model=BoxModel(), output_dir=out, progress=False)
    assert not out.exists()  # made for this run, left empty by it
    with pytest.raises(RuntimeError):
        annotate(tmp_path / "shots", detector=Failing(3), model=BoxModel(), output_dir=out, progress=False)
    assert sorted(f.name for f in out.iterdir()) == ["0.txt", "1.txt"]  # what was written stays
    # A folder that was there before is the user's: kept, even empty.
    (tmp_path / "mine").mkdir()
    with pytest.raises(RuntimeError):
        annotate(tmp_path / "shots", detector=Failing(1), model=BoxModel(), output_dir=tmp_path / "mine", progress=False)
    assert (tmp_path / "mine").is_dir()


def test_a_resumed_run_that_cannot_load_sam_shows_the_error_alone(tmp_path: Path, capsys):
    # The first image is labelled already (a resumed run): the bar must not start before the
    # models load, or a missing SAM checkpoint's error prints under a bar at 50 %.
    pytest.importorskip("ultralytics")
    images, labels = tmp_path / "images", tmp_path / "labels"
    _images(images, 2, size=(48, 64))
    labels.mkdir()
    (labels / "img0.txt").write_text("")
    argv = ["annotate", str(images), "--det-model", "yolo26n.yaml", "--sam-model", str(tmp_path / "nope.pt"),
            "--device", "cpu", "--output-dir", str(labels)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    shown = [line.split("\r")[-1] for line in err.splitlines() if line.split("\r")[-1].strip()]
    assert len(shown) == 1 and shown[0].startswith("error:") and "nope.pt" in shown[0], err


def test_yolo_from_bundled_yaml_end_to_end_labels_read_by_ultralytics(tmp_path: Path, random_checkpoint: Path, capsys):
    pytest.importorskip("ultralytics")
    from ultralytics.data.dataset import YOLODataset

    images = tmp_path / "ds" / "images"
    _images(images, 2, size=(240, 320))
    labels = tmp_path / "ds" / "labels"
    argv = [
        "annotate", str(images), "--det-model", "yolo26n.yaml", "--sam-model", str(random_checkpoint),
        "--conf", "0.0001", "--imgsz", "160", "--max-det", "3", "--device", "cpu", "--output-dir", str(labels),
        "--min-area", "0",
    ]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "images: 2 (2 annotated, 0 already labelled)" in err and "masks too small to keep:" in err
    written = {p.stem: _read_yolo(p) for p in labels.glob("*.txt")}
    assert set(written) == {"img0", "img1"} and sum(len(r) for r in written.values()) > 0
    dataset = YOLODataset(
        img_path=str(images), imgsz=160, augment=False, task="segment",
        data={"names": {i: str(i) for i in range(80)}, "nc": 80, "channels": 3},
    )
    for label in dataset.labels:
        rows = written[Path(label["im_file"]).stem]
        assert label["cls"].ravel().astype(int).tolist() == [c for c, _ in rows]
        assert len(label["segments"]) == len(rows)
        for seg, (_, xy) in zip(label["segments"], rows):
            assert np.allclose(seg, xy, atol=1e-6)
    # The same command again: everything is skipped.
    assert main(argv) == 0
    assert "(0 annotated, 2 already labelled)" in capsys.readouterr().err


def test_skipped_images_are_told_on_stderr_once_the_bar_runs(tmp_path: Path, capsys):
    # The first unreadable image (before the bar) went to stderr, later ones through tqdm's write, which
    # defaults to stdout: a `realtime-sam annotate ... > log` mixed them into the program's output.
    data = tmp_path / "d"
    _images(data, 2)
    (data / "zz_broken1.jpg").write_bytes(b"not an image")
    (data / "zz_broken2.jpg").write_bytes(b"not an image either")
    detector = FixedBoxDetector(lambda img: [[10, 20, 61, 81]], [0], NAMES)
    summary = annotate(data, detector=detector, model=BoxModel(), output_dir=tmp_path / "l")
    assert (summary.annotated, summary.unreadable) == (2, 2)
    out, err = capsys.readouterr()
    told = [line for line in err.replace("\r", "\n").splitlines() if line.startswith("skipped ")]
    assert len(told) == 2 and "zz_broken1.jpg" in told[0] and "zz_broken2.jpg" in told[1]
    assert "skipped" not in out
