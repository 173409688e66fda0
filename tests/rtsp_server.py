"""A small RTSP server for tests, built on GStreamer's gst-rtsp-server.

Run it with the *system* interpreter, which has PyGObject (``gi``); the
project's virtual environment does not::

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --file clip.mp4

Mounts (on 127.0.0.1 unless ``--host`` says otherwise):

* ``/live``: a live test pattern (a moving ball), H.264 baseline, one
  keyframe a second, shared by every client;
* ``/file``: the H.264 MP4 given with ``--file`` (only when given), played
  once per client from its start.

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
