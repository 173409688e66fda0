"""GIFs in folders and globs, animations in annotate's folders, AVIF sequences told by their brand.

Files are written with OpenCV, PIL (a GIF with a transparent palette entry) and FFmpeg, as a user's tools write them.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime_sam.capture.images import AnimatedImageSource, ImageSequenceSource, is_animation
from realtime_sam.capture.sources import open_source
from realtime_sam.capture.video_file import VideoFileSource

_HAS_ANIMATION = getattr(cv2, "imdecodeanimation", None) is not None


def _write_animation(path: Path, n: int) -> list[np.ndarray]:
    """An ``n``-frame animation (GIF, APNG, AVIF by ``path``'s extension) written by OpenCV; its frames as BGR."""
    if not _HAS_ANIMATION:
        pytest.skip("this OpenCV cannot write animated images (cv2.imwriteanimation is OpenCV 4.11 on)")
    frames = [np.full((24, 32, 3), 30 + 50 * i, np.uint8) for i in range(n)]
    animation = cv2.Animation()
    animation.frames, animation.durations = frames, [40] * n
    if not cv2.imwriteanimation(str(path), animation, []):
        pytest.skip(f"this OpenCV cannot write an animated {path.suffix}")
    return frames


def _stripes() -> np.ndarray:
    """A 24x32 BGR image of three flat colours, which a GIF's palette holds exactly."""
    image = np.zeros((24, 32, 3), np.uint8)
    image[:, :10], image[:, 10:20], image[:, 20:] = (0, 0, 255), (0, 255, 0), (255, 0, 0)
    return image


def _gif_folder(folder: Path) -> dict[str, np.ndarray]:
    """A folder of single-frame GIFs from three writers; ``{name: what PIL decodes it as, in BGR}``."""
    from PIL import Image

    folder.mkdir()
    if not cv2.imwrite(str(folder / "0.gif"), _stripes()):
        pytest.skip("this OpenCV cannot write a GIF (OpenCV 4.11 on)")
    # A palette image whose entry 0 is transparent: read as the entry's colour, alpha dropped, as a PNG's is.
    palette = Image.fromarray(_stripes()[:, :, ::-1]).quantize(3)
    palette.save(folder / "1.gif", transparency=0)
    Image.fromarray(np.tile(np.arange(32, dtype=np.uint8) * 8, (24, 1)), "L").save(folder / "2.gif")  # grey
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=s=32x24:r=1:d=1", "-frames:v", "1",
                    str(folder / "10.gif")], check=True)
    return {p.name: np.array(Image.open(p).convert("RGB"))[:, :, ::-1] for p in sorted(folder.iterdir())}


# ------------------------------------------------------------------ 1. GIFs in folders and globs


def test_gifs_in_a_folder_or_a_glob_are_frames_in_bgr(tmp_path: Path) -> None:
    # A folder of GIFs was "no images (.png, .jpg, ...) in folder", and a glob's GIFs "matches 4 file(s)
    # but no images", though a GIF alone is a source.
    expected = _gif_folder(tmp_path / "g")
    order = ["0.gif", "1.gif", "2.gif", "10.gif"]
    for spec in (tmp_path / "g", str(tmp_path / "g" / "*.gif"), str(tmp_path / "g" / "*")):
        with open_source(spec) as src:
            assert isinstance(src, ImageSequenceSource)
            frames = list(src)
        assert [f.name for f in frames] == [Path(n).stem for n in order]
        for frame, name in zip(frames, order):
            image = frame.image
            assert image.dtype == np.uint8 and image.shape == (24, 32, 3) and image.flags["C_CONTIGUOUS"]
            assert np.array_equal(image, expected[name]), name


def test_a_gif_alone_is_still_a_video_and_an_animated_one_in_a_folder_is_its_first_frame(tmp_path: Path, caplog) -> None:
    from PIL import Image

    _write_animation(tmp_path / "clip.gif", 3)
    first = np.array(Image.open(tmp_path / "clip.gif").convert("RGB"))[:, :, ::-1]  # its first frame, by PIL
    with open_source(tmp_path / "clip.gif") as src:  # FFmpeg's, every frame, as before
        assert isinstance(src, VideoFileSource) and len(list(src)) == 3
    folder = tmp_path / "f"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "0.png"), np.zeros((24, 32, 3), np.uint8))
    (folder / "1.gif").write_bytes((tmp_path / "clip.gif").read_bytes())
    _write_animation(folder / "2.gif", 2)
    with caplog.at_level(logging.WARNING, logger="realtime_sam.capture.images"):
        with open_source(folder) as src:
            frames = list(src)
    assert len(frames) == 3 and np.array_equal(frames[1].image, first)
    assert [r.getMessage() for r in caplog.records if r.name == "realtime_sam.capture.images"] == [
        f"warning: {folder / '1.gif'} is an animation; in {folder} it is read as one image, its first frame "
        "(give it as --source to read all its frames)"
    ]


