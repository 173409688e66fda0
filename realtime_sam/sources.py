"""Video sources: open a webcam, a file, a stream or an image sequence and read frames.

:func:`open_source` turns a user's ``--source`` value into a :class:`Source`:

* ``0``, ``"1"``, ``/dev/video2``: a webcam through OpenCV (:class:`CameraSource`);
* ``clip.mp4`` (any container FFmpeg reads): a video file through PyAV
  (:class:`VideoFileSource`);
* ``frames/``, ``frames/*.png``, ``photo.jpg``: an image sequence
  (:class:`ImageSequenceSource`);
* ``rtsp://``, ``rtsps://``, ``rtmp://``, ``http(s)://``: a network stream
  through PyAV, reopened when it drops (:class:`StreamSource`);
* ``lavfi:testsrc2=size=320x240:rate=25``: an FFmpeg filter graph paced in
  real time, a live source for tests and demos without a camera.

Every source delivers :class:`~realtime_sam.types.Frame` objects (``HxWx3
uint8`` BGR images, C-contiguous) from :meth:`Source.read`, which returns
``None`` once the source has ended for good. Frame indices count the frames
delivered (0, 1, 2, ... with no gaps, across reconnects too).

Failure policy:

* a source that cannot be opened raises :class:`SourceError` at once, with one
  line that says what to do;
* a damaged file delivers every frame that can still be decoded, then raises
  :class:`StreamInterrupted` saying how many frames were read;
* a live stream that ends, errors or stalls for ``read_timeout_s`` is a
  *disconnect*: it is reopened with exponential backoff, progress is reported
  as :class:`StatusEvent` values to an ``on_status`` callback, and no frame is
  ever invented to fill the gap;
* credentials in URLs never appear in names, messages or events
  (:func:`redact_url`).

Threading: one thread reads. :meth:`Source.interrupt` may be called from any
thread; it makes a blocked :meth:`~Source.read` return ``None`` within about
``read_timeout_s`` (PyAV offers no way to cancel a read in progress, so the
stop flag is checked between packets and between reconnect attempts).
:meth:`Source.close` may also be called from another thread: it interrupts
first and releases the decoder once the reader has left ``read``.
"""

from __future__ import annotations

import abc
import glob as globmod
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

import av
import cv2
import numpy as np

from .errors import ConfigError, SourceError, StreamInterrupted, describe_error
from .types import Frame

__all__ = [
    "SourceConfig",
    "StatusEvent",
    "StatusKind",
    "Source",
    "VideoFileSource",
    "StreamSource",
    "CameraSource",
    "ImageSequenceSource",
    "CaptureLike",
    "open_source",
    "redact_url",
    "STREAM_SCHEMES",
    "IMAGE_EXTENSIONS",
]

STREAM_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "http", "https")
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
_RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")
_SUPPORTED = (
    "a webcam index (0, 1, ...), a video file, an image folder or glob (frames/*.png), "
    "rtsp://, rtsps://, rtmp://, http://, https:// or lavfi:GRAPH"
)

StatusKind = Literal["disconnected", "reconnecting", "reconnected", "gave_up"]


# ---------------------------------------------------------------- configuration


