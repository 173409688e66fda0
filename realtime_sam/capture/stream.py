"""Network streams (RTSP, RTMP, HTTP) and ``lavfi:`` graphs through PyAV, reopened when they drop (:class:`StreamSource`).
"""

from __future__ import annotations

import errno
import functools
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from realtime_sam.capture.base import (
    DeferredFrame,
    LiveSource,
    SourceConfig,
    StatusCallback,
    _ConnectFailed,
    _ReadFailed,
    _Stopped,
    _TooManyErrors,
    secrets_of,
    userinfo_end,
)
from realtime_sam.capture.decoding import (
    AVDecoder,
    first_video_stream,
    stream_fps,
    to_bgr,
)
from realtime_sam.errors import (
    SourceError,
    StreamInterrupted,
    describe_error,
)
from realtime_sam.types import Frame

__all__ = ["StreamSource"]


@dataclass(frozen=True)
class _UrlParts:
    """A stream URL's parts, credentials left out: ``host`` is ``hostname[:port]``."""

    scheme: str
    hostname: str
    host: str
    path: str


def _urlsplit_lenient(url: str) -> _UrlParts:
    """Scheme, host and path of ``url``, found past its user info as :func:`userinfo_end` finds it
    (``urllib.parse.urlsplit`` takes a ``/`` in a password for the start of the path)."""
    scheme, _, after = url.partition("://")
    at = userinfo_end(after)
    rest = after[at + 1 :] if at >= 0 else after
    split = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    host, tail = rest[:split], rest[split:]
    path = tail.split("?", 1)[0].split("#", 1)[0]
    hostname = host[1:].split("]", 1)[0] if host.startswith("[") else host.rsplit(":", 1)[0] if ":" in host else host
    return _UrlParts(scheme.lower(), hostname, host, path)


