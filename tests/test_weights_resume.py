"""Resuming an interrupted weights download, against real HTTP servers on 127.0.0.1.

The server is ``http.server`` in a thread that answers ``Range`` / ``If-Range`` as the
official hosts do (206 with ``Content-Range`` while the ``ETag`` matches, 200 with the
whole file otherwise), or ignores ``Range`` (200 always), or answers a wrong range; a
transfer can be cut after a number of bytes, or stalled there until the test ends.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest
from test_weights import clean_env  # noqa: F401  (autouse fixture: the user's settings and proxies kept out, the cache in tmp_path)

from realtime_sam.errors import WeightsDownloadError
from realtime_sam.model.weights import (
    ENV_CACHE,
    ENV_URLS,
    ENV_WEIGHTS,
    download_weights,
    partial_download_bytes,
    weights_main,
)

REPO = Path(__file__).resolve().parents[1]
OVERLAP = 64 * 1024  # what a resumed request fetches again before the part's end

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="downloads resume where parts can be locked (flock)")


@dataclass
class _Route:
    body: bytes
    etag: str = '"v1"'
    ranges: str = "honour"  # "honour", "ignore" (200 always) or "wrong" (206 with another range)
    cut_at: int | None = None  # the next answer stops after this many bytes of the file (once)
    stall: bool = False  # ... and waits there, connection open, until the test ends


@dataclass
class _Request:
    path: str
    range: str | None
    if_range: str | None
    status: int
    sent: int = 0  # body bytes written


@dataclass
class _RangeServer:
    routes: dict[str, _Route] = field(default_factory=dict)
    requests: list[_Request] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "no such file")
                    return
                body, start = route.body, 0
                asked = self.headers.get("Range")
                if_range = self.headers.get("If-Range")
                status = 200
                m = re.fullmatch(r"bytes=(\d+)-", asked or "")
                if m and route.ranges != "ignore" and (if_range is None or if_range == route.etag):
                    start = int(m.group(1))
                    if start >= len(body):
                        self.send_error(416, "range not satisfiable")
                        return
                    status = 206
                req = _Request(self.path, asked, if_range, status)
                server.requests.append(req)
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("ETag", route.etag)
                self.send_header("Content-Length", str(len(body) - start))
                if status == 206:
                    shown = start + 1 if route.ranges == "wrong" else start
                    self.send_header("Content-Range", f"bytes {shown}-{len(body) - 1}/{len(body)}")
                self.send_header("Connection", "close")
                self.end_headers()
                end = len(body)
                if route.cut_at is not None:
                    end = max(start, route.cut_at)
                    route.cut_at = None
                try:
                    self.wfile.write(body[start:end])
                    self.wfile.flush()
                    req.sent = end - start
                    if end < len(body) and route.stall:
                        server.release.wait(60)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def serve(self, path: str, route: _Route) -> str:
        self.routes[path] = route
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[_RangeServer]:
    srv = _RangeServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


@pytest.fixture
def body(checkpoint_path: Path) -> bytes:
    return checkpoint_path.read_bytes()


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def _cut_download(server: _RangeServer, dest: Path, url: str, cut: int) -> None:
    """A first download that the network cuts after ``cut`` bytes: it fails, keeping what it got."""
    server.routes[urllib.parse.urlsplit(url).path].cut_at = cut
    with pytest.raises(WeightsDownloadError) as err:
        download_weights(dest, urls=[url], progress=False)
    assert f"the {cut / 1e6:.1f} MB received are kept, and the next download resumes from there" in str(err.value)
    assert "nothing was saved" not in str(err.value)


def _command_env(cache: Path, url: str, **extra: str) -> dict[str, str]:
    """The environment for running ``python -m realtime_sam`` against the test server, weights cached in ``cache``."""
    env = {k: v for k, v in os.environ.items() if k not in (ENV_WEIGHTS, "XDG_CACHE_HOME")}
    env.update({
        ENV_CACHE: str(cache),
        ENV_URLS: url,
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        **extra,
    })
    return env


def _sigterm_at_the_stall(
    args: list[str], cwd: Path, env: dict[str, str], part_glob: Path, stalled_at: int, *, meanwhile=lambda: None
) -> tuple[int, str]:
    """Run ``python -m realtime_sam ARGS``; once its part file (``part_glob``) holds ``stalled_at``
    bytes (the server stalls there), call ``meanwhile()``, then send SIGTERM: ``(exit status, stderr)``."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime_sam", *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not any(p.stat().st_size == stalled_at for p in part_glob.parent.glob(part_glob.name)):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, _listing(part_glob.parent)
            time.sleep(0.05)
        meanwhile()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def test_an_interrupted_download_resumes_with_a_range_request(
    tmp_path: Path, server: _RangeServer, body: bytes
) -> None:
    # A 40 MB download cut at 35 MB started again from zero: users on bad links never finished.
    url = server.serve("/mobile_sam.pt", _Route(body))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    cut = len(body) * 7 // 8
    _cut_download(server, dest, url, cut)
    assert partial_download_bytes(dest) == cut
    download_weights(dest, urls=[url], progress=False)
    assert dest.read_bytes() == body
    first, second = server.requests
    assert (first.range, first.status, first.sent) == (None, 200, cut)
    # The second asks from a little before the cut (to check the overlap), If-Range the ETag.
    assert (second.range, second.if_range, second.status) == (f"bytes={cut - OVERLAP}-", '"v1"', 206)
    assert second.sent == len(body) - cut + OVERLAP
    assert _listing(dest.parent) == ["mobile_sam.pt"]
    assert partial_download_bytes(dest) == 0


