"""Outputs that receive every :class:`~realtime_sam.types.FrameResult` as it is made.

Four kinds, all following the :class:`Sink` protocol (``write(result)``,
``close()``, context manager) and all written *as frames arrive*, so a run
that stops early -- Ctrl-C, a dead stream, an exception -- keeps everything
written before it:

``video``  :class:`VideoSink`, the annotated frames as H.264 in ``.mp4``,
           ``.mov`` or ``.mkv``;
``jsonl``  :class:`JsonlSink`, one JSON object per frame with every track's
           box, score, state and COCO RLE mask;
``png``    :class:`PngSink`, one DAVIS-style indexed PNG per frame
           (pixel value = track id);
``mots``   :class:`MotsSink`, the MOTS challenge text format.

:func:`make_sink` builds one sink and :func:`open_sinks` several (for the
CLI's ``--output video:out.mp4`` style arguments); both check that the output
can be written *when they are called*, so a bad path is a one-line
:class:`~realtime_sam.errors.SinkError` before any frame is processed, not
after the first.

Sinks are driven by one thread (the pipeline's inference thread) and are not
safe to share between threads.

Overlapping masks: the PNG and MOTS formats give each pixel one id (the MOTS
tools reject overlapping masks), so there every pixel claimed by several
tracks goes to the **smallest** of them (ties: the lower id): a small object
in front of a large one stays visible. JSONL keeps every mask as is.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Literal, Protocol, Sequence, runtime_checkable

import av
import cv2
import numpy as np

from .errors import ConfigError, SinkError, describe_error
from .render import Renderer
from .rle import encode_rle, mask_to_box
from .types import FrameResult, TrackResult

__all__ = [
    "Sink",
    "SinkConfig",
    "SinkSpec",
    "SINK_KINDS",
    "VideoSink",
    "JsonlSink",
    "PngSink",
    "MotsSink",
    "MultiSink",
    "make_sink",
    "open_sinks",
    "parse_sink_spec",
    "davis_palette",
    "encode_indexed_png",
    "label_image",
    "load_jsonl",
]

SinkKind = Literal["video", "jsonl", "png", "mots"]
SINK_KINDS: tuple[str, ...] = ("video", "jsonl", "png", "mots")
IdOverflow = Literal["error", "wrap"]

# Container format for each accepted video extension.
_VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
# Extensions that pick a sink kind when a spec names no kind.
_KIND_BY_SUFFIX = {**{s: "video" for s in _VIDEO_FORMATS}, ".jsonl": "jsonl", ".txt": "mots"}
_MP4_FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"
_X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)
# FFmpeg enum values (libavutil/pixfmt.h): BT.601 matrix, limited ("TV") range.
_AVCOL_SPC_SMPTE170M = 6
_AVCOL_RANGE_MPEG = 1


@runtime_checkable
class Sink(Protocol):
    """What the pipeline feeds: ``write`` per frame, ``close`` once at the end.

    ``close()`` is called on every exit path (normal end, Ctrl-C, error) and
    must leave a valid output; calling it twice is harmless. Sinks are also
    context managers that close on exit.
    """

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Sink": ...

    def __exit__(self, *exc_info: object) -> None: ...


@dataclass(frozen=True)
class SinkConfig:
    """Settings shared by the sinks :func:`make_sink` builds.

    Attributes:
        video_codec: PyAV/FFmpeg encoder name (``libx264`` writes H.264).
        video_crf: x264/x265 constant rate factor, ``0`` (lossless) to ``51``;
            23 is x264's default, lower is better and bigger.
        video_preset: x264/x265 speed preset; with ``veryfast`` a 720p frame
            costs 10-13 ms (drawing included) on this project's 2-core test
            machine; ``medium`` (x264's default) is about 1.5-2x slower.
        video_fragmented: write ``.mp4``/``.mov`` as fragmented MP4 so that
            even a hard kill leaves a playable file (see :class:`VideoSink`).
        video_keyframe_interval_s: seconds between keyframes; a hard kill
            loses at most about this much video.
        png_compression: zlib level ``0`` to ``9`` for :class:`PngSink`.
        id_overflow: what the PNG (ids 1-255) and MOTS (ids 1-999) sinks do
            with a larger track id: ``error`` stops with a :class:`SinkError`;
            ``wrap`` reuses ids (``(id - 1) % max + 1``), which may merge two
            objects into one id.
        mots_class_id: MOTS class written for every track (1 car,
            2 pedestrian in KITTI MOTS / MOTSChallenge; 1-9 allowed).
        mots_frame_offset: added to the 0-based frame index in MOTS files
            (``0`` as KITTI MOTS and TrackEval's loader expect).
    """

    video_codec: str = "libx264"
    video_crf: int = 23
    video_preset: str = "veryfast"
    video_fragmented: bool = True
    video_keyframe_interval_s: float = 2.0
    png_compression: int = 1
    id_overflow: IdOverflow = "error"
    mots_class_id: int = 1
    mots_frame_offset: int = 0

    def __post_init__(self) -> None:
        if not self.video_codec:
            raise ConfigError("output.video_codec must name an encoder, such as libx264")
        if self.video_preset not in _X264_PRESETS:
            raise ConfigError(
                f"output.video_preset must be one of {', '.join(_X264_PRESETS)}, not {self.video_preset!r}"
            )
        if not 0 <= self.video_crf <= 51:
            raise ConfigError(f"output.video_crf must be in [0, 51], got {self.video_crf}")
        if not (math.isfinite(self.video_keyframe_interval_s) and 0.1 <= self.video_keyframe_interval_s <= 60):
            raise ConfigError(
                f"output.video_keyframe_interval_s must be in [0.1, 60] seconds, got {self.video_keyframe_interval_s}"
            )
        if not 0 <= self.png_compression <= 9:
            raise ConfigError(f"output.png_compression must be in [0, 9], got {self.png_compression}")
        if self.id_overflow not in ("error", "wrap"):
            raise ConfigError(f"output.id_overflow must be 'error' or 'wrap', not {self.id_overflow!r}")
        if not 1 <= self.mots_class_id <= 9:
            raise ConfigError(f"output.mots_class_id must be in [1, 9], got {self.mots_class_id}")
        if self.mots_frame_offset < 0:
            raise ConfigError(f"output.mots_frame_offset must be >= 0, got {self.mots_frame_offset}")


# -- shared helpers ----------------------------------------------------------------


def _prepare_file(path: str | os.PathLike[str], what: str, example: str) -> Path:
    """Check that ``path`` can be a file we write, creating its folder.

    Raises:
        SinkError: the path is a folder, its folder cannot be created, or the
            file cannot be opened for writing.
    """
    if str(path) == "":
        raise SinkError(f"the {what} output needs a file name, such as {example}")
    p = Path(path).expanduser()
    if p.is_dir():
        raise SinkError(f"the {what} output {p} is a folder; give a file name such as {p / example}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the folder {p.parent} for the {what} output: {describe_error(exc)}") from None
    try:
        # Opening for append creates the file without destroying anything yet;
        # each sink truncates when it really starts.
        with open(p, "ab"):
            pass
    except OSError as exc:
        raise SinkError(f"cannot write the {what} output {p}: {describe_error(exc)}") from None
    return p


def _open_for_lines(path: Path, what: str) -> Any:
    try:
        # Unbuffered: each frame's bytes go to the OS in one write() call, so
        # a crash can leave at most the line being written incomplete.
        return open(path, "wb", buffering=0)
    except OSError as exc:
        raise SinkError(f"cannot write the {what} output {path}: {describe_error(exc)}") from None


def _write_all(file: Any, data: bytes, path: Path, what: str) -> None:
    view = memoryview(data)
    try:
        while view:
            n = file.write(view)
            view = view[n:]
    except OSError as exc:
        raise SinkError(f"writing the {what} output {path} failed: {describe_error(exc)}") from None


def _map_id(track_id: int, max_id: int, overflow: IdOverflow, what: str) -> int:
    if 1 <= track_id <= max_id:
        return track_id
    if overflow == "wrap" and track_id > max_id:
        return (track_id - 1) % max_id + 1
    raise SinkError(
        f"track id {track_id} does not fit the {what} format (ids 1-{max_id}); "
        f"use the jsonl output, or set output.id_overflow: wrap to reuse ids"
    )


def label_image(
    tracks: Sequence[TrackResult],
    shape: tuple[int, int],
    *,
    max_id: int,
    overflow: IdOverflow = "error",
    what: str = "label",
) -> np.ndarray:
    """One id per pixel from possibly overlapping track masks.

    Args:
        tracks: tracks with ``HxW`` bool masks (empty masks are skipped).
        shape: ``(H, W)`` of the frame.
        max_id: largest id the format holds.
        overflow: see :attr:`SinkConfig.id_overflow`.
        what: format name for error messages.

    Returns:
        ``HxW uint16``: 0 for background, else the (mapped) track id. A pixel
        claimed by several masks gets the smallest mask's id (ties: lower id).

    Raises:
        SinkError: an id exceeds ``max_id`` and ``overflow`` is ``error``.
        ValueError: a mask's shape differs from ``shape``.
    """
    return _label_image(tracks, shape, max_id=max_id, overflow=overflow, what=what)[0]


def _label_image(
    tracks: Sequence[TrackResult], shape: tuple[int, int], *, max_id: int, overflow: IdOverflow, what: str
) -> tuple[np.ndarray, list[int]]:
    """:func:`label_image` plus the sorted ids painted (some may end fully covered)."""
    labels = np.zeros(shape, dtype=np.uint16)
    painted: list[tuple[int, int, np.ndarray, tuple[int, int, int, int]]] = []
    for track in tracks:
        mask = np.asarray(track.mask, dtype=bool)
        if mask.shape != tuple(shape):
            raise ValueError(f"track {track.track_id}: mask shape {mask.shape} differs from the frame's {tuple(shape)}")
        box = mask_to_box(mask)
        if box is None:
            continue
        mapped = _map_id(int(track.track_id), max_id, overflow, what)
        x0, y0, x1, y1 = (int(v) for v in box)
        area = int(np.count_nonzero(mask[y0:y1, x0:x1]))
        painted.append((area, mapped, mask, (x0, y0, x1, y1)))
    # Largest first, so smaller masks end up on top.
    painted.sort(key=lambda item: (-item[0], -item[1]))
    for _, mapped, mask, (x0, y0, x1, y1) in painted:
        labels[y0:y1, x0:x1][mask[y0:y1, x0:x1]] = mapped
    return labels, sorted({item[1] for item in painted})


class _SinkBase:
    """Context-manager plumbing and the closed-state check."""

    kind: str = "sink"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frames_written = 0
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError(f"the {self.kind} output {self.path} is already closed")

    def __enter__(self) -> "_SinkBase":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}({str(self.path)!r}, {self.frames_written} frames, {state})"

    def close(self) -> None:  # pragma: no cover - overridden
        self._closed = True


# -- video ---------------------------------------------------------------------------


def _frame_rate(fps: float | Fraction) -> Fraction:
    """``fps`` as an exact fraction; NTSC rates (29.97, 23.976, ...) become N*1000/1001."""
    if isinstance(fps, Fraction):
        rate = fps
    else:
        try:
            value = float(fps)
        except (TypeError, ValueError):
            value = float("nan")
        if not math.isfinite(value) or value <= 0:
            raise SinkError(f"the video output needs a frame rate > 0 fps, got {fps}")
        ntsc = value * 1.001
        if abs(value - round(value)) < 1e-6:
            rate = Fraction(round(value))
        elif abs(ntsc - round(ntsc)) < 1e-3:
            rate = Fraction(round(ntsc) * 1000, 1001)
        else:
            rate = Fraction(value).limit_denominator(1001)
    if not 0 < rate <= 1000:
        raise SinkError(f"the video output needs a frame rate in (0, 1000] fps, got {fps}")
    return rate


class VideoSink(_SinkBase):
    """Annotated frames as an H.264 video at the source's frame rate.

    Each frame is drawn with the renderer, converted to ``yuv420p`` (odd
    widths/heights are padded with black to even, as 4:2:0 needs) and
    encoded with PyAV. A frame whose size differs from the first is resized
    to the video's size. Timestamps come from the frame index: frame ``i``
    is shown at ``(i - first_index) / fps`` seconds, so the file's duration
    is right and frames the pipeline skipped show as the previous frame held
    (an index that does not increase is placed one frame after the last).

    Surviving interruptions -- measured here with x264 ``veryfast``:

    * ``close()`` (called by the pipeline on Ctrl-C and errors, and by the
      context manager) flushes the encoder and finalises the container, so
      every frame written is in the file;
    * a hard kill (SIGKILL, out of memory, power loss) skips ``close()``.
      A plain MP4 keeps its index for the end, so it is then unreadable
      ("moov atom not found"). Hence ``.mp4``/``.mov`` are written
      **fragmented** by default (``movflags=frag_keyframe+empty_moov``,
      packets flushed as written): each keyframe starts a self-contained
      fragment; a process killed after writing 150 frames at 30 fps with
      1 s keyframes leaves a file that plays its first 120 (the test suite
      checks this). The cost is a keyframe every ``keyframe_interval_s`` and
      no B-frames (with B-frames a fragmented MP4, having no edit list,
      starts its first frame at 2/fps s instead of 0): on a near-static
      synthetic 720p clip the file is ~45 % bigger than a classic MP4 with
      2 s keyframes; footage whose inter frames cost more pays less.
      Players, ffprobe, OpenCV and PyAV read the result normally; only
      PyAV's ``stream.frames`` header count reads 0. ``fragmented=False``
      writes a classic MP4 (B-frames, default GOP), smallest but lost on a
      hard kill. Matroska (``.mkv``) needs no fragmenting: with the same
      keyframe interval a killed file keeps all but the last interval.

    A run that wrote no frame leaves nothing behind: the empty placeholder
    created at open (to prove the path writable) is removed, and a file that
    already existed there is left as it was.

    Args:
        path: ``.mp4``, ``.m4v``, ``.mov`` or ``.mkv`` file; its folder is created.
        fps: frames per second of the source, ``> 0`` (a float or a
            ``Fraction``; 29.97, 23.976, 59.94 are stored as N*1000/1001).
        size: ``(width, height)`` of the video; ``None`` takes the first frame's.
        codec: FFmpeg encoder (``libx264``); crf/preset apply to x264/x265.
        crf: quality, ``0``-``51``.
        preset: x264 speed preset.
        renderer: draws the overlays; ``None`` uses a default :class:`Renderer`.
        fragmented: see above; ignored for ``.mkv``.
        keyframe_interval_s: seconds between keyframes in fragmented MP4 and
            Matroska (a classic MP4 keeps x264's default of 250 frames).

    Raises:
        SinkError: at construction, for a path that cannot be written, an
            unknown extension, an unavailable codec or a bad frame rate.
    """

    kind = "video"

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | Fraction,
        size: tuple[int, int] | None = None,
        *,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "veryfast",
        renderer: Renderer | None = None,
        fragmented: bool = True,
        keyframe_interval_s: float = 2.0,
    ) -> None:
        suffix = Path(path).suffix.lower()
        if suffix not in _VIDEO_FORMATS:
            raise SinkError(
                f"the video output {path} must end in {', '.join(_VIDEO_FORMATS)} (got {suffix or 'no extension'})"
            )
        rate = _frame_rate(fps)
        if size is not None and (len(size) != 2 or min(int(size[0]), int(size[1])) < 1):
            raise SinkError(f"the video size must be (width, height) >= 1, got {size}")
        if not 0 <= int(crf) <= 51:
            raise SinkError(f"the video crf must be in [0, 51], got {crf}")
        if not (math.isfinite(keyframe_interval_s) and keyframe_interval_s > 0):
            raise SinkError(f"the keyframe interval must be > 0 seconds, got {keyframe_interval_s}")
        if codec in ("libx264", "libx265") and preset not in _X264_PRESETS:
            raise SinkError(f"unknown x264 preset {preset!r}; use one of {', '.join(_X264_PRESETS)}")
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            raise SinkError(f"the video encoder {codec!r} is not available in this PyAV build; use libx264") from None
        super().__init__(_prepare_file(path, "video", "out.mp4"))
        self.fps = rate
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.codec = codec
        self.crf = int(crf)
        self.preset = preset
        self.renderer = renderer if renderer is not None else Renderer()
        self.format = _VIDEO_FORMATS[suffix]
        self.fragmented = bool(fragmented) and self.format in ("mp4", "mov")
        self.keyframe_interval_s = float(keyframe_interval_s)
        self._container: Any = None
        self._stream: Any = None
        self._first_index: int | None = None
        self._last_pts = -1

    def write(self, result: FrameResult) -> None:
        """Draw ``result`` on its frame and encode it."""
        self._check_open()
        image = self.renderer.annotate(result.frame.image, result)
        self.write_image(image, result.index)

    def write_image(self, image_bgr: np.ndarray, index: int) -> None:
        """Encode an already drawn frame (lets a UI reuse the image it shows).

        Args:
            image_bgr: ``HxWx3 uint8`` BGR.
            index: the frame's index, which sets its timestamp.
        """
        self._check_open()
        image = np.asarray(image_bgr)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"video frames must be HxWx3 uint8 BGR, got {image.shape} {image.dtype}")
        if self._stream is None:
            self._start(image)
        width, height = self.size  # type: ignore[misc]
        if image.shape[1] != width or image.shape[0] != height:
            image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
        pad_w, pad_h = self._stream.width - width, self._stream.height - height
        if pad_w or pad_h:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        if self._first_index is None:
            self._first_index = int(index)
        pts = int(index) - self._first_index
        if pts <= self._last_pts:
            pts = self._last_pts + 1
        # OpenCV's BGR->I420 (BT.601, limited range, what swscale would do too)
        # takes ~1 ms at 720p; PyAV's bgr24 import plus swscale takes ~10 ms.
        yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"writing the video output {self.path} failed: {describe_error(exc)}") from None
        self._last_pts = pts
        self.frames_written += 1

    def _start(self, image: np.ndarray) -> None:
        if self.size is None:
            self.size = (int(image.shape[1]), int(image.shape[0]))
        width, height = self.size
        options: dict[str, str] = {}
        if self.fragmented:
            options = {"movflags": _MP4_FRAGMENTED, "flush_packets": "1"}
        elif self.format == "matroska":
            options = {"flush_packets": "1"}
        try:
            self._container = av.open(str(self.path), "w", format=self.format, options=options)
            stream = self._container.add_stream(self.codec, rate=self.fps)
            # 4:2:0 chroma needs even dimensions; pad rather than crop a pixel.
            stream.width = width + width % 2
            stream.height = height + height % 2
            stream.pix_fmt = "yuv420p"
            # Say which matrix the pixels use, or players guess BT.709 for HD.
            stream.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            stream.codec_context.color_range = _AVCOL_RANGE_MPEG
            codec_options: dict[str, str] = {}
            if self.fragmented or self.format == "matroska":
                # What survives a hard kill ends at the last keyframe.
                gop = max(1, int(round(float(self.fps) * self.keyframe_interval_s)))
                codec_options["g"] = str(gop)
            if self.fragmented:
                codec_options["bf"] = "0"
            if self.codec in ("libx264", "libx265"):
                codec_options.update({"crf": str(self.crf), "preset": self.preset})
            stream.options = codec_options
        except (OSError, ValueError, av.FFmpegError) as exc:
            self._abort_container()
            raise SinkError(f"cannot start the video output {self.path}: {describe_error(exc)}") from None
        self._stream = stream

    def _abort_container(self) -> None:
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None

    def close(self) -> None:
        """Flush the encoder and finalise the file; idempotent.

        Raises:
            SinkError: when the final writes fail (the container is still closed).
        """
        if self._closed:
            return
        self._closed = True
        if self._stream is None:
            # Nothing was encoded: remove the empty placeholder we created.
            try:
                if self.path.exists() and self.path.stat().st_size == 0:
                    self.path.unlink()
            except OSError:
                pass
            return
        error: BaseException | None = None
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        except (OSError, av.FFmpegError) as exc:
            error = exc
        try:
            self._container.close()
        except (OSError, av.FFmpegError) as exc:
            error = error or exc
        self._container = None
        if error is not None:
            raise SinkError(f"finishing the video output {self.path} failed: {describe_error(error)}")


# -- JSON lines --------------------------------------------------------------------


def _finite(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


class JsonlSink(_SinkBase):
    """One JSON object per line: a header, then one line per frame.

    The first line is a header describing the run, identified by its
    ``"realtime_sam"`` key (and having no ``"frame"`` key)::

        {"realtime_sam": "0.1.0", "source": "cam.mp4", "width": 1280, "height": 720, "fps": 30.0}

    ``width``/``height`` come from the first frame (``null`` if the run had
    none); ``source``/``fps`` are what the caller passed (or ``null``). Every
    further line is a frame::

        {"frame": 12, "timestamp": 0.4, "tracks": [
            {"id": 1, "box": [x0, y0, x1, y1], "score": 0.93, "state": "confirmed",
             "area": 5120, "label": "cup", "mask": {"size": [720, 1280], "counts": "..."}}]}

    ``box`` is ``XYXY`` pixels with exclusive far edges, ``mask`` a COCO
    compressed RLE (``pycocotools.mask.decode`` reads it; so does
    :func:`realtime_sam.rle.decode_rle`), ``label`` appears only when set.
    All tracks alive after the frame are listed, lost ones with an empty
    mask. Each line is written with one unbuffered ``write`` and is complete
    on disk as soon as :meth:`write` returns, so a crash can leave only the
    line being written cut short; :func:`load_jsonl` skips such a line.
    """

    kind = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source: str | None = None,
        fps: float | None = None,
    ) -> None:
        super().__init__(_prepare_file(path, "jsonl", "tracks.jsonl"))
        self.source = source
        self.fps = None if fps is None else _finite(fps, 6)
        self._file = _open_for_lines(self.path, "jsonl")
        self._header_written = False

    def _header(self, width: int | None, height: int | None) -> bytes:
        from . import __version__

        header = {"realtime_sam": __version__, "source": self.source, "width": width, "height": height, "fps": self.fps}
        return (json.dumps(header) + "\n").encode("utf-8")

    @staticmethod
    def frame_record(result: FrameResult) -> dict[str, Any]:
        """The JSON-ready object written for one frame."""
        tracks = []
        for t in result.tracks:
            rle = encode_rle(t.mask)
            item: dict[str, Any] = {
                "id": int(t.track_id),
                "box": [_finite(v, 2) for v in t.box],
                "score": _finite(t.score, 4),
                "state": t.state.value,
                "area": int(np.count_nonzero(t.mask)),
            }
            if t.label is not None:
                item["label"] = t.label
            item["mask"] = rle
            tracks.append(item)
        return {"frame": int(result.index), "timestamp": _finite(result.timestamp, 6), "tracks": tracks}

    def write(self, result: FrameResult) -> None:
        """Append the frame's line (and the header before the first frame)."""
        self._check_open()
        data = (json.dumps(self.frame_record(result), separators=(",", ":")) + "\n").encode("utf-8")
        if not self._header_written:
            data = self._header(result.frame.width, result.frame.height) + data
            self._header_written = True
        _write_all(self._file, data, self.path, "jsonl")
        self.frames_written += 1

    def close(self) -> None:
        """Write the header if no frame came, then close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._header_written:
                self._header_written = True
                _write_all(self._file, self._header(None, None), self.path, "jsonl")
        finally:
            self._file.close()


def load_jsonl(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read a :class:`JsonlSink` file.

    Returns:
        ``(header, frames)``: the header object (``None`` if absent) and the
        frame objects in file order. A last line cut short by a crash (it has
        no newline) is skipped.

    Raises:
        ValueError: a complete line is not valid JSON.
    """
    text = Path(path).read_text(encoding="utf-8")
    # Every complete line ends with "\n" (one write each), so whatever follows
    # the last newline is a line a crash cut short: drop it.
    complete = text.split("\n")[:-1]
    header: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON: {exc.msg}") from None
        if "frame" in obj:
            frames.append(obj)
        elif "realtime_sam" in obj and header is None:
            header = obj
    return header, frames


# -- indexed PNG ------------------------------------------------------------------


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: ``(256, 3) uint8`` **RGB**.

    Index 0 is black, 1 ``(128, 0, 0)``, 2 ``(0, 128, 0)``, 3 ``(128, 128, 0)``,
    ...: bit ``k`` of the index's three lowest bits goes to bit ``7 - j`` of
    R, G, B for successive bit triples ``j``.
    """
    idx = np.arange(256, dtype=np.int64)
    rgb = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):
        for channel in range(3):
            bit = (idx >> (3 * j + channel)) & 1
            rgb[:, channel] |= bit << (7 - j)
    return rgb.astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_indexed_png(indices: np.ndarray, palette: np.ndarray, *, level: int = 1) -> bytes:
    """Encode an ``HxW uint8`` index image as an 8-bit palette PNG.

    Args:
        indices: ``HxW uint8`` palette indices.
        palette: ``(N, 3) uint8`` RGB, ``1 <= N <= 256``.
        level: zlib compression level ``0``-``9``.

    Returns:
        The PNG file's bytes (colour type 3, no filtering, no interlace).
    """
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.dtype != np.uint8 or 0 in indices.shape:
        raise ValueError(f"indices must be a non-empty HxW uint8 array, got {indices.shape} {indices.dtype}")
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= palette.shape[0] <= 256:
        raise ValueError(f"palette must be (N, 3) uint8 with 1 <= N <= 256, got {palette.shape}")
    h, w = indices.shape
    # Each scanline starts with its filter type; 0 (none) suits flat label maps.
    raw = np.zeros((h, w + 1), dtype=np.uint8)
    raw[:, 1:] = indices
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"PLTE", palette.tobytes()),
            _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), level)),
            _png_chunk(b"IEND", b""),
        )
    )


class PngSink(_SinkBase):
    """DAVIS-style annotations: ``<dir>/00000.png``, one indexed PNG per frame.

    Each PNG is 8-bit palette ("P" mode) with the DAVIS palette
    (:func:`davis_palette`); pixel value = track id, 0 = background, so
    DAVIS tools read it directly. The name is the frame index, zero-padded
    to five digits (longer past 99999). Overlaps go to the smallest mask (module docstring);
    lost tracks have no pixels. Ids above 255 follow ``id_overflow``.
    Each file is written under a temporary name in the same folder and
    renamed into place, so a ``.png`` is never half written.

    Args:
        directory: output folder, created if missing.
        id_overflow: ``error`` or ``wrap`` (see :class:`SinkConfig`).
        compression: zlib level ``0``-``9``.
    """

    kind = "png"
    MAX_ID = 255

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        id_overflow: IdOverflow = "error",
        compression: int = 1,
    ) -> None:
        if str(directory) == "":
            raise SinkError("the png output needs a folder name, such as out/masks")
        p = Path(directory).expanduser()
        if p.exists() and not p.is_dir():
            raise SinkError(f"the png output {p} is a file; give a folder, such as {p.with_suffix('')}_masks/")
        try:
            p.mkdir(parents=True, exist_ok=True)
            # Prove we can create files there now, not at the first frame.
            fd, probe = tempfile.mkstemp(dir=p, prefix=".probe-", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise SinkError(f"cannot write the png output folder {p}: {describe_error(exc)}") from None
        super().__init__(p)
        self.id_overflow = id_overflow
        self.compression = int(compression)
        self._palette = davis_palette()

    def write(self, result: FrameResult) -> None:
        """Write ``<index:05d>.png`` for this frame."""
        self._check_open()
        shape = (result.frame.height, result.frame.width)
        labels = label_image(result.tracks, shape, max_id=self.MAX_ID, overflow=self.id_overflow, what="png")
        data = encode_indexed_png(labels.astype(np.uint8), self._palette, level=self.compression)
        final = self.path / f"{int(result.index):05d}.png"
        # A plain open() (not mkstemp, which makes 0600 files) so the PNGs get
        # the user's usual permissions; one writer per folder keeps the name unique.
        tmp = self.path / f".{final.name}.{os.getpid()}.tmp"
        try:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, final)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise SinkError(f"writing {final} failed: {describe_error(exc)}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Nothing is held open; marks the sink closed."""
        self._closed = True


# -- MOTS text ----------------------------------------------------------------------


class MotsSink(_SinkBase):
    """The MOTS challenge text format, one line per track per frame.

    Each line is ``time_frame obj_id class_id img_height img_width rle``
    with ``obj_id = class_id * 1000 + track_id`` (so ``obj_id // 1000`` is
    the class and ``obj_id % 1000`` the instance, as the MOTS tools decode
    it) and ``rle`` the COCO compressed counts string. ``time_frame`` is the
    0-based frame index plus ``frame_offset``. Only tracks with pixels are
    written, overlaps resolved as in the module docstring (the MOTS tools
    reject overlapping masks). Track ids above 999 follow ``id_overflow``.
    A frame's lines go to the file in one unbuffered write.

    Args:
        path: the ``.txt`` file; its folder is created.
        class_id: class of every track, 1-9 (1 car, 2 pedestrian).
        frame_offset: added to the frame index (``1`` for 1-based numbering).
        id_overflow: ``error`` or ``wrap`` (see :class:`SinkConfig`).
    """

    kind = "mots"
    MAX_ID = 999

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        class_id: int = 1,
        frame_offset: int = 0,
        id_overflow: IdOverflow = "error",
    ) -> None:
        if not 1 <= int(class_id) <= 9:
            raise SinkError(f"the MOTS class id must be in 1-9, got {class_id}")
        if int(frame_offset) < 0:
            raise SinkError(f"the MOTS frame offset must be >= 0, got {frame_offset}")
        super().__init__(_prepare_file(path, "mots", "tracks.txt"))
        self.class_id = int(class_id)
        self.frame_offset = int(frame_offset)
        self.id_overflow = id_overflow
        self._file = _open_for_lines(self.path, "mots")

    def frame_lines(self, result: FrameResult) -> list[str]:
        """The lines (without newlines) written for one frame."""
        h, w = result.frame.height, result.frame.width
        labels, ids = _label_image(result.tracks, (h, w), max_id=self.MAX_ID, overflow=self.id_overflow, what="MOTS")
        frame_no = int(result.index) + self.frame_offset
        lines = []
        for tid in ids:
            mask = labels == tid
            if not mask.any():  # wholly covered by smaller masks
                continue
            counts = encode_rle(mask)["counts"]
            lines.append(f"{frame_no} {self.class_id * 1000 + int(tid)} {self.class_id} {h} {w} {counts}")
        return lines

    def write(self, result: FrameResult) -> None:
        """Append this frame's lines."""
        self._check_open()
        lines = self.frame_lines(result)
        if lines:
            _write_all(self._file, ("\n".join(lines) + "\n").encode("ascii"), self.path, "mots")
        self.frames_written += 1

    def close(self) -> None:
        """Close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._file.close()


# -- several sinks, factory --------------------------------------------------------------


class MultiSink(_SinkBase):
    """Fans each result out to several sinks; closes all of them.

    ``write`` stops at the first sink that raises (the pipeline then stops
    and calls ``close``); ``close`` closes every sink even when some fail,
    then raises the first failure.
    """

    kind = "outputs"

    def __init__(self, sinks: Sequence[Sink]) -> None:
        super().__init__(Path("."))
        self.sinks: list[Sink] = list(sinks)

    def write(self, result: FrameResult) -> None:
        self._check_open()
        for sink in self.sinks:
            sink.write(result)
        self.frames_written += 1

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as exc:  # noqa: BLE001 - every sink must get its close()
                first = first or exc
        if first is not None:
            raise first

    def __len__(self) -> int:
        return len(self.sinks)

    def __repr__(self) -> str:
        return f"MultiSink({self.sinks!r})"


@dataclass(frozen=True)
class SinkSpec:
    """One requested output: a kind and a path (a ``str`` path is converted)."""

    kind: SinkKind
    path: Path

    def __post_init__(self) -> None:
        if self.kind not in SINK_KINDS:
            raise SinkError(f"unknown output kind {self.kind!r}; use one of {', '.join(SINK_KINDS)}")
        object.__setattr__(self, "path", Path(self.path))


def parse_sink_spec(text: str) -> SinkSpec:
    """Parse ``KIND:PATH`` or a bare ``PATH`` whose form implies the kind.

    ``video:out.mp4``, ``jsonl:run.jsonl``, ``png:masks/``, ``mots:run.txt``;
    bare paths: ``.mp4``/``.m4v``/``.mov``/``.mkv`` -> video, ``.jsonl`` ->
    jsonl, ``.txt`` -> mots, a path ending in ``/`` or with no extension ->
    png.

    Raises:
        SinkError: an empty spec, an unknown kind, or a path whose kind
            cannot be inferred.
    """
    text = str(text).strip()
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in SINK_KINDS:
        if not rest:
            raise SinkError(f"the output {text!r} names no path; write it as {kind}:PATH")
        return SinkSpec(kind.lower(), Path(rest))  # type: ignore[arg-type]
    if sep and len(kind) > 1 and "/" not in kind and "\\" not in kind:
        raise SinkError(f"unknown output kind {kind!r} in {text!r}; use one of {', '.join(SINK_KINDS)}")
    if not text:
        raise SinkError(f"an output needs a path, such as out.mp4 or jsonl:tracks.jsonl ({', '.join(SINK_KINDS)})")
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in _KIND_BY_SUFFIX:
        return SinkSpec(_KIND_BY_SUFFIX[suffix], path)  # type: ignore[arg-type]
    if text.endswith(("/", os.sep)) or not suffix:
        return SinkSpec("png", path)
    raise SinkError(
        f"cannot tell which output {text!r} is from its extension; prefix a kind, as in "
        f"video:{text} ({', '.join(SINK_KINDS)})"
    )


def make_sink(
    kind: str,
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    config: SinkConfig | None = None,
    renderer: Renderer | None = None,
    source_name: str | None = None,
    size: tuple[int, int] | None = None,
) -> Sink:
    """Build one sink, checking now that its output can be written.

    Args:
        kind: ``video``, ``jsonl``, ``png`` or ``mots``.
        path: file (folder for ``png``).
        fps: the source's frame rate; needed by ``video``, recorded by ``jsonl``.
        config: codec, ids and format settings.
        renderer: overlay drawing for ``video``.
        source_name: recorded in the ``jsonl`` header.
        size: ``(width, height)`` for ``video``; ``None`` = the frames' size.

    Raises:
        SinkError: unknown kind, or an output that cannot be written.
    """
    cfg = config if config is not None else SinkConfig()
    kind = str(kind).lower()
    if kind == "video":
        if fps is None:
            raise SinkError("the video output needs the source's frame rate; pass --fps for sources that report none")
        return VideoSink(
            path,
            fps,
            size,
            codec=cfg.video_codec,
            crf=cfg.video_crf,
            preset=cfg.video_preset,
            renderer=renderer,
            fragmented=cfg.video_fragmented,
            keyframe_interval_s=cfg.video_keyframe_interval_s,
        )
    if kind == "jsonl":
        return JsonlSink(path, source=source_name, fps=fps)
    if kind == "png":
        return PngSink(path, id_overflow=cfg.id_overflow, compression=cfg.png_compression)
    if kind == "mots":
        return MotsSink(
            path, class_id=cfg.mots_class_id, frame_offset=cfg.mots_frame_offset, id_overflow=cfg.id_overflow
        )
    raise SinkError(f"unknown output kind {kind!r}; use one of {', '.join(SINK_KINDS)}")


def open_sinks(
    outputs: Iterable[SinkSpec | str],
    *,
    fps: float | None = None,
    config: SinkConfig | None = None,
    renderer: Renderer | None = None,
    source_name: str | None = None,
    size: tuple[int, int] | None = None,
) -> MultiSink:
    """Open several outputs at once (all or none).

    Args:
        outputs: :class:`SinkSpec` objects or ``KIND:PATH`` strings
            (:func:`parse_sink_spec`).
        fps, config, renderer, source_name, size: as for :func:`make_sink`.

    Returns:
        A :class:`MultiSink` (possibly empty) that writes to and closes them all.

    Raises:
        SinkError: a spec is invalid, two outputs share a path, or one cannot
            be written; outputs opened before the failure are closed again.
    """
    specs = [o if isinstance(o, SinkSpec) else parse_sink_spec(o) for o in outputs]
    seen: dict[Path, SinkSpec] = {}
    for spec in specs:
        key = Path(os.path.abspath(spec.path.expanduser()))
        if key in seen:
            raise SinkError(f"two outputs write to {spec.path}; give each output its own path")
        seen[key] = spec
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(
                make_sink(
                    spec.kind,
                    spec.path,
                    fps=fps,
                    config=config,
                    renderer=renderer,
                    source_name=source_name,
                    size=size,
                )
            )
    except BaseException:
        for sink in opened:
            try:
                sink.close()
            except Exception:
                pass
        raise
    return MultiSink(opened)