def _resolves(hostname: str, stop: threading.Event, timeout_s: float) -> bool | None:
    """Whether ``hostname`` (a name or an IP address) resolves; asked only after an open failed.

    The lookup runs on a daemon thread, waited for in short slices: a slow DNS
    server (seconds per lookup) held up a stop (Ctrl-C, ``close()``) until it
    answered. ``None``: no answer yet when ``stop`` was set or ``timeout_s`` passed
    (the thread is left to finish by itself; it holds nothing).
    """
    answer: list[bool] = []
    done = threading.Event()

    def lookup() -> None:
        try:
            socket.getaddrinfo(hostname, None)
            answer.append(True)
        except (OSError, UnicodeError):
            answer.append(False)
        finally:
            done.set()

    threading.Thread(target=lookup, name="rtsam-resolve", daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not done.wait(0.05):  # short slices: a stop, and Ctrl-C in the main thread, are seen between them
        if stop.is_set() or time.monotonic() >= deadline:
            return None
    return answer[0] if answer else None


class StreamSource(LiveSource):
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
        self._secrets = secrets_of(url)
        # _scrub, not redact_url alone: a password with a space or a quote ends redact_url's URL early.
        self.name = display_name or self._scrub(url)
        self._scheme = url.split("://", 1)[0].lower() if "://" in url else ""
        self._decoder: AVDecoder | None = None
        self.num_frames = None
        try:
            self._connect()
        except _ConnectFailed as exc:
            if exc.hint:
                hint = exc.hint
            elif format == "lavfi":
                hint = "check the filter graph"
            else:
                hint = "check the address, credentials and that the server is up"
            raise SourceError(f"cannot open {self.name}: {self._scrub(str(exc))}; {hint}") from None
        stream = self._decoder.stream  # type: ignore[union-attr]
        self.fps = stream_fps(stream)
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
            raise self._open_failure(exc) from None
        stream = first_video_stream(container)
        if stream is None:
            container.close()
            raise _ConnectFailed("it carries no video stream")
        self._decoder = AVDecoder(container, stream, self._stop, self.config.max_consecutive_decode_errors)
        self._conn_anchor: tuple[float, int] | None = None  # (timestamp, pts) at the connection's first pts

    def _open_failure(self, exc: BaseException) -> _ConnectFailed:
        """Why ``av.open`` failed, in words, with what to do for the failures a user can fix.

        401/403 are final (a reconnect gives up at once: the credentials will
        not start working by themselves). A 404 and a host name that does not
        resolve are not: a server that restarts answers 404 until its stream
        is back, and a network coming back resolves names again.
        """
        reason = describe_error(exc)
        if self._format is not None:
            return _ConnectFailed(reason)
        parts = _urlsplit_lenient(self._url)
        if isinstance(exc, (av.error.HTTPUnauthorizedError, av.error.HTTPForbiddenError)):
            code = "401 Unauthorized" if isinstance(exc, av.error.HTTPUnauthorizedError) else "403 Forbidden"
            if self._secrets:
                return _ConnectFailed(
                    f"authentication failed: the server refused the user name and password in the URL ({code})",
                    final=True, hint="check them; percent-encode '@', ':', '/', '?', '#' and '%' in them (%40, %3A, %2F, %3F, %23, %25)",
                )
            return _ConnectFailed(
                f"authentication failed: the server asks for a user name and password ({code})",
                final=True, hint=f"give them in the URL: {parts.scheme}://USER:PASSWORD@{parts.host}{parts.path}",
            )
        if isinstance(exc, av.error.HTTPNotFoundError):
            return _ConnectFailed(
                f"the server has no stream at {parts.path or '/'} (404 Not Found)",
                hint="check the path after the host (the camera's manual or its web page gives it)",
            )
        # FFmpeg says only "Input/output error" when the name does not resolve (as for a failed
        # TLS handshake): look it up again to tell which.
        if isinstance(exc, OSError) and exc.errno == errno.EIO and parts.hostname:
            resolves = _resolves(parts.hostname, self._stop, self.config.open_timeout_s)
            if resolves is None:  # stopped (or no answer in time): the reason as FFmpeg gave it
                return _ConnectFailed(reason)
            if not resolves:
                return _ConnectFailed(
                    f"the host name {parts.hostname} does not resolve",
                    hint="check its spelling and the network, or give the camera's IP address",
                )
            if self._scheme == "rtsps":
                return _ConnectFailed(
                    f"the TLS connection to {parts.host} failed ({reason})",
                    hint="check that the port serves RTSP over TLS, or use rtsp:// for plain RTSP",
                )
        if self._secrets and any(ch in self._secrets[0] for ch in "/?#"):
            return _ConnectFailed(reason, hint="percent-encode '/', '?' and '#' in the password (%2F, %3F, %23)")
        return _ConnectFailed(reason)

    def _disconnect(self) -> None:
        if self._decoder is not None:
            self._decoder.close()
            self._decoder = None

    # -- reading
    def _next_frame_or_none(self, *, first: bool = False, convert: bool = True) -> Frame | DeferredFrame | None:
        """Next frame; handles disconnects (on the first read, any failure returns ``None``).

        ``convert=False``: a :class:`DeferredFrame` whose conversion to BGR happens when it is taken.
        """
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
            timestamp = self._stream_timestamp(av_frame)
            if not convert:
                return DeferredFrame(self._delivered, timestamp, time.monotonic(), functools.partial(self._convert, av_frame))
            image = self._convert(av_frame)
            if image is None:
                continue
            return Frame(index=self._delivered, image=image, timestamp=timestamp, capture_time=time.monotonic())

    def _convert(self, av_frame: Any) -> np.ndarray | None:
        """``av_frame`` as BGR, or ``None`` counted as a decode error (a frame that decodes but cannot
        be converted). Safe on another thread than the reader's: the frame holds its own buffers."""
        try:
            return to_bgr(av_frame)
        except (av.FFmpegError, ValueError) as exc:
            decoder = self._decoder
            if decoder is not None:
                decoder.decode_errors += 1
                decoder.last_error = describe_error(exc)
            return None

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
        return self._next(convert=True)  # type: ignore[return-value]

    def _read_deferred(self) -> Frame | DeferredFrame | None:
        return self._next(convert=False)

    def _next(self, *, convert: bool) -> Frame | DeferredFrame | None:
        if self._first is not None:
            frame, self._first = self._first, None
            return frame
        if self._decoder is None:
            if not self._reconnects or self._stop.is_set():
                return None
            self._reconnect("not connected")
        return self._next_frame_or_none(convert=convert)

    def _release(self) -> None:
        self._disconnect()