@dataclass(frozen=True)
class SourceConfig:
    """How sources open, time out and recover.

    Attributes:
        open_timeout_s: longest wait for a stream to open (connect + probe).
        read_timeout_s: longest wait for the next packet of a stream; a stall
            longer than this is a disconnect.
        reconnect: reopen a live source (stream, webcam) that drops.
        reconnect_max_tries: reopen attempts per disconnect before giving up
            with :class:`SourceError` (0: try forever).
        backoff_initial_s: wait before the first reopen attempt; doubles after
            each failed attempt...
        backoff_max_s: ...up to this.
        max_consecutive_decode_errors: undecodable packets in a row after
            which a file counts as damaged beyond recovery (and a live stream
            as disconnected).
        rtsp_transport: RTSP lower transport: ``"tcp"`` (reliable through
            NAT and firewalls), ``"udp"``, ``"udp_multicast"``, ``"http"``
            or ``"https"``.
        image_fps: frame rate assumed for image sequences' timestamps.
    """

    open_timeout_s: float = 10.0
    read_timeout_s: float = 5.0
    reconnect: bool = True
    reconnect_max_tries: int = 0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    max_consecutive_decode_errors: int = 50
    rtsp_transport: str = "tcp"
    image_fps: float = 25.0

    def __post_init__(self) -> None:
        for name in ("open_timeout_s", "read_timeout_s", "image_fps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"source.{name} must be a number > 0, got {value!r}")
        for name in ("backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"source.{name} must be a number >= 0, got {value!r}")
        if self.backoff_max_s < self.backoff_initial_s:
            raise ConfigError(
                f"source.backoff_max_s ({self.backoff_max_s}) must be >= backoff_initial_s ({self.backoff_initial_s})"
            )
        if not isinstance(self.reconnect, bool):
            raise ConfigError(f"source.reconnect must be true or false, got {self.reconnect!r}")
        if not isinstance(self.reconnect_max_tries, int) or self.reconnect_max_tries < 0:
            raise ConfigError(f"source.reconnect_max_tries must be an int >= 0 (0 = forever), got {self.reconnect_max_tries!r}")
        if not isinstance(self.max_consecutive_decode_errors, int) or self.max_consecutive_decode_errors < 1:
            raise ConfigError(
                f"source.max_consecutive_decode_errors must be an int >= 1, got {self.max_consecutive_decode_errors!r}"
            )
        if self.rtsp_transport not in _RTSP_TRANSPORTS:
            raise ConfigError(f"source.rtsp_transport must be one of {', '.join(_RTSP_TRANSPORTS)}, got {self.rtsp_transport!r}")


@dataclass(frozen=True)
class StatusEvent:
    """A change in a live source's connection, for logs and on-screen status.

    Attributes:
        kind: ``"disconnected"`` (the source dropped), ``"reconnecting"``
            (an attempt is about to start), ``"reconnected"`` or ``"gave_up"``
            (reading ends with :class:`SourceError`).
        time: ``time.monotonic()`` when it happened (the clock of
            :attr:`Frame.capture_time`).
        message: one line, credentials redacted.
        source: the source's redacted display name.
        attempt: 1-based reconnect attempt for ``"reconnecting"`` and
            ``"reconnected"`` / the number made for ``"gave_up"``; else 0.
    """

    kind: StatusKind
    time: float
    message: str
    source: str
    attempt: int = 0


StatusCallback = Callable[[StatusEvent], None]


# ---------------------------------------------------------------- redaction

# FFmpeg splits a URL's authority at the first "/", "?" or "#" and takes the
# user info up to the authority's *last* "@"; do the same so a password that
# contains "@" is hidden whole.
_URL_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^/?#\s'\"]*)(?P<rest>[^\s'\"]*)")
_SECRET_QUERY_RE = re.compile(
    r"(?i)([?&;](?:password|passwd|pass|pwd|user|username|token|access_token|auth|key|api_key|apikey|secret|signature|sig)=)[^&#;\s'\"]*"
)


def redact_url(url: str) -> str:
    """Hide credentials in a URL (or in any text containing URLs).

    ``rtsp://user:pass@host:554/x`` becomes ``rtsp://***@host:554/x``; query
    parameters that carry secrets (``password=``, ``token=``, ``key=``...)
    have their values replaced by ``***``. Text without URLs is returned
    unchanged.
    """

    def one(m: re.Match[str]) -> str:
        authority = m.group("authority")
        if "@" in authority:
            authority = "***@" + authority.rsplit("@", 1)[1]
        return m.group("scheme") + authority + _SECRET_QUERY_RE.sub(r"\1***", m.group("rest"))

    return _URL_RE.sub(one, url)


def _secrets_of(url: str) -> list[str]:
    """Credential strings in ``url`` that must not appear in any message (raw and percent-decoded)."""
    from urllib.parse import unquote

    m = _URL_RE.match(url)
    if not m or "@" not in m.group("authority"):
        return []
    userinfo = m.group("authority").rsplit("@", 1)[0]
    found = {userinfo, unquote(userinfo)}
    for part in userinfo.split(":", 1)[1:]:  # the password alone, if it is long enough to be unambiguous
        if len(part) >= 4:
            found.update({part, unquote(part)})
    return sorted((s for s in found if s), key=len, reverse=True)


# ---------------------------------------------------------------- the interface


class Source(abc.ABC):
    """A sequence of frames from a camera, file, stream or image sequence.

    Attributes:
        live: True for cameras, streams and lavfi graphs (frames arrive in
            real time and old ones are worthless); False for files and image
            sequences (every frame should be processed).
        fps: nominal frame rate, ``None`` when unknown.
        size: ``(width, height)`` of delivered images (after rotation).
        name: display name, credentials redacted.
        num_frames: total frames when known (files), else ``None``.

    Use as a context manager, or iterate: ``for frame in source`` stops at the
    end and lets :class:`SourceError` / :class:`StreamInterrupted` propagate.
    """

    live: bool
    fps: float | None
    size: tuple[int, int]
    name: str
    num_frames: int | None

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._io_lock = threading.Lock()
        self._closed = False
        self._close_pending = False
        self._delivered = 0

    @abc.abstractmethod
    def _read(self) -> Frame | None:
        """Read the next frame (called with the I/O lock held)."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Free decoders and devices (called once, with the I/O lock held)."""

    def read(self) -> Frame | None:
        """The next frame, or ``None`` when the source has ended for good or was interrupted.

        Blocks at most about ``read_timeout_s`` per attempt on streams (a live
        source that drops blocks while it reconnects, until it is back,
        :meth:`interrupt` is called, or it gives up with :class:`SourceError`).

        Raises:
            StreamInterrupted: a file or image sequence turned out damaged;
                every frame before the damage was delivered first.
            SourceError: a live source gave up reconnecting.
        """
        with self._io_lock:
            try:
                if self._closed or self._stop.is_set():
                    return None
                frame = self._read()
                if frame is not None:
                    self._delivered += 1
                return frame
            finally:
                if self._close_pending:
                    self._close_locked()

    def interrupt(self) -> None:
        """Ask a blocked or future :meth:`read` to return ``None`` soon; safe from any thread."""
        self._stop.set()

    @property
    def interrupted(self) -> bool:
        return self._stop.is_set()

    def close(self) -> None:
        """Stop and release the source; idempotent, safe from any thread."""
        self.interrupt()
        # A read in progress finishes within about read_timeout_s; if it takes
        # longer, the reader releases the source itself when it leaves read().
        if self._io_lock.acquire(timeout=self._close_wait_s()):
            try:
                self._close_locked()
            finally:
                self._io_lock.release()
        else:
            self._close_pending = True

    def _close_wait_s(self) -> float:
        return 1.0

    def _close_locked(self) -> None:
        if not self._closed:
            self._closed = True
            self._close_pending = False
            self._release()

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[Frame]:
        while True:
            frame = self.read()
            if frame is None:
                return
            yield frame

    def __repr__(self) -> str:
        w, h = self.size
        return f"<{type(self).__name__} {self.name} {w}x{h} live={self.live} fps={self.fps}>"


# ---------------------------------------------------------------- PyAV decoding


class _Stopped(Exception):
    """The stop flag was set between packets."""


class _ReadFailed(Exception):
    """Reading packets failed (timeout, connection lost, I/O error)."""


class _TooManyErrors(Exception):
    """Too many packets in a row could not be decoded."""


class _AVDecoder:
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


def _to_bgr(frame: Any) -> np.ndarray:
    """``HxWx3 uint8`` BGR image of an ``av.VideoFrame``, turned upright per its display matrix."""
    image = frame.to_ndarray(format="bgr24")
    # frame.rotation is the counter-clockwise angle a player applies when
    # showing the frame (from the stream's display matrix).
    turns = int(round((frame.rotation or 0) / 90.0)) % 4
    if turns:
        image = np.rot90(image, k=turns)
    return np.ascontiguousarray(image)


def _stream_fps(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and 0 < value < 1000:
                return value
    return None


def _first_video_stream(container: Any) -> Any | None:
    return container.streams.video[0] if container.streams.video else None


# ---------------------------------------------------------------- files


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
            raise SourceError(f"{self.path} is not a video FFmpeg can read ({describe_error(exc)})") from None
        stream = _first_video_stream(container)
        if stream is None:
            container.close()
            raise SourceError(f"{self.path} has no video stream; give a video file")
        # Keep FFmpeg's default (slice) threading: frame threading drops the
        # last decodable frames before damage in a truncated file.
        self._decoder = _AVDecoder(container, stream, self._stop, self.config.max_consecutive_decode_errors)
        self._time_base = stream.time_base
        self.fps = _stream_fps(stream)
        self.num_frames = int(stream.frames) or None
        self._finished = False
        self._last_pts: int | None = None
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
            return frame
        self._finished = True
        # The index promised more samples than the file holds: it was cut short.
        truncated = self.num_frames is not None and d.packets < self.num_frames
        if d.decode_errors or truncated:
            parts = [f"{d.decode_errors} undecodable packets skipped"] if d.decode_errors else []
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
            timestamp = float(av_frame.pts * self._time_base)
        else:
            timestamp = index / self.fps if self.fps else 0.0
        return Frame(index=index, image=_to_bgr(av_frame), timestamp=timestamp, capture_time=time.monotonic())

    def _read(self) -> Frame | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        while not self._finished:
            av_frame = self._next_av_frame()
            if av_frame is None:
                return None
            if av_frame.pts is not None and self._last_pts is not None and av_frame.pts <= self._last_pts:
                # After damage the decoder can emit a stale frame out of order;
                # consumers (trackers) rely on time only going forward.
                continue
            return self._make_frame(av_frame)
        return None

    def _release(self) -> None:
        self._decoder.close()


# ---------------------------------------------------------------- live sources


class _ConnectFailed(Exception):
    """One attempt to (re)open a live source failed; the message is the reason."""


class _LiveSource(Source):
    """Shared disconnect / backoff / reconnect logic for live sources."""

    live = True

    def __init__(self, config: SourceConfig, on_status: StatusCallback | None) -> None:
        super().__init__()
        self.config = config
        self._on_status = on_status
        self._secrets: list[str] = []
        self._t_open = time.monotonic()
        self._last_ts: float | None = None

    # subclasses implement these three
    @abc.abstractmethod
    def _connect(self) -> None:
        """Open the device/stream; raise :class:`_ConnectFailed` on failure."""

    @abc.abstractmethod
    def _disconnect(self) -> None:
        """Release the current connection (idempotent)."""

    @property
    @abc.abstractmethod
    def _connected(self) -> bool: ...

    def _scrub(self, text: str) -> str:
        text = redact_url(text)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _emit(self, kind: StatusKind, message: str, attempt: int = 0) -> None:
        if self._on_status is None:
            return
        self._on_status(StatusEvent(kind, time.monotonic(), self._scrub(message), self.name, attempt))

    def _close_wait_s(self) -> float:
        return self.config.read_timeout_s + 1.0

    def _dropped(self, reason: str) -> None:
        """Handle a disconnect: report it, then reconnect or give up."""
        self._disconnect()
        reason = self._scrub(reason)
        self._emit("disconnected", f"{self.name} disconnected: {reason}")
        if not self.config.reconnect:
            self._emit("gave_up", f"{self.name}: reconnecting is off", 0)
            raise SourceError(f"{self.name} disconnected ({reason}); reconnecting is off (source.reconnect: false)")
        self._reconnect(reason)

    def _reconnect(self, reason: str) -> None:
        """Reopen with exponential backoff; returns when connected or interrupted, raises on giving up."""
        cfg = self.config
        attempt = 0
        delay = cfg.backoff_initial_s
        while True:
            attempt += 1
            self._emit("reconnecting", f"reconnecting to {self.name} in {delay:.1f} s (attempt {attempt})", attempt)
            # Event.wait doubles as an interruptible sleep.
            if self._stop.wait(delay):
                return
            try:
                self._connect()
            except _ConnectFailed as exc:
                reason = self._scrub(str(exc))
                if self._stop.is_set():
                    return
                if cfg.reconnect_max_tries and attempt >= cfg.reconnect_max_tries:
                    self._emit("gave_up", f"gave up on {self.name} after {attempt} attempts: {reason}", attempt)
                    raise SourceError(
                        f"lost {self.name} and could not reconnect after {attempt} attempts ({reason}); "
                        "check that the source is up, or raise source.reconnect_max_tries (0 = forever)"
                    ) from None
                delay = min(max(delay * 2.0, 0.05), cfg.backoff_max_s)
                continue
            self._emit("reconnected", f"reconnected to {self.name} (attempt {attempt})", attempt)
            return

    def _next_timestamp(self) -> float:
        """Seconds since the source opened, never below the previous frame's timestamp."""
        ts = time.monotonic() - self._t_open
        if self._last_ts is not None and ts <= self._last_ts:
            ts = self._last_ts + 1e-6
        self._last_ts = ts
        return ts


class StreamSource(_LiveSource):
    """A network stream (RTSP, RTMP, HTTP) or FFmpeg filter graph read with PyAV.

    RTSP uses ``config.rtsp_transport`` (TCP by default). Opening and every
    packet read are bounded by ``open_timeout_s`` / ``read_timeout_s``. A
    live stream that ends, fails or stalls is reopened with backoff (see
    :class:`SourceConfig`); frame indices keep increasing across reconnects.

    Timestamps follow the stream's clock (``pts``) within one connection,
    anchored to the seconds elapsed since the source opened when each
    connection starts, so they increase across reconnects too. An HTTP(S)
    URL with a known duration (a file served over HTTP) is not live: it has
    the file's timestamps and ends (``None``, or :class:`StreamInterrupted`
    when the connection fails) instead of reconnecting, as does a lavfi
    graph with a duration.
    """

    def __init__(
        self,
        url: str,
        config: SourceConfig | None = None,
        *,
        on_status: StatusCallback | None = None,
        format: str | None = None,
        display_name: str | None = None,
    ) -> None:
        super().__init__(config or SourceConfig(), on_status)
        self._url = url
        self._format = format
        self._secrets = _secrets_of(url)
        self.name = display_name or redact_url(url)
        self._scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        self._decoder: _AVDecoder | None = None
        self.num_frames = None
        try:
            self._connect()
        except _ConnectFailed as exc:
            hint = "check the filter graph" if format == "lavfi" else "check the address, credentials and that the server is up"
            raise SourceError(f"cannot open {self.name}: {self._scrub(str(exc))}; {hint}") from None
        stream = self._decoder.stream  # type: ignore[union-attr]
        self.fps = _stream_fps(stream)
        container = self._decoder.container  # type: ignore[union-attr]
        # Only a served file (HTTP with a duration) or a finite lavfi graph ends;
        # RTSP/RTMP always count as live.
        self.live = True
        self._reconnects = self._scheme in ("rtsp", "rtsps", "rtmp") or (
            self._scheme in ("http", "https") and container.duration is None
        )
        if self._scheme in ("http", "https") and container.duration is not None:
            self.live = False
        # Read one frame now: a stream that opens but sends nothing fails at
        # open, and the size is known.
        first = self._next_frame_or_none(first=True)
        if first is None:
            self._disconnect()
            raise SourceError(f"{self.name} opened but sent no video frame within {self.config.read_timeout_s:g} s")
        self._first: Frame | None = first
        self.size = (first.width, first.height)

    # -- connection
    @property
    def _connected(self) -> bool:
        return self._decoder is not None

    def _connect(self) -> None:
        cfg = self.config
        options: dict[str, str] = {}
        kwargs: dict[str, Any] = {}
        if self._scheme in ("rtsp", "rtsps"):
            options["rtsp_transport"] = cfg.rtsp_transport
        if self._format is None:
            kwargs["timeout"] = (cfg.open_timeout_s, cfg.read_timeout_s)
        started = time.monotonic()
        try:
            container = av.open(self._url, mode="r", format=self._format, options=options, **kwargs)
        except (av.FFmpegError, OSError, ValueError) as exc:
            if self._format is None and time.monotonic() - started >= 0.9 * cfg.open_timeout_s:
                # FFmpeg reports an open timeout as "invalid data" or "exit requested".
                raise _ConnectFailed(f"no answer within {cfg.open_timeout_s:g} s (source.open_timeout_s)") from None
            raise _ConnectFailed(describe_error(exc)) from None
        stream = _first_video_stream(container)
        if stream is None:
            container.close()
            raise _ConnectFailed("it carries no video stream")
        self._decoder = _AVDecoder(container, stream, self._stop, self.config.max_consecutive_decode_errors)
        self._conn_anchor: tuple[float, int] | None = None  # (timestamp, pts) at the connection's first pts

    def _disconnect(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    # -- reading
    def _next_frame_or_none(self, *, first: bool = False) -> Frame | None:
        """Next frame; handles disconnects (on the first read, any failure returns ``None``)."""
        while True:
            if self._stop.is_set() or self._decoder is None:
                return None
            try:
                av_frame = self._decoder.next_frame(recover_demux=False)
            except _Stopped:
                return None
            except _ReadFailed as exc:
                reason = str(exc)
                if isinstance(exc.__cause__, (av.ExitError, av.error.TimeoutError)):
                    # The read deadline fired: FFmpeg calls it "Immediate exit requested".
                    reason = f"no data for {self.config.read_timeout_s:g} s (source.read_timeout_s)"
                if first:
                    return None
                self._failed(reason)
                continue
            except _TooManyErrors as exc:
                if first:
                    return None
                self._failed(f"{self.config.max_consecutive_decode_errors} packets in a row could not be decoded ({exc})")
                continue
            if av_frame is None:
                if first or not self._reconnects:
                    return None
                self._dropped("the stream ended")
                continue
            try:
                image = _to_bgr(av_frame)
            except (av.FFmpegError, ValueError) as exc:
                # A frame that decodes but cannot be converted is a decode error.
                self._decoder.decode_errors += 1
                self._decoder.last_error = describe_error(exc)
                continue
            return Frame(
                index=self._delivered,
                image=image,
                timestamp=self._stream_timestamp(av_frame),
                capture_time=time.monotonic(),
            )

    def _failed(self, reason: str) -> None:
        """A read failed: a disconnect for live streams; for a finite one (an HTTP file, a lavfi graph) the end."""
        if self._reconnects:
            self._dropped(reason)
            return
        self._disconnect()
        # Reopening a finite stream would replay it from the start: stop instead.
        raise StreamInterrupted(f"{self.name} stopped after {self._delivered} frames: {self._scrub(reason)}")

    def _stream_timestamp(self, av_frame: Any) -> float:
        tb = self._decoder.stream.time_base if self._decoder is not None else None  # type: ignore[union-attr]
        pts = av_frame.pts
        if not self.live:  # a file served over HTTP: its own clock, like a local file
            if pts is not None and tb is not None:
                return float(pts * tb)
            return self._delivered / self.fps if self.fps else 0.0
        if pts is None or tb is None:
            return self._next_timestamp()
        if self._conn_anchor is None:
            self._conn_anchor = (self._next_timestamp(), pts)
            return self._conn_anchor[0]
        base_ts, base_pts = self._conn_anchor
        ts = base_ts + float((pts - base_pts) * tb)
        if self._last_ts is not None and ts <= self._last_ts:
            # The clock jumped back (wrap-around, a restarted encoder): re-anchor.
            self._conn_anchor = (self._next_timestamp(), pts)
            return self._conn_anchor[0]
        self._last_ts = ts
        return ts

    def _read(self) -> Frame | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        if self._decoder is None:
            if not self._reconnects or self._stop.is_set():
                return None
            self._reconnect("not connected")
        return self._next_frame_or_none()

    def _release(self) -> None:
        self._disconnect()


# ---------------------------------------------------------------- cameras


class CaptureLike(Protocol):
    """The parts of ``cv2.VideoCapture`` a :class:`CameraSource` uses (inject fakes in tests)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop_id: int) -> float: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[int], CaptureLike]


def _default_capture(index: int) -> CaptureLike:
    # The default backend: CAP_FFMPEG cannot open V4L2/DirectShow/AVFoundation devices.
    return cv2.VideoCapture(index)


class CameraSource(_LiveSource):
    """A webcam through OpenCV.

    Timestamps are seconds since the source opened. A camera that stops
    delivering (unplugged) is reopened with backoff like a stream.
    """

    def __init__(
        self,
        index: int,
        config: SourceConfig | None = None,
        *,
        on_status: StatusCallback | None = None,
        capture_factory: CaptureFactory | None = None,
    ) -> None:
        super().__init__(config or SourceConfig(), on_status)
        self.index = int(index)
        self.name = f"camera {self.index}"
        self.num_frames = None
        self._factory = capture_factory or _default_capture
        self._cap: CaptureLike | None = None
        self._first_image: np.ndarray | None = None
        try:
            self._connect()
        except _ConnectFailed as exc:
            raise SourceError(str(exc)) from None
        assert self._cap is not None and self._first_image is not None
        fps = float(self._cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self.fps = fps if math.isfinite(fps) and 0 < fps < 1000 else None
        h, w = self._first_image.shape[:2]
        self.size = (int(w), int(h))

    @property
    def _connected(self) -> bool:
        return self._cap is not None

    def _connect(self) -> None:
        # OpenCV prints backend warnings for a missing camera; the one-line
        # error below says it better. Restore the level afterwards.
        previous = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
        try:
            cap = self._factory(self.index)
            opened = bool(cap.isOpened())
            ok, image = cap.read() if opened else (False, None)
        finally:
            cv2.utils.logging.setLogLevel(previous)
        if not opened:
            cap.release()
            raise _ConnectFailed(
                f"no camera at index {self.index}; list devices with `v4l2-ctl --list-devices` (Linux) "
                f"or try another index (--source {0 if self.index else 1})"
            )
        if not ok or image is None:
            cap.release()
            raise _ConnectFailed(
                f"camera {self.index} opened but delivered no frame; close other programs using it and retry"
            )
        self._cap = cap
        self._first_image = _as_bgr(image)

    def _disconnect(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:
                self._cap = None

    def _read(self) -> Frame | None:
        while not self._stop.is_set():
            if self._first_image is not None:
                image, self._first_image = self._first_image, None
            else:
                if self._cap is None:
                    self._reconnect("not connected")
                    continue
                ok, raw = self._cap.read()
                if not ok or raw is None:
                    self._dropped("the camera stopped delivering frames")
                    continue
                image = _as_bgr(raw)
            return Frame(self._delivered, image, self._next_timestamp(), time.monotonic())
        return None

    def _release(self) -> None:
        self._disconnect()


def _as_bgr(image: np.ndarray) -> np.ndarray:
    """Any 8-bit OpenCV image as ``HxWx3 uint8`` BGR, C-contiguous."""
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.dtype != np.uint8:
        image = cv2.convertScaleAbs(image, alpha=255.0 / max(1.0, float(np.iinfo(image.dtype).max)))
    return np.ascontiguousarray(image)


# ---------------------------------------------------------------- image sequences


def _natural_key(path: Path) -> list[Any]:
    """Sort key that puts ``frame2`` before ``frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


class ImageSequenceSource(Source):
    """A folder of images or a glob pattern, in natural sort order, read with ``cv2.imread``.

    Timestamps are ``position / config.image_fps``, where position is the
    image's place in the sorted list. Unreadable images are skipped, and
    after the last image :class:`StreamInterrupted` reports how many were
    skipped. Images must all have the first one's size.
    """

    live = False

    def __init__(self, spec: str | Path, config: SourceConfig | None = None) -> None:
        super().__init__()
        self.config = config or SourceConfig()
        self.name = str(spec)
        path = Path(spec)
        if path.is_dir():
            files = [p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
            if not files:
                raise SourceError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in folder {path}")
        elif path.is_file():
            files = [path]
        else:
            files = [Path(p) for p in globmod.glob(str(spec)) if Path(p).is_file()]
            if not files:
                raise SourceError(f"no files match {spec}; check the pattern (quote it so the shell does not expand it)")
        self._files = sorted(files, key=_natural_key)
        self.fps = float(self.config.image_fps)
        self.num_frames = len(self._files)
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
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
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
        h, w = image.shape[:2]
        if (w, h) != self.size:
            self._pos = len(self._files)
            self._skipped = []
            raise SourceError(
                f"{self._files[pos]} is {w}x{h} but the sequence started at {self.size[0]}x{self.size[1]}; "
                "all images must have the same size"
            )
        return Frame(self._delivered, image, pos / self.fps, time.monotonic())

    def _release(self) -> None:
        self._first = None


# ---------------------------------------------------------------- the entry point

_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")
_DEVICE_RE = re.compile(r"^/dev/video(?P<index>\d+)$")


def open_source(
    spec: str | int | Path,
    config: SourceConfig | None = None,
    *,
    on_status: StatusCallback | None = None,
    capture_factory: CaptureFactory | None = None,
) -> Source:
    """Open what ``spec`` names and return a ready :class:`Source`.

    Args:
        spec: a webcam index (``0``, ``"1"``, ``"/dev/video2"``), a video file,
            an image folder or glob, an ``rtsp://`` / ``rtsps://`` /
            ``rtmp://`` / ``http(s)://`` URL, or ``lavfi:GRAPH`` (a paced
            FFmpeg test source such as ``lavfi:testsrc2=size=320x240:rate=25``).
        config: timeouts and reconnect policy.
        on_status: receives :class:`StatusEvent` values from live sources.
        capture_factory: builds the OpenCV capture for a webcam index
            (default ``cv2.VideoCapture(index)``); tests inject fakes.

    Raises:
        SourceError: one line saying why the source cannot be opened.
    """
    config = config or SourceConfig()
    if isinstance(spec, bool):
        raise SourceError(f"invalid source {spec!r}; give {_SUPPORTED}")
    if isinstance(spec, int):
        return _open_camera(spec, config, on_status, capture_factory)
    text = str(spec).strip()
    if not text:
        raise SourceError(f"empty source; give {_SUPPORTED}")
    if text.isdigit():
        return _open_camera(int(text), config, on_status, capture_factory)
    device = _DEVICE_RE.match(text)
    if device:
        return _open_camera(int(device.group("index")), config, on_status, capture_factory)
    if text.startswith("lavfi:"):
        graph = text[len("lavfi:") :]
        if not graph:
            raise SourceError("lavfi: needs a filter graph, e.g. lavfi:testsrc2=size=320x240:rate=25")
        # The realtime filter paces the graph like a camera.
        if not re.search(r"(^|,)\s*realtime\b", graph):
            graph += ",realtime"
        return StreamSource(graph, config, on_status=on_status, format="lavfi", display_name=text)
    scheme_match = _SCHEME_RE.match(text)
    if scheme_match:
        scheme = scheme_match.group("scheme").lower()
        if scheme in STREAM_SCHEMES:
            return StreamSource(text, config, on_status=on_status)
        if scheme == "file":
            from urllib.parse import unquote, urlsplit

            return _open_path(Path(unquote(urlsplit(text).path)), text, config)
        raise SourceError(
            f"unsupported source scheme '{scheme}://' in {redact_url(text)}; use one of "
            f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, lavfi:, a webcam index, a file, or an image folder/glob"
        )
    return _open_path(Path(text), text, config)


def _open_camera(
    index: int, config: SourceConfig, on_status: StatusCallback | None, factory: CaptureFactory | None
) -> Source:
    if index < 0:
        raise SourceError(f"webcam index must be >= 0, got {index}")
    return CameraSource(index, config, on_status=on_status, capture_factory=factory)


def _open_path(path: Path, text: str, config: SourceConfig) -> Source:
    if path.is_dir():
        return ImageSequenceSource(path, config)
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSequenceSource(path, config)
        return VideoFileSource(path, config)
    if any(ch in text for ch in "*?["):
        return ImageSequenceSource(text, config)
    raise SourceError(f"source not found: {text}; give {_SUPPORTED}")
