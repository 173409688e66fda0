"""Weights lookup, download and verification, against a real HTTP server on 127.0.0.1.

The server is ``http.server`` in a thread; each route serves bytes in one of
a few ways (complete, cut short after ``Content-Length``, without a length)
so the download code meets real sockets, not mocks. The checkpoint served is
the golden random MobileSAM file when ``../shared/golden`` is next to the
repository, else one generated from the manifest.
"""

from __future__ import annotations

import hashlib
import http.server
import math
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path
from typing import Iterator

import pytest
import torch

from realtime_sam.errors import CheckpointError, WeightsDownloadError
from realtime_sam.model import checkpoint
from realtime_sam.model.checkpoint import (
    check_against_manifest,
    check_checkpoint_file,
    identify_model_type,
    load_checkpoint,
    manifest,
)
from realtime_sam.model.weights import (
    ENV_CACHE,
    ENV_URLS,
    ENV_WEIGHTS,
    OFFICIAL_URLS,
    VerifyReport,
    check_weights,
    default_cache_dir,
    download_weights,
    resolve_weights,
    verify_weights,
    weights_main,
    weights_urls,
)

GOLDEN = Path(__file__).resolve().parents[1].parent / "shared" / "golden" / "mobile_sam_random_seed0.pt"
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete vit_t checkpoint: the golden file, or a random one from the manifest."""
    if GOLDEN.is_file():
        return GOLDEN
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) for k, shape in manifest("vit_t").items()}
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam_random.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="session")
def checkpoint_bytes(checkpoint_file: Path) -> bytes:
    return checkpoint_file.read_bytes()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep the user's settings and proxies out; point the cache into tmp_path."""
    for name in (ENV_CACHE, ENV_WEIGHTS, ENV_URLS, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))


class _Server:
    """``http.server`` on a random port; ``routes[path] = (mode, body)``, ``hits`` counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, tuple[str, bytes]] = {}
        self.hits: Counter[str] = Counter()
        self.release = threading.Event()  # ends the "hang" mode's wait
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.hits[self.path] += 1
                if self.path not in server.routes:
                    self.send_error(404, "no such file")
                    return
                mode, body = server.routes[self.path]
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if mode in ("full", "cut", "hang"):
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if mode == "hang":
                    # A slow server: the first bytes, then nothing until the test ends.
                    self.wfile.write(body[: 2 << 20])  # 2 MB: the client writes 1 MB chunks
                    self.wfile.flush()
                    server.release.wait(60)
                    return
                try:
                    # "cut" promises the whole body, then hangs up halfway.
                    self.wfile.write(body[: len(body) // 2] if mode == "cut" else body)
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def serve(self, path: str, body: bytes, mode: str = "full") -> str:
        self.routes[path] = (mode, body)
        return self.url(path)


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    srv.thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.httpd.shutdown()
        srv.httpd.server_close()
        srv.thread.join(timeout=5)


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/mobile_sam.pt"


def _small_vit_b_bytes(tmp_path: Path) -> bytes:
    """A real torch.save file of a few small tensors named and shaped like SAM ViT-B's."""
    small = [(k, s) for k, s in manifest("vit_b").items() if math.prod(s) <= 4096][:20]
    path = tmp_path / "few_vit_b.pt"
    torch.save({k: torch.randn(s) for k, s in small}, path)
    return path.read_bytes()


def _listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# --------------------------------------------------------------------------- paths


def test_cache_dir_env_override_wins_everywhere(tmp_path: Path) -> None:
    env = {ENV_CACHE: str(tmp_path / "c"), "XDG_CACHE_HOME": "/x", "LOCALAPPDATA": "C:\\L"}
    for plat in ("linux", "darwin", "win32"):
        assert default_cache_dir(environ=env, platform=plat) == tmp_path / "c"


def test_cache_dir_per_platform() -> None:
    home = "/home/u"
    assert default_cache_dir(environ={"HOME": home}, platform="linux") == Path(home, ".cache", "realtime-sam")
    assert default_cache_dir(environ={"HOME": home, "XDG_CACHE_HOME": "/xdg"}, platform="linux") == Path(
        "/xdg/realtime-sam"
    )
    # A relative XDG_CACHE_HOME is invalid by the spec and ignored.
    assert default_cache_dir(environ={"HOME": home, "XDG_CACHE_HOME": "rel"}, platform="linux") == Path(
        home, ".cache", "realtime-sam"
    )
    assert default_cache_dir(environ={"HOME": home}, platform="darwin") == Path(
        home, "Library", "Caches", "realtime-sam"
    )
    assert default_cache_dir(environ={"HOME": home, "LOCALAPPDATA": "/appdata"}, platform="win32") == Path(
        "/appdata/realtime-sam"
    )


