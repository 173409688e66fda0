"""Video sources: open a webcam, a file, a stream or an image sequence and read frames.

:func:`open_source` turns a user's ``--source`` value into a :class:`Source`:

* ``0``, ``"1"``, ``/dev/video2``: a webcam through OpenCV (:class:`CameraSource`);
* ``clip.mp4`` (any container FFmpeg reads): a video file through PyAV
  (:class:`VideoFileSource`); also as a ``file:`` URL (:func:`file_url_path`);
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
  ever invented to fill the gap; credentials refused on a reconnect (RTSP or
  HTTP 401/403) end it at once with :class:`SourceError`, as retrying cannot help;
* credentials in URLs never appear in names, messages or events
  (:func:`~realtime_sam.capture.base.redact_source`).

Threading: one thread reads. :meth:`Source.interrupt` may be called from any
thread; it makes a blocked :meth:`~Source.read` return ``None`` within about
``read_timeout_s`` (PyAV offers no way to cancel a read in progress, so the
stop flag is checked between packets and between reconnect attempts).
:meth:`Source.close` may also be called from another thread: it interrupts
first and releases the decoder once the reader has left ``read``.
"""

from __future__ import annotations

import os
import re
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from realtime_sam.capture.base import Source, SourceConfig, StatusCallback, redact_source
from realtime_sam.capture.camera import CameraSource, CaptureFactory
from realtime_sam.capture.images import AnimatedImageSource, ImageSequenceSource, is_animation, is_image_alone
from realtime_sam.capture.stream import StreamSource
from realtime_sam.capture.video_file import VideoFileSource
from realtime_sam.errors import SourceError

__all__ = ["STREAM_SCHEMES", "file_url_path", "open_source"]

STREAM_SCHEMES: tuple[str, ...] = ("rtsp", "rtsps", "rtmp", "http", "https")


_SUPPORTED = (
    "a webcam index (0, 1, ...), a video file, an image folder or glob (frames/*.png), "
    "rtsp://, rtsps://, rtmp://, http://, https:// or lavfi:GRAPH"
)


_SCHEME_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*)://")


_DEVICE_RE = re.compile(r"^/dev/video(?P<index>\d+)$")

_WINDOWS = os.name == "nt"  # a file: URL's host is a UNC server there


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
            return _open_path(Path(file_url_path(text)), text, config)
        raise SourceError(
            f"unsupported source scheme '{scheme}://' in {redact_source(text)}; use one of "
            f"{', '.join(s + '://' for s in STREAM_SCHEMES)}, lavfi:, a webcam index, a file, or an image folder/glob"
        )
    return _open_path(Path(text), text, config)


def file_url_path(url: str) -> str:
    """The local path a ``file:`` URL names, in this system's spelling.

    ``file:///C:/videos/a%20b.mp4`` is ``C:\\videos\\a b.mp4`` on Windows (``urllib.request.url2pathname``
    there; taking the URL's path as it is gave ``\\C:\\videos\\...``, which names nothing), and
    ``file://server/share/a.mp4`` the UNC path ``\\\\server\\share\\a.mp4``. Elsewhere a URL naming another
    host than ``localhost`` is refused: its host was dropped and ``/share/a.mp4`` opened on this machine.

    Raises:
        SourceError: a host other than ``localhost`` where it cannot be reached as a path.
    """
    parts = urlsplit(url)
    host = parts.netloc
    if host.lower() in ("", "localhost"):
        return urllib.request.url2pathname(parts.path)
    if _WINDOWS:
        return urllib.request.url2pathname(f"//{host}{parts.path}")
    raise SourceError(
        f"{redact_source(url)} names the host {host.rsplit('@', 1)[-1]}, which a file: URL cannot reach here; "
        f"mount its share and give the local path, or use file:///PATH for a file on this machine"
    )


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
        if is_image_alone(path):  # a GIF alone is FFmpeg's: a video
            # An APNG or an animated WebP is a video, as an animated GIF is, not its first frame.
            if is_animation(path):
                return AnimatedImageSource(path, config)
            return ImageSequenceSource(path, config)
        return VideoFileSource(path, config)
    if any(ch in text for ch in "*?["):
        return ImageSequenceSource(text, config)
    raise SourceError(f"source not found: {text}; give {_SUPPORTED}")