def test_a_folder_of_still_gifs_says_nothing(tmp_path: Path, caplog) -> None:
    _gif_folder(tmp_path / "g")
    with caplog.at_level(logging.WARNING):
        with open_source(tmp_path / "g") as src:
            assert len(list(src)) == 4
    assert not caplog.records


# ------------------------------------------------------------------ 2. annotate: an animation in a folder


def _annotate(data: Path, out: Path, seen: list[np.ndarray]):
    from test_annotate import NAMES, BoxModel

    from realtime_sam.app.annotate import annotate
    from realtime_sam.testing.fakes import FixedBoxDetector

    detector = FixedBoxDetector(lambda img: seen.append(img.copy()) or [[4, 4, 20, 20]], [0], NAMES)
    return annotate(data, detector=detector, model=BoxModel(), output_dir=out, progress=False)


def test_annotate_says_once_that_an_animation_in_a_folder_is_its_first_frame(tmp_path: Path, caplog) -> None:
    # It labelled the APNG's first frame without a word, where a folder source says so.
    data = tmp_path / "d"
    data.mkdir()
    assert cv2.imwrite(str(data / "0.png"), np.zeros((24, 32, 3), np.uint8))
    first = _write_animation(data / "1.png", 3)[0]
    _write_animation(data / "2.png", 2)
    seen: list[np.ndarray] = []
    with caplog.at_level(logging.WARNING, logger="realtime_sam.capture.images"):
        summary = _annotate(data, tmp_path / "labels", seen)
    assert summary.annotated == 3 and np.array_equal(seen[1], first)
    assert [r.getMessage() for r in caplog.records if r.name == "realtime_sam.capture.images"] == [
        f"warning: {data / '1.png'} is an animation; in {data} it is read as one image, its first frame "
        "(give it alone as DATA to label all its frames)"
    ]


def test_annotate_labels_every_frame_of_an_animation_given_alone(tmp_path: Path) -> None:
    # As the warning above advises: an APNG alone was labelled as one image, its first frame.
    written = _write_animation(tmp_path / "a.png", 3)
    seen: list[np.ndarray] = []
    summary = _annotate(tmp_path / "a.png", tmp_path / "out", seen)
    assert summary.annotated == 3 and all(np.array_equal(s, w) for s, w in zip(seen, written))
    assert sorted(p.name for p in (tmp_path / "out" / "labels").iterdir()) == [f"a_{i:06d}.txt" for i in range(3)]


def test_annotate_reads_a_folder_of_gifs(tmp_path: Path) -> None:
    expected = _gif_folder(tmp_path / "g")
    seen: list[np.ndarray] = []
    summary = _annotate(tmp_path / "g", tmp_path / "labels", seen)
    assert summary.annotated == 4
    assert all(np.array_equal(s, expected[n]) for s, n in zip(seen, ["0.gif", "1.gif", "2.gif", "10.gif"]))


# ------------------------------------------------------------------ 3. AVIF sequences by their brand


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\0\0\0\0" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body


@pytest.mark.skipif(not _HAS_ANIMATION, reason="OpenCV reads animations from 4.11 on")
@pytest.mark.parametrize("header, animated", [
    (_ftyp(b"avis", b"avif", b"avis", b"msf1", b"iso8", b"mif1", b"miaf"), True),  # libavif's sequence
    (_ftyp(b"avif", b"mif1", b"avis"), True),  # a sequence listed among the compatible brands
    (_ftyp(b"avif", b"avif", b"mif1", b"miaf", b"MA1B"), False),  # libavif's still
    (_ftyp(b"mif1", b"avif", b"heic"), False),
], ids=["libavif-sequence", "avis-compatible", "libavif-still", "no-avis"])
def test_an_avif_sequence_is_told_by_its_brand_alone(tmp_path: Path, header: bytes, animated: bool) -> None:
    # Only the header: the rest of the file is no AVIF. Two frames were decoded to tell, and these bytes were
    # not a sequence, whatever their brand.
    (tmp_path / "x.avif").write_bytes(header + b"\0\0\0\x10free" + bytes(8))
    assert is_animation(tmp_path / "x.avif") is animated


def test_an_avif_sequence_source_is_decoded_once(tmp_path: Path, monkeypatch) -> None:
    written = _write_animation(tmp_path / "seq.avif", 3)
    if not (tmp_path / "seq.avif").read_bytes()[8:12] == b"avis":
        pytest.skip("this OpenCV does not brand an AVIF sequence avis")
    calls = {"imdecodeanimation": 0}
    real = cv2.imdecodeanimation

    def counted(*args):
        calls["imdecodeanimation"] += 1
        return real(*args)

    monkeypatch.setattr(cv2, "imdecodeanimation", counted)
    with open_source(tmp_path / "seq.avif") as src:
        assert isinstance(src, AnimatedImageSource)
        frames = list(src)
    assert len(frames) == 3 and all(np.abs(f.image.astype(int) - w).max() <= 8 for f, w in zip(frames, written))
    assert calls == {"imdecodeanimation": 1}  # its first chunk; telling it a sequence decoded two frames more
