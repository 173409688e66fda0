"""Annotated video (:class:`VideoSink`): H.264 in ``.mp4`` (fragmented, so a
killed run leaves a playable file), ``.mov`` or ``.mkv``, through PyAV.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from realtime_sam.errors import SinkError, describe_error
from realtime_sam.output.render import Renderer
from realtime_sam.output.sink_base import X264_PRESETS, SinkBase, prepare_output
from realtime_sam.types import FrameResult

__all__ = ["VideoSink"]

# Container format for each accepted video extension.
VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


# A fragment a frame (not a keyframe): a hard kill then loses the encoder's delay, not a keyframe interval.
_MP4_FRAGMENTED = "frag_every_frame+empty_moov+default_base_moof"


# FFmpeg enum values (libavutil/pixfmt.h): BT.601 matrix, limited ("TV") range.
_AVCOL_SPC_SMPTE170M = 6


_AVCOL_RANGE_MPEG = 1


# The frame rates a video is written at: its time base is 1/rate's denominator, at most 1001 (NTSC), so a
# rate much under 1/1000 fps (a frame every 17 minutes) rounded to 0, and one over 1000 is no player's.
_FPS_RANGE = (Fraction(1, 1000), Fraction(1000))
_FPS_RANGE_TEXT = "from 0.001 to 1000 fps"


def _frame_rate(fps: float | Fraction) -> Fraction:
    """``fps`` as an exact fraction; NTSC rates (29.97, 23.976, ...) become N*1000/1001.

    Raises:
        SinkError: ``fps`` is not a number, or it is outside :data:`_FPS_RANGE` once rounded.
    """
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
    if not _FPS_RANGE[0] <= rate <= _FPS_RANGE[1]:
        raise SinkError(f"the video output needs a frame rate {_FPS_RANGE_TEXT}, got {fps}")
    return rate


def _video_rate(fps: float | Fraction, setting: str | None) -> Fraction:
    """:func:`_frame_rate`, whose error names ``setting``, the configuration key ``fps`` came from
    (``source.image_fps`` for images), when there is one: else the user is left to guess where 1e-09 came from.

    Raises:
        SinkError: as :func:`_frame_rate`.
    """
    try:
        return _frame_rate(fps)
    except SinkError:
        if not setting:
            raise
        raise SinkError(
            f"{setting} is {fps:g}, and the video output needs a frame rate {_FPS_RANGE_TEXT}; set {setting} within that range"
        ) from None


def _pixel_shape(value: Any) -> Fraction | None:
    """``value`` as a sample aspect ratio in [1/100, 100], else ``None``."""
    try:
        sar = Fraction(value).limit_denominator(65535)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return sar if Fraction(1, 100) <= sar <= 100 else None


def _letterbox(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``image`` (``HxWx3``) scaled to fit ``width`` x ``height`` whole, its shape kept, centred on black."""
    h, w = image.shape[:2]
    scale = min(width / w, height / h)
    fit_w, fit_h = min(width, max(1, round(w * scale))), min(height, max(1, round(h * scale)))
    if (fit_w, fit_h) != (w, h):
        image = cv2.resize(image, (fit_w, fit_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    left, top = (width - fit_w) // 2, (height - fit_h) // 2
    return cv2.copyMakeBorder(
        image, top, height - fit_h - top, left, width - fit_w - left, cv2.BORDER_CONSTANT, value=(0, 0, 0)
    )


class VideoSink(SinkBase):
    """Annotated frames as an H.264 video at the source's frame rate.

    Each frame is drawn with the renderer, converted to ``yuv420p`` (odd
    widths/heights are padded with black to even, as 4:2:0 needs) and
    encoded with PyAV. A frame whose size differs from the video's (a
    stream that changed resolution, an image folder of several sizes) is
    scaled to fit it whole, its shape kept, and centred on black
    (letterboxed). Timestamps come from the frame index: frame ``i``
    is shown at ``(i - first_index) / fps`` seconds, so the file's duration
    is right and frames the pipeline skipped show as the previous frame held
    (an index that does not increase is placed one frame after the last).
    With ``timestamps=True`` (what the command uses for files, and what a
    :class:`~realtime_sam.app.pipeline.Pipeline` -- ``track()`` -- sets for
    a file source when ``timestamps`` is left ``None``) each frame is
    shown at its own ``Frame.timestamp`` less the first one's instead, to
    1/90000 s: a variable-frame-rate file (a phone's, a screen recording
    with pauses) keeps its timing, so the output lines up with the source
    and with the masks file's timestamps; a timestamp that does not
    increase is placed one frame (``1 / fps``) after the last.

    Surviving interruptions -- measured here with x264 ``veryfast``:

    * ``close()`` (called by the pipeline on Ctrl-C and errors, and by the
      context manager) flushes the encoder and finalises the container, so
      every frame written is in the file;
    * a hard kill (SIGKILL, out of memory, power loss, the X server of the
      window going away, which makes Qt end the process) skips ``close()``.
      A plain MP4 keeps its index for the end, so it is then unreadable
      ("moov atom not found"). Hence ``.mp4``/``.mov`` are written
      **fragmented** by default (``movflags=frag_every_frame+empty_moov``,
      packets flushed as written): each frame the encoder gives out is
      written as a fragment of its own once the next one comes, so a killed
      file keeps every frame in :attr:`frames_in_file` but the last. What it
      loses is the encoder's delay: x264 holds back the frames it is still
      looking ahead over, 11 with ``veryfast`` (0.4 s at 30 fps; the same
      with 1 to 24 encoder threads, at 720p); a process killed after
      writing 150 frames at 30 fps left 138 (a fragment a keyframe, with
      1 s keyframes, kept 120: all but the last keyframe interval; the test
      suite checks what a killed file keeps).
      The cost is a keyframe every ``keyframe_interval_s``, no B-frames
      (with B-frames a fragmented MP4, having no edit list, starts its first
      frame at 2/fps s instead of 0) and about 120 bytes a frame for the
      fragments (0.7 % on DAVIS footage): on a near-static synthetic 720p
      clip the file is ~45 % bigger than a classic MP4 with 2 s keyframes;
      footage whose inter frames cost more pays less. A long file takes
      longer to open, as FFmpeg reads an index entry a fragment: 0.25 s
      against 0.01 s for 20 minutes at 30 fps (seeking is as quick).
      Players, ffprobe, OpenCV and PyAV read the result normally; only
      PyAV's ``stream.frames`` header count reads 0. ``fragmented=False``
      writes a classic MP4 (B-frames, default GOP), smallest but lost on a
      hard kill. Matroska (``.mkv``) needs no fragmenting: it is written a
      cluster a frame and keeps x264's B-frames (a third smaller than
      without on DAVIS footage), so a killed file may also lack the last
      B-frame group's few frames.

    A run that wrote no frame leaves nothing behind: the empty placeholder
    created at open (to prove the path writable) is removed, and a file that
    already existed there is left as it was.

    Args:
        path: ``.mp4``, ``.m4v``, ``.mov`` or ``.mkv`` file; its folder is created.
        fps: frames per second of the source, ``> 0`` (a float or a
            ``Fraction``; 29.97, 23.976, 59.94 are stored as N*1000/1001);
            ``None``: the source's (:meth:`bind_source`); a sink that gets
            none by its first frame raises :class:`SinkError`.
        size: ``(width, height)`` of the video; ``None`` takes the first frame's.
        codec: FFmpeg encoder (``libx264``); crf/preset apply to x264/x265.
        crf: quality, ``0``-``51``.
        preset: x264 speed preset.
        renderer: draws the overlays; ``None`` uses a default :class:`Renderer`.
        fragmented: see above; ignored for ``.mkv``.
        keyframe_interval_s: seconds between keyframes (where a player can
            start and seek) in fragmented MP4 and Matroska (a classic MP4
            keeps x264's default of 250 frames).
        timestamps: place frames at their timestamps, not at their index
            (see above); ``None``: as :meth:`bind_source` says (timestamps
            for a file, index for a live source), index without a source.
        sample_aspect_ratio: the source's pixel shape (width over height,
            :attr:`Source.sample_aspect_ratio`), stored in the video so that
            players show an anamorphic source's frames at the source's
            display shape; ``None``: the source's (:meth:`bind_source`), 1:1
            without one.
        fps_setting: the configuration key ``fps`` was taken from
            (:attr:`Source.fps_setting`, ``"source.image_fps"`` for images), named
            if it is no rate a video takes (0.001 to 1000 fps).

    Attributes:
        frames_in_file: frames the encoder has given out and the file holds
            (``frames_written`` less the encoder's delay until ``close()``).

    Raises:
        SinkError: at construction, for a path that cannot be written, an
            unknown extension, an unavailable codec or a bad frame rate.
    """

    kind = "video"

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | Fraction | None,
        size: tuple[int, int] | None = None,
        *,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "veryfast",
        renderer: Renderer | None = None,
        fragmented: bool = True,
        keyframe_interval_s: float = 2.0,
        timestamps: bool | None = None,
        sample_aspect_ratio: Fraction | float | None = None,
        fps_setting: str | None = None,
    ) -> None:
        suffix = Path(path).suffix.lower()
        if suffix not in VIDEO_FORMATS:
            raise SinkError(
                f"the video output {path} must end in {', '.join(VIDEO_FORMATS)} (got {suffix or 'no extension'})"
            )
        rate = _video_rate(fps, fps_setting) if fps is not None else None
        if size is not None and (len(size) != 2 or min(int(size[0]), int(size[1])) < 1):
            raise SinkError(f"the video size must be (width, height) >= 1, got {size}")
        if not 0 <= int(crf) <= 51:
            raise SinkError(f"the video crf must be in [0, 51], got {crf}")
        if not (math.isfinite(keyframe_interval_s) and keyframe_interval_s > 0):
            raise SinkError(f"the keyframe interval must be > 0 seconds, got {keyframe_interval_s}")
        if codec in ("libx264", "libx265") and preset not in X264_PRESETS:
            raise SinkError(f"unknown x264 preset {preset!r}; use one of {', '.join(X264_PRESETS)}")
        try:
            av.codec.Codec(codec, "w")
        except Exception:
            raise SinkError(f"the video encoder {codec!r} is not available in this PyAV build; use libx264") from None
        super().__init__(*prepare_output(path, "video", "out.mp4"))
        self.fps: Fraction | None = rate
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self.codec = codec
        self.crf = int(crf)
        self.preset = preset
        self.renderer = renderer if renderer is not None else Renderer()
        self.format = VIDEO_FORMATS[suffix]
        self.fragmented = bool(fragmented) and self.format in ("mp4", "mov")
        self.keyframe_interval_s = float(keyframe_interval_s)
        self.timestamps: bool | None = None if timestamps is None else bool(timestamps)
        sar = _pixel_shape(sample_aspect_ratio) if sample_aspect_ratio else Fraction(1)
        if sar is None:
            raise SinkError(f"the video's sample aspect ratio must be in [1/100, 100], got {sample_aspect_ratio}")
        self.sample_aspect_ratio = sar
        self._sar_given = bool(sample_aspect_ratio)
        self._first_timestamp: float | None = None
        self._container: Any = None
        self._stream: Any = None
        self._first_index: int | None = None
        self._last_pts = -1
        self.frames_in_file = 0

    def bind_source(self, source: Any) -> None:
        """What was left ``None`` comes from ``source`` (a pipeline calls this before the first frame):
        its frame rate, a file's timestamps (``timestamps`` left ``None``) and its pixel shape.

        Raises:
            SinkError: ``fps`` was left ``None`` and the source has no frame rate either, or one outside
                0.001 to 1000 fps (naming the setting it came from, ``source.image_fps`` for images).
        """
        if self._stream is not None:
            return  # the video has started: its clock and pixel shape are fixed
        if self.fps is None:
            rate = getattr(source, "fps", None)
            if not rate:
                name = getattr(source, "name", None)
                raise SinkError(
                    f"the video output {self.path} needs a frame rate and the source"
                    f"{f' {name}' if name is not None else ''} has none; pass fps=..., such as fps=25"
                )
            self.fps = _video_rate(rate, getattr(source, "fps_setting", None))
        if self.timestamps is None:
            self.timestamps = not bool(getattr(source, "live", False))
        if not self._sar_given:
            self.sample_aspect_ratio = _pixel_shape(getattr(source, "sample_aspect_ratio", None)) or Fraction(1)

    def write(self, result: FrameResult) -> None:
        """Draw ``result`` on its frame and encode it."""
        self._check_open()
        image = self.renderer.annotate(result.frame.image, result)
        self.write_image(image, result.index, result.frame.timestamp)

    def write_image(self, image_bgr: np.ndarray, index: int, timestamp: float | None = None) -> None:
        """Encode an already drawn frame (lets a UI reuse the image it shows).

        Args:
            image_bgr: ``HxWx3 uint8`` BGR.
            index: the frame's index, which sets its timestamp...
            timestamp: ...or this, in seconds, with ``timestamps=True``.
        """
        self._check_open()
        image = np.asarray(image_bgr)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"video frames must be HxWx3 uint8 BGR, got {image.shape} {image.dtype}")
        if self._stream is None:
            self._start(image)
        width, height = self.size  # type: ignore[misc]
        if image.shape[1] != width or image.shape[0] != height:
            image = _letterbox(image, width, height)
        pad_w, pad_h = self._stream.width - width, self._stream.height - height
        if pad_w or pad_h:
            image = cv2.copyMakeBorder(image, 0, pad_h, 0, pad_w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        pts = self._pts(index, timestamp)
        # OpenCV's BGR->I420 (BT.601, limited range, what swscale would do too)
        # takes ~1 ms at 720p; PyAV's bgr24 import plus swscale takes ~10 ms.
        yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        frame.pts = pts
        try:
            self._mux(self._stream.encode(frame))
        except (OSError, av.FFmpegError) as exc:
            raise SinkError(f"writing the video output {self.path} failed: {describe_error(exc)}") from None
        self._last_pts = pts
        self.frames_written += 1

    def _pts(self, index: int, timestamp: float | None) -> int:
        """The frame's presentation time in the stream's codec time base, after the last frame's."""
        tb = self._stream.codec_context.time_base or 1 / self.fps  # PyAV sets 1 / rate when the encoder opens
        step = max(1, round(1 / (self.fps * tb)))  # one frame at the nominal rate
        if self.timestamps and timestamp is not None and math.isfinite(timestamp):
            if self._first_timestamp is None:
                self._first_timestamp = float(timestamp)
            pts = round((float(timestamp) - self._first_timestamp) / tb)
        else:
            if self._first_index is None:
                self._first_index = int(index)
            pts = (int(index) - self._first_index) * step
        return pts if pts > self._last_pts else self._last_pts + step

    def _mux(self, packets) -> None:
        """Write the encoder's packets (a frame each) to the file, counting them in :attr:`frames_in_file`."""
        for packet in packets:
            self._container.mux(packet)
            self.frames_in_file += 1

    def _start(self, image: np.ndarray) -> None:
        if self.fps is None:
            raise SinkError(
                f"the video output {self.path} needs the source's frame rate: pass fps=..., such as fps=25, "
                "or run it with track() or a Pipeline, which give the source's"
            )
        if self.size is None:
            self.size = (int(image.shape[1]), int(image.shape[0]))
        width, height = self.size
        options: dict[str, str] = {}
        if self.fragmented:
            options = {"movflags": _MP4_FRAGMENTED, "flush_packets": "1"}
        elif self.format == "matroska":
            # A cluster a frame: the muxer writes a cluster once it is closed.
            options = {"flush_packets": "1", "cluster_time_limit": "0"}
        try:
            self._container = av.open(str(self.path), "w", format=self.format, options=options)
            stream = self._container.add_stream(self.codec, rate=self.fps)
            if self.timestamps:
                # Fine enough for any source's timestamps (MPEG's 90 kHz clock).
                stream.codec_context.time_base = Fraction(1, 90000)
            if self.sample_aspect_ratio != 1:
                stream.codec_context.sample_aspect_ratio = self.sample_aspect_ratio
            # 4:2:0 chroma needs even dimensions; pad rather than crop a pixel.
            stream.width = width + width % 2
            stream.height = height + height % 2
            stream.pix_fmt = "yuv420p"
            # Say which matrix the pixels use, or players guess BT.709 for HD.
            stream.codec_context.colorspace = _AVCOL_SPC_SMPTE170M
            stream.codec_context.color_range = _AVCOL_RANGE_MPEG
            codec_options: dict[str, str] = {}
            if self.fragmented or self.format == "matroska":
                # Where a player can start and seek.
                gop = max(1, int(round(float(self.fps) * self.keyframe_interval_s)))
                codec_options["g"] = str(gop)
            if self.fragmented:
                codec_options["bf"] = "0"
            if self.codec in ("libx264", "libx265"):
                codec_options.update({"crf": str(self.crf), "preset": self.preset})
            stream.options = codec_options
            if self.fragmented:
                # The header now, not with the encoder's first packet: x264 holds its first
                # frames (its lookahead), and a process killed meanwhile left a 0-byte file that
                # no player opens. With it, such a file is a valid video of no frames. (Not for
                # Matroska: FFmpeg reads a header without a cluster as a truncated file.)
                self._container.start_encoding()
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
            self._mux(self._stream.encode(None))
        except (OSError, av.FFmpegError) as exc:
            error = exc
        try:
            self._container.close()
        except (OSError, av.FFmpegError) as exc:
            error = error or exc
        self._container = None
        if error is not None:
            raise SinkError(f"finishing the video output {self.path} failed: {describe_error(error)}")
