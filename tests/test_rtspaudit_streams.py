"""RTSP cases a user meets with real cameras, against the real GStreamer RTSP server
(``tests/rtsp_server.py``): credentials (never shown, whatever they contain), a server
that asks for them, a wrong path, a host name that does not resolve, audio beside the
video, H.265, Motion JPEG and a resolution change on one connection.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from fixtures_rtsp import SYSTEM_PYTHON
from test_sources import _read_bounded
from realtime_sam.capture.base import SourceConfig, StatusEvent, redact_url, secrets_of
from realtime_sam.capture.sources import open_source
from realtime_sam.errors import SourceError

# Short timeouts and backoff: every test here takes a few seconds.
FAST = SourceConfig(open_timeout_s=3, read_timeout_s=2, backoff_initial_s=0.1, backoff_max_s=0.2)


def _gst_has(*elements: str) -> bool:
    """Whether the system GStreamer has every one of ``elements`` (x265enc, jpegenc, opusenc are optional plugins)."""
    probe = (
        "import sys, gi; gi.require_version('Gst', '1.0'); from gi.repository import Gst; Gst.init(None); "
        f"sys.exit(0 if all(Gst.ElementFactory.find(e) for e in {list(elements)!r}) else 3)"
    )
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=60).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


# ---------------------------------------------------------------- credentials never shown


@pytest.mark.parametrize(
    "url, shown",
    [
        # A '/', '?' or '#' unencoded in the password: FFmpeg's authority ends there, and so did the
        # redaction's, which then showed the password whole.
        ("rtsp://viewer:s3c/retpw@cam.local/live", "rtsp://***@cam.local/live"),
        ("rtsp://viewer:s3c?retpw@cam.local:554/live", "rtsp://***@cam.local:554/live"),
        ("rtsp://viewer:s3c#retpw@10.0.0.5/live", "rtsp://***@10.0.0.5/live"),
        ("rtsps://viewer:p/a@ss@[::1]:322/x", "rtsps://***@[::1]:322/x"),
        # What was already hidden stays so, and a path with '@' after real credentials keeps its path.
        ("rtsp://viewer:pw@cam.local/a@b", "rtsp://***@cam.local/a@b"),
        ("rtsp://cam.local/a@b", "rtsp://cam.local/a@b"),
    ],
)
def test_a_password_with_url_characters_is_hidden(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert redact_url(f"cannot open {url}: refused") == f"cannot open {shown}: refused"
    if "viewer" in url:
        assert any("retpw" in s or "a@ss" in s or s == "pw" or s == "viewer:pw" for s in secrets_of(url))


@pytest.mark.parametrize("url", ["rtspp://viewer:pa ss w0rd@cam.local/live", "file://viewer:pa ss w0rd@server/share/a.mp4"])
def test_a_password_with_a_space_never_shows_in_a_refused_source(url: str) -> None:
    with pytest.raises(SourceError) as info:
        open_source(url, FAST)
    assert "w0rd" not in str(info.value) and "***@" in str(info.value)


def test_a_password_with_a_slash_never_shows_in_the_error(rtsp_server) -> None:
    # FFmpeg cannot use the URL ("Invalid argument"): the error says how to write it, and hides it.
    server = rtsp_server(auth="viewer:s3c/retpw")
    with pytest.raises(SourceError) as info:
        open_source(f"rtsp://viewer:s3c/retpw@127.0.0.1:{server.port}/live", FAST)
    message = str(info.value)
    assert "retpw" not in message and "s3c" not in message and "\n" not in message
    assert f"cannot open rtsp://***@127.0.0.1:{server.port}/live" in message
    assert "percent-encode" in message and "%2F" in message
    # Written as the error says, it connects.
    with open_source(f"rtsp://viewer:s3c%2Fretpw@127.0.0.1:{server.port}/live", FAST) as src:
        assert _read_bounded(src, 10) is not None
        assert src.name == f"rtsp://***@127.0.0.1:{server.port}/live"


def test_a_password_with_a_space_and_a_quote_connects_and_never_shows(rtsp_server, tmp_path: Path, run, capsys) -> None:
    # FFmpeg sends such a password as it is and the camera takes it; the source's name (the JSONL
    # header's "source", status lines, errors) showed it, as a URL in text ends at a space.
    password = 'pa ss"w0rd'
    server = rtsp_server(auth=f"viewer:{password}")
    url = f"rtsp://viewer:{password}@127.0.0.1:{server.port}/live"
    code = run(
        "--source", url, "--headless", "--config", "cpu", "--box", "20,20,120,100", "--max-frames", "3",
        "--status-interval", "0.5", "--output", "out.mp4", "--save-masks", "masks.jsonl",
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    header = json.loads((tmp_path / "masks.jsonl").read_text().splitlines()[0])
    assert header["source"] == f"rtsp://***@127.0.0.1:{server.port}/live"
    for text in (out, err, (tmp_path / "masks.jsonl").read_text()):
        assert "pa ss" not in text and "w0rd" not in text
    assert b"w0rd" not in (tmp_path / "out.mp4").read_bytes()


# ---------------------------------------------------------------- a server that asks for credentials


def test_no_credentials_for_a_server_that_asks_for_them(rtsp_server) -> None:
    server = rtsp_server(auth="viewer:s3cretpw")
    with pytest.raises(SourceError) as info:
        open_source(server.url("live"), FAST)
    message = str(info.value)
    assert "authentication failed" in message and "401" in message and "\n" not in message
    # It says how to give them, with this camera's address.
    assert f"rtsp://USER:PASSWORD@127.0.0.1:{server.port}/live" in message


def test_wrong_credentials_are_refused_in_one_line_without_the_password(rtsp_server) -> None:
    server = rtsp_server(auth="viewer:s3cretpw")
    with pytest.raises(SourceError) as info:
        open_source(server.url("live", userinfo="viewer:wr0ngpw"), FAST)
    message = str(info.value)
    assert "authentication failed" in message and "refused the user name and password" in message
    assert "wr0ngpw" not in message and "\n" not in message
    with open_source(server.url("live", userinfo="viewer:s3cretpw"), FAST) as src:
        assert _read_bounded(src, 10) is not None


def test_the_cli_says_authentication_failed_in_one_line(rtsp_server, run, capsys) -> None:
    server = rtsp_server(auth="viewer:s3cretpw")
    code = run("--source", server.url("live", userinfo="viewer:wr0ngpw"), "--headless", "--box", "20,20,120,100",
               "--save-masks", "masks.jsonl")
    out, err = capsys.readouterr()
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot open rtsp://***@127.0.0.1:"), err
    assert "authentication failed" in lines[0] and "wr0ngpw" not in err + out


def test_credentials_refused_on_reconnect_give_up_at_once(rtsp_server) -> None:
    # A camera that comes back asking for other credentials (its password was changed): retrying
    # forever only repeats the refusal, and many cameras lock the account after a few failed logins.
    server = rtsp_server()
    events: list[StatusEvent] = []
    cfg = SourceConfig(open_timeout_s=3, read_timeout_s=2, backoff_initial_s=0.1, backoff_max_s=0.2, reconnect_max_tries=20)
    src = open_source(server.url("live", userinfo="viewer:s3cretpw"), cfg, on_status=events.append)
    assert _read_bounded(src, 10) is not None
    server.kill()
    server.auth = "viewer:n3wpassword"
    server.start()
    with pytest.raises(SourceError) as info:
        for _ in range(1000):  # frames still buffered, then the refusal
            assert _read_bounded(src, 20) is not None
    src.close()
    message = str(info.value)
    assert "cannot reconnect: authentication failed" in message and "s3cretpw" not in message and "\n" not in message
    attempts = [e.attempt for e in events if e.kind == "reconnecting"]
    assert len(attempts) <= 2, events  # the first refused attempt ends it (one more if the server was still starting)
    assert events[-1].kind == "gave_up" and all("s3cretpw" not in e.message for e in events)


# ---------------------------------------------------------------- a wrong path, an unknown host


def test_a_wrong_path_names_the_path(rtsp_server) -> None:
    server = rtsp_server()
    with pytest.raises(SourceError) as info:
        open_source(server.url("nope", userinfo="viewer:s3cretpw"), FAST)
    message = str(info.value)
    assert "the server has no stream at /nope (404 Not Found)" in message and "check the path" in message
    assert "s3cretpw" not in message and "\n" not in message


def test_a_path_gone_on_reconnect_is_retried_and_the_status_says_why(rtsp_server, small_clip: Path) -> None:
    # A restarting server answers 404 until its stream is back (that is not final, unlike a 401):
    # the reconnect status lines say so instead of only counting attempts.
    server = rtsp_server(file=small_clip)
    events: list[StatusEvent] = []
    cfg = SourceConfig(open_timeout_s=3, read_timeout_s=2, backoff_initial_s=0.1, backoff_max_s=0.2, reconnect_max_tries=3)
    src = open_source(server.url("file"), cfg, on_status=events.append)
    assert _read_bounded(src, 10) is not None
    server.kill()
    server.file = None  # back up without the /file mount
    server.start()
    with pytest.raises(SourceError) as info:
        for _ in range(1000):
            assert _read_bounded(src, 20) is not None
    src.close()
    assert "after 3 attempts" in str(info.value) and "no stream at /file (404 Not Found)" in str(info.value)
    tries = [e.message for e in events if e.kind == "reconnecting"]
    assert len(tries) == 3, events
    assert all("attempt 1: the server has no stream at /file" in m or "attempt 2: the server has no stream at /file" in m
               for m in tries[1:]), tries


@pytest.mark.parametrize("scheme", ["rtsp", "rtsps"])
def test_a_host_name_that_does_not_resolve(scheme: str) -> None:
    # .invalid never resolves (RFC 6761). FFmpeg says only "Input/output error".
    with pytest.raises(SourceError) as info:
        open_source(f"{scheme}://viewer:s3cretpw@no-such-camera.invalid:8554/live", FAST)
    message = str(info.value)
    assert "the host name no-such-camera.invalid does not resolve" in message
    assert "s3cretpw" not in message and "\n" not in message


def test_rtsps_to_a_plain_rtsp_port_says_tls_failed(rtsp_server) -> None:
    server = rtsp_server()
    with pytest.raises(SourceError) as info:
        open_source(f"rtsps://127.0.0.1:{server.port}/live", FAST)
    assert f"the TLS connection to 127.0.0.1:{server.port} failed" in str(info.value)
    assert "rtsp://" in str(info.value)


# ---------------------------------------------------------------- what the stream carries


@pytest.mark.parametrize(
    "mount, elements",
    [("av", ("opusenc", "rtpopuspay")), ("h265", ("x265enc", "h265parse", "rtph265pay")), ("mjpeg", ("jpegenc", "rtpjpegpay"))],
)
def test_audio_beside_video_h265_and_mjpeg_streams_are_read(rtsp_server, mount: str, elements: tuple[str, ...]) -> None:
    if not _gst_has(*elements):
        pytest.skip(f"GStreamer lacks {', '.join(elements)}")
    server = rtsp_server()
    with open_source(server.url(mount), FAST) as src:
        assert src.size == (320, 240) and src.live
        frames = [_read_bounded(src, 10) for _ in range(10)]
    assert [f.index for f in frames] == list(range(10))
    assert all(f.image.shape == (240, 320, 3) for f in frames)
    assert src.reconnects == 0


def test_a_resolution_change_mid_stream_keeps_the_connection(rtsp_server) -> None:
    # /resize sends 320x240, then 160x120 on the same connection (new SPS/PPS): the frames come at
    # the new size, their indices go on, and nothing reconnects.
    server = rtsp_server()
    events: list[StatusEvent] = []
    with open_source(server.url("resize"), FAST, on_status=events.append) as src:
        assert src.size == (320, 240)
        frames = []
        for _ in range(200):  # 8 s at 25 fps; the change comes after about 1 s
            frames.append(_read_bounded(src, 10))
            if frames[-1].image.shape[:2] == (120, 160) and len(frames) > 5 and frames[-6].image.shape[:2] == (120, 160):
                break
    shapes = [f.image.shape[:2] for f in frames]
    assert shapes[0] == (240, 320) and shapes[-1] == (120, 160), shapes
    assert [f.index for f in frames] == list(range(len(frames)))
    assert src.reconnects == 0 and events == []
