"""``annotate`` and the tracking source take the same files of a folder or glob as images, in any case.

Real files written with OpenCV and PIL under upper- and lower-case names (``.JPG``, ``.PNG``, ``.GIF``,
``.WEBP``, ``.TIF``/``.TIFF``, ``.BMP``...), beside files that are not images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from test_leftmedia_images import _annotate

from realtime_sam.capture.images import ImageSequenceSource
from realtime_sam.capture.sources import open_source

_WRITTEN_BY_OPENCV = [".JPG", ".jpeg", ".JPEG", ".PNG", ".png", ".WEBP", ".TIF", ".TIFF", ".tif", ".BMP", ".bmp"]


def _folder(folder: Path) -> list[str]:
    """Images in ``folder`` under every spelling above and a ``.GIF`` and ``.gif`` (PIL), with a ``notes.TXT``,
    a ``Thumbs.db`` and a hidden ``._a0.JPG`` beside them; returns the images' stems, in natural order."""
    from PIL import Image

    folder.mkdir()
    stems = []
    for i, suffix in enumerate(_WRITTEN_BY_OPENCV + [".GIF", ".gif"]):
        stem = f"a{i}"
        image = np.full((24, 32, 3), (20 * i) % 250, np.uint8)
        image[:, : 4 + i] = (0, 0, 255)
        if suffix.lower() == ".gif":
            Image.fromarray(image[:, :, ::-1]).save(folder / f"{stem}{suffix}", format="GIF")
        else:
            ok, data = cv2.imencode(suffix.lower(), image)
            assert ok, suffix
            (folder / f"{stem}{suffix}").write_bytes(data.tobytes())
        stems.append(stem)
    (folder / "notes.TXT").write_text("not an image")
    (folder / "Thumbs.db").write_bytes(b"\0" * 64)
    (folder / "._a0.JPG").write_bytes(b"\0\5\26\7" + b"\0" * 60)  # macOS's companion file
    return stems


def test_annotate_and_the_source_take_the_same_images_of_a_folder_or_glob(tmp_path: Path) -> None:
    stems = _folder(tmp_path / "d")
    for spec in (tmp_path / "d", str(tmp_path / "d" / "*")):
        with open_source(spec) as src:
            assert isinstance(src, ImageSequenceSource)
            frames = list(src)
        seen: list[np.ndarray] = []
        out = tmp_path / f"labels{len(str(spec))}"
        summary = _annotate(spec, out, seen)
        assert [f.name for f in frames] == stems
        assert summary.images == summary.annotated == len(stems) and summary.unreadable == 0
        labels = sorted(p.stem for p in out.iterdir())  # one YOLO label file per image
        assert labels == sorted(stems)
        assert all(np.array_equal(f.image, s) for f, s in zip(frames, seen))


def test_an_upper_case_image_or_gif_given_alone_is_read_alike(tmp_path: Path) -> None:
    # A .TIF alone is one image, a .GIF alone a video (every frame), for both.
    from PIL import Image

    from realtime_sam.capture.video_file import VideoFileSource

    assert cv2.imwrite(str(tmp_path / "still.TIF"), np.full((24, 32, 3), 90, np.uint8))
    frames = [Image.fromarray(np.full((24, 32, 3), 40 + 60 * i, np.uint8)) for i in range(3)]
    frames[0].save(tmp_path / "clip.GIF", save_all=True, append_images=frames[1:], duration=40)
    with open_source(tmp_path / "still.TIF") as src:
        assert isinstance(src, ImageSequenceSource) and len(list(src)) == 1
    with open_source(tmp_path / "clip.GIF") as src:
        assert isinstance(src, VideoFileSource) and len(list(src)) == 3
    seen: list[np.ndarray] = []
    assert _annotate(tmp_path / "still.TIF", tmp_path / "a", seen).annotated == 1
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["still.txt"]
    assert _annotate(tmp_path / "clip.GIF", tmp_path / "b", seen).annotated == 3
    assert sorted(p.name for p in (tmp_path / "b" / "labels").iterdir()) == [f"clip_{i:06d}.txt" for i in range(3)]