def test_encoder_exports_go_beside_writable_weights_and_never_into_a_read_only_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An export goes in ``.realtime_sam_cache/`` beside the weights when their folder is writable; a
    folder whose mode lets no one write (a read-only shared copy) gets nothing, even from root, who
    the OS lets write anywhere (it made ``.realtime_sam_cache/`` with a 23 MB export there)."""
    from realtime_sam.model.runtime.export import default_cache_dir as export_dir

    monkeypatch.setenv(ENV_CACHE, str(tmp_path / "cache"))
    own = tmp_path / "own"
    own.mkdir()
    assert export_dir(own / "mobile_sam.pt") == own / ".realtime_sam_cache"
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "mobile_sam.pt").write_bytes(b"weights")
    shared.chmod(0o555)
    try:
        assert export_dir(shared / "mobile_sam.pt") == tmp_path / "cache" / "encoders"
        assert sorted(p.name for p in shared.iterdir()) == ["mobile_sam.pt"]
    finally:
        shared.chmod(0o755)


def test_weights_urls_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    assert weights_urls() == OFFICIAL_URLS
    assert OFFICIAL_URLS[0].startswith("https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/")
    monkeypatch.setenv(ENV_URLS, " http://a/x.pt , ,http://b/y.pt ")
    assert weights_urls() == ("http://a/x.pt", "http://b/y.pt")


def test_resolution_order_explicit_then_env_then_cache(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    explicit, from_env = tmp_path / "explicit.pt", tmp_path / "env.pt"
    cached = tmp_path / "cache" / "mobile_sam.pt"
    for p in (explicit, from_env, cached):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    monkeypatch.setenv(ENV_WEIGHTS, str(from_env))
    assert resolve_weights(explicit, download=False) == explicit
    assert resolve_weights(str(explicit), download=False) == explicit
    assert resolve_weights(None, download=False) == from_env
    monkeypatch.delenv(ENV_WEIGHTS)
    assert resolve_weights(None, download=False) == cached
    # A directory holding the official file name is accepted.
    assert resolve_weights(cached.parent, download=False) == cached


def test_a_path_that_is_there_but_not_a_file_is_not_called_missing(tmp_path: Path) -> None:
    """A pipe (or a device such as /dev/null) was "weights file not found", which it is not."""
    from realtime_sam.model.weights import CheckpointNotFoundError

    fifo = tmp_path / "weights.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError) as err:
        resolve_weights(fifo, download=False)
    assert not isinstance(err.value, CheckpointNotFoundError)
    assert str(err.value).startswith(f"weights path {fifo} (given with --weights) is not a file; check the path")


def test_explicit_missing_path_is_an_error_not_a_download(
    tmp_path: Path,
    server: _Server,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(ENV_URLS, server.serve("/mobile_sam.pt", b"never fetched"))
    missing = tmp_path / "nope" / "mobile_sam.pt"
    with pytest.raises(CheckpointError) as err:
        resolve_weights(missing)
    msg = str(err.value)
    assert str(missing) in msg and "--weights" in msg and "\n" not in msg
    monkeypatch.setenv(ENV_WEIGHTS, str(missing))
    with pytest.raises(CheckpointError, match=ENV_WEIGHTS) as err:
        resolve_weights(None)
    assert str(missing) in str(err.value)
    assert server.hits == Counter()
    assert _listing(tmp_path / "cache") == []


def test_cache_missing_without_download(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as err:
        resolve_weights(None, download=False)
    assert str(tmp_path / "cache" / "mobile_sam.pt") in str(err.value)
    assert "realtime-sam weights download" in str(err.value)


@pytest.mark.parametrize(
    ("model_type", "filename"),
    [("vit_b", "sam_vit_b_01ec64.pth"), ("vit_l", "sam_vit_l_0b3195.pth"), ("vit_h", "sam_vit_h_4b8939.pth")],
)
def test_sam_models_are_never_downloaded(tmp_path: Path, model_type: str, filename: str) -> None:
    with pytest.raises(CheckpointError) as err:
        resolve_weights(None, model_type=model_type)
    msg = str(err.value)
    assert str(tmp_path / "cache" / filename) in msg
    assert f"https://dl.fbaipublicfiles.com/segment_anything/{filename}" in msg
    with pytest.raises(WeightsDownloadError, match=filename):
        download_weights(tmp_path / filename, model_type=model_type)
    assert not (tmp_path / "cache").exists()


def test_resolve_downloads_into_cache_when_absent(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_URLS, server.serve("/mobile_sam.pt", checkpoint_bytes))
    path = resolve_weights(None, progress=False)
    assert path == tmp_path / "cache" / "mobile_sam.pt"
    assert path.read_bytes() == checkpoint_bytes
    # Second call uses the cached file without asking the server again.
    assert resolve_weights(None, progress=False) == path
    assert server.hits["/mobile_sam.pt"] == 1


def test_the_sam_registry_finds_the_official_name_where_the_app_keeps_weights(
    tmp_path: Path, server: _Server, checkpoint_file: Path, checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from realtime_sam import sam_model_registry

    name = "mask_decoder.iou_prediction_head.layers.2.bias"  # a small tensor to tell checkpoints apart
    official = torch.load(checkpoint_file, weights_only=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv(ENV_URLS, server.serve("/mobile_sam.pt", checkpoint_bytes))
    # README's snippet, with no such file here: fetched into the cache once, as the app does.
    sam = sam_model_registry["vit_t"](checkpoint="mobile_sam.pt")
    assert torch.equal(sam.state_dict()[name], official[name])
    assert (tmp_path / "cache" / "mobile_sam.pt").read_bytes() == checkpoint_bytes
    sam_model_registry["vit_t"](checkpoint="mobile_sam.pt")
    assert server.hits["/mobile_sam.pt"] == 1
    # $REALTIME_SAM_WEIGHTS comes before the cache, as for the app.
    mine = dict(official)
    mine[name] = official[name] + 1.0
    torch.save(mine, tmp_path / "mine.pt")
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path / "mine.pt"))
    assert torch.equal(sam_model_registry["vit_t"](checkpoint="mobile_sam.pt").state_dict()[name], mine[name])
    # A file of that name in the current folder is what SAM's builders mean: it wins.
    (work / "mobile_sam.pt").write_bytes(checkpoint_bytes)
    assert torch.equal(sam_model_registry["vit_t"](checkpoint="mobile_sam.pt").state_dict()[name], official[name])
    # Any other name is a path, checked as given; SAM's own files are never downloaded, and
    # $REALTIME_SAM_WEIGHTS (the app's MobileSAM file here) is not what SAM's file name means.
    with pytest.raises(CheckpointError, match="not found"):
        sam_model_registry["vit_t"](checkpoint="mobile-sam.pt")
    with pytest.raises(CheckpointError) as err:
        sam_model_registry["vit_b"](checkpoint="sam_vit_b_01ec64.pth")
    assert str(tmp_path / "cache" / "sam_vit_b_01ec64.pth") in str(err.value) and "\n" not in str(err.value)
    assert "mine.pt" not in str(err.value)
    assert server.hits["/mobile_sam.pt"] == 1


# --------------------------------------------------------------------------- download


def test_download_success(
    tmp_path: Path,
    server: _Server,
    checkpoint_bytes: bytes,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server.serve("/w/mobile_sam.pt", checkpoint_bytes)
    dest = tmp_path / "deep" / "dir" / "mobile_sam.pt"
    assert download_weights(dest, urls=[url], progress=False) == dest
    assert dest.read_bytes() == checkpoint_bytes
    assert _listing(dest.parent) == ["mobile_sam.pt"]
    assert len(load_checkpoint(dest, "vit_t")) == len(manifest("vit_t"))
    assert capsys.readouterr().err == ""


def test_download_without_content_length_still_verified(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    url = server.serve("/nolen.pt", checkpoint_bytes, mode="nolength")
    dest = tmp_path / "mobile_sam.pt"
    download_weights(dest, urls=[url], progress=True)
    assert dest.read_bytes() == checkpoint_bytes
    err = capsys.readouterr().err
    assert url in err and str(dest) in err


def test_interrupted_transfer_falls_back_to_mirror(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes
) -> None:
    cut = server.serve("/cut.pt", checkpoint_bytes, mode="cut")
    good = server.serve("/mirror.pt", checkpoint_bytes)
    dest = tmp_path / "mobile_sam.pt"
    download_weights(dest, urls=[cut, good], progress=False)
    assert server.hits["/cut.pt"] == 1 and server.hits["/mirror.pt"] == 1
    assert dest.read_bytes() == checkpoint_bytes
    assert _listing(tmp_path) == ["mobile_sam.pt"]


def test_interrupted_transfer_leaves_nothing(
    tmp_path: Path,
    server: _Server,
    checkpoint_bytes: bytes,
) -> None:
    cut = server.serve("/cut.pt", checkpoint_bytes, mode="cut")
    dest = tmp_path / "mobile_sam.pt"
    with pytest.raises(WeightsDownloadError) as err:
        download_weights(dest, urls=[cut], progress=False)
    msg = str(err.value)
    assert "interrupted" in msg and f"of {len(checkpoint_bytes)} bytes" in msg
    assert cut in msg and f"curl -L -o {dest} {cut}" in msg
    assert "offline" not in msg and "\n" not in msg
    assert _listing(tmp_path) == []


@pytest.mark.parametrize("payload", ["garbage", "few_vit_b_keys"])
def test_corrupt_download_is_rejected_and_old_file_kept(
    tmp_path: Path,
    server: _Server,
    payload: str,
) -> None:
    body = os.urandom(64 * 1024) if payload == "garbage" else _small_vit_b_bytes(tmp_path)
    url = server.serve("/bad.pt", body)
    dest_dir = tmp_path / "cache"
    dest_dir.mkdir()
    dest = dest_dir / "mobile_sam.pt"
    dest.write_bytes(b"previous file")  # whatever was there must survive a failed download
    with pytest.raises(WeightsDownloadError) as err:
        download_weights(dest, urls=[url], progress=False)
    msg = str(err.value)
    assert "not a valid MobileSAM" in msg and url in msg and "\n" not in msg
    assert ".part" not in msg  # the temp name means nothing to the user
    assert dest.read_bytes() == b"previous file"
    assert _listing(dest_dir) == ["mobile_sam.pt"]


def test_server_down_says_offline(tmp_path: Path) -> None:
    urls = [_closed_port_url(), _closed_port_url()]
    dest = tmp_path / "mobile_sam.pt"
    with pytest.raises(WeightsDownloadError) as err:
        download_weights(dest, urls=urls, progress=False, timeout=5)
    msg = str(err.value)
    assert all(u in msg for u in urls)
    assert "connection refused" in msg and "looks offline" in msg
    assert f"curl -L -o {dest} {urls[0]}" in msg
    assert _listing(tmp_path) == []


def test_http_error_is_not_called_offline(tmp_path: Path, server: _Server) -> None:
    url = server.url("/missing.pt")
    with pytest.raises(WeightsDownloadError) as err:
        download_weights(tmp_path / "mobile_sam.pt", urls=[url], progress=False)
    assert "HTTP 404" in str(err.value) and "offline" not in str(err.value)
    assert _listing(tmp_path) == []


def test_ctrl_c_removes_temp_file(tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch) -> None:
    url = server.serve("/x.pt", os.urandom(4096))
    seen: list[Path] = []

    def interrupted(path: Path, model_type: str) -> dict:
        seen.append(Path(path))
        assert Path(path).is_file()  # the downloaded bytes were on disk when Ctrl-C came
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "load_checkpoint", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_weights(tmp_path / "mobile_sam.pt", urls=[url], progress=False)
    assert seen and seen[0].parent == tmp_path
    assert _listing(tmp_path) == []


# --------------------------------------------------------------------------- verify


def test_verify_report(checkpoint_file: Path) -> None:
    report = verify_weights(checkpoint_file)
    ref = manifest("vit_t")
    assert isinstance(report, VerifyReport)
    assert report.path == checkpoint_file.absolute()
    assert report.model_type == "vit_t"
    assert report.num_tensors == len(ref)
    assert report.num_parameters == sum(math.prod(s) for s in ref.values())
    assert report.size_bytes == checkpoint_file.stat().st_size
    assert report.sha256 == hashlib.sha256(checkpoint_file.read_bytes()).hexdigest()
    assert verify_weights(checkpoint_file, None).model_type == "vit_t"
    with pytest.raises(CheckpointError, match="not SAM ViT-B"):
        verify_weights(checkpoint_file, "vit_b")


# --------------------------------------------------------------------------- checked before outputs open


def _damaged(kind: str, tmp_path: Path, checkpoint_bytes: bytes, checkpoint_file: Path) -> tuple[Path, str]:
    """A checkpoint file damaged as ``kind``, and the model type to check it against."""
    p = tmp_path / f"{kind}.pt"
    if kind == "truncated":
        p.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) * 9 // 10])
    elif kind == "empty":
        p.write_bytes(b"")
    elif kind == "text":
        p.write_text("<html>404 Not Found</html>\n")
    elif kind == "objects":
        torch.save({"weight": torch.zeros(2), "thing": PickledThing()}, p)
    elif kind == "legacy_format_missing_key":
        state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
        state.pop(next(iter(state)))
        torch.save(state, p, _use_new_zipfile_serialization=False)
    elif kind == "other_model":
        return checkpoint_file, "vit_b"
    return p, "vit_t"


@pytest.mark.parametrize("kind", ["truncated", "empty", "text", "objects", "legacy_format_missing_key", "other_model"])
def test_checking_a_file_raises_what_loading_it_would(
    tmp_path: Path, checkpoint_bytes: bytes, checkpoint_file: Path, kind: str
) -> None:
    # The app checks the weights before its outputs truncate an earlier run's files: the check
    # must refuse every file the load refuses, with the same one-line message.
    path, model_type = _damaged(kind, tmp_path, checkpoint_bytes, checkpoint_file)
    with pytest.raises(CheckpointError) as loaded:
        load_checkpoint(path, model_type)
    with pytest.raises(CheckpointError) as checked:
        check_checkpoint_file(path, model_type)
    assert str(checked.value) == str(loaded.value) and "\n" not in str(checked.value)


def test_checking_passes_complete_files_old_format_and_nested(tmp_path: Path, checkpoint_file: Path) -> None:
    state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    legacy, nested = tmp_path / "legacy.pt", tmp_path / "nested.pt"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    torch.save({"model": state, "epoch": 3}, nested)
    for path in (checkpoint_file, legacy, nested):
        check_checkpoint_file(path, "vit_t")


def test_a_file_that_is_no_checkpoint_is_not_called_truncated(tmp_path: Path) -> None:
    p = tmp_path / "mobile_sam.pt"
    p.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(CheckpointError, match="it is not a PyTorch checkpoint$"):
        load_checkpoint(p, "vit_t")


def test_check_weights_finds_the_file_the_load_would(
    tmp_path: Path, checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "cache" / "mobile_sam.pt"
    # Nothing named and no file yet: loading will download one (verified then), nothing to check now.
    assert check_weights(None) is None
    # SAM's own files are never downloaded: their absence is the load's error already.
    with pytest.raises(CheckpointError, match=r"no SAM ViT-B \(sam_vit_b_01ec64.pth\) weights"):
        check_weights(None, model_type="vit_b")
    cached.parent.mkdir()
    cached.write_bytes(checkpoint_bytes)
    assert check_weights(None) == cached
    cached.write_bytes(checkpoint_bytes[:1000])
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {cached}"):
        check_weights(None)
    named = tmp_path / "mine.pt"
    named.write_bytes(checkpoint_bytes)
    assert check_weights(named) == named
    monkeypatch.setenv(ENV_WEIGHTS, str(named))
    assert check_weights(None) == named
    with pytest.raises(CheckpointError, match="not SAM ViT-B"):
        check_weights(None, model_type="vit_b")
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path / "gone.pt"))
    with pytest.raises(CheckpointError, match="gone.pt"):
        check_weights(None)


# --------------------------------------------------------------------------- checkpoint errors


def test_truncated_checkpoint(tmp_path: Path, checkpoint_bytes: bytes) -> None:
    p = tmp_path / "half.pt"
    p.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 2])
    with pytest.raises(CheckpointError, match="truncated") as err:
        load_checkpoint(p, "vit_t")
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_empty_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "empty.pt"
    p.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(p, "vit_t")


def test_random_bytes_checkpoint(tmp_path: Path) -> None:
    p = tmp_path / "noise.pt"
    p.write_bytes(os.urandom(100_000))
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {p}") as err:
        load_checkpoint(p, "vit_t")
    assert "\n" not in str(err.value)


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt", "vit_t")


@pytest.mark.parametrize("model_type", ["vit_t", "vit_b", "vit_l", "vit_h"])
def test_identify_model_type_from_shapes(model_type: str) -> None:
    # Meta tensors carry shapes without memory: a full ViT-H layout costs nothing.
    state = {k: torch.empty(s, device="meta") for k, s in manifest(model_type).items()}
    assert identify_model_type(state) == model_type
    check_against_manifest(state, model_type, "x.pt")


def test_checkpoint_of_another_model() -> None:
    state = {k: torch.empty(s, device="meta") for k, s in manifest("vit_b").items()}
    with pytest.raises(CheckpointError) as err:
        check_against_manifest(state, "vit_t", "sam_b.pt")
    msg = str(err.value)
    assert "sam_b.pt is a SAM ViT-B" in msg and "--model-type vit_b" in msg


def test_incomplete_state_dict_names_a_missing_key() -> None:
    ref = manifest("vit_t")
    dropped = next(iter(ref))
    state = {k: torch.empty(s, device="meta") for k, s in ref.items() if k != dropped}
    with pytest.raises(CheckpointError, match=f"1 missing keys \\(e.g. {dropped}\\)"):
        check_against_manifest(state, "vit_t", "x.pt")


def test_state_dict_nested_under_model(tmp_path: Path, checkpoint_file: Path) -> None:
    state = torch.load(checkpoint_file, map_location="cpu", weights_only=True)
    p = tmp_path / "nested.pt"
    torch.save({"model": state, "epoch": 3}, p)
    loaded = load_checkpoint(p, "vit_t")
    assert loaded.keys() == state.keys()
    k = next(iter(state))
    assert torch.equal(loaded[k], state[k])


class PickledThing:
    """A plain Python object: torch.load(weights_only=True) must refuse to build it."""

    def __init__(self) -> None:
        self.value = 1


def test_pickled_python_object_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "object.pt"
    torch.save({"weight": torch.zeros(2), "thing": PickledThing()}, p)
    with pytest.raises(CheckpointError, match="Python objects"):
        load_checkpoint(p, "vit_t")


def test_non_tensor_values_are_refused(tmp_path: Path) -> None:
    p = tmp_path / "mixed.pt"
    torch.save({"weight": torch.zeros(2), "note": "hello"}, p)
    with pytest.raises(CheckpointError, match="not a state dict of tensors"):
        load_checkpoint(p, "vit_t")


# --------------------------------------------------------------------------- CLI


def test_cli_path(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert weights_main(["path"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "cache" / "mobile_sam.pt")
    assert "download" in err
    monkeypatch.setenv(ENV_WEIGHTS, str(tmp_path / "mine.pt"))
    assert weights_main(["path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "mine.pt")
    assert weights_main(["path", "--model-type", "vit_h"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "mine.pt")


def test_cli_download(
    tmp_path: Path,
    server: _Server,
    checkpoint_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(ENV_URLS, f"{_closed_port_url()},{server.serve('/m.pt', checkpoint_bytes)}")
    dest = tmp_path / "cache" / "mobile_sam.pt"
    assert weights_main(["download"]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == str(dest)
    assert "connection refused" in err and "trying the next mirror" in err  # progress on by default
    assert dest.read_bytes() == checkpoint_bytes
    # A valid file is kept; nothing is fetched again unless --force.
    assert weights_main(["download", "--quiet"]) == 0
    assert "already present" in capsys.readouterr().err
    assert server.hits["/m.pt"] == 1
    # --dest may be an existing directory.
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.setenv(ENV_URLS, server.url("/m.pt"))
    assert weights_main(["download", "--quiet", "--force", "--dest", str(other)]) == 0
    assert capsys.readouterr().out.strip() == str(other / "mobile_sam.pt")
    assert (other / "mobile_sam.pt").stat().st_size == len(checkpoint_bytes)


def test_cli_download_failure(
    tmp_path: Path,
    server: _Server,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = server.serve("/junk.pt", b"<html>rate limited</html>")
    monkeypatch.setenv(ENV_URLS, url)
    assert weights_main(["download", "--quiet"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and url in err
    assert _listing(tmp_path / "cache") == []


def test_cli_verify(tmp_path: Path, checkpoint_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert weights_main(["verify", str(checkpoint_file)]) == 0
    out = capsys.readouterr().out
    assert hashlib.sha256(checkpoint_file.read_bytes()).hexdigest() in out
    assert f"tensors:    {len(manifest('vit_t'))}" in out
    assert "model:      MobileSAM (vit_t, mobile_sam.pt)\n" in out  # the type once (it said "(vit_t)" again after it)

    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"")
    assert weights_main(["verify", str(bad)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and str(bad) in err and err.count("\n") == 1

    assert weights_main(["verify", str(checkpoint_file), "--model-type", "vit_l"]) == 2
    assert "not SAM ViT-L" in capsys.readouterr().err

    assert weights_main(["verify", str(tmp_path / "absent.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_cli_verify_with_nothing_downloaded_says_how_to_get_the_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``weights verify`` before any download said only "checkpoint not found: <cache path>"."""
    cached = tmp_path / "cache" / "mobile_sam.pt"
    assert weights_main(["verify"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: no weights at {cached} yet; run `realtime-sam weights download`, or give a file: realtime-sam weights verify FILE\n"
    assert weights_main(["verify", "--model-type", "vit_b"]) == 2
    assert "sam_vit_b_01ec64.pth yet; put the file there, or give a file" in capsys.readouterr().err


def test_cli_usage_error_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert weights_main([]) == 2
    assert weights_main(["frobnicate"]) == 2
    assert "usage: realtime-sam weights" in capsys.readouterr().err


def test_module_is_runnable(tmp_path: Path) -> None:
    env = {**os.environ, ENV_CACHE: str(tmp_path / "c")}
    env.pop(ENV_WEIGHTS, None)
    proc = subprocess.run(
        [sys.executable, "-m", "realtime_sam.model.weights", "path"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "c" / "mobile_sam.pt")


def test_checking_reads_the_file_plainly_where_memory_mapping_fails(
    checkpoint_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory-mapping can fail where reading works: a filesystem without mmap (some network and
    # FUSE mounts), or torch 2.1 (pyproject: torch>=2.1), whose torch.load(mmap=True) takes a
    # str path only ("f must be a string filename"). A good checkpoint is not refused for it.
    real_load = torch.load

    def load(f, *args, mmap=None, **kwargs):
        if mmap:
            raise RuntimeError("unable to mmap 1234 bytes from file <x>: Operation not supported (19)")
        return real_load(f, *args, mmap=mmap, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    check_checkpoint_file(checkpoint_file, "vit_t")
    with pytest.raises(CheckpointError, match="not SAM ViT-B"):
        check_checkpoint_file(checkpoint_file, "vit_b")


def test_checking_gives_torch_a_str_path_to_memory_map(checkpoint_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch 2.1 maps only a str filename: the file is mapped there too, not read whole.
    real_load = torch.load
    calls = []

    def load_2_1(f, *args, mmap=None, **kwargs):
        calls.append(mmap)
        if mmap and not isinstance(f, str):
            raise ValueError("f must be a string filename in order to use mmap argument")
        return real_load(f, *args, mmap=mmap, **kwargs)

    monkeypatch.setattr(torch, "load", load_2_1)
    check_checkpoint_file(checkpoint_file, "vit_t")
    assert calls == [True]


# --------------------------------------------------------------------------- audit: what users type


@pytest.mark.parametrize("url", ["ftp//mirror/mobile_sam.pt", "mirror.example/mobile_sam.pt"])
def test_a_malformed_url_is_a_one_line_error(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # A $REALTIME_SAM_WEIGHTS_URL with a typo (a scheme without its colon, none at all) was a
    # traceback from urllib's Request, not the download's one-line error.
    monkeypatch.setenv(ENV_URLS, url)
    assert weights_main(["download", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert f"{url} (not a usable URL" in err
    assert _listing(tmp_path / "cache") == []


@pytest.mark.parametrize("value", ["inf", "1e300", "nan", "0", "-1", "86401"])
def test_timeout_must_be_a_finite_positive_number(
    value: str, tmp_path: Path, server: _Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # inf and 1e300 reached socket.settimeout (OverflowError, a traceback); nan was blamed on the URL.
    monkeypatch.setenv(ENV_URLS, server.url("/never.pt"))
    assert weights_main(["download", "--quiet", "--timeout", value]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --timeout must be a positive number of seconds, at most 86400, got {float(value):g}\n"
    assert server.hits["/never.pt"] == 0


def test_downloaded_file_has_the_permissions_the_umask_gives(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes
) -> None:
    # The temporary file came from tempfile.mkstemp (mode 0600), renamed as it was: a download
    # into a shared folder (--dest /opt/models, $REALTIME_SAM_WEIGHTS) was readable by its owner
    # only. curl -o and torch.save give 0666 less the umask; so does the download now.
    url = server.serve("/m.pt", checkpoint_bytes)
    old = os.umask(0o022)
    try:
        dest = download_weights(tmp_path / "shared" / "mobile_sam.pt", urls=[url], progress=False)
        os.umask(0o027)
        dest2 = download_weights(tmp_path / "group" / "mobile_sam.pt", urls=[url], progress=False)
    finally:
        os.umask(old)
    if sys.platform != "win32":
        assert dest.stat().st_mode & 0o777 == 0o644
        assert dest2.stat().st_mode & 0o777 == 0o640
    assert dest.read_bytes() == checkpoint_bytes
    assert _listing(dest.parent) == ["mobile_sam.pt"]


def test_path_and_verify_look_in_a_folder_as_the_app_does(
    tmp_path: Path,
    checkpoint_file: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The app takes a folder in --weights or $REALTIME_SAM_WEIGHTS as "the official file in it";
    # `weights path` printed the folder itself and said "not there yet", and `weights verify`
    # (with no file, or given the folder) said "checkpoint path is not a file".
    models = tmp_path / "models"
    models.mkdir()
    (models / "mobile_sam.pt").symlink_to(checkpoint_file)
    monkeypatch.setenv(ENV_WEIGHTS, str(models))
    assert resolve_weights(None) == models / "mobile_sam.pt"  # what the app loads

    assert weights_main(["path"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{models / 'mobile_sam.pt'}\n" and err.startswith("present (")
    assert weights_main(["verify"]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {models / 'mobile_sam.pt'}\n")
    assert weights_main(["verify", str(models)]) == 0
    assert capsys.readouterr().out.startswith(f"ok: {models / 'mobile_sam.pt'}\n")
    assert verify_weights(models).path == models / "mobile_sam.pt"

    # An empty folder: `path` names the file the download would write there; verify says what is missing.
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv(ENV_WEIGHTS, str(empty))
    assert weights_main(["path"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{empty / 'mobile_sam.pt'}\n" and "not there yet" in err
    assert weights_main(["verify", str(empty)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {empty} is a folder without mobile_sam.pt in it; pass the checkpoint file itself\n"
    assert weights_main(["verify", "--model-type", "vit_b", str(models)]) == 2
    assert f"{models} is a folder without sam_vit_b_01ec64.pth in it" in capsys.readouterr().err


def test_path_prints_an_absolute_path_for_a_relative_env_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The app resolves $REALTIME_SAM_WEIGHTS against the current folder; `path` printed it as given.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_WEIGHTS, "w/mobile_sam.pt")
    assert weights_main(["path"]) == 0
    assert capsys.readouterr().out == f"{tmp_path / 'w' / 'mobile_sam.pt'}\n"


@pytest.mark.skipif(sys.platform == "win32", reason="the live download's lock is POSIX flock")
def test_a_killed_downloads_part_file_is_removed_by_the_next_download(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes
) -> None:
    # A download killed outright (SIGTERM from `timeout` or `docker stop`, SIGHUP when the terminal
    # closes, SIGKILL, a power cut) runs no cleanup: its .mobile_sam.pt.*.part stayed in the cache
    # for good, up to 40 MB each. The next download removes such leftovers; a part file that a
    # download still running elsewhere holds (locked) is left alone, as is a just-created one.
    cache = tmp_path / "cache"
    cache.mkdir()
    killed = cache / ".mobile_sam.pt.dead0001.part"
    killed.write_bytes(checkpoint_bytes[:1000])
    fresh = cache / ".mobile_sam.pt.new00001.part"
    fresh.write_bytes(b"")
    live = cache / ".mobile_sam.pt.live0001.part"
    live.write_bytes(checkpoint_bytes[:2000])
    other = cache / ".sam_vit_b_01ec64.pth.dead0002.part"  # another file's download: not ours to judge
    other.write_bytes(b"x")
    hour_ago = os.path.getmtime(killed) - 3600
    for p in (killed, live, other):
        os.utime(p, (hour_ago, hour_ago))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1], 'ab'); fcntl.flock(f, fcntl.LOCK_EX); "
            "print('locked', flush=True); sys.stdin.read()",
            str(live),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        url = server.serve("/m.pt", checkpoint_bytes)
        download_weights(cache / "mobile_sam.pt", urls=[url], progress=False)
        assert _listing(cache) == sorted([fresh.name, live.name, other.name, "mobile_sam.pt"])
    finally:
        holder.communicate("", timeout=30)


def test_an_unreachable_proxy_is_named_not_called_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # urllib honours $HTTPS_PROXY; when the proxy is down, the error said "connection refused ...
    # This machine looks offline", pointing at the network instead of the proxy setting.
    proxy_url = _closed_port_url().rsplit("/", 1)[0]  # http://127.0.0.1:PORT, nothing listening
    port = proxy_url.rsplit(":", 1)[1]
    monkeypatch.setenv("HTTPS_PROXY", proxy_url.replace("http://", "http://me:s3cret@"))
    monkeypatch.setenv(ENV_URLS, "https://weights.invalid/mobile_sam.pt")
    assert weights_main(["download", "--quiet", "--timeout", "5"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"(connection refused, proxy http://127.0.0.1:{port})" in err
    assert "looks offline" not in err and "s3cret" not in err
    assert "The proxy did not answer: check $HTTPS_PROXY." in err
    assert _listing(tmp_path / "cache") == []


def test_a_proxy_set_after_an_earlier_download_is_used(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # urlopen's opener reads the proxy variables once per process, at its first call: a
    # $HTTP_PROXY set later (a notebook, a long-lived service) was ignored.
    direct = server.serve("/m.pt", checkpoint_bytes)
    download_weights(tmp_path / "a" / "mobile_sam.pt", urls=[direct], progress=False)
    proxied = "http://weights.invalid/mobile_sam.pt"
    server.serve(proxied, checkpoint_bytes)  # a proxy is asked for the absolute URL
    monkeypatch.setenv("HTTP_PROXY", server.url(""))
    dest = download_weights(tmp_path / "b" / "mobile_sam.pt", urls=[proxied], progress=False, timeout=5)
    assert server.hits[proxied] == 1
    assert dest.read_bytes() == checkpoint_bytes


# --------------------------------------------------------------------------- damaged files: what to do


def test_a_damaged_file_the_app_found_says_how_to_replace_it(
    tmp_path: Path, checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A truncated cache file was called "not a complete PyTorch checkpoint (truncated or another
    # format)" with no way out: the user had not named that file and did not know where it came from.
    cached = tmp_path / "cache" / "mobile_sam.pt"
    cached.parent.mkdir()
    cached.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 2])
    with pytest.raises(CheckpointError) as err:
        check_weights(None)
    msg = str(err.value)
    assert msg.startswith(f"cannot read checkpoint {cached}: it is not a complete PyTorch checkpoint")
    assert msg.endswith("; run `realtime-sam weights download` to replace it (or delete it: the next run downloads it again)")
    assert "\n" not in msg

    # The load (the Python API, or a check skipped) says the same.
    from realtime_sam.config import ModelConfig
    from realtime_sam.model.loader import load_model

    with pytest.raises(CheckpointError) as err:
        load_model(ModelConfig(device="cpu"), progress=False)
    assert str(err.value) == msg

    # $REALTIME_SAM_WEIGHTS's file is what `weights download` writes to as well; deleting it would not help.
    env_file = tmp_path / "env" / "mobile_sam.pt"
    env_file.parent.mkdir()
    env_file.write_bytes(checkpoint_bytes[:1000])
    monkeypatch.setenv(ENV_WEIGHTS, str(env_file.parent))
    with pytest.raises(CheckpointError) as err:
        check_weights(None)
    assert str(err.value).startswith(f"cannot read checkpoint {env_file}: ")
    assert str(err.value).endswith("complete PyTorch checkpoint (truncated or another format); run `realtime-sam weights download` to replace it")


def test_a_damaged_weights_file_of_the_users_own_is_not_offered_a_download(
    tmp_path: Path, checkpoint_bytes: bytes
) -> None:
    mine = tmp_path / "mine.pt"
    mine.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 2])
    with pytest.raises(CheckpointError) as err:
        check_weights(mine)
    msg = str(err.value)
    assert msg.startswith(f"cannot read checkpoint {mine}: it is not a complete PyTorch checkpoint")
    assert msg.endswith("; pass a complete checkpoint with --weights (`realtime-sam weights verify FILE` checks one)")
    assert "weights download" not in msg


def test_path_says_a_damaged_file_is_damaged(
    tmp_path: Path, checkpoint_bytes: bytes, checkpoint_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `weights path` said "present (3.0 MB, from cache)" for a truncated file that every run refuses.
    cached = tmp_path / "cache" / "mobile_sam.pt"
    cached.parent.mkdir()
    cached.write_bytes(checkpoint_bytes[: len(checkpoint_bytes) // 2])
    assert weights_main(["path"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{cached}\n"
    assert err.startswith("damaged (") and "present" not in err and err.count("\n") == 1
    assert err.rstrip().endswith("run `realtime-sam weights download` to replace it (or delete it: the next run downloads it again)")
    # `verify` of the same file says how to replace it too.
    assert weights_main(["verify"]) == 2
    assert "run `realtime-sam weights download` to replace it" in capsys.readouterr().err
    # A complete file is present; one of another model is present but not usable.
    cached.write_bytes(checkpoint_bytes)
    assert weights_main(["path"]) == 0
    assert capsys.readouterr().err.startswith("present (")
    assert weights_main(["path", "--model-type", "vit_b"]) == 0
    assert "(from cache)" not in capsys.readouterr().err  # the vit_b file is not there
    (tmp_path / "cache" / "sam_vit_b_01ec64.pth").write_bytes(checkpoint_file.read_bytes())
    assert weights_main(["path", "--model-type", "vit_b"]) == 0
    err = capsys.readouterr().err
    assert err.startswith("present but not usable (") and "not SAM ViT-B" in err


def test_a_file_where_the_cache_folder_should_be_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # mkdir's "cannot create X (File exists)" left the user to work out that X is a file.
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    for cache in (blocker, blocker / "sub"):
        monkeypatch.setenv(ENV_CACHE, str(cache))
        assert weights_main(["download", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err == (
            f"error: {blocker} is a file, not a folder; set {ENV_CACHE} to a writable folder or pass another destination\n"
        )
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("command", [["path"], ["verify"]])
def test_ctrl_c_outside_a_download_does_not_talk_of_partial_files(
    command: list[str], tmp_path: Path, checkpoint_file: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import realtime_sam.model.weights as weights_module

    monkeypatch.setenv(ENV_WEIGHTS, str(checkpoint_file))

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "check_checkpoint_file", interrupted)
    monkeypatch.setattr(weights_module, "verify_weights", interrupted)
    assert weights_main(command) == 130
    assert capsys.readouterr().err == "error: interrupted\n"


def test_a_bad_timeout_from_python_names_the_argument(tmp_path: Path, server: _Server) -> None:
    # Called from Python, the error named the command's flag (--timeout), which the caller never used.
    url = server.url("/never.pt")
    with pytest.raises(WeightsDownloadError) as err:
        download_weights(tmp_path / "mobile_sam.pt", urls=[url], progress=False, timeout=0)
    assert str(err.value) == "timeout must be a positive number of seconds, at most 86400, got 0"
    assert server.hits["/never.pt"] == 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is POSIX")
@pytest.mark.parametrize("command", ["the app's first run", "weights download"])
def test_sigterm_during_a_download_exits_143_and_keeps_no_partial_file(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes, command: str
) -> None:
    # The app turns SIGTERM into exit 143 with its outputs finalised, but only once the pipeline
    # runs: during the first run's download the default action ended it at once (exit -15, not a
    # word), its .part file left in the cache until a later download removed it. So did
    # `realtime-sam weights download` (`timeout`, `docker stop`, systemd). A server that gives no
    # validator (ETag, Last-Modified) leaves nothing to resume: the part goes.
    import signal
    import time

    if command == "weights download":
        args, said = ["weights", "download", "--quiet"], "error: terminated by SIGTERM; no partial file was kept"
    else:
        args = ["--headless", "--quiet", "--device", "cpu",
                "--source", "lavfi:testsrc=size=64x48:rate=5:duration=2", "--save-masks", "out.jsonl"]
        said = "error: terminated by SIGTERM"
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in (ENV_WEIGHTS, "XDG_CACHE_HOME")}
    env.update({
        ENV_CACHE: str(cache),
        ENV_URLS: server.serve("/slow.pt", checkpoint_bytes, mode="hang"),
        "no_proxy": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    })
    proc = subprocess.Popen(
        [sys.executable, "-m", "realtime_sam", *args],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (cache.is_dir() and any(p.stat().st_size > 0 for p in cache.glob(".mobile_sam.pt.*.part"))):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the download did not start"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == said, err
    assert out == ""
    assert _listing(cache) == []  # the temporary file is gone, and no mobile_sam.pt either


# --------------------------------------------------------------------------- the published file's digest


def test_a_download_from_the_official_urls_must_be_the_published_file(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The official URLs serve one known file. A checkpoint of the right layout with other numbers
    # (a damaged byte inside a tensor, a resumed transfer's bad seam, a mirror serving something
    # else) passed the layout check and was installed as the official weights.
    import realtime_sam.model.weights as weights_mod

    first, second = server.serve("/a/mobile_sam.pt", checkpoint_bytes), server.serve("/b/mobile_sam.pt", checkpoint_bytes)
    monkeypatch.setattr(weights_mod, "OFFICIAL_URLS", (first, second))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    with pytest.raises(WeightsDownloadError) as info:
        download_weights(dest, progress=False)
    message = str(info.value)
    assert "\n" not in message and message.count("is not the published MobileSAM") == 2, message
    assert hashlib.sha256(checkpoint_bytes).hexdigest()[:16] in message
    assert weights_mod.OFFICIAL_SHA256["vit_t"][:16] in message
    assert _listing(dest.parent) == []  # nothing installed, no part kept (the bytes came whole: not resumable)

    # The same bytes with their own digest named: accepted (what the official file gets).
    assert download_weights(dest, progress=False, sha256=hashlib.sha256(checkpoint_bytes).hexdigest()) == dest
    assert dest.read_bytes() == checkpoint_bytes


def test_urls_of_your_own_may_serve_another_checkpoint_of_the_layout(
    tmp_path: Path, server: _Server, checkpoint_bytes: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # $REALTIME_SAM_WEIGHTS_URL may point at a fine-tuned MobileSAM: its layout is checked, not its digest.
    monkeypatch.setenv(ENV_URLS, server.serve("/finetuned.pt", checkpoint_bytes))
    dest = tmp_path / "cache" / "mobile_sam.pt"
    assert download_weights(dest, progress=False) == dest
    with pytest.raises(ValueError, match="64 hex digits"):
        download_weights(dest, progress=False, sha256="abc")


def test_verify_says_whether_a_file_is_the_published_one(
    tmp_path: Path, checkpoint_file: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import realtime_sam.model.weights as weights_mod

    assert weights_main(["verify", str(checkpoint_file)]) == 0
    assert "published:  no" in capsys.readouterr().out
    monkeypatch.setitem(weights_mod.OFFICIAL_SHA256, "vit_t", hashlib.sha256(checkpoint_file.read_bytes()).hexdigest())
    assert weights_main(["verify", str(checkpoint_file)]) == 0
    assert "published:  yes" in capsys.readouterr().out
