"""The one exception-to-text helper that sinks, sources and weights share."""

from __future__ import annotations

import errno

import av
import pytest

from realtime_sam.errors import describe_error


@pytest.mark.parametrize(
    "exc, text",
    [
        # The OS's own words, without the path the surrounding message already names.
        (PermissionError(errno.EACCES, "Permission denied", "/secret/out.mp4"), "Permission denied"),
        # FFmpeg's, without the stream URL (and the password in it).
        (av.error.InvalidDataError(1094995529, "Invalid data found when processing input", "rtsp://u:pw@cam/s"),
         "Invalid data found when processing input"),
        # Line breaks and runs of spaces folded: the result goes inside one line.
        (ValueError("unknown url type:\n  'ftp:x'  "), "unknown url type: 'ftp:x'"),
        (OSError("disk quota\texceeded"), "disk quota exceeded"),
        # Nothing to say: the type's name.
        (TimeoutError(), "TimeoutError"),
        (FileNotFoundError(None, None, "rtsp://u:pw@cam/s"), "FileNotFoundError"),
        ("host unreachable", "host unreachable"),  # URLError.reason may be a plain string
    ],
)
def test_describe_error_is_one_short_line(exc, text):
    assert describe_error(exc) == text
