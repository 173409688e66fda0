"""PyAV decoding shared by files and network streams: a decoder that turns
packets into ``HxWx3 uint8`` BGR images and counts damaged packets.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from fractions import Fraction
from typing import Any

import av
import numpy as np

from realtime_sam.capture.base import _ReadFailed, _Stopped, _TooManyErrors
from realtime_sam.errors import describe_error

__all__ = ["AVDecoder"]


class AVDecoder:
    """Packet-by-packet decoding of one video stream of an open container.

    Decoding packet by packet (instead of ``container.decode``) means one
    damaged packet costs only that packet's frames: its error is counted and
    decoding goes on with the next packet.
    """

    def __init__(self, container: Any, stream: Any, stop: threading.Event, max_consecutive_errors: int) -> None:
        self.container = container
        self.stream = stream
        self._stop = stop
        self._max = max_consecutive_errors
        self._packets = container.demux(stream)
        self._pending: deque[Any] = deque()
        self.packets = 0
        self.decode_errors = 0
        self.consecutive_errors = 0
        self.last_error = ""
        self.ended = False

    def next_frame(self, *, recover_demux: bool) -> Any | None:
        """The next decoded ``av.VideoFrame``, or ``None`` at the end of the data.

        Args:
            recover_demux: on a demuxer error, count it and keep reading
                (files); otherwise raise :class:`_ReadFailed` (streams).

        Raises:
            _Stopped, _ReadFailed, _TooManyErrors.
        """
        while not self._pending:
            if self.ended:
                return None
            if self._stop.is_set():
                raise _Stopped()
            try:
                packet = next(self._packets)
            except StopIteration:
                self.ended = True
                return None
            except (av.FFmpegError, OSError) as exc:
                if not recover_demux:
                    raise _ReadFailed(describe_error(exc)) from exc
                self._count_error(exc)
                # A generator that raised is finished; the container keeps
                # its position, so a new one resumes after the bad data.
                self._packets = self.container.demux(self.stream)
                continue
            if packet.size:
                self.packets += 1
            try:
                frames = packet.decode()
            except (av.FFmpegError, ValueError) as exc:
                self._count_error(exc)
                continue
            self.consecutive_errors = 0
            self._pending.extend(frames)
        return self._pending.popleft()

    def _count_error(self, exc: BaseException) -> None:
        self.decode_errors += 1
        self.consecutive_errors += 1
        self.last_error = describe_error(exc)
        if self.consecutive_errors >= self._max:
            raise _TooManyErrors(self.last_error)

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:  # noqa: BLE001 - closing a broken container must not mask the real error
            pass


def to_bgr(frame: Any) -> np.ndarray:
    """``HxWx3 uint8`` BGR image of an ``av.VideoFrame``, turned upright per its display matrix."""
    image = frame.to_ndarray(format="bgr24")
    # frame.rotation is the counter-clockwise angle a player applies when
    # showing the frame (from the stream's display matrix).
    turns = int(round((frame.rotation or 0) / 90.0)) % 4
    if turns:
        image = np.rot90(image, k=turns)
    return np.ascontiguousarray(image)


def stream_fps(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and 0 < value < 1000:
                return value
    return None


def sample_aspect_ratio(stream: Any, rotation: float | None) -> Fraction:
    """Width over height of one displayed pixel of ``stream``'s frames turned upright; 1 when unknown.

    The container's value wins over the codec's, as FFmpeg's players decide;
    a quarter turn swaps width and height, so the ratio is inverted.
    """
    sar = None
    for owner in (stream, getattr(stream, "codec_context", None)):
        value = getattr(owner, "sample_aspect_ratio", None) if owner is not None else None
        if value is not None and value.numerator > 0 and value.denominator > 0:
            sar = Fraction(value)
            break
    if sar is None or not Fraction(1, 100) <= sar <= 100:
        return Fraction(1)
    if int(round((rotation or 0) / 90.0)) % 2:
        sar = 1 / sar
    return sar


# FFmpeg's AV_DISPOSITION_ATTACHED_PIC: a "video" stream that is one still
# picture, the cover art of an audio file or a video (MP3, M4A, MKV, MP4).
_ATTACHED_PIC = 0x0400


def is_cover_art(stream: Any) -> bool:
    """True for a stream that only carries an attached picture (cover art), not moving video."""
    disposition = getattr(stream, "disposition", 0) or 0
    # PyAV 15-17 give an av.stream.Disposition that is a Flag, not an int (18 on: an IntFlag).
    return bool(int(getattr(disposition, "value", disposition)) & _ATTACHED_PIC)


def first_video_stream(container: Any) -> Any | None:
    """The container's first video stream that is not cover art; ``None`` when it has none."""
    return next((s for s in container.streams.video if not is_cover_art(s)), None)
