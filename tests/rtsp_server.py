"""A small RTSP server for tests, built on GStreamer's gst-rtsp-server.

Run it with the *system* interpreter, which has PyGObject (``gi``); the
project's virtual environment does not::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4

Mounts (on 127.0.0.1 unless ``--host`` says otherwise):

* ``/live``: a live test pattern (a moving ball), H.264 baseline, one
  keyframe a second, shared by every client;
* ``/file``: the H.264 MP4 given with ``--file`` (only when given), played
  once per client from its start;
* ``/av``: the live pattern with a second stream of audio (a tone, Opus);
* ``/h265``: the live pattern in H.265 (HEVC);
* ``/mjpeg``: the live pattern as Motion JPEG (RTP/JPEG);
* ``/resize``: the live pattern, 320x240 for ``--resize-after`` seconds,
  then 160x120 on the same connection (new SPS/PPS, no reconnect).

With ``--auth USER:PASS`` every mount asks for HTTP basic authentication
(RTSP 401 without or with other credentials).

Prints ``READY <port>`` on stdout once it listens, and exits cleanly on
SIGTERM or SIGINT. Tests start it as a separate process (see
``tests/fixtures_rtsp.py``) so they can kill, freeze (SIGSTOP) and restart it.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def _live_launch(width: int, height: int, fps: int) -> str:
    return (
        "( videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={width},height={height},framerate={fps}/1 ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! "
        "video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def _audio_video_launch(width: int, height: int, fps: int) -> str:
    return _live_launch(width, height, fps)[:-2] + (
        " audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay name=pay1 pt=97 )"
    )


def _h265_launch(width: int, height: int, fps: int) -> str:
    return (
        "( videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={width},height={height},framerate={fps}/1 ! "
        f"x265enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! "
        "h265parse ! rtph265pay name=pay0 pt=96 config-interval=1 )"
    )


def _mjpeg_launch(width: int, height: int, fps: int) -> str:
    return (
        "( videotestsrc is-live=true pattern=ball ! "
        # RTP/JPEG carries 4:2:0 or 4:2:2 only: ask for I420, not whatever the source offers first.
        f"video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 ! "
        "jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
    )


def _resize_launch(fps: int) -> str:
    # videoscale between the source and a named capsfilter: changing the
    # capsfilter's caps later renegotiates the encoder to the new size.
    return (
        "( videotestsrc is-live=true pattern=ball ! videoscale ! "
        f"capsfilter name=size caps=video/x-raw,width=320,height=240,framerate={fps}/1 ! "
        f"x264enc tune=zerolatency speed-preset=ultrafast key-int-max={fps} ! "
        "video/x-h264,profile=baseline ! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def _shrink_later(factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia, after_s: float, fps: int) -> None:
    """Media-configure handler of ``/resize``: after ``after_s`` seconds its frames become 160x120."""
    capsfilter = media.get_element().get_by_name("size")

    def shrink() -> bool:
        capsfilter.set_property("caps", Gst.Caps.from_string(f"video/x-raw,width=160,height=120,framerate={fps}/1"))
        return False  # once

    GLib.timeout_add(int(after_s * 1000), shrink)


def _require_auth(server: GstRtspServer.RTSPServer, userpass: str, factories: list[GstRtspServer.RTSPMediaFactory]) -> None:
    """Basic authentication for every factory: only ``userpass`` (``USER:PASS``) may play."""
    user, _, password = userpass.partition(":")
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(user, password), token)
    server.set_auth(auth)
    for factory in factories:
        factory.add_role_from_structure(
            Gst.Structure.new_from_string("user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true")
        )


def _file_launch(path: Path) -> str:
    # Quoted so paths with spaces survive gst_parse_launch.
    location = str(path).replace("\\", "\\\\").replace('"', '\\"')
    return (
        f'( filesrc location="{location}" ! qtdemux ! h264parse ! '
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--file", type=Path, default=None, help="H.264 MP4 served at /file")
    parser.add_argument("--width", type=int, default=320, help="live pattern width")
    parser.add_argument("--height", type=int, default=240, help="live pattern height")
    parser.add_argument("--fps", type=int, default=25, help="live pattern frame rate")
    parser.add_argument("--auth", default=None, metavar="USER:PASS", help="require these basic-auth credentials")
    parser.add_argument("--resize-after", type=float, default=1.0, help="seconds before /resize shrinks")
    args = parser.parse_args(argv)

    if args.file is not None and not args.file.is_file():
        print(f"error: --file {args.file} does not exist", file=sys.stderr)
        return 2

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()

    live = GstRtspServer.RTSPMediaFactory()
    live.set_launch(_live_launch(args.width, args.height, args.fps))
    live.set_shared(True)
    mounts.add_factory("/live", live)

    if args.file is not None:
        media = GstRtspServer.RTSPMediaFactory()
        media.set_launch(_file_launch(args.file.resolve()))
        media.set_shared(False)
        mounts.add_factory("/file", media)

    extra = {
        "/av": _audio_video_launch(args.width, args.height, args.fps),
        "/h265": _h265_launch(args.width, args.height, args.fps),
        "/mjpeg": _mjpeg_launch(args.width, args.height, args.fps),
        "/resize": _resize_launch(args.fps),
    }
    factories = [live] + ([media] if args.file is not None else [])
    for mount, launch in extra.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch)
        factory.set_shared(False)
        if mount == "/resize":
            factory.connect("media-configure", _shrink_later, args.resize_after, args.fps)
        mounts.add_factory(mount, factory)
        factories.append(factory)
    if args.auth is not None:
        _require_auth(server, args.auth, factories)

    if server.attach(None) == 0:
        print(f"error: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 1

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY {args.port}", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
