"""GIFs in a folder or glob read where OpenCV has no GIF decoder (before 4.11, which pyproject allows).

The installed OpenCV reads GIFs; an older one is simulated in-process by making ``cv2.imdecode`` return None
for a GIF's bytes (as 4.10's does) and removing ``cv2.imdecodeanimation`` (4.11 on). What the frames must be
is what the installed OpenCV decodes, taken before the patch. Files are written with OpenCV, PIL and FFmpeg.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_leftmedia_images import _annotate, _gif_folder, _write_animation

from realtime_sam.capture.images import ImageSequenceSource, read_bgr
from realtime_sam.capture.sources import open_source
from realtime_sam.capture.video_file import VideoFileSource
from realtime_sam.errors import SourceError

_ORDER = ["0.gif", "1.gif", "2.gif", "10.gif"]
_IMDECODE = cv2.imdecode  # the installed OpenCV's, taken before any test patches it
_IMDECODEANIMATION = getattr(cv2, "imdecodeanimation", None)


def _opencv_reads(folder: Path) -> dict[str, np.ndarray]:
    """Each file of ``folder`` as the installed OpenCV (4.11 on) decodes it, BGR."""
    return {p.name: _IMDECODE(np.fromfile(p, np.uint8), cv2.IMREAD_COLOR) for p in folder.iterdir()}


@pytest.fixture
def old_opencv(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """OpenCV 4.10 as far as GIFs go: imdecode gives None for one, and there is no imdecodeanimation.
    Yields a list that counts the GIFs refused, to show the patch was in the way."""
    refused: list[int] = []

    def imdecode(buf: np.ndarray, flags: int) -> np.ndarray | None:
        if np.asarray(buf)[:6].tobytes() in (b"GIF87a", b"GIF89a"):
            refused.append(1)
            return None
        return _IMDECODE(buf, flags)

    monkeypatch.setattr(cv2, "imdecode", imdecode)
    monkeypatch.delattr(cv2, "imdecodeanimation", raising=False)
    return refused


def test_a_folder_or_glob_of_gifs_is_read_without_opencvs_gif_decoder(tmp_path: Path, old_opencv: list[int]) -> None:
    # With OpenCV 4.10 every GIF was unreadable: "none of the 4 files in ... is a readable image".
    _gif_folder(tmp_path / "g")  # a transparent palette entry (PIL), grey (PIL), OpenCV's and FFmpeg's
    expected = _opencv_reads(tmp_path / "g")
    for spec in (tmp_path / "g", str(tmp_path / "g" / "*.gif")):
        with open_source(spec) as src:
            assert isinstance(src, ImageSequenceSource)
            frames = list(src)
        assert [f.name for f in frames] == [Path(n).stem for n in _ORDER]
        for frame, name in zip(frames, _ORDER):
            image = frame.image
            assert image.dtype == np.uint8 and image.shape == (24, 32, 3) and image.flags["C_CONTIGUOUS"]
            assert np.array_equal(image, expected[name]), name
    assert old_opencv  # the GIFs did go past the simulated old decoder


def test_an_animated_gif_in_a_folder_is_its_first_frame_and_said_once(
    tmp_path: Path, old_opencv: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "f"
    folder.mkdir()
    assert cv2.imwrite(str(folder / "0.png"), np.full((24, 32, 3), 7, np.uint8))
    _write_animation(folder / "1.gif", 3)  # OpenCV writes it: the patch is for reading only
    first = _IMDECODE(np.fromfile(folder / "1.gif", np.uint8), cv2.IMREAD_COLOR)  # its palette's colours
    (folder / "2.gif").write_bytes((folder / "1.gif").read_bytes())
    with caplog.at_level(logging.WARNING, logger="realtime_sam.capture.images"):
        with open_source(folder) as src:
            frames = list(src)
    assert len(frames) == 3 and np.array_equal(frames[1].image, first) and np.array_equal(frames[2].image, first)
    assert [r.getMessage() for r in caplog.records if r.name == "realtime_sam.capture.images"] == [
        f"warning: {folder / '1.gif'} is an animation; in {folder} it is read as one image, its first frame "
        "(give it as --source to read all its frames)"
    ]


def test_a_gif_alone_is_still_every_frame_by_ffmpeg(tmp_path: Path, old_opencv: list[int]) -> None:
    _write_animation(tmp_path / "clip.gif", 3)
    ok, animation = _IMDECODEANIMATION(np.fromfile(tmp_path / "clip.gif", np.uint8), 0, 10)
    assert ok and len(animation.frames) == 3
    with open_source(tmp_path / "clip.gif") as src:
        assert isinstance(src, VideoFileSource)
        frames = list(src)
    assert len(frames) == 3  # each as OpenCV's animation reader decodes it
    assert all(np.array_equal(f.image, cv2.cvtColor(a, cv2.COLOR_BGRA2BGR) if a.shape[2] == 4 else a)
               for f, a in zip(frames, animation.frames))


def test_annotate_reads_a_folder_of_gifs_without_opencvs_gif_decoder(tmp_path: Path, old_opencv: list[int]) -> None:
    _gif_folder(tmp_path / "g")
    expected = _opencv_reads(tmp_path / "g")
    seen: list[np.ndarray] = []
    summary = _annotate(tmp_path / "g", tmp_path / "labels", seen)
    assert summary.annotated == 4
    assert all(np.array_equal(s, expected[n]) for s, n in zip(seen, _ORDER))


def test_a_damaged_gif_is_unreadable_not_an_error(tmp_path: Path, old_opencv: list[int]) -> None:
    # Cut short in its header, or GIF in name and magic only: None, so a folder skips it as it skips a bad PNG.
    _gif_folder(tmp_path / "g")
    whole = (tmp_path / "g" / "0.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(whole[:15])
    (tmp_path / "junk.gif").write_bytes(b"GIF89a" + bytes(range(256)) * 4)
    assert read_bgr(tmp_path / "cut.gif") is None and read_bgr(tmp_path / "junk.gif") is None
    with pytest.raises(SourceError, match="none of the 2 files .* is a readable image"):
        ImageSequenceSource(str(tmp_path / "*.gif"))