@pytest.mark.parametrize("why", ["ignores Range", "file changed", "wrong Content-Range", "part damaged"])
def test_a_resume_the_server_or_the_part_refuses_starts_over_cleanly(
    tmp_path: Path, server: _RangeServer, body: bytes, why: str
) -> None:
    route = _Route(body)
    url = server.serve("/mobile_sam.pt", route)
    dest = tmp_path / "cache" / "mobile_sam.pt"
    cut = len(body) // 2
    _cut_download(server, dest, url, cut)
    if why == "ignores Range":
        route.ranges = "ignore"
    elif why == "file changed":
        route.etag = '"v2"'
    elif why == "wrong Content-Range":
        route.ranges = "wrong"
    else:  # the part's tail never reached the disk (a power cut): zeros where the bytes were
        part = next(dest.parent.glob(".mobile_sam.pt.*.part"))
        with part.open("r+b") as fh:
            fh.seek(cut - 1000)
            fh.write(bytes(1000))
    download_weights(dest, urls=[url], progress=False)
    assert dest.read_bytes() == body
    assert _listing(dest.parent) == ["mobile_sam.pt"]
    resumed = server.requests[1]
    assert resumed.range == f"bytes={cut - OVERLAP}-"
    if why in ("ignores Range", "file changed"):
        # The 200 answer to the range request is the whole file: taken as it is, no third request.
        assert resumed.status == 200 and resumed.sent == len(body) and len(server.requests) == 2
    else:
        # A wrong range, or an overlap that differs from the part, is dropped for a plain request.
        assert resumed.status == 206 and len(server.requests) == 3
        assert (server.requests[2].range, server.requests[2].status, server.requests[2].sent) == (None, 200, len(body))


