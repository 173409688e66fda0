"""Video files through PyAV (:class:`VideoFileSource`): every decodable frame, in order.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import av

from realtime_sam.capture.base import Source, SourceConfig, _Stopped, _TooManyErrors
from realtime_sam.capture.decoding import (
    AVDecoder,
    first_video_stream,
    is_cover_art,
    sample_aspect_ratio,
    stream_fps,
    to_bgr,
)
from realtime_sam.errors import (
    SourceError,
    StreamInterrupted,
    describe_error,
)
from realtime_sam.types import Frame

__all__ = ["VideoFileSource"]

# FFmpeg's AVFMT_TS_DISCONT: a format whose timestamps may restart or jump (MPEG-TS, MPEG-PS; not FLV), as they do in
# recordings joined end to end (`cat part1.ts part2.ts`, an HLS download's segments).
_TS_DISCONT = 0x0200
# A forward jump longer than this in such a format is a discontinuity too (ffmpeg's -dts_delta_threshold).
_TS_JUMP_S = 10.0


class VideoFileSource(Source):
    """A video file in any container FFmpeg reads, decoded with PyAV.

    Timestamps are ``pts * time_base`` (seconds), or ``index / fps`` for
    frames without a pts. Rotation metadata is applied, so ``size`` and the
    images are upright. A damaged file delivers every decodable frame, then
    raises :class:`StreamInterrupted`.
    """

    live = False

    def __init__(self, path: str | Path, config: SourceConfig | None = None) -> None:
        super().__init__()
        self.config = config or SourceConfig()
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.exists():
            raise SourceError(f"video file not found: {self.path}; check the path")
        if not self.path.is_file():
            raise SourceError(f"{self.path} is not a file")
        try:
            container = av.open(str(self.path), mode="r")
        except (av.FFmpegError, OSError, ValueError) as exc:
            if isinstance(exc, PermissionError):
                raise SourceError(f"cannot read {self.path}: permission denied") from None
            if _size(self.path) == 0:
                raise SourceError(f"{self.path} is empty (0 bytes); give a video file") from None
            if _mp4_without_index(self.path):
                raise SourceError(
                    f"{self.path} is an MP4/MOV file without its index (no moov atom): it is still being written, "
                    "or was cut short; wait until the recording ends (a recording to .mkv or .ts can be read "
                    "while it grows)"
                ) from None
            raise SourceError(f"{self.path} is not a video FFmpeg can read ({describe_error(exc)})") from None
        stream = first_video_stream(container)
        if stream is None:
            cover_art = any(is_cover_art(s) for s in container.streams.video)
            container.close()
            if cover_art:
                raise SourceError(
                    f"{self.path} has no video stream, only cover art (an attached picture); give a video file"
                )
            raise SourceError(f"{self.path} has no video stream; give a video file")
        # Keep FFmpeg's default (slice) threading: frame threading drops the
        # last decodable frames before damage in a truncated file.
        self._decoder = AVDecoder(container, stream, self._stop, self.config.max_consecutive_decode_errors)
        self._time_base = stream.time_base
        flags = container.format.flags
        self._ts_discont = bool(int(getattr(flags, "value", flags) or 0) & _TS_DISCONT)
        self._ts_offset = 0.0  # seconds added to pts * time_base after discontinuities
        self._last_timestamp: float | None = None
        self.fps = stream_fps(stream)
        self.num_frames = int(stream.frames) or None
        self._finished = False
        self._last_pts: int | None = None
        # Frames the decoder flagged as decoded with errors (it conceals them) after the first
        # clean one: damage. Flagged frames before it are a recording that starts mid-stream.
        self._clean_seen = False
        self._concealed = 0
        # Decode the first frame now: a file with no decodable frame fails at
        # open, and the size is known after rotation.
        try:
            first = self._next_av_frame()
        except StreamInterrupted as exc:
            self._decoder.close()
            raise SourceError(f"{self.path} has no decodable video frames: {exc}") from exc
        if first is None:
            self._decoder.close()
            raise SourceError(f"{self.path} has no decodable video frames (empty or damaged file)")
        self._first: Frame | None = self._make_frame(first)
        self.size = (self._first.width, self._first.height)
        self.sample_aspect_ratio = sample_aspect_ratio(stream, first.rotation)

    def _next_av_frame(self) -> Any | None:
        d = self._decoder
        try:
            frame = d.next_frame(recover_demux=True)
        except _TooManyErrors:
            self._finished = True
            raise StreamInterrupted(
                f"{self.name} is damaged: read {self._delivered}{self._of_total()} frames, then "
                f"{d.consecutive_errors} packets in a row could not be decoded ({d.last_error})"
            ) from None
        except _Stopped:
            return None
        if frame is not None:
            if not getattr(frame, "is_corrupt", False):
                self._clean_seen = True
            elif self._clean_seen:
                self._concealed += 1
            return frame
        self._finished = True
        # The index promised more samples than the file holds: it was cut short.
        truncated = self.num_frames is not None and d.packets < self.num_frames
        if d.decode_errors or truncated or self._concealed:
            parts = [f"{d.decode_errors} undecodable packets skipped"] if d.decode_errors else []
            if self._concealed:
                n = self._concealed
                parts.append(f"{n} frame{'s' if n != 1 else ''} decoded with errors, concealed by the decoder")
            if truncated:
                parts.append(f"it ends early, after {d.packets} of the {self.num_frames} packets its index lists")
            detail = "; ".join(parts)
            raise StreamInterrupted(f"{self.name} is damaged: read {self._delivered}{self._of_total()} frames ({detail})")
        return None

    def _of_total(self) -> str:
        return f" of {self.num_frames}" if self.num_frames else ""

    def _make_frame(self, av_frame: Any) -> Frame:
        index = self._delivered
        if av_frame.pts is not None:
            self._last_pts = av_frame.pts
        if av_frame.pts is not None and self._time_base is not None:
            timestamp = float(av_frame.pts * self._time_base) + self._ts_offset
        else:
            timestamp = index / self.fps if self.fps else 0.0
        self._last_timestamp = timestamp
        return Frame(index=index, image=to_bgr(av_frame), timestamp=timestamp, capture_time=time.monotonic())

    def _is_discontinuity(self, av_frame: Any) -> bool:
        """True where a joined recording's next part starts: its timestamps restart, or jump far ahead.

        Only in formats that allow it (MPEG-TS, MPEG-PS), and only at a keyframe going back, so
        a stale frame a damaged file's decoder emits out of order is still dropped.
        """
        if not self._ts_discont or self._time_base is None or self._last_timestamp is None:
            return False
        seconds = float(av_frame.pts * self._time_base) + self._ts_offset
        if av_frame.pts <= self._last_pts:  # type: ignore[operator]
            return bool(getattr(av_frame, "key_frame", False))
        return seconds - self._last_timestamp > _TS_JUMP_S

    def _rebase(self, av_frame: Any) -> None:
        """Continue the timestamps one frame after the last one delivered, across a discontinuity."""
        step = 1.0 / self.fps if self.fps else 0.04
        self._ts_offset = self._last_timestamp + step - float(av_frame.pts * self._time_base)  # type: ignore[operator]

    def _read(self) -> Frame | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        while not self._finished:
            av_frame = self._next_av_frame()
            if av_frame is None:
                return None
            if av_frame.pts is not None and self._last_pts is not None:
                if self._is_discontinuity(av_frame):
                    self._rebase(av_frame)
                elif av_frame.pts <= self._last_pts:
                    # After damage the decoder can emit a stale frame out of order;
                    # consumers (trackers) rely on time only going forward.
                    continue
            return self._make_frame(av_frame)
        return None

    def _release(self) -> None:
        self._decoder.close()


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _mp4_without_index(path: Path) -> bool:
    """True for an ISO-BMFF file (MP4, MOV) whose top-level boxes start with ``ftyp`` but hold no ``moov``.

    A plain MP4 writes its index (``moov``) last, so a recording in progress
    or one cut short has none; FFmpeg then says only "Invalid data found".
    """
    seen: list[bytes] = []
    try:
        with path.open("rb") as f:
            size = path.stat().st_size
            pos = 0
            while pos + 8 <= size and len(seen) < 1000:
                f.seek(pos)
                header = f.read(16)
                length = int.from_bytes(header[:4], "big")
                kind = header[4:8]
                seen.append(kind)
                if kind == b"moov":
                    return False
                if length == 1 and len(header) == 16:  # 64-bit size follows
                    length = int.from_bytes(header[8:16], "big")
                elif length == 0:  # the box runs to the end of the file (an mdat being written)
                    break
                if length < 8:
                    break
                pos += length
    except OSError:
        return False
    return bool(seen) and seen[0] in (b"ftyp", b"wide", b"free", b"mdat")
