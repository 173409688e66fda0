"""Image sequences: a folder, a glob or one image (:class:`ImageSequenceSource`).
"""

from __future__ import annotations

import glob as globmod
import re
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from realtime_sam.capture.base import Source, SourceConfig
from realtime_sam.errors import SourceError, StreamInterrupted
from realtime_sam.types import Frame

__all__ = ["image_files", "IMAGE_EXTENSIONS", "ImageSequenceSource"]

# Ultralytics' image formats that OpenCV reads (.jp2, .avif and .mpo, a multi-picture JPEG, too: a folder of
# them is annotated as there, not found empty), and the Netpbm ones.
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".avif", ".mpo", ".ppm", ".pgm"
)


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Any 8-bit OpenCV image as ``HxWx3 uint8`` BGR, C-contiguous."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(np.iinfo(image.dtype).max)))
    return np.ascontiguousarray(image)


def _jpeg_is_cut_short(data: np.ndarray) -> bool:
    """True for a JPEG whose last scan has no end-of-image marker after it (a file cut short).

    libjpeg decodes such a file anyway, filling the missing rows with grey,
    and only prints "Premature end of JPEG file"; a thumbnail's or a second
    picture's markers (EXIF, MPO) come before the last scan or end with their own.
    """
    raw = data.tobytes()
    if not raw.startswith(b"\xff\xd8"):
        return False
    return raw.rfind(b"\xff\xd9") < raw.rfind(b"\xff\xda")


def _read_image(path: Path) -> np.ndarray | None:
    """``path`` as ``HxWx3 uint8`` BGR, upright (EXIF orientation applied, as ``cv2.imread``), or None if unreadable."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if data.size == 0 or _jpeg_is_cut_short(data):
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


def image_files(spec: str | Path, *, no_match: str) -> list[Path]:
    """The files ``spec`` names, in natural order: a folder's images (not its hidden files), one file, or a glob's images.

    A folder and a glob both take only files ending in one of :data:`IMAGE_EXTENSIONS`
    (any case): a ``notes.txt`` or ``Thumbs.db`` beside the frames is not a frame. Raises
    :class:`SourceError` for a folder without images, with ``no_match`` when a glob
    matches nothing, and naming the files it matched when none is an image.
    """
    path = Path(spec)
    if path.is_dir():
        # Hidden files are left out, as a glob leaves them: macOS's "._IMG_0001.JPG" companions are not images.
        files = [p for p in path.iterdir() if not p.name.startswith(".") and p.is_file() and _is_image_name(p)]
        if not files:
            raise SourceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}{_subfolder_hint(path)}")
    elif path.is_file():
        files = [path]
    else:
        # recursive: "shots/**/*.jpg" reaches every depth, as Ultralytics' sources and Python's glob mean it
        matched = sorted((Path(p) for p in globmod.glob(str(spec), recursive=True) if Path(p).is_file()), key=_natural_key)
        if not matched:
            raise SourceError(no_match)
        files = [p for p in matched if _is_image_name(p)]
        if not files:
            folder = matched[0].parent
            beside = sorted((p for p in folder.iterdir() if p.is_file() and _is_image_name(p)), key=_natural_key)
            example = folder / f"*{beside[0].suffix if beside else '.jpg'}"
            raise SourceError(
                f"{spec} matches {len(matched)} file(s) but no images (first: {matched[0].name}; images end in "
                f"{', '.join(IMAGE_EXTENSIONS)}); give a glob of the images (e.g. '{example}'), "
                "their folder, or a video by its path"
            )
    return sorted(files, key=_natural_key)


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _subfolder_hint(path: Path) -> str:
    """For a folder whose images are in its subfolders (DAVIS's ``JPEGImages/480p``), how to name them; else ``""``."""
    subfolders = sorted((p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")), key=_natural_key)
    for sub in subfolders:
        # Two levels down at most (DAVIS: JPEGImages/480p/<seq>/): a home folder is not walked whole.
        for pattern in ("*", "*/*"):
            found = sorted((f for f in sub.glob(pattern) if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()), key=_natural_key)
            if found:
                return (
                    f"; its images are in subfolders: give one (e.g. {found[0].parent}), "
                    f"or every one with a quoted glob ('{path}/**/*{found[0].suffix}')"
                )
    return ""


class ImageSequenceSource(Source):
    """A folder of images or a glob pattern, in natural sort order, read with ``cv2.imread``.

    Timestamps are ``position / config.image_fps``, where position is the
    image's place in the sorted list. Unreadable images (a JPEG cut short
    too) are skipped, and after the last image :class:`StreamInterrupted` reports how many were
    skipped. Each image comes at its own size; :attr:`size` is the first one's (the
    engine starts over on a new size, as for a stream that changes resolution).
    """

    live = False
    sizes_vary = True  # nothing tells an image's size before it is read

    def __init__(self, spec: str | Path, config: SourceConfig | None = None) -> None:
        super().__init__()
        self.config = config or SourceConfig()
        self.name = str(spec)
        self._files = image_files(
            spec, no_match=f"no files match {spec}; check the pattern (quote it so the shell does not expand it)"
        )
        self.fps = float(self.config.image_fps)
        self.num_frames = len(self._files)
        # Per-frame outputs (PNG masks) take the images' names, as DAVIS and YouTube-VOS pair
        # JPEGImages/00005.jpg with Annotations/00005.png; two images with one name keep frame numbers.
        stems = [p.stem for p in self._files]
        self._names: list[str] | None = stems if len(set(stems)) == len(stems) else None
        self._pos = 0
        self._skipped: list[Path] = []
        first = self._next_image()
        if first is None:
            raise SourceError(f"none of the {len(self._files)} files in {self.name} is a readable image")
        self._first: tuple[int, np.ndarray] | None = first
        h, w = first[1].shape[:2]
        self.size = (int(w), int(h))

    def _next_image(self) -> tuple[int, np.ndarray] | None:
        while self._pos < len(self._files):
            pos, path = self._pos, self._files[self._pos]
            self._pos += 1
            image = _read_image(path)
            if image is None:
                self._skipped.append(path)
                continue
            return pos, np.ascontiguousarray(image)
        return None

    def _read(self) -> Frame | None:
        if self._first is not None:
            item, self._first = self._first, None
        else:
            if self._pos >= len(self._files) and not self._skipped:
                return None
            item = self._next_image()
            if item is None:
                if self._skipped:
                    skipped, self._skipped = self._skipped, []
                    raise StreamInterrupted(
                        f"{self.name}: {len(skipped)} of {len(self._files)} files could not be read as images "
                        f"(first: {skipped[0]}); the other {self._delivered} were delivered"
                    )
                return None
        pos, image = item
        name = None if self._names is None else self._names[pos]
        return Frame(self._delivered, image, pos / self.fps, time.monotonic(), name)

    def _release(self) -> None:
        self._first = None