def test_a_part_from_another_url_is_not_resumed(tmp_path: Path, server: _RangeServer, body: bytes) -> None:
    # Parts are named for their URL: a download from another URL (another mirror, another
    # $REALTIME_SAM_WEIGHTS_URL) never continues one, even a file the same size with the same ETag.
    old = server.serve("/old/mobile_sam.pt", _Route(body[::-1]))
    new = server.serve("/new/mobile_sam.pt", _Route(body))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    _cut_download(server, dest, old, len(body) // 2)
    (old_part,) = dest.parent.glob(".mobile_sam.pt.*.part")
    hour_ago = time.time() - 3600
    os.utime(old_part, (hour_ago, hour_ago))
    download_weights(dest, urls=[new], progress=False)
    assert dest.read_bytes() == body
    assert server.requests[-1].range is None
    assert _listing(dest.parent) == ["mobile_sam.pt"]  # the other URL's part and its record, removed


def test_a_part_a_running_download_holds_is_neither_resumed_nor_removed(
    tmp_path: Path, server: _RangeServer, body: bytes
) -> None:
    url = server.serve("/mobile_sam.pt", _Route(body))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    cut = len(body) // 2
    _cut_download(server, dest, url, cut)
    (part,) = dest.parent.glob(".mobile_sam.pt.*.part")
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys; f = open(sys.argv[1], 'ab'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); sys.stdin.read()", str(part)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        download_weights(dest, urls=[url], progress=False)
        assert dest.read_bytes() == body
        assert server.requests[-1].range is None  # fetched whole, beside the live one's part
        assert part.stat().st_size == cut  # the running download's file untouched
        assert _listing(dest.parent) == sorted(["mobile_sam.pt", part.name, part.name + ".json"])
    finally:
        holder.communicate("", timeout=30)


def test_a_server_without_a_validator_gives_no_resumable_part(
    tmp_path: Path, server: _RangeServer, body: bytes
) -> None:
    # Without an ETag or Last-Modified nothing would tell a changed file from the one cut short:
    # such a part is removed as before, and the error says nothing was saved.
    url = server.serve("/mobile_sam.pt", _Route(body, etag="", cut_at=len(body) // 2))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    with pytest.raises(WeightsDownloadError, match="nothing was saved"):
        download_weights(dest, urls=[url], progress=False)
    assert _listing(dest.parent) == []


def test_the_record_names_the_url_length_and_validator(tmp_path: Path, server: _RangeServer, body: bytes) -> None:
    url = server.serve("/mobile_sam.pt", _Route(body))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    _cut_download(server, dest, url, len(body) // 3)
    (record,) = dest.parent.glob(".mobile_sam.pt.*.part.json")
    assert json.loads(record.read_text()) == {"url": url, "length": len(body), "validator": '"v1"'}


@pytest.mark.parametrize("command", ["weights download", "the app's first run"])
def test_sigterm_keeps_the_part_and_the_next_command_resumes_it(
    tmp_path: Path, server: _RangeServer, body: bytes, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    # The command a user runs on a bad link: SIGTERM (or Ctrl-C) mid-download, then the same command.
    # The app's first run (no weights yet) kept the part too, but said only "error: terminated by SIGTERM".
    if command == "weights download":
        args = ["weights", "download", "--quiet"]
    else:
        from realtime_sam.testing.synthetic import standard_scene, write_video

        clip = write_video(standard_scene(64, 48, num_frames=4), tmp_path / "clip.mp4")
        args = ["--source", str(clip), "--headless", "--device", "cpu"]
    stalled_at = (len(body) * 3 // 4) >> 20 << 20  # whole MB: the download reads 1 MB at a time
    url = server.serve("/mobile_sam.pt", _Route(body, cut_at=stalled_at, stall=True))
    cache = tmp_path / "cache"
    rc, err = _sigterm_at_the_stall(args, tmp_path, _command_env(cache, url), cache / ".mobile_sam.pt.*.part", stalled_at)
    assert rc == 143, err
    assert err.splitlines()[-1] == (
        f"error: terminated by SIGTERM; the {stalled_at / 1e6:.1f} MB received are kept, "
        "and the next download resumes from there"
    ), err
    assert partial_download_bytes(cache / "mobile_sam.pt") == stalled_at

    monkeypatch.setenv(ENV_URLS, url)
    assert weights_main(["download", "--quiet"]) == 0
    assert (cache / "mobile_sam.pt").read_bytes() == body
    assert server.requests[-1].range == f"bytes={stalled_at - OVERLAP}-" and server.requests[-1].status == 206
    assert _listing(cache) == ["mobile_sam.pt"]


def test_weights_clean_removes_the_partial_download_of_the_file_realtime_sam_weights_names(
    tmp_path: Path, server: _RangeServer, body: bytes
) -> None:
    # $REALTIME_SAM_WEIGHTS=/models/sam.pt: `weights download` writes there, and a cut transfer keeps
    # .sam.pt.<hash>.part. `weights clean` looked only for the official names' parts
    # (.mobile_sam.pt.*.part) and said "nothing to clean", the 35 MB left behind.
    cut = len(body) // 2
    url = server.serve("/mobile_sam.pt", _Route(body, cut_at=cut))
    models = tmp_path / "models"
    models.mkdir()
    env = _command_env(tmp_path / "cache", url, **{ENV_WEIGHTS: str(models / "sam.pt")})

    def weights(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "realtime_sam", "weights", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)

    got = weights("download", "--quiet")
    assert got.returncode == 2 and "received are kept" in got.stderr, got.stderr
    parts = sorted(models.glob(".sam.pt.*.part"))
    assert len(parts) == 1 and parts[0].stat().st_size == cut, _listing(models)

    got = weights("clean", "--dry-run")
    assert got.returncode == 0 and got.stdout.split() == ["would", "remove", f"{cut / 1e6:.1f}", "MB", str(parts[0])], got
    got = weights("clean")
    assert got.returncode == 0 and got.stdout.split() == ["removed", f"{cut / 1e6:.1f}", "MB", str(parts[0])], got
    assert _listing(models) == []


def test_weights_clean_dry_run_says_a_running_downloads_part_is_kept(tmp_path: Path, server: _RangeServer, body: bytes) -> None:
    # `weights clean` keeps the part a running download holds ("in use, kept"), but --dry-run listed
    # it as "would remove" and counted it in "would free": the real run then freed less than promised.
    stalled_at = (len(body) // 2) >> 20 << 20
    url = server.serve("/mobile_sam.pt", _Route(body, cut_at=stalled_at, stall=True))
    cache = tmp_path / "cache"
    env = _command_env(cache, url)
    seen: dict[str, subprocess.CompletedProcess] = {}

    def clean(*args: str) -> None:
        seen[" ".join(args)] = subprocess.run([sys.executable, "-m", "realtime_sam", "weights", "clean", *args],
                                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)

    rc, err = _sigterm_at_the_stall(["weights", "download", "--quiet"], tmp_path, env, cache / ".mobile_sam.pt.*.part", stalled_at,
                                    meanwhile=lambda: (clean("--dry-run"), clean()))
    assert rc == 143, err
    (part,) = cache.glob(".mobile_sam.pt.*.part")
    for args, total in (("--dry-run", "would free 0.0 MB"), ("", "freed 0.0 MB")):
        got = seen[args]
        assert (got.returncode, got.stdout, got.stderr.splitlines()) == (0, "", [f"in use, kept  {part}", total]), got


def test_a_part_deleted_between_its_open_and_its_lock_is_opened_again(
    tmp_path: Path, server: _RangeServer, body: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `weights clean` (or another download's clean-up of stale parts) deletes a part while holding
    # its lock. A download that had opened the name just before, and locked it just after, wrote
    # 40 MB into the deleted file and failed at the end (the rename found no file).
    import fcntl

    import realtime_sam.model.weights as weights_mod

    url = server.serve("/mobile_sam.pt", _Route(body))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    dest.parent.mkdir(parents=True)
    real_flock, raced = fcntl.flock, []

    def flock_after_a_clean(fd, op):
        if not raced:  # the first lock taken: the clean-up got there first and deleted the part
            raced.append(True)
            part = weights_mod._url_part_path(dest, url)
            with open(part, "rb") as fh:
                real_flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                part.unlink()
        return real_flock(fd, op)

    monkeypatch.setattr(weights_mod.fcntl, "flock", flock_after_a_clean)
    assert download_weights(dest, urls=[url], progress=False) == dest
    assert raced and dest.read_bytes() == body
    assert _listing(dest.parent) == ["mobile_sam.pt"]
