"""Image sequences: a folder, a glob or one image (:class:`ImageSequenceSource`).
"""

from __future__ import annotations

import glob as globmod
import logging
import re
import statistics
import struct
import time
from collections import deque
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from realtime_sam.capture.base import Source, SourceConfig
from realtime_sam.errors import SourceError, StreamInterrupted
from realtime_sam.file_bytes import read_file_bytes
from realtime_sam.types import Frame

__all__ = [
    "image_files", "read_bgr", "IMAGE_EXTENSIONS", "AnimatedImageSource", "AnimationNotice", "ImageSequenceSource",
    "is_animation", "is_image_alone", "read_listed_bgr",
]

_log = logging.getLogger(__name__)

# Ultralytics' image formats that OpenCV reads (.jp2, .avif and .mpo, a multi-picture JPEG, too: a folder of
# them is annotated as there, not found empty), and the Netpbm ones. A .gif (OpenCV 4.11 on, else FFmpeg) is one in a
# folder or glob; one given alone is a video (_VIDEO_ALONE).
IMAGE_EXTENSIONS: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".jp2", ".avif", ".mpo", ".ppm", ".pgm", ".gif"
)

# Given alone, a GIF is read by FFmpeg as a video (every frame, at its own delays), as it always was; in a
# folder it is a frame like a PNG beside it, and it was left out of the folder as not an image.
_VIDEO_ALONE: tuple[str, ...] = (".gif",)


