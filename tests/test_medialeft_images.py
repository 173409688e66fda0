"""Image files as sources: float TIFFs, other depths and channels, animated images in folders, decoding once.

Every file here is written with OpenCV (or PIL for an annotation), as a user's tool writes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_app import run_app

from realtime_sam.capture.images import AnimatedImageSource, ImageSequenceSource
from realtime_sam.capture.sources import open_source
from realtime_sam.errors import SourceError
from realtime_sam.output.jsonl import load_jsonl


def _viewer_bgr(image: np.ndarray) -> np.ndarray:
    """What an image viewer shows of a float image, as ``HxWx3 uint8`` BGR: 0..1 times 255, clipped, NaN/inf black."""
    finite = np.where(np.isfinite(image), image, 0.0)
    out = np.rint(np.clip(finite, 0.0, 1.0) * 255.0).astype(np.uint8)
    if out.ndim == 2:
        return cv2.cvtColor(out, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(out[:, :, :3])


def _float_image(channels: int, dtype=np.float32, seed: int = 0) -> np.ndarray:
    """A 24x32 float image, mostly in 0..1, with NaN, +-inf and values outside 0..1 in its first row."""
    rng = np.random.default_rng(seed)
    shape = (24, 32) if channels == 1 else (24, 32, channels)
    image = rng.random(shape).astype(dtype)
    image[0, 0], image[0, 1], image[0, 2], image[0, 3], image[0, 4] = np.nan, np.inf, -np.inf, 1.7, -0.3
    return image


def _write_float_tiff(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        pytest.skip(f"this OpenCV cannot write a {image.dtype} TIFF")


# ------------------------------------------------------------------ 1. float TIFFs


@pytest.mark.parametrize("channels, dtype", [(3, np.float32), (1, np.float32), (4, np.float32), (3, np.float64)])
def test_a_float_tiff_is_read_as_a_viewer_shows_it(tmp_path: Path, channels: int, dtype) -> None:
    # cv2.imwrite('x.tif', float32_array) wrote a file every source refused: "not a readable image ... give
    # 8- or 16-bit PNG, JPEG or TIFF", exit 2.
    image = _float_image(channels, dtype)
    _write_float_tiff(tmp_path / "depth.tif", image)
    with open_source(tmp_path / "depth.tif") as src:
        assert isinstance(src, ImageSequenceSource) and src.size == (32, 24)
        frames = list(src)
    assert len(frames) == 1
    got = frames[0].image
    assert got.dtype == np.uint8 and got.shape == (24, 32, 3) and got.flags["C_CONTIGUOUS"]
    assert np.array_equal(got, _viewer_bgr(image))
    assert got[0, 0].tolist() == [0, 0, 0] and got[0, 1].tolist() == [0, 0, 0]  # NaN, +inf
    assert got[0, 3].tolist() == [255, 255, 255] and got[0, 4].tolist() == [0, 0, 0]  # 1.7, -0.3 clipped


def test_float_tiffs_in_a_folder_and_a_glob_are_frames(tmp_path: Path) -> None:
    images = [_float_image(3, seed=i) for i in range(3)]
    for i, image in enumerate(images):
        _write_float_tiff(tmp_path / f"{i:03d}.tiff", image)
    for spec in (tmp_path, str(tmp_path / "*.tiff")):
        with open_source(spec) as src:
            frames = list(src)  # no StreamInterrupted: none skipped
        assert len(frames) == 3
        assert all(np.array_equal(f.image, _viewer_bgr(image)) for f, image in zip(frames, images))


def test_other_depths_and_channel_counts_read_as_imread_reads_them(tmp_path: Path) -> None:
    # 16-bit PNG/TIFF, grey, BGRA: read as before (cv2.imread's 8-bit colour), beside a float TIFF.
    rng = np.random.default_rng(1)
    written = {
        "a16.png": (rng.random((24, 32, 3)) * 65535).astype(np.uint16),
        "b16.tif": (rng.random((24, 32)) * 65535).astype(np.uint16),
        "c16.png": (rng.random((24, 32, 4)) * 65535).astype(np.uint16),
        "d8.png": (rng.random((24, 32)) * 255).astype(np.uint8),
        "e8.tif": (rng.random((24, 32, 4)) * 255).astype(np.uint8),
    }
    for name, image in written.items():
        assert cv2.imwrite(str(tmp_path / name), image)
    with open_source(tmp_path) as src:
        frames = list(src)
    assert [f.name for f in frames] == ["a16", "b16", "c16", "d8", "e8"]
    for f, name in zip(frames, written):
        assert np.array_equal(f.image, cv2.imread(str(tmp_path / name), cv2.IMREAD_COLOR)), name


def test_an_image_opencv_cannot_decode_is_still_refused_with_what_to_give(tmp_path: Path) -> None:
    assert cv2.imwrite(str(tmp_path / "counts.tif"), np.full((24, 32), 70000, np.int32))
    with pytest.raises(SourceError) as info:
        open_source(tmp_path / "counts.tif")
    assert str(info.value) == (
        f"{tmp_path / 'counts.tif'} is not a readable image (damaged, empty, or of a kind OpenCV cannot decode, "
        "such as a 32-bit integer TIFF); give 8- or 16-bit PNG, JPEG or TIFF"
    )


# ------------------------------------------------------------------ 2. animated images in a folder


def _write_animation(path: Path, n: int, params: tuple[int, ...] = ()) -> list[np.ndarray]:
    if not hasattr(cv2, "imwriteanimation"):
        pytest.skip("this OpenCV cannot write animated images (cv2.imwriteanimation is OpenCV 4.11 on)")
    frames = [np.full((24, 32, 3), 30 + 50 * i, np.uint8) for i in range(n)]
    animation = cv2.Animation()
    animation.frames, animation.durations = frames, [40] * n
    if not cv2.imwriteanimation(str(path), animation, list(params)):
        pytest.skip(f"this OpenCV cannot write an animated {path.suffix}")
    return frames


def test_an_animation_in_a_folder_is_its_first_frame_and_said_once(tmp_path: Path, caplog) -> None:
    # It was read as its first frame without a word (given as --source, the same file is a video).
    assert cv2.imwrite(str(tmp_path / "0.png"), np.zeros((24, 32, 3), np.uint8))
    first = _write_animation(tmp_path / "1.png", 3)[0]
    assert cv2.imwrite(str(tmp_path / "2.webp"), np.full((24, 32, 3), 9, np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])
    _write_animation(tmp_path / "3.webp", 4, (cv2.IMWRITE_WEBP_QUALITY, 101))
    for spec in (tmp_path, str(tmp_path / "*")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="realtime_sam.capture.images"):
            with open_source(spec) as src:
                frames = list(src)
        assert len(frames) == 4 and np.array_equal(frames[1].image, first)
        told = [r.getMessage() for r in caplog.records if r.name == "realtime_sam.capture.images"]
        assert told == [
            f"warning: {tmp_path / '1.png'} is an animation; in {spec} it is read as one image, its first frame "
            "(give it as --source to read all its frames)"
        ]
    # A folder of stills says nothing.
    (tmp_path / "1.png").unlink()
    (tmp_path / "3.webp").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        with open_source(tmp_path) as src:
            assert len(list(src)) == 2
    assert not caplog.records


def test_a_folder_decodes_each_file_once(tmp_path: Path, monkeypatch) -> None:
    # Telling an animation costs no decode: its header says (APNG acTL, WebP ANMF).
    assert cv2.imwrite(str(tmp_path / "0.png"), np.zeros((24, 32, 3), np.uint8))
    _write_animation(tmp_path / "1.png", 3)
    _write_animation(tmp_path / "2.webp", 3, (cv2.IMWRITE_WEBP_QUALITY, 101))
    calls = _count_decodes(monkeypatch)
    with open_source(tmp_path) as src:
        assert len(list(src)) == 3
    assert calls == {"imdecode": 3, "imdecodeanimation": 0}


def _count_decodes(monkeypatch) -> dict[str, int]:
    calls = {"imdecode": 0, "imdecodeanimation": 0}
    for name in calls:
        real = getattr(cv2, name, None)
        if real is None:
            continue

        def counted(*args, _real=real, _name=name):
            calls[_name] += 1
            return _real(*args)

        monkeypatch.setattr(cv2, name, counted)
    return calls


def test_the_cli_tells_of_an_animation_in_a_folder_on_stderr_and_reads_a_float_tiff(tmp_path: Path, checkpoint_path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    _write_float_tiff(frames / "0.tif", np.full((24, 32, 3), 0.5, np.float32))
    _write_animation(frames / "1.png", 3)
    proc = run_app("--headless", "--quiet", "--source", str(frames), "--box", "4,4,20,20", "--save-masks", "m.jsonl",
                   "--weights", str(checkpoint_path), "--device", "cpu", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"warning: {frames / '1.png'} is an animation; in {frames} it is read as one image, its first frame "
        "(give it as --source to read all its frames)"
    ]
    header, lines = load_jsonl(tmp_path / "m.jsonl")
    assert (header["width"], header["height"]) == (32, 24) and len(lines) == 2


# ------------------------------------------------------------------ 4. one decode for one image given


def test_a_still_png_or_webp_source_is_decoded_once(tmp_path: Path, monkeypatch) -> None:
    # is_animation decoded up to two frames with imdecodeanimation, then the image was decoded again.
    assert cv2.imwrite(str(tmp_path / "still.png"), np.zeros((24, 32, 3), np.uint8))
    assert cv2.imwrite(str(tmp_path / "still.webp"), np.zeros((24, 32, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])
    for name in ("still.png", "still.webp"):
        calls = _count_decodes(monkeypatch)
        with open_source(tmp_path / name) as src:
            assert isinstance(src, ImageSequenceSource) and len(list(src)) == 1
        assert calls == {"imdecode": 1, "imdecodeanimation": 0}, name


def test_an_animation_source_decodes_its_first_chunk_once(tmp_path: Path, monkeypatch) -> None:
    written = _write_animation(tmp_path / "a.png", 5)
    calls = _count_decodes(monkeypatch)
    with open_source(tmp_path / "a.png") as src:
        assert isinstance(src, AnimatedImageSource)
        frames = list(src)
    assert len(frames) == 5 and all(np.array_equal(f.image, w) for f, w in zip(frames, written))
    assert calls == {"imdecode": 0, "imdecodeanimation": 1}


def test_an_apng_whose_header_says_one_frame_is_a_still(tmp_path: Path) -> None:
    _write_animation(tmp_path / "one.png", 1)
    with open_source(tmp_path / "one.png") as src:
        assert isinstance(src, ImageSequenceSource) and len(list(src)) == 1


def test_annotate_reads_images_as_sources_do_a_float_tiff_and_a_jpeg_cut_short(tmp_path: Path, capsys) -> None:
    # annotate read with its own flags: a float TIFF was skipped ("floating-point pixels"), and a JPEG cut
    # short was labelled on its grey-filled rows, where a folder source skips it.
    from test_annotate import NAMES, BoxModel

    from realtime_sam.app.annotate import annotate
    from realtime_sam.testing.fakes import FixedBoxDetector

    data = tmp_path / "d"
    data.mkdir()
    _write_float_tiff(data / "a.tif", np.full((48, 64, 3), 0.25, np.float32))
    photo = np.random.default_rng(2).integers(0, 255, (48, 64, 3), np.uint8)
    jpeg = cv2.imencode(".jpg", photo)[1].tobytes()
    (data / "b.jpg").write_bytes(jpeg[: len(jpeg) * 2 // 3])
    seen: list[np.ndarray] = []
    detector = FixedBoxDetector(lambda img: seen.append(img.copy()) or [[4, 4, 30, 30]], [0], NAMES)
    summary = annotate(data, detector=detector, model=BoxModel(), output_dir=tmp_path / "l")
    assert (summary.annotated, summary.unreadable) == (1, 1)
    assert len(seen) == 1 and (seen[0] == 64).all()  # 0.25 * 255 = 63.75
    out = capsys.readouterr()
    assert f"skipped {data / 'b.jpg'}: not a readable image" in out.out + out.err
