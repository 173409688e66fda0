"""Webcams through OpenCV (:class:`CameraSource`), reopened when they drop.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Callable, Protocol

import cv2
import numpy as np

from realtime_sam.capture.base import (
    LiveSource,
    SourceConfig,
    StatusCallback,
    _ConnectFailed,
)
from realtime_sam.capture.images import _as_bgr
from realtime_sam.errors import SourceError
from realtime_sam.types import Frame

__all__ = ["CaptureFactory", "CaptureLike", "CameraSource"]


# cv::utils::logging::LOG_LEVEL_SILENT.
_LOG_LEVEL_SILENT = 0


def _log_level_functions() -> tuple[Callable[[], int], Callable[[int], object]]:
    """OpenCV's ``(getLogLevel, setLogLevel)``: ``cv2.utils.logging``'s where the build has it
    (opencv-python 5.x has only these), else the top-level ``cv2.getLogLevel``/``cv2.setLogLevel``
    (opencv-python 4.8 and 4.10 have only those)."""
    logging = getattr(cv2.utils, "logging", None)
    if logging is not None:
        return logging.getLogLevel, logging.setLogLevel
    return cv2.getLogLevel, cv2.setLogLevel


class CaptureLike(Protocol):
    """The parts of ``cv2.VideoCapture`` a :class:`CameraSource` uses (inject fakes in tests)."""

    def isOpened(self) -> bool: ...

    def read(self) -> tuple[bool, np.ndarray | None]: ...

    def get(self, prop_id: int) -> float: ...

    def release(self) -> None: ...


CaptureFactory = Callable[[int], CaptureLike]
"""Opens camera ``index``; tests pass a fake."""


def _missing_camera_hint(platform: str) -> str:
    """What to check when no camera opens, for ``platform`` (``sys.platform``): macOS and Windows refuse a
    camera the user has not allowed a program to use, and OpenCV then reports it as not there."""
    if platform == "darwin":
        return (
            "allow your terminal (or IDE) to use the camera in System Settings > Privacy & Security > Camera "
            "(macOS asks once; run again after allowing it)"
        )
    if platform == "win32":
        return "check that Settings > Privacy & security > Camera lets desktop apps use the camera"
    return "list devices with `v4l2-ctl --list-devices`"


def _default_capture(index: int) -> CaptureLike:
    # The default backend: CAP_FFMPEG cannot open V4L2/DirectShow/AVFoundation devices.
    return cv2.VideoCapture(index)


class CameraSource(LiveSource):
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
        get_level, set_level = _log_level_functions()
        previous = get_level()
        set_level(_LOG_LEVEL_SILENT)
        try:
            cap = self._factory(self.index)
            opened = bool(cap.isOpened())
            ok, image = cap.read() if opened else (False, None)
        finally:
            set_level(previous)
        if not opened:
            cap.release()
            raise _ConnectFailed(
                f"no camera at index {self.index}; {_missing_camera_hint(sys.platform)}, "
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