def is_image_alone(path: Path) -> bool:
    """True for a file that, given alone as a source, is read as an image (one frame, or an animation such as
    an APNG) rather than by FFmpeg as a video: its name ends in one of :data:`IMAGE_EXTENSIONS`, not ``.gif``."""
    suffix = path.suffix.lower()
    return suffix in IMAGE_EXTENSIONS and suffix not in _VIDEO_ALONE


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Any OpenCV image (``HxW`` or ``HxWxC``, C 1-4; 8/16-bit or floating-point) as ``HxWx3 uint8`` BGR,
    C-contiguous.

    Integer pixels are scaled by their type's range (16-bit 0..65535 to 0..255). Floating-point ones (a
    32-bit float TIFF) as image viewers show them (``cv2.imshow``, matplotlib, GIMP): 0.0 black, 1.0
    white, so times 255, rounded; values outside 0..1 clipped, NaN and infinities 0 (black). A second
    channel (grey + alpha) and a fourth (alpha) are dropped.
    """
    if image.dtype.kind == "f":
        # Not OpenCV's own 8-bit conversion (imread's, PIL's "F" to "L"): it casts without scaling, and
        # an image in 0..1 comes out black.
        finite = np.nan_to_num(image, nan=0.0, posinf=0.0, neginf=0.0)
        image = np.rint(np.clip(finite, 0.0, 1.0) * 255.0).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(np.iinfo(image.dtype).max)))
    if image.ndim == 3 and image.shape[2] == 2:
        image = image[:, :, 0]
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
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


def _tiff_float_samples(data: np.ndarray) -> int | None:
    """Samples per pixel of a TIFF whose first image holds floating-point samples (SampleFormat 3), read from
    its first directory; None for any other file (integer TIFF, BigTIFF, not a TIFF, damaged).

    ``data`` is the file's bytes (1-D ``uint8``). Only the directory's 12-byte entries are read.
    """
    head = data[:4].tobytes()
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(head)
    if order is None:
        return None
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (entries,) = struct.unpack_from(order + "H", data, ifd)
        values = {277: 1, 339: 1}  # SamplesPerPixel, SampleFormat (1: unsigned integer), as TIFF defaults them
        for entry in range(ifd + 2, ifd + 2 + 12 * entries, 12):
            tag, kind, count = struct.unpack_from(order + "HHI", data, entry)
            if tag in values and kind == 3:  # SHORT; one per sample for SampleFormat: the first tells
                at = entry + 8 if count <= 2 else struct.unpack_from(order + "I", data, entry + 8)[0]
                (values[tag],) = struct.unpack_from(order + "H", data, at)
    except struct.error:
        return None
    return values[277] if values[339] == 3 else None


def _decode_bgr(data: np.ndarray) -> np.ndarray | None:
    """An image file's bytes decoded as ``HxWx3 uint8`` BGR, upright, as ``cv2.imread`` reads them; None if
    OpenCV cannot decode them or they are a JPEG cut short (:func:`_jpeg_is_cut_short`).

    A floating-point TIFF, which ``cv2.imread`` refuses (libtiff's 8-bit reader takes no 32-bit samples),
    is decoded at its own depth and scaled as viewers show it (:func:`_as_bgr`): told from its header,
    so it is decoded once and OpenCV prints no warning for it.
    """
    if _jpeg_is_cut_short(data):
        return None
    samples = _tiff_float_samples(data)
    if samples is None:
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None and data[:6].tobytes() in (b"GIF87a", b"GIF89a"):
            # OpenCV before 4.11 has no GIF decoder, and pyproject allows 4.10: FFmpeg's reads it instead.
            return _gif_first_frame(data)
        return image
    # ANYDEPTH|ANYCOLOR applies the orientation tag as imread does, but OpenCV asserts on 2 or 4 float
    # channels; IMREAD_UNCHANGED reads those as stored.
    flags = cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR if samples in (1, 3) else cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imdecode(data, flags)
    except cv2.error:
        return None
    return None if image is None else _as_bgr(image)


def _gif_first_frame(data: np.ndarray) -> np.ndarray | None:
    """A GIF's bytes' first frame as ``HxWx3 uint8`` BGR, C-contiguous, decoded by FFmpeg (PyAV) as OpenCV 4.11
    on decodes it: the logical screen's size, a transparent palette entry as its colour; None if unreadable.

    FFmpeg paints a transparent entry in a colour of its own (white), so the transparency flags of the
    graphic control extensions before the first image are cleared first: every entry is then its colour.
    """
    import io

    import av  # FFmpeg's decoders: imported only for a GIF that this OpenCV cannot read

    try:
        with av.open(io.BytesIO(_gif_opaque(data)), format="gif") as container:
            for frame in container.decode(video=0):
                return np.ascontiguousarray(frame.to_ndarray(format="bgr24"))
    except (av.FFmpegError, ValueError, IndexError, struct.error):
        return None
    return None


def _gif_opaque(data: np.ndarray) -> bytes:
    """A GIF's bytes (1-D ``uint8``) with the transparent-colour flag of each graphic control extension before
    its first image cleared (bit 0 of the extension's packed byte). Raises ``struct.error`` when cut short."""
    out = bytearray(data.tobytes())
    (flags,) = struct.unpack_from("B", out, 10)  # the logical screen descriptor's packed byte
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    while True:
        kind, label = struct.unpack_from("BB", out, at)
        if kind != 0x21:  # the first image (0x2C), the trailer or bytes that are no block: done
            return bytes(out)
        if label == 0xF9:  # a graphic control extension: size 4, then the packed byte
            out[at + 3] &= 0xFE
        at += 2
        while True:  # its sub-blocks, up to a zero length
            (length,) = struct.unpack_from("B", out, at)
            at += 1 + length
            if length == 0:
                break


def read_bgr(path: str | Path) -> np.ndarray | None:
    """``path`` as ``HxWx3 uint8`` BGR, upright (EXIF orientation applied, as ``cv2.imread``), or None if
    unreadable: empty, damaged, a JPEG cut short, or of a kind OpenCV cannot decode. A floating-point TIFF
    is read as :func:`_decode_bgr` says."""
    data = read_file_bytes(path)
    return None if data is None else _decode_bgr(data)


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


class AnimationNotice:
    """Says once, as a warning on this module's logger, that an animated image among a folder's or glob's files
    (APNG, animated WebP or GIF, AVIF sequence) is read as one image, its first frame.

    One per list of files read (a folder source, an ``annotate`` run): the first such file is named, the
    others are not. Told from the file's header only (:func:`_animated_by_header`), nothing decoded again.

    Args:
        where: the folder or glob, as the user gave it.
        hint: what to do to read every frame, in the warning's parentheses.
    """

    def __init__(self, where: str, hint: str = "give it as --source to read all its frames") -> None:
        self.where = where
        self.hint = hint
        self.told = False

    def check(self, path: Path, data: np.ndarray) -> None:
        """Warn if ``path``, whose bytes ``data`` (1-D ``uint8``) decoded as an image, is an animation and none
        was told of before."""
        if self.told or path.suffix.lower() not in _ANIMATED_SUFFIXES:
            return
        # Without OpenCV's animation reader an APNG alone is one frame too, so nothing is lost here; a GIF
        # alone is FFmpeg's to read, so it is said whatever OpenCV can do.
        if path.suffix.lower() not in _VIDEO_ALONE and getattr(cv2, "imdecodeanimation", None) is None:
            return
        if _animated_by_header(data):
            self.told = True
            _log.warning(
                "warning: %s is an animation; in %s it is read as one image, its first frame (%s)",
                path, self.where, self.hint,
            )


def read_listed_bgr(path: Path, notice: AnimationNotice) -> np.ndarray | None:
    """One file of a folder or glob as ``HxWx3 uint8`` BGR, C-contiguous, as :func:`read_bgr` reads it (None if
    unreadable); an animation is its first frame, and ``notice`` tells of the first one."""
    data = read_file_bytes(path)
    image = None if data is None else _decode_bgr(data)
    if data is None or image is None:
        return None
    notice.check(path, data)
    return np.ascontiguousarray(image)


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
        self.fps_setting = "source.image_fps"
        self.num_frames = len(self._files)
        # Per-frame outputs (PNG masks) take the images' names, as DAVIS and YouTube-VOS pair
        # JPEGImages/00005.jpg with Annotations/00005.png; two images with one name keep frame numbers.
        stems = [p.stem for p in self._files]
        self._names: list[str] | None = stems if len(set(stems)) == len(stems) else None
        self._pos = 0
        self._skipped: list[Path] = []
        self._animation_notice = AnimationNotice(self.name)
        first = self._next_image()
        if first is None:
            why = "damaged, empty, or of a kind OpenCV cannot decode, such as a 32-bit integer TIFF"
            fix = "give 8- or 16-bit PNG, JPEG or TIFF"
            if len(self._files) == 1:
                raise SourceError(f"{self._files[0]} is not a readable image ({why}); {fix}")
            raise SourceError(
                f"none of the {len(self._files)} files in {self.name} is a readable image "
                f"(first: {self._files[0]}: {why}); {fix} images"
            )
        self._first: tuple[int, np.ndarray] | None = first
        h, w = first[1].shape[:2]
        self.size = (int(w), int(h))

    def _next_image(self) -> tuple[int, np.ndarray] | None:
        while self._pos < len(self._files):
            pos, path = self._pos, self._files[self._pos]
            self._pos += 1
            image = read_listed_bgr(path, self._animation_notice)
            if image is None:
                self._skipped.append(path)
                continue
            return pos, image
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


# Frames an animated image is read in at a time: OpenCV decodes an animation from its start, so one call per
# frame would cost the square of its length, and one call for all would hold every frame in memory.
_ANIMATION_CHUNK = 32


# Formats OpenCV reads animations of (4.11 on). From the file's bytes (cv2.imdecodeanimation), not its
# name (cv2.imreadanimation): on Windows OpenCV opens a file by a narrow path, and a name outside the ANSI
# code page (写真.png) was not found, so the animation was read as one image. A GIF is among them for the
# folder's warning only: alone it is a video (_VIDEO_ALONE).
_ANIMATED_SUFFIXES = {".png", ".apng", ".webp", ".avif", ".gif"}


def _read_animation(data: np.ndarray, start: int, count: int) -> tuple[list[np.ndarray], list[int]] | None:
    """Frames ``start`` to ``start + count`` of an animated image's bytes as BGR, with their durations in ms;
    None if unreadable."""
    decode = getattr(cv2, "imdecodeanimation", None)  # OpenCV 4.11 on
    if decode is None:
        return None
    try:
        ok, animation = decode(data, start, count)
    except cv2.error:
        return None
    if not ok:
        return None
    frames = [_as_bgr(f) for f in animation.frames]
    return frames, [int(d) for d in animation.durations][: len(frames)]


def _animated_by_header(data: np.ndarray) -> bool:
    """Whether an image file's bytes hold more than one frame, from its header alone (no pixel decoded):
    an APNG's ``acTL`` frame count, an animated WebP's ``ANMF`` frames, a GIF's image blocks (their
    compressed data skipped), an AVIF's brands (``avis``: an image sequence; ``avif`` alone: a still).
    False for anything else, or a header too damaged to tell.
    """
    try:
        if data[:8].tobytes() == b"\x89PNG\r\n\x1a\n":
            # An APNG's acTL chunk comes before its first IDAT (the PNG spec's order).
            at = 8
            while at + 8 <= data.size:
                length, kind = struct.unpack_from(">I4s", data, at)
                if kind == b"acTL":
                    return struct.unpack_from(">I", data, at + 8)[0] >= 2
                if kind in (b"IDAT", b"IEND"):
                    return False
                at += 12 + length
            return False
        if data[:4].tobytes() == b"RIFF" and data[8:12].tobytes() == b"WEBP":
            at, frames = 12, 0
            while at + 8 <= data.size and frames < 2:
                kind, length = struct.unpack_from("<4sI", data, at)
                frames += kind == b"ANMF"
                at += 8 + length + (length & 1)  # chunks are padded to an even size
            return frames >= 2
        if data[:6].tobytes() in (b"GIF87a", b"GIF89a"):
            return _gif_images(data, 2) >= 2
        if data[4:8].tobytes() == b"ftyp":
            # ISO-BMFF's ftyp box: a major brand, a minor version, then compatible brands. libavif (and so
            # OpenCV and FFmpeg) brands an image sequence avis, listing avif beside it; a still has no avis.
            (size,) = struct.unpack_from(">I", data, 0)
            brands = data[8 : min(size, data.size)].tobytes()
            brands = brands[:4] + brands[8:]  # the minor version is no brand
            return any(brands[i : i + 4] == b"avis" for i in range(0, len(brands) - 3, 4))
    except struct.error:
        return False
    return False


def _gif_images(data: np.ndarray, most: int) -> int:
    """How many images (frames) a GIF's bytes hold, counted up to ``most``, by walking its blocks: each image's
    LZW data is skipped over by its sub-blocks' lengths, not decoded. Raises ``struct.error`` when cut short."""
    (flags,) = struct.unpack_from("B", data, 10)  # the logical screen descriptor's packed byte
    at = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global colour table
    images = 0
    while images < most:
        (kind,) = struct.unpack_from("B", data, at)
        if kind == 0x2C:  # an image descriptor, its local colour table, its LZW code size, then data
            (flags,) = struct.unpack_from("B", data, at + 9)
            at += 10 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0) + 1
            images += 1
        elif kind == 0x21:  # an extension: its label, then data
            at += 2
        else:  # the trailer (0x3B), or bytes that are no block
            return images
        while True:  # sub-blocks: a length byte and that many bytes, up to a zero length
            (length,) = struct.unpack_from("B", data, at)
            at += 1 + length
            if length == 0:
                break
    return images


def is_animation(path: Path) -> bool:
    """True for an image file that holds more than one frame OpenCV reads as an animation (APNG, animated
    WebP, AVIF sequence), told from its header alone (:func:`_animated_by_header`), without decoding a frame.

    A GIF given alone is read as a video (see :func:`is_image_alone`), so this is not asked of it.
    """
    if getattr(cv2, "imdecodeanimation", None) is None or path.suffix.lower() not in _ANIMATED_SUFFIXES:
        return False
    data = read_file_bytes(path)
    return data is not None and _animated_by_header(data)


class AnimatedImageSource(Source):
    """One animated image (an APNG ``.png``, an animated ``.webp``) as a video: every frame, in order.

    Read with OpenCV (``cv2.imdecodeanimation``, from the file's bytes) in chunks, each frame composed as
    viewers show it and its alpha channel dropped. Frame ``k``'s timestamp is the
    sum of the durations of the frames before it; :attr:`fps` is the typical
    frame's rate. A frame without a duration lasts ``1 / fps`` (``config.image_fps``
    when none has one). A file that stops decoding before the frame count its header
    gives (damaged, cut short) ends with :class:`StreamInterrupted`, once the frames
    before are delivered.
    """

    live = False

    def __init__(self, path: str | Path, config: SourceConfig | None = None) -> None:
        super().__init__()
        self.config = config or SourceConfig()
        self.path = Path(path)
        self.name = str(path)
        self._data = read_file_bytes(self.path)  # compressed: decoded a chunk at a time
        self._pending: deque[tuple[np.ndarray, int]] = deque()
        self._next_start = 0
        self._ended = False
        self._clock_ms = 0.0
        self._fill()
        if not self._pending:
            raise SourceError(f"{self.path} is not an animation OpenCV can read; give a video file or an image")
        image = self._pending[0][0]
        self.size = (int(image.shape[1]), int(image.shape[0]))
        durations = [d for _, d in self._pending if d > 0]
        self.fps = 1000.0 / statistics.median(durations) if durations else float(self.config.image_fps)
        self.fps_setting = None if durations else "source.image_fps"
        try:
            count = int(cv2.imcount(str(self.path)))  # 0 where OpenCV cannot open the name (Windows, above)
        except cv2.error:
            count = 0
        self.num_frames = count if count > 1 else None

    def _fill(self) -> None:
        if self._ended:
            return
        chunk = None if self._data is None else _read_animation(self._data, self._next_start, _ANIMATION_CHUNK)
        if chunk is None or not chunk[0]:
            self._ended = True
            return
        frames, durations = chunk
        durations += [0] * (len(frames) - len(durations))
        self._pending.extend(zip(frames, durations))
        self._next_start += len(frames)
        if len(frames) < _ANIMATION_CHUNK:
            self._ended = True

    def _read(self) -> Frame | None:
        if not self._pending:
            self._fill()
            if not self._pending:
                if self.num_frames is not None and self._delivered < self.num_frames:
                    # A truncated APNG decoded its first chunk and then nothing: it ended, exit 0,
                    # with 32 of 70 frames.
                    raise StreamInterrupted(
                        f"{self.name}: {self._delivered} of its {self.num_frames} frames could be decoded "
                        "(the file is damaged or cut short); those were delivered"
                    )
                return None
        image, duration_ms = self._pending.popleft()
        timestamp = self._clock_ms / 1000.0
        self._clock_ms += duration_ms if duration_ms > 0 else 1000.0 / (self.fps or self.config.image_fps)
        return Frame(self._delivered, np.ascontiguousarray(image), timestamp, time.monotonic())

    def _release(self) -> None:
        self._pending.clear()
        self._data = None
