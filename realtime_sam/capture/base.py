"""What every source shares: :class:`Source`, its settings (:class:`SourceConfig`),
status events of live sources, URL redaction and :class:`LiveSource`, the
reconnect-with-backoff loop of cameras and network streams.

The failure and threading policy of all sources is described in
:mod:`realtime_sam.capture.sources`.
"""

from __future__ import annotations

import abc
import math
import re
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Iterator, Literal

import numpy as np

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import (
    ConfigError,
    SourceError,
)
from realtime_sam.types import Frame

__all__ = [
    "StatusKind", "SourceConfig", "StatusEvent", "StatusCallback", "redact_url", "redact_source", "DeferredFrame", "Source", "LiveSource",
]

_RTSP_TRANSPORTS = ("tcp", "udp", "udp_multicast", "http", "https")
MAX_WAIT_S = 86400.0
"""Longest timeout or backoff a setting may ask for (a day): Python's thread waits overflow
past about 9.2e9 s (``OverflowError`` in the capture thread, mid-run)."""


StatusKind = Literal["disconnected", "reconnecting", "reconnected", "gave_up"]


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
        check_numbers(self, "source")  # by type first: "5" < 1 is a TypeError naming no key
        for name in ("open_timeout_s", "read_timeout_s", "image_fps"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= MAX_WAIT_S):
                raise ConfigError(f"source.{name} must be a number > 0 and <= {MAX_WAIT_S:g}, got {value!r}")
        for name in ("backoff_initial_s", "backoff_max_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= MAX_WAIT_S):
                raise ConfigError(f"source.{name} must be a number >= 0 and <= {MAX_WAIT_S:g}, got {value!r}")
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

    @property
    def important(self) -> bool:
        """Whether it is told even when the run is quiet (``--quiet``): the source dropped, came back
        or gave up; not each reconnect attempt."""
        return self.kind in ("disconnected", "reconnected", "gave_up")


StatusCallback = Callable[[StatusEvent], None]


@dataclass(frozen=True, eq=False)
class DeferredFrame:
    """A frame read and decoded but not yet converted to BGR (:meth:`Source.read_deferred`).

    A live source's frames go to a one-frame buffer where most are replaced
    unread when the engine is slower than the source (several streams on one
    CPU process a few frames a second each): converting only the frame taken
    saves the conversion of every frame dropped (about 0.5 ms of CPU per
    640x480 frame here, 2-4 ms at 1080p, each as much as decoding it or more).

    Attributes:
        index, timestamp, capture_time: as the :class:`~realtime_sam.types.Frame` will have.
        convert: makes the ``HxWx3 uint8`` BGR image, or returns ``None`` when
            the decoded frame cannot be converted (the source counts it as a
            decode error); call it once, on the thread that wants the image.
    """

    index: int
    timestamp: float
    capture_time: float
    convert: Callable[[], "np.ndarray | None"]

    def frame(self) -> Frame | None:
        """The :class:`~realtime_sam.types.Frame`, converted now; ``None`` when it cannot be converted."""
        image = self.convert()
        return None if image is None else Frame(self.index, image, self.timestamp, self.capture_time)


# FFmpeg splits a URL's authority at the first "/", "?" or "#" and takes the
# user info up to the authority's *last* "@"; do the same so a password that
# contains "@" is hidden whole.
_URL_RE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<authority>[^/?#\s'\"]*)(?P<rest>[^\s'\"]*)")


_SECRET_QUERY_RE = re.compile(
    r"(?i)([?&;](?:password|passwd|pass|pwd|user|username|token|access_token|auth|key|api_key|apikey|secret|signature|sig)=)[^&#;\s'\"]*"
)


# What may follow a user info's "@": a host name, IPv4 or [IPv6] address, and
# an optional port, up to the end of the authority.
_HOST_THEN_END_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%\-]+)(?::\d*)?(?=[/?#]|$)")

# An authority that is a host and a numeric port ("host:554", "10.0.0.5:8554", "[::1]:554").
_HOST_AND_PORT_RE = re.compile(r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~%\-]+):(?P<port>\d{1,5})")

# A host that cannot be a user name: an IPv4 or [IPv6] address.
_IP_HOST_RE = re.compile(r"\[[0-9A-Fa-f:.]+\]|\d{1,3}(?:\.\d{1,3}){3}")


def _port_then_path(authority: str) -> bool:
    """Whether ``authority`` (the text before the first ``/``, ``?``, ``#``) is a host and a port (0-65535)."""
    m = _HOST_AND_PORT_RE.fullmatch(authority)
    return m is not None and int(m.group("port")) <= 65535


def userinfo_end(after_scheme: str) -> int:
    """Index of the ``@`` that ends the user info in a URL's text after ``scheme://``; -1 when it has none.

    FFmpeg's reading first: the last ``@`` before the first ``/``, ``?`` or
    ``#``. A password with one of those characters unencoded
    (``user:pa/ss@host/live``) has its ``@`` later: then the last ``@`` that
    a host (and port) follows, when a ``:`` (``user:password``) comes before
    it. Where the text before the first ``/``, ``?``, ``#`` is an IP
    address and a port (``rtsp://10.0.0.5:554/x@cam.local/y``: no user name
    is an address), a later ``@`` is part of the path and the URL is shown
    whole. With a host name there (``rtsp://host:554/a@b``) the text cannot
    tell a path holding ``@`` from a password that starts with a number and
    holds an unencoded ``/`` (``rtsp://admin:1234/x@camera``), so it is read
    as the password and ``rtsp://***@b`` is shown: hiding too much of a rare
    path rather than showing a password. FFmpeg cannot use such a password
    unencoded anyway (percent-encode it: ``%2F``, ``%3F``, ``%23``). Without a
    ``:`` before the
    ``@`` (``rtsp://host/path/x@y``) there is no password and the URL is shown whole.
    """
    authority_end = len(after_scheme)
    for ch in "/?#":
        i = after_scheme.find(ch)
        if i >= 0:
            authority_end = min(authority_end, i)
    at = after_scheme.rfind("@", 0, authority_end)
    if at >= 0:
        return at
    authority = after_scheme[:authority_end]
    port_then_path = _port_then_path(authority)
    if port_then_path and _IP_HOST_RE.fullmatch(authority.rsplit(":", 1)[0]):
        return -1  # "10.0.0.5:554/...": an address, not a user name, before the ":"
    at = len(after_scheme)
    while (at := after_scheme.rfind("@", authority_end, at)) >= 0:
        if ":" in after_scheme[:at] and _HOST_THEN_END_RE.match(after_scheme, at + 1):
            return at
    return -1


def redact_url(url: str) -> str:
    """Hide credentials in a URL (or in any text containing URLs).

    ``rtsp://user:pass@host:554/x`` becomes ``rtsp://***@host:554/x`` (also
    with a ``/``, ``?`` or ``#`` unencoded in the password, see
    :func:`userinfo_end`); query parameters that carry secrets
    (``password=``, ``token=``, ``key=``...) have their values replaced by
    ``***``. Text without URLs is returned unchanged. In free text a URL ends
    at a space or a quote: hide a password that has those with
    :func:`secrets_of`.
    """

    def one(m: re.Match[str]) -> str:
        token = m.group("authority") + m.group("rest")
        at = userinfo_end(token)
        if at >= 0:
            host_and_rest = token[at + 1 :]
            split = min((i for i in (host_and_rest.find(c) for c in "/?#") if i >= 0), default=len(host_and_rest))
            return m.group("scheme") + "***@" + host_and_rest[:split] + _SECRET_QUERY_RE.sub(r"\1***", host_and_rest[split:])
        return m.group("scheme") + m.group("authority") + _SECRET_QUERY_RE.sub(r"\1***", m.group("rest"))

    return _URL_RE.sub(one, url)


def redact_source(url: str) -> str:
    """``url``, one whole source URL, with its credentials hidden whatever characters they hold
    (:func:`redact_url` alone misses a password with a space or a quote)."""
    text = redact_url(url)
    for secret in secrets_of(url):
        text = text.replace(secret, "***")
    return text


def secrets_of(url: str) -> list[str]:
    """Credential strings in ``url`` that must not appear in any message (raw and percent-decoded).

    ``url`` is one whole URL: its user info may hold any character, spaces
    and quotes included (what :func:`redact_url` cannot see in free text).
    """
    from urllib.parse import unquote

    head = re.match(r"[A-Za-z][A-Za-z0-9+.\-]*://", url)
    if not head:
        return []
    after = url[head.end() :]
    at = userinfo_end(after)
    if at < 0:
        return []
    userinfo = after[:at]
    found = {userinfo, unquote(userinfo)}
    for part in userinfo.split(":", 1)[1:]:  # the password alone, if it is long enough to be unambiguous
        if len(part) >= 4:
            found.update({part, unquote(part)})
    return sorted((s for s in found if s), key=len, reverse=True)


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
        sample_aspect_ratio: width over height of one pixel as players show
            it (after rotation): 1 for square pixels, as nearly all sources
            have; anamorphic video files (720x576 at 16:15 or 64:45, DV,
            DVD) have others. Images and masks stay in stored pixels.
        sizes_vary: True where frames are expected at sizes other than
            :attr:`size` (an image folder of several sizes): a prompt for a
            later frame is not checked against :attr:`size`.
        fps_setting: the configuration key :attr:`fps` was taken from
            (``"source.image_fps"`` for images), for errors about the rate to
            name it; ``None`` where the source gave its own rate.

    Use as a context manager, or iterate: ``for frame in source`` stops at the
    end and lets :class:`SourceError` / :class:`StreamInterrupted` propagate.
    """

    live: bool
    fps: float | None
    size: tuple[int, int]
    name: str
    num_frames: int | None
    sample_aspect_ratio: Fraction = Fraction(1)
    sizes_vary: bool = False
    fps_setting: str | None = None

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
        return self._locked(self._read)  # type: ignore[return-value]

    def read_deferred(self) -> Frame | DeferredFrame | None:
        """Like :meth:`read`, but the conversion to BGR may be left to whoever takes the frame.

        Sources that decode with PyAV (streams, lavfi graphs) return a
        :class:`DeferredFrame`; the others a :class:`~realtime_sam.types.Frame`.
        For a consumer that keeps only the newest frame (the pipeline, for a
        live source), so frames it drops are never converted.
        """
        return self._locked(self._read_deferred)

    def _read_deferred(self) -> Frame | DeferredFrame | None:
        """Read the next frame, its conversion deferred where the source can (called with the I/O lock held)."""
        return self._read()

    def _locked(self, read: Callable[[], Frame | DeferredFrame | None]) -> Frame | DeferredFrame | None:
        with self._io_lock:
            try:
                if self._closed or self._stop.is_set():
                    return None
                frame = read()
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


class _Stopped(Exception):
    """The stop flag was set between packets."""


class _ReadFailed(Exception):
    """Reading packets failed (timeout, connection lost, I/O error)."""


class _TooManyErrors(Exception):
    """Too many packets in a row could not be decoded."""


class _ConnectFailed(Exception):
    """One attempt to (re)open a live source failed; the message is the reason.

    ``final``: trying again cannot help (the server refused the credentials),
    so a reconnect gives up at once instead of retrying; ``hint``: what to do,
    to end the one-line error with.
    """

    def __init__(self, reason: str, *, final: bool = False, hint: str = "") -> None:
        super().__init__(reason)
        self.final = final
        self.hint = hint


class LiveSource(Source):
    """Shared disconnect / backoff / reconnect logic for live sources.

    Attributes:
        reconnects: times the source got its connection back after losing it
            (a pipeline starts its count of encode intervals over after one,
            so the outage is not counted as time between two encodes).
    """

    live = True
    reconnects: int = 0

    def __init__(self, config: SourceConfig, on_status: StatusCallback | None) -> None:
        super().__init__()
        self.config = config
        self._on_status = on_status
        self._secrets: list[str] = []
        self._t_open = time.monotonic()
        self._last_ts: float | None = None
        self._reconnect_attempt: int | None = None

    @property
    def reconnect_attempt(self) -> int | None:
        """The reconnect attempt under way (1-based: waiting for it or trying it) while the source is
        down; ``None`` while it is connected (or gave up). Safe to read from any thread."""
        return self._reconnect_attempt

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
        try:
            self._reconnect_tries(reason)
        finally:
            self._reconnect_attempt = None

    def _reconnect_tries(self, reason: str) -> None:
        cfg = self.config
        attempt = 0
        delay = cfg.backoff_initial_s
        while True:
            attempt += 1
            self._reconnect_attempt = attempt
            # From the second attempt on, say why the last one failed (a 404 while a
            # server restarts, a host name that no longer resolves), not only that it did.
            why = f"; attempt {attempt - 1}: {reason}" if attempt > 1 else ""
            self._emit("reconnecting", f"reconnecting to {self.name} in {delay:.1f} s (attempt {attempt}{why})", attempt)
            # Event.wait doubles as an interruptible sleep.
            if self._stop.wait(delay):
                return
            try:
                self._connect()
            except _ConnectFailed as exc:
                reason = self._scrub(str(exc))
                if self._stop.is_set():
                    return
                if exc.final:
                    # Retrying refused credentials only repeats the refusal (and many
                    # cameras lock the account after a few failed logins).
                    self._emit("gave_up", f"gave up on {self.name} at attempt {attempt}: {reason}", attempt)
                    raise SourceError(f"lost {self.name} and cannot reconnect: {reason}; {exc.hint}") from None
                if cfg.reconnect_max_tries and attempt >= cfg.reconnect_max_tries:
                    self._emit("gave_up", f"gave up on {self.name} after {attempt} attempts: {reason}", attempt)
                    raise SourceError(
                        f"lost {self.name} and could not reconnect after {attempt} attempts ({reason}); "
                        "check that the source is up, or raise source.reconnect_max_tries (0 = forever)"
                    ) from None
                delay = min(max(delay * 2.0, 0.05), cfg.backoff_max_s)
                continue
            self.reconnects += 1
            self._emit("reconnected", f"reconnected to {self.name} (attempt {attempt})", attempt)
            return

    def _next_timestamp(self) -> float:
        """Seconds since the source opened, never below the previous frame's timestamp."""
        ts = time.monotonic() - self._t_open
        if self._last_ts is not None and ts <= self._last_ts:
            ts = self._last_ts + 1e-6
        self._last_ts = ts
        return ts
