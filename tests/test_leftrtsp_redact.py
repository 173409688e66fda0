"""Which ``@`` ends a URL's user info when none is before the first ``/``, ``?`` or ``#``.

A password with an unencoded ``/``, ``?`` or ``#`` stays hidden (earlier work); a path holding
``@`` after an IP address and port (``rtsp://10.0.0.5:554/a@b``) was hidden as ``rtsp://***@b``.
After a host name and port the two readings cannot be told apart, and the URL stays hidden.
"""

from __future__ import annotations

import pytest

from realtime_sam.capture.base import redact_source, redact_url, secrets_of
from realtime_sam.capture.stream import _urlsplit_lenient


@pytest.mark.parametrize(
    "url",
    [
        "rtsp://host/path/x@y",
        "rtsp://10.0.0.5:554/a@b",
        "rtsp://10.0.0.5:554/ch1@sub/live",  # an address before the port: no user name
        "rtsp://[::1]:8554/x@cam.local/y",
    ],
)
def test_a_path_holding_at_after_a_host_is_shown_whole(url):
    assert redact_source(url) == url
    assert redact_url(f"cannot open {url}: refused") == f"cannot open {url}: refused"
    assert secrets_of(url) == []


def test_the_host_and_path_of_such_a_url_are_its_own():
    parts = _urlsplit_lenient("rtsp://10.0.0.5:554/a@b")
    assert (parts.hostname, parts.host, parts.path) == ("10.0.0.5", "10.0.0.5:554", "/a@b")


@pytest.mark.parametrize(
    "url,shown",
    [
        # Passwords with "/", "?", "#" unencoded: hidden as before, a numeric start included.
        ("rtsp://viewer:s3c/retpw@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://viewer:1234/retpw@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://viewer:1234/retpw@camera/live", "rtsp://***@camera/live"),
        ("rtsp://viewer:1234?retpw@10.0.0.5:554/live", "rtsp://***@10.0.0.5:554/live"),
        ("rtsp://viewer:1234#retpw@camera:554", "rtsp://***@camera:554"),
        ("rtsps://viewer:p/a@ss@[::1]:322/x", "rtsps://***@[::1]:322/x"),
        ("rtsp://viewer:pw@host:554/a@b", "rtsp://***@host:554/a@b"),
        # A host name and port then "@" and a bare name reads the same as a password starting
        # with a number: hidden (too much of "rtsp://host:554/a@b" is hidden rather than this shown).
        ("rtsp://admin:1234/retpw@camera", "rtsp://***@camera"),
        ("rtsp://host:554/retpw@b", "rtsp://***@b"),
        # Not a port (over 65535): no host-and-port reading, so hidden.
        ("rtsp://viewer:99999/retpw@b", "rtsp://***@b"),
    ],
)
def test_passwords_with_unencoded_delimiters_stay_hidden(url, shown):
    assert redact_source(url) == shown
    assert "retpw" not in redact_url(f"cannot open {url}")


@pytest.mark.parametrize(
    "url,name",
    [
        ("rtsp://10.0.0.5:554/a@b", "10_0_0_5_554_a_b"),  # was "b": the "@" taken for the user info's end
        ("rtsp://viewer:s3c/retpw@cam.local/live", "cam_local_live"),
        ("rtsp://viewer:pa ss@cam.local/live", "cam_local_live"),
    ],
)
def test_a_streams_default_name_keeps_an_at_in_its_path(url, name):
    from realtime_sam.app.streams import stream_name

    assert stream_name(url) == name
