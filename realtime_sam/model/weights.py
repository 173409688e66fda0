"""Finding, downloading and checking the model weights.

Where the weights come from, in order:

1. an explicit path (``--weights PATH``),
2. ``$REALTIME_SAM_WEIGHTS``,
3. ``<cache>/mobile_sam.pt`` (for ``vit_t``), downloaded on first use from the
   official MobileSAM repository, falling back to the Ultralytics mirror.

``<cache>`` is ``$REALTIME_SAM_CACHE`` if set, else the per-user cache
directory (see :func:`default_cache_dir`). The SAM ViT-B/L/H checkpoints are
large (375 MB to 2.5 GB) and are never fetched behind the user's back: the
error says where to put the file and where Meta publishes it.

A download streams into a temporary file next to the destination, checks the
byte count against ``Content-Length`` and the contents against the model's
manifest (:func:`realtime_sam.model.checkpoint.load_checkpoint`), and only then
renames it into place, so an interrupted or corrupt transfer never leaves a
file that a later run would trust. An interrupted transfer keeps its temporary
file, named for its URL, when the server gave a validator (``ETag`` or
``Last-Modified``): the next download of that URL resumes it with a ``Range``
request (see :func:`_start`).

This module is also the ``realtime-sam weights`` sub-command
(:func:`weights_main`), runnable as ``python -m realtime_sam.model.weights``.
"""

from __future__ import annotations

import argparse
import errno
import glob
import hashlib
import http.client
import json
import os
import re
import secrets
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Mapping, Sequence

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from realtime_sam.errors import (
    CheckpointDamagedError,
    CheckpointError,
    CheckpointNotFoundError,
    RealtimeSamError,
    WeightsDownloadError,
    describe_error,
)
from realtime_sam.model import checkpoint
from realtime_sam.sigterm import EXIT_SIGTERM, RaiseOnTerm, Terminated

__all__ = [
    "ENV_CACHE",
    "ENV_WEIGHTS",
    "ENV_URLS",
    "WEIGHTS_FILENAMES",
    "check_weights",
    "create_part_file",
    "remove_stale_parts",
    "partial_download_bytes",
    "kept_note",
    "damaged_weights_error",
    "locate_checkpoint",
    "OFFICIAL_SHA256",
    "OFFICIAL_URLS",
    "OFFICIAL_SAM_URLS",
    "VerifyReport",
    "default_cache_dir",
    "default_weights_path",
    "weights_urls",
    "resolve_weights",
    "download_weights",
    "verify_weights",
    "weights_main",
]

ENV_CACHE = "REALTIME_SAM_CACHE"
ENV_WEIGHTS = "REALTIME_SAM_WEIGHTS"
ENV_URLS = "REALTIME_SAM_WEIGHTS_URL"

#: File name of the official checkpoint of each model type (also the cache file name).
WEIGHTS_FILENAMES: Mapping[str, str] = {
    "vit_t": "mobile_sam.pt",
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}

#: Where ``mobile_sam.pt`` is fetched from, tried in this order.
OFFICIAL_URLS: tuple[str, ...] = (
    "https://raw.githubusercontent.com/ChaoningZhang/MobileSAM/master/weights/mobile_sam.pt",
    "https://github.com/ultralytics/assets/releases/download/v8.2.0/mobile_sam.pt",
)

#: SHA-256 of the published ``mobile_sam.pt`` (40,728,226 bytes), which both
#: :data:`OFFICIAL_URLS` serve. A download from them must match it: the layout check alone
#: does not see a flipped byte inside a tensor (a resumed transfer's seam, a proxy's damage).
OFFICIAL_SHA256: Mapping[str, str] = {
    "vit_t": "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f",
}

#: Meta's segment-anything release files; only named in messages, never auto-downloaded.
OFFICIAL_SAM_URLS: Mapping[str, str] = {
    mt: f"https://dl.fbaipublicfiles.com/segment_anything/{WEIGHTS_FILENAMES[mt]}"
    for mt in ("vit_b", "vit_l", "vit_h")
}

_CHUNK = 1 << 20
#: A resumed transfer fetches this much again before the part's end, to check it against the part.
_RESUME_OVERLAP = 64 * 1024
#: A ``.part`` file left this long unmodified, and locked by no download, is a killed download's.
_STALE_PART_S = 60.0
#: The longest ``timeout`` taken (a day): sockets refuse much larger ones (OverflowError).
_MAX_TIMEOUT_S = 86400.0
_USER_AGENT = "realtime-sam (weights download; python urllib)"


# --------------------------------------------------------------------------- paths


def default_cache_dir(
    *, environ: Mapping[str, str] | None = None, platform: str | None = None
) -> Path:
    """The directory that holds downloaded weights.

    ``$REALTIME_SAM_CACHE`` if set; otherwise ``%LOCALAPPDATA%\\realtime-sam`` on
    Windows, ``~/Library/Caches/realtime-sam`` on macOS and
    ``$XDG_CACHE_HOME/realtime-sam`` (default ``~/.cache/realtime-sam``) elsewhere.
    ``environ`` and ``platform`` default to ``os.environ`` and ``sys.platform``.
    The directory is not created here.
    """
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    override = env.get(ENV_CACHE, "").strip()
    if override:
        return Path(override).expanduser()
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    if plat.startswith("win"):
        base = env.get("LOCALAPPDATA", "").strip()
        return (Path(base) if base else home / "AppData" / "Local") / "realtime-sam"
    if plat == "darwin":
        return home / "Library" / "Caches" / "realtime-sam"
    xdg = env.get("XDG_CACHE_HOME", "").strip()
    # The XDG spec says a relative value is invalid and must be ignored.
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "realtime-sam"
    return home / ".cache" / "realtime-sam"


def default_weights_path(model_type: str = "vit_t") -> tuple[Path, str]:
    """Where the weights are looked for when no path is given, and why.

    Returns ``(path, source)`` where ``source`` is ``"$REALTIME_SAM_WEIGHTS"`` or
    ``"cache"``. The path is absolute; a folder in ``$REALTIME_SAM_WEIGHTS`` means the
    official file in it, as for :func:`resolve_weights`. The file may not exist yet.
    """
    _check_model_type(model_type)
    env_path = os.environ.get(ENV_WEIGHTS, "").strip()
    if env_path:
        path = Path(env_path).expanduser().absolute()
        if path.is_dir():
            path = path / WEIGHTS_FILENAMES[model_type]
        return path, f"${ENV_WEIGHTS}"
    return (default_cache_dir() / WEIGHTS_FILENAMES[model_type]).absolute(), "cache"


def weights_urls() -> tuple[str, ...]:
    """The MobileSAM download URLs, in order.

    ``$REALTIME_SAM_WEIGHTS_URL`` (comma-separated) when set, else :data:`OFFICIAL_URLS`.
    """
    raw = os.environ.get(ENV_URLS, "")
    urls = tuple(u.strip() for u in raw.split(",") if u.strip())
    return urls or OFFICIAL_URLS


def _check_model_type(model_type: str) -> None:
    if model_type not in WEIGHTS_FILENAMES:
        raise CheckpointError(
            f"unknown model type {model_type!r}; choose one of {', '.join(WEIGHTS_FILENAMES)}"
        )


def _existing_file(path: Path, model_type: str, where: str, fix: str) -> Path:
    """``path`` itself, or the official file name inside it when it is a directory."""
    if path.is_dir():
        inner = path / WEIGHTS_FILENAMES[model_type]
        if inner.is_file():
            return inner
        raise CheckpointError(
            f"weights path {path} ({where}) is a directory without {inner.name} in it; {fix}"
        )
    if not path.exists():
        raise CheckpointNotFoundError(f"weights file not found: {path} ({where}); {fix}")
    if not path.is_file():  # a device or a pipe: it is there, so "not found" would mislead
        raise CheckpointError(f"weights path {path} ({where}) is not a file; {fix}")
    return path


def resolve_weights(
    weights: str | os.PathLike[str] | None,
    *,
    model_type: str = "vit_t",
    download: bool = True,
    progress: bool = True,
    use_env: bool = True,
) -> Path:
    """The checkpoint file to load for ``model_type``.

    Order: ``weights`` if given, else ``$REALTIME_SAM_WEIGHTS`` (unless ``use_env`` is false), else the cache
    file (``<cache>/mobile_sam.pt`` for ``vit_t``). Only the cache file is ever
    downloaded, only for ``vit_t`` and only when ``download`` is true; a given
    path that does not exist is an error naming the absolute path looked at.
    The file's contents are not checked here (loading does that).

    Raises:
        CheckpointError: no usable file and none may be downloaded.
        WeightsDownloadError: the download was attempted and failed.
    """
    _check_model_type(model_type)
    cache_path = default_cache_dir() / WEIGHTS_FILENAMES[model_type]
    if weights is not None and str(weights).strip():
        path = Path(weights).expanduser().absolute()
        return _existing_file(
            path,
            model_type,
            "given with --weights",
            f"check the path, or leave --weights out to use {cache_path}",
        )
    env_path = os.environ.get(ENV_WEIGHTS, "").strip() if use_env else ""
    if env_path:
        path = Path(env_path).expanduser().absolute()
        fix = f"fix or unset {ENV_WEIGHTS}"
        if model_type == "vit_t":
            fix += ", or run `realtime-sam weights download` to fetch it there"
        return _existing_file(path, model_type, f"from ${ENV_WEIGHTS}", fix)
    if cache_path.is_file():
        return cache_path
    if model_type != "vit_t":
        raise CheckpointError(
            f"no {checkpoint.MODEL_NAMES[model_type]} weights at {cache_path}: download "
            f"{OFFICIAL_SAM_URLS[model_type]} (Meta's segment-anything release) to that path, "
            f"or pass --weights PATH"
        )
    if not download:
        raise CheckpointError(
            f"MobileSAM weights not found at {cache_path} and downloading is off; "
            f"run `realtime-sam weights download` or pass --weights PATH"
        )
    return download_weights(cache_path, model_type=model_type, progress=progress)


#: What a damaged ``--weights`` file (or ``model.weights``) is told to do.
_OWN_FILE_ADVICE = "pass a complete checkpoint with --weights (`realtime-sam weights verify FILE` checks one)"


def _replace_advice(path: Path, model_type: str) -> str | None:
    """How to replace ``path`` when it is the file the app finds by itself (the cache's, or
    ``$REALTIME_SAM_WEIGHTS``'s); ``None`` for any other file (a user's own)."""
    default, source = default_weights_path(model_type)
    if Path(path).expanduser().absolute() != default:
        return None
    if model_type != "vit_t":
        return f"replace it: curl -L -o {default} {OFFICIAL_SAM_URLS[model_type]}"
    advice = "run `realtime-sam weights download` to replace it"
    if source == "cache":
        advice += " (or delete it: the next run downloads it again)"
    return advice


def damaged_weights_error(
    exc: CheckpointDamagedError,
    path: str | os.PathLike[str],
    model_type: str,
    *,
    own_file_advice: str | None = _OWN_FILE_ADVICE,
) -> CheckpointDamagedError:
    """``exc`` (``path`` cannot be read as a checkpoint) with what to do about it at the end.

    The file the app finds by itself (the cache's, ``$REALTIME_SAM_WEIGHTS``'s) is replaced by
    ``realtime-sam weights download`` (for MobileSAM); any other file is the user's own, and
    ``own_file_advice`` is said for it (by default: pass a complete one with ``--weights``;
    ``None``: nothing is added).
    """
    advice = _replace_advice(Path(path), model_type) or own_file_advice
    if advice is None:
        return exc
    # The advice replaces the generic "(download it again)" (a user's own file may not come from a download).
    return CheckpointDamagedError(f"{str(exc).replace(' (download it again)', '')}; {advice}")


def check_weights(weights: str | os.PathLike[str] | None, *, model_type: str = "vit_t") -> Path | None:
    """Raise now what loading the weights would, short of downloading: the file to load, or ``None``.

    For the app to call before it creates its outputs, which truncates an earlier run's
    files: a mistyped ``--weights``, a damaged or foreign checkpoint then leaves them as
    they were. The file (``weights``, else ``$REALTIME_SAM_WEIGHTS``, else the cache's) is
    checked as far as its keys and shapes
    (:func:`~realtime_sam.model.checkpoint.check_checkpoint_file`: milliseconds, the
    tensors are not read). ``None``: nothing named and no MobileSAM file in the cache yet,
    so loading will download one (and verify it before use).

    Raises:
        CheckpointError: the file is missing, damaged, or of another model.
    """
    named = (weights is not None and str(weights).strip()) or os.environ.get(ENV_WEIGHTS, "").strip()
    try:
        path = resolve_weights(weights, model_type=model_type, download=False)
    except CheckpointError:
        if named or model_type != "vit_t":
            raise
        return None
    try:
        checkpoint.check_checkpoint_file(path, model_type)
    except CheckpointDamagedError as exc:
        raise damaged_weights_error(exc, path, model_type) from exc
    return path


def locate_checkpoint(
    checkpoint: str | os.PathLike[str], *, model_type: str = "vit_t", progress: bool = True
) -> str | os.PathLike[str]:
    """``checkpoint`` as SAM's builders and ``annotate`` take it: a path, or the official file's name.

    The official file's bare name (``mobile_sam.pt`` for ``vit_t``, ``sam_vit_h_4b8939.pth``
    for ``vit_h``...) that is not a file in the current folder means the usual place,
    as the app looks for weights: :func:`resolve_weights` (``$REALTIME_SAM_WEIGHTS``, the
    cache, downloading ``mobile_sam.pt`` there if missing). Anything else is returned as
    given, a path for the loader to check.
    """
    text = str(checkpoint)
    if model_type in WEIGHTS_FILENAMES and text == WEIGHTS_FILENAMES[model_type] and not Path(text).exists():
        # $REALTIME_SAM_WEIGHTS is the app's model's file (MobileSAM unless told otherwise), not
        # what a caller asking for SAM's sam_vit_b_01ec64.pth by name means: for those, the cache only.
        return resolve_weights(None, model_type=model_type, progress=progress, use_env=model_type == "vit_t")
    return checkpoint


# --------------------------------------------------------------------------- download


class _TransferFailed(Exception):
    """One URL failed; ``reason`` is a short phrase, ``offline`` whether no server answered,
    ``proxy_env`` the variable naming the proxy that did not answer (else ``None``)."""

    def __init__(self, reason: str, *, offline: bool = False, proxy_env: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.offline = offline
        self.proxy_env = proxy_env


def _proxy_for(url: str) -> str | None:
    """The proxy urllib sends ``url`` through (from ``$HTTPS_PROXY``...), without its password; else ``None``."""
    parts = urllib.parse.urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    try:
        port = f":{p.port}" if p.port else ""
    except ValueError:
        port = ""
    return f"{p.scheme}://{p.hostname or ''}{port}"


class _WriteFailed(Exception):
    """Writing the temporary file failed: another mirror would not help."""


def _describe_connect_error(exc: BaseException) -> _TransferFailed:
    """Turn a failure to get a response into a reason, flagging 'nobody answered'."""
    if isinstance(exc, urllib.error.HTTPError):
        exc.close()
        return _TransferFailed(f"HTTP {exc.code} {exc.reason}".strip())
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, socket.gaierror):
        return _TransferFailed("host name not found", offline=True)
    if isinstance(reason, ConnectionRefusedError):
        return _TransferFailed("connection refused", offline=True)
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return _TransferFailed("timed out connecting", offline=True)
    if isinstance(reason, ssl.SSLError):
        return _TransferFailed(f"TLS error ({describe_error(reason)})")
    if isinstance(reason, OSError) and reason.errno in (
        errno.ENETUNREACH,
        errno.EHOSTUNREACH,
        errno.ENETDOWN,
    ):
        return _TransferFailed("network unreachable", offline=True)
    if isinstance(reason, http.client.HTTPException):
        return _TransferFailed(f"bad HTTP response ({type(reason).__name__})")
    return _TransferFailed(describe_error(reason))


def _check_timeout(timeout: float, name: str) -> None:
    """Refuse a ``timeout`` sockets cannot take; ``name`` is what the caller called it (``--timeout``, ``timeout``)."""
    if not (0 < timeout <= _MAX_TIMEOUT_S):  # also false for nan
        raise WeightsDownloadError(
            f"{name} must be a positive number of seconds, at most {_MAX_TIMEOUT_S:g}, got {timeout:g}"
        )


def _content_length(resp: http.client.HTTPResponse) -> int | None:
    value = resp.headers.get("Content-Length")
    try:
        n = int(value) if value is not None else None
    except ValueError:
        return None
    return n if n is not None and n >= 0 else None


def _open(url: str, *, timeout: float, headers: Mapping[str, str] | None = None) -> http.client.HTTPResponse:
    """The response to a GET of ``url``.

    Raises:
        _TransferFailed: the server could not be reached or answered with an error.
    """
    try:
        # Request parses the URL: a malformed one ("ftp//host/x", no scheme) fails here.
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT, **(headers or {})})
        # A new opener reads the proxy variables now, as _proxy_for does; urlopen's is built
        # once per process and would miss a $HTTPS_PROXY set after the first download.
        return urllib.request.build_opener().open(request, timeout=timeout)
    except ValueError as exc:  # unknown url type, malformed URL
        raise _TransferFailed(f"not a usable URL ({describe_error(exc)})") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        failed = _describe_connect_error(exc)
        proxy = _proxy_for(url) if failed.offline else None
        if proxy is not None:  # nobody answered: the proxy, not the server, nor the network as a whole
            scheme = urllib.parse.urlsplit(url).scheme.upper()
            failed = _TransferFailed(f"{failed.reason}, proxy {proxy}", proxy_env=f"{scheme}_PROXY")
        raise failed from exc


def _read(resp: http.client.HTTPResponse, n: int, received: int) -> bytes:
    """Up to ``n`` bytes of the body (``b""`` at its end); ``received`` is for the message."""
    try:
        return resp.read(n)
    except (TimeoutError, socket.timeout) as exc:
        raise _TransferFailed(f"timed out after {received} bytes") from exc
    except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
        raise _TransferFailed(f"transfer interrupted after {received} bytes ({describe_error(exc)})") from exc


def _start(
    url: str, out: BinaryIO, part: "_Part", *, timeout: float, progress: bool
) -> tuple[http.client.HTTPResponse, int, int | None]:
    """The response to stream into ``out`` (the open ``part`` file): ``(response, bytes already in the file, total length)``.

    A part left by an interrupted transfer of ``url`` (its record, see :class:`_Part`, names
    the length and a validator) is resumed: the request asks for the bytes from
    :data:`_RESUME_OVERLAP` before the part's end, ``If-Range`` the validator, and the
    overlap must equal the part's last bytes. A server that answers 200 (the file changed,
    or Range is not supported) gives the whole file in that answer; a ``Content-Range``
    that does not match, or an overlap that differs (another file, or a tail a power cut
    left unwritten), starts over with a plain request. Otherwise the file is emptied and the
    record written anew when the response names its length and a validator (``ETag``,
    else ``Last-Modified``), so that the next download can resume this one.
    """
    info = _read_part_info(part.info_path, url) if part.info_path is not None else None
    size = os.fstat(out.fileno()).st_size
    resp = None
    if info is not None and _RESUME_OVERLAP < size <= info.length:
        begin = size - _RESUME_OVERLAP
        try:
            resp = _open(url, timeout=timeout, headers={"Range": f"bytes={begin}-", "If-Range": info.validator})
        except _TransferFailed as exc:
            if exc.offline or exc.proxy_env:
                raise  # nobody answered: a plain request would wait as long again
            resp = None  # 416 and the like: the plain request below says what is wrong, if anything
        if resp is not None and resp.status == 206:
            if (resp.headers.get("Content-Range") or "").strip() == f"bytes {begin}-{info.length - 1}/{info.length}":
                out.seek(begin)
                tail = out.read(_RESUME_OVERLAP)
                overlap = b""
                while len(overlap) < _RESUME_OVERLAP:
                    chunk = _read(resp, _RESUME_OVERLAP - len(overlap), begin + len(overlap))
                    if not chunk:
                        break
                    overlap += chunk
                if overlap == tail:
                    if progress:
                        print(f"  resuming at {size / 1e6:.1f} of {info.length / 1e6:.1f} MB", file=sys.stderr, flush=True)
                    out.seek(size)
                    return resp, size, info.length
            resp.close()
            resp = None
    if resp is None:
        resp = _open(url, timeout=timeout)
    length = _content_length(resp)
    try:
        out.seek(0)
        out.truncate()
        if part.info_path is not None:
            _write_part_info(part.info_path, url, resp, length)
    except OSError as exc:
        resp.close()
        raise _WriteFailed(describe_error(exc)) from exc
    return resp, 0, length


def _fetch(url: str, out: BinaryIO, part: "_Part", *, label: str, progress: bool, timeout: float) -> int:
    """Stream ``url`` into ``out`` (the open ``part`` file), resuming an interrupted transfer
    where the server agrees (:func:`_start`); return the file's byte count.

    Raises:
        _TransferFailed: the server could not be reached, answered with an error,
            or the transfer stopped before ``Content-Length`` bytes arrived.
        _WriteFailed: ``out`` could not be written (disk full, ...).
    """
    resp, received, length = _start(url, out, part, timeout=timeout, progress=progress)
    bar = None
    with resp:
        if progress and length is not None:
            from tqdm import tqdm  # imported lazily: only a download needs it

            bar = tqdm(
                total=length,
                initial=received,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                leave=False,
            )
        try:
            while True:
                chunk = _read(resp, _CHUNK, received)
                if not chunk:
                    break
                try:
                    out.write(chunk)
                except OSError as exc:
                    raise _WriteFailed(describe_error(exc)) from exc
                received += len(chunk)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()
    # http.client returns b"" when the peer closes early instead of raising, so
    # a short body is only visible by counting.
    if length is not None and received != length:
        raise _TransferFailed(f"transfer interrupted: got {received} of {length} bytes")
    return received


def download_weights(
    dest: str | os.PathLike[str],
    *,
    urls: Sequence[str] | None = None,
    model_type: str = "vit_t",
    progress: bool = True,
    timeout: float = 30.0,
    sha256: str | None = None,
) -> Path:
    """Download the ``model_type`` checkpoint to ``dest``, verified, atomically.

    Each URL in ``urls`` is tried in order (default: :func:`weights_urls`, i.e.
    ``$REALTIME_SAM_WEIGHTS_URL`` or :data:`OFFICIAL_URLS`; only ``vit_t`` has
    default URLs). A URL is accepted only when the byte count matches
    ``Content-Length`` and the file passes
    :func:`realtime_sam.model.checkpoint.load_checkpoint`; then it is renamed onto
    ``dest`` (replacing any old file). Where ``sha256`` is given (hex), or the URLs are
    :data:`OFFICIAL_URLS` (then :data:`OFFICIAL_SHA256`'s), the file's SHA-256 must match it
    too; URLs of your own (``$REALTIME_SAM_WEIGHTS_URL``) may serve another checkpoint of
    the same layout (a fine-tuned one), so theirs is not checked. The temporary file lives next to
    ``dest``. A transfer cut short (the network, Ctrl-C, SIGTERM) keeps it where the
    server named the file's length and a validator (``ETag`` or ``Last-Modified``), and
    the next download of the same URL resumes it (:func:`_start`); any other failure
    removes it, as does success for the other URLs' parts. Those of earlier downloads
    that no URL given will resume are removed first (:func:`remove_stale_parts`). ``progress``
    draws a progress bar and status lines on stderr. ``timeout`` (seconds, more
    than 0 and at most a day) bounds connecting and each read.

    Returns ``dest`` as a :class:`Path`.

    Raises:
        WeightsDownloadError: every URL failed, or ``dest`` cannot be written;
            the one-line message names the URLs tried and the manual command.
    """
    _check_model_type(model_type)
    _check_timeout(timeout, "timeout")
    dest = Path(dest).expanduser().absolute()
    if urls is None:
        if model_type != "vit_t":
            raise WeightsDownloadError(
                f"{checkpoint.MODEL_NAMES[model_type]} weights are not downloaded automatically; "
                f"fetch {OFFICIAL_SAM_URLS[model_type]} by hand: curl -L -o {dest} "
                f"{OFFICIAL_SAM_URLS[model_type]}"
            )
        urls = weights_urls()
    if sha256 is None and tuple(urls) == tuple(OFFICIAL_URLS):
        sha256 = OFFICIAL_SHA256.get(model_type)
    if sha256 is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", sha256):
        raise ValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    urls = [u for u in urls if u]
    if not urls:
        raise WeightsDownloadError("no download URL given")
    if dest.is_dir():
        raise WeightsDownloadError(f"cannot download to {dest}: it is a directory; give a file path")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        # mkdir says "File exists" / "Not a directory" for a file in the way: name that file.
        blocker = next((p for p in (dest.parent, *dest.parent.parents) if p.exists() and not p.is_dir()), None)
        what = f"{blocker} is a file, not a folder" if blocker is not None else (
            f"cannot create {dest.parent} ({describe_error(exc)})"
        )
        raise WeightsDownloadError(
            f"{what}; set {ENV_CACHE} to a writable folder or pass another destination"
        ) from exc

    remove_stale_parts(dest, keep_urls=urls)

    name = checkpoint.MODEL_NAMES[model_type]
    failures: list[tuple[str, _TransferFailed]] = []
    kept: list[_Part] = []  # interrupted transfers of this call, for the next download to resume
    for i, url in enumerate(urls):
        if progress:
            print(f"downloading {name} weights from {url}", file=sys.stderr, flush=True)
        try:
            fd, part = _open_part(dest, url)
        except OSError as exc:
            raise WeightsDownloadError(
                f"cannot write to {dest.parent} ({describe_error(exc)}); set {ENV_CACHE} to a writable "
                f"directory or pass another destination"
            ) from exc
        keep = checking = False
        try:
            try:
                with os.fdopen(fd, "wb" if part.info_path is None else "r+b") as out:
                    _fetch(url, out, part, label=dest.name, progress=progress, timeout=timeout)
            except _WriteFailed as exc:
                raise WeightsDownloadError(
                    f"cannot write the download to {part.path.parent} ({exc}); free some space or "
                    f"set {ENV_CACHE} to another directory"
                ) from exc
            except OSError as exc:  # closing (flushing) the temp file failed
                raise WeightsDownloadError(
                    f"cannot write the download to {part.path.parent} ({describe_error(exc)}); free some "
                    f"space or set {ENV_CACHE} to another directory"
                ) from exc
            checking = True
            if sha256 is not None:
                got = _file_sha256(part.path)
                if got != sha256.lower():
                    raise _TransferFailed(
                        f"the file is not the published {name} checkpoint (SHA-256 {got[:16]}..., "
                        f"expected {sha256.lower()[:16]}...)"
                    )
            try:
                checkpoint.load_checkpoint(part.path, model_type)
            except CheckpointError as exc:
                raise _TransferFailed(
                    f"the file is not a valid {name} checkpoint ({_checkpoint_reason(exc, part.path)})"
                ) from exc
            os.replace(part.path, dest)
        except _TransferFailed as exc:
            keep = not checking and part.resumable()
            failures.append((url, exc))
            if progress and i + 1 < len(urls):
                print(f"  failed: {exc.reason}; trying the next mirror", file=sys.stderr, flush=True)
            continue
        except KeyboardInterrupt as exc:
            keep = part.resumable()  # Ctrl-C, SIGTERM: the next download goes on from here
            # What whoever reports the interrupt says (the app's "error: terminated by SIGTERM; ...").
            exc.kept_note = kept_note(sum(_size(p.path) for p in kept) + (_size(part.path) if keep else 0))  # type: ignore[attr-defined]
            raise
        finally:
            # A half-written file survives only as a resumable part (named for its URL, with the
            # record of the response it came from); any other is removed, Ctrl-C included.
            if keep:
                kept.append(part)
            else:
                part.discard()
        for other in kept:  # the weights are in place: an earlier mirror's part is of no more use
            other.discard()
        if progress:
            print(f"saved verified weights to {dest}", file=sys.stderr, flush=True)
        return dest

    tried = "; ".join(f"{u} ({f.reason})" for u, f in failures)
    proxies = sorted({f.proxy_env for _, f in failures if f.proxy_env})
    if all(f.offline for _, f in failures):
        offline = " This machine looks offline (no server could be reached)."
    elif proxies:
        offline = f" The proxy did not answer: check ${' / $'.join(proxies)}."
    else:
        offline = ""
    saved = kept_note(sum(_size(p.path) for p in kept)) or ", nothing was saved"
    raise WeightsDownloadError(
        f"could not download the {name} weights{saved}. Tried: {tried}.{offline} "
        f"Download it by hand: curl -L -o {dest} {urls[0]}"
    )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def kept_note(received: int) -> str:
    """``"; the 35.0 MB received are kept, and the next download resumes from there"``; ``""`` for 0 bytes.

    A download interrupted by Ctrl-C or SIGTERM sets it as ``kept_note`` on the
    :class:`KeyboardInterrupt` it re-raises, for the line that reports the interrupt.
    """
    return f"; the {received / 1e6:.1f} MB received are kept, and the next download resumes from there" if received else ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@dataclass(frozen=True)
class _PartInfo:
    """What a resumable part's record (``<part>.json``) says about the response its bytes came from."""

    url: str
    length: int
    validator: str  #: the response's strong ``ETag``, else its ``Last-Modified``, for ``If-Range``


@dataclass(frozen=True)
class _Part:
    """A download's temporary file beside its destination.

    ``info_path`` is the record that makes it resumable (``None``: a one-off part, removed
    on any failure). A resumable part is named for its URL (``.<name>.<16 hex digits of the
    URL's SHA-256>.part``), so a download from another URL never continues it.
    """

    path: Path
    info_path: Path | None

    def resumable(self) -> bool:
        """Whether the next download could go on from this part (it has a record, and more bytes than the overlap)."""
        info = _read_part_info(self.info_path) if self.info_path is not None else None
        return info is not None and _RESUME_OVERLAP < _size(self.path) <= info.length

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.info_path is not None:
            self.info_path.unlink(missing_ok=True)


def _url_part_path(dest: Path, url: str) -> Path:
    return dest.parent / f".{dest.name}.{hashlib.sha256(url.encode()).hexdigest()[:16]}.part"


def _info_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _open_part(dest: Path, url: str) -> tuple[int, _Part]:
    """The part file for downloading ``url`` to ``dest``, open for reading and writing and locked: ``(fd, part)``.

    The resumable part of ``url`` (kept by an earlier, interrupted download), or a new one;
    a one-off part (:func:`create_part_file`) where another download holds that one's lock
    or where there are no locks (Windows: nothing would tell a live download's part from a
    dead one's).
    """
    if fcntl is None:
        fd, path = create_part_file(dest)
        return fd, _Part(path, None)
    path = _url_part_path(dest, url)
    for _ in range(3):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0), 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise  # an unexpected failure: create_part_file would meet it too
            break  # the same download is running elsewhere: this one starts afresh, below
        # Deleted between the open and the lock (`weights clean`, or another download's clean-up of
        # stale parts, deletes a part holding its lock): the file open here is no longer the part,
        # and a download written to it would be lost at the end. Open the name again.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd, _Part(path, _info_path(path))
        except FileNotFoundError:
            pass
        os.close(fd)
    fd, other = create_part_file(dest)
    return fd, _Part(other, None)


def _read_part_info(info_path: Path, url: str | None = None) -> _PartInfo | None:
    """The record at ``info_path`` (of ``url``'s response, when given); ``None`` if absent, unreadable or for another URL."""
    try:
        raw = json.loads(info_path.read_text(encoding="utf-8"))
        info = _PartInfo(url=raw["url"], length=raw["length"], validator=raw["validator"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(info.url, str) and isinstance(info.validator, str) and info.validator
            and isinstance(info.length, int) and info.length > 0):
        return None
    return info if url is None or info.url == url else None


def _write_part_info(info_path: Path, url: str, resp: http.client.HTTPResponse, length: int | None) -> None:
    """Record what a fresh response says, or remove the record where it gives no length or validator (no resume then)."""
    etag = (resp.headers.get("ETag") or "").strip()
    # A weak ETag (W/"...") may not be sent in If-Range (RFC 9110 13.1.5).
    validator = etag if etag and not etag.startswith("W/") else (resp.headers.get("Last-Modified") or "").strip()
    if length is None or length <= 0 or not validator:
        info_path.unlink(missing_ok=True)
        return
    info_path.write_text(json.dumps({"url": url, "length": length, "validator": validator}), encoding="utf-8")


def partial_download_bytes(dest: str | os.PathLike[str]) -> int:
    """How many bytes of interrupted downloads to ``dest`` are kept for the next download to resume."""
    dest = Path(dest).expanduser().absolute()
    parts = dest.parent.glob(f".{glob.escape(dest.name)}.*.part")
    return sum(_size(p) for p in parts if _Part(p, _info_path(p)).resumable())


def create_part_file(dest: Path) -> tuple[int, Path]:
    """A new, empty ``.<name>.<random>.part`` file beside ``dest``, opened for writing: ``(fd, path)``.

    Created with mode 0666 less the umask, as ``curl -o`` or ``torch.save`` would create
    ``dest`` (``tempfile.mkstemp`` gives 0600, which the rename would carry to ``dest``).
    The file is locked (``flock``, where there is one) while it is open, which tells
    :func:`remove_stale_parts` in another process that this download is alive. Also how
    the encoder export of :mod:`realtime_sam.model.runtime.export` writes its file.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        path = dest.parent / f".{dest.name}.{secrets.token_hex(4)}.part"
        try:
            fd = os.open(path, flags, 0o666)
        except FileExistsError:
            continue
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pass  # a filesystem without locks: the file's age alone protects it
        return fd, path
    raise FileExistsError(errno.EEXIST, f"no free temporary file name beside {dest.name}")


def remove_stale_parts(dest: Path, *, keep_urls: Sequence[str] = ()) -> None:
    """Delete the ``.part`` files of earlier downloads to ``dest`` that no download will use.

    A download killed outright (SIGKILL, SIGHUP, a power cut) leaves its temporary file
    behind, and one interrupted otherwise keeps it to be resumed (:func:`download_weights`).
    The resumable part of a URL in ``keep_urls`` (the download about to run continues it)
    is kept; any other is removed, with its record, when it has not been written for
    :data:`_STALE_PART_S` and no process holds its lock (a download still running
    elsewhere does); on Windows, where a file open elsewhere cannot be deleted, the
    failed delete is the test. Nothing here is an error.
    """
    keep = {_url_part_path(dest, url).name for url in keep_urls}
    now = time.time()
    for part in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        if part.name in keep:
            continue
        try:
            if now - part.stat().st_mtime < _STALE_PART_S:
                continue
            _remove_unless_held(part)
        except OSError:
            continue
    for record in dest.parent.glob(f".{glob.escape(dest.name)}.*.part.json"):
        if not record.with_name(record.name[: -len(".json")]).exists():
            record.unlink(missing_ok=True)  # its part is gone (removed by hand)


def _held(part: Path) -> bool:
    """Whether a running download (or export) holds ``part``'s lock; ``False`` without locks (Windows) or when it cannot be opened."""
    if fcntl is None:
        return False
    try:
        with open(part, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
    except OSError:
        return False
    return False


def _remove_unless_held(part: Path) -> bool:
    """Delete ``part`` and its record unless a running download (or export) holds its lock; whether it was.

    Without locks (Windows) the delete itself is the test: a file open elsewhere cannot be deleted there.

    Raises:
        OSError: ``part`` could not be opened or deleted.
    """
    if fcntl is None:
        part.unlink()
    else:
        with open(part, "rb") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False  # held by a live download, or locks unsupported: leave it
            part.unlink()
            # (Under the lock still: a download that opens the name again from now on makes a new
            # part, and may write a new record, which must not be the one deleted here.)
            _info_path(part).unlink(missing_ok=True)
            return True
    _info_path(part).unlink(missing_ok=True)
    return True


def _checkpoint_reason(exc: CheckpointError, tmp: Path) -> str:
    """The checker's message without the temporary file's name, which means nothing to the user."""
    text = str(exc).replace(f"cannot read checkpoint {tmp}: ", "").replace(str(tmp), "it")
    # "use --model-type ..." advice is for a user's own file, not for a download.
    return text.split("; use --model-type", 1)[0]


# --------------------------------------------------------------------------- verify


@dataclass(frozen=True)
class VerifyReport:
    """What :func:`verify_weights` found in a good checkpoint.

    Attributes:
        path: the absolute path of the file.
        model_type: the model the file matches (``"vit_t"``, ``"vit_b"``, ...).
        num_tensors: number of tensors in the state dict.
        num_parameters: total number of elements over all tensors.
        sha256: hex SHA-256 of the file bytes.
        size_bytes: file size in bytes.
    """

    path: Path
    model_type: str
    num_tensors: int
    num_parameters: int
    sha256: str
    size_bytes: int

    @property
    def published(self) -> bool | None:
        """Whether the file is the published checkpoint (:data:`OFFICIAL_SHA256`); ``None``
        where no published digest is known here (SAM's ViT-B/L/H)."""
        expected = OFFICIAL_SHA256.get(self.model_type)
        return None if expected is None else self.sha256 == expected


def verify_weights(path: str | os.PathLike[str], model_type: str | None = "vit_t") -> VerifyReport:
    """Check that ``path`` is a complete checkpoint of ``model_type`` and summarise it.

    ``model_type=None`` accepts whichever known model the file matches. A folder
    means the official file of ``model_type`` in it (with ``None``, the first
    official file name found there), as ``--weights`` takes it.

    Raises:
        CheckpointError: the file is missing, unreadable, or not an exact match.
    """
    p = Path(path).expanduser().absolute()
    if p.is_dir():
        if model_type is not None:
            _check_model_type(model_type)
        names = [WEIGHTS_FILENAMES[model_type]] if model_type is not None else list(WEIGHTS_FILENAMES.values())
        found = [p / n for n in names if (p / n).is_file()]
        if not found:
            raise CheckpointError(f"{p} is a folder without {names[0]} in it; pass the checkpoint file itself")
        p = found[0]
    if model_type is None:
        state = checkpoint.read_state_dict(p)
        model_type = checkpoint.identify_model_type(state) or "vit_t"
        checkpoint.check_against_manifest(state, model_type, str(p))
    else:
        _check_model_type(model_type)
        state = checkpoint.load_checkpoint(p, model_type)
    return VerifyReport(
        path=p,
        model_type=model_type,
        num_tensors=len(state),
        num_parameters=sum(int(t.numel()) for t in state.values()),
        sha256=_file_sha256(p),
        size_bytes=p.stat().st_size,
    )


# --------------------------------------------------------------------------- CLI


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realtime-sam weights",
        description="Find, download and check the model weights.",
        epilog=(
            f"Lookup order: --weights PATH, ${ENV_WEIGHTS}, then the cache "
            f"(${ENV_CACHE} or the per-user cache directory). "
            f"${ENV_URLS} (comma-separated) replaces the download URLs."
        ),
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p_path = sub.add_parser("path", help="print where the weights are (or would be downloaded to)")
    p_path.add_argument(
        "--model-type", choices=list(WEIGHTS_FILENAMES), default="vit_t", help="default: vit_t"
    )

    p_dl = sub.add_parser("download", help="download and verify the MobileSAM weights")
    p_dl.add_argument(
        "--dest",
        type=Path,
        default=None,
        help=f"file or existing directory to save to (default: ${ENV_WEIGHTS} or the cache)",
    )
    p_dl.add_argument("--force", action="store_true", help="download even if a valid file is already there")
    p_dl.add_argument("--quiet", action="store_true", help="no progress output")
    p_dl.add_argument("--timeout", type=float, default=30.0, help="seconds per connect/read, at most 86400 (default: 30)")

    p_clean = sub.add_parser(
        "clean", help="remove encoder exports and partial downloads from the cache (never the weights)"
    )
    p_clean.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")

    p_verify = sub.add_parser("verify", help="check that a file is a complete checkpoint")
    p_verify.add_argument(
        "file", type=Path, nargs="?", default=None, help="default: where `path` points"
    )
    p_verify.add_argument(
        "--model-type",
        choices=["auto", *WEIGHTS_FILENAMES],
        default="auto",
        help="model the file must match (default: auto, any known model)",
    )
    return parser


def _cmd_path(args: argparse.Namespace) -> int:
    path, source = default_weights_path(args.model_type)
    print(path)
    if path.is_file():
        size = f"{path.stat().st_size / 1e6:.1f} MB, from {source}"
        try:
            # Keys and shapes only (the tensors are memory-mapped, not read): milliseconds.
            checkpoint.check_checkpoint_file(path, args.model_type)
        except CheckpointDamagedError as exc:
            print(f"damaged ({size}): {damaged_weights_error(exc, path, args.model_type, own_file_advice=None)}",
                  file=sys.stderr)
        except CheckpointError as exc:
            print(f"present but not usable ({size}): {exc}", file=sys.stderr)
        else:
            print(f"present ({size})", file=sys.stderr)
    elif args.model_type == "vit_t":
        print("not there yet; `realtime-sam weights download` fetches it", file=sys.stderr)
    else:
        print(f"not there yet; download it from {OFFICIAL_SAM_URLS[args.model_type]}", file=sys.stderr)
    return 0


def _download_dest(args: argparse.Namespace) -> Path:
    dest = args.dest.expanduser() if args.dest is not None else default_weights_path("vit_t")[0]
    if dest.is_dir():
        dest = dest / WEIGHTS_FILENAMES["vit_t"]
    return dest.absolute()


def _cmd_download(args: argparse.Namespace) -> int:
    _check_timeout(args.timeout, "--timeout")
    dest = _download_dest(args)
    if dest.is_file() and not args.force:
        try:
            checkpoint.load_checkpoint(dest, "vit_t")
        except CheckpointError as exc:
            print(f"replacing {dest}: {exc}", file=sys.stderr)
        else:
            print(dest)
            print("already present and valid (use --force to download again)", file=sys.stderr)
            return 0
    download_weights(dest, progress=not args.quiet, timeout=args.timeout)
    print(dest)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    model_type = None if args.model_type == "auto" else args.model_type
    path = args.file if args.file is not None else default_weights_path(model_type or "vit_t")[0]
    try:
        report = verify_weights(path, model_type)
    except CheckpointNotFoundError:
        if args.file is not None:
            raise
        # Nothing at the default place yet: say how to put the file there, not only that it is missing.
        fetch = "run `realtime-sam weights download`" if (model_type or "vit_t") == "vit_t" else "put the file there"
        raise CheckpointNotFoundError(f"no weights at {path} yet; {fetch}, or give a file: realtime-sam weights verify FILE") from None
    except CheckpointDamagedError as exc:
        # The cache's file (or $REALTIME_SAM_WEIGHTS's) says how to replace it; a file given is the user's.
        raise damaged_weights_error(exc, path, model_type or "vit_t", own_file_advice=None) from exc
    print(f"ok: {report.path}")
    name = checkpoint.MODEL_NAMES[report.model_type]
    print(f"model:      {name}" + ("" if f"({report.model_type}," in name else f" ({report.model_type})"))
    print(f"tensors:    {report.num_tensors}")
    print(f"parameters: {report.num_parameters:,}")
    print(f"size:       {report.size_bytes:,} bytes")
    print(f"sha256:     {report.sha256}")
    if report.published is not None:
        print("published:  " + (
            "yes (the official MobileSAM weights)" if report.published
            else "no (a checkpoint of the same layout, not the official file: fine-tuned, or random as in tests)"
        ))
    return 0


def _clean_folders() -> tuple[list[Path], list[Path], list[str]]:
    """``(weights folders, export folders, weights file names)`` that ``weights clean`` looks in and for, each once.

    The names are the official files' and the one ``$REALTIME_SAM_WEIGHTS`` names (a download
    without ``--dest`` writes there, and keeps its partial file as ``.<that name>.<hash>.part``).
    """
    named = default_weights_path("vit_t")[0]
    weights_dirs = list(dict.fromkeys([named.parent, default_cache_dir().absolute()]))
    export_dirs = [d / ".realtime_sam_cache" for d in weights_dirs] + [default_cache_dir().absolute() / "encoders"]
    names = list(dict.fromkeys([*WEIGHTS_FILENAMES.values(), named.name]))
    return weights_dirs, list(dict.fromkeys(export_dirs)), names


def _cmd_clean(args: argparse.Namespace) -> int:
    from realtime_sam.model.runtime.export import is_encoder_export  # imports torch: only this command needs it

    weights_dirs, export_dirs, names = _clean_folders()
    found: list[Path] = []
    for folder in weights_dirs:
        for name in names:
            found += sorted(folder.glob(f".{glob.escape(name)}.*.part"))
    for folder in export_dirs:
        if folder.is_dir():
            # An export, or the temporary file of one killed part-way (.<export name>.<random>.part).
            found += sorted(p for p in folder.iterdir() if is_encoder_export(p) or (
                p.name.startswith(".") and p.name.endswith(".part") and is_encoder_export(p.name[1:].rsplit(".", 2)[0])
            ))
    freed = 0
    for path in found:
        size = _size(path) + _size(_info_path(path))
        if args.dry_run:
            if path.suffix == ".part" and _held(path):
                print(f"in use, kept  {path}", file=sys.stderr)  # as the real run would say
                continue
            print(f"would remove {size / 1e6:6.1f} MB  {path}")
            freed += size
            continue
        try:
            if path.suffix == ".part" and not _remove_unless_held(path):
                print(f"in use, kept  {path}", file=sys.stderr)
                continue
            path.unlink(missing_ok=True)
        except OSError as exc:
            print(f"cannot remove {path} ({describe_error(exc)})", file=sys.stderr)
            continue
        print(f"removed {size / 1e6:6.1f} MB  {path}")
        freed += size
    where = ", ".join(str(d) for d in (*weights_dirs, *export_dirs))
    if not found:
        print(f"nothing to clean in {where}", file=sys.stderr)
    else:
        print(f"{'would free' if args.dry_run else 'freed'} {freed / 1e6:.1f} MB", file=sys.stderr)
    return 0


def weights_main(argv: Sequence[str]) -> int:
    """Run ``realtime-sam weights <path|download|verify|clean> ...``; return the exit status.

    0 on success, 2 on a usage error or a :class:`RealtimeSamError` (printed as
    ``error: <message>`` on stderr), 130 on Ctrl-C, 143 on SIGTERM.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help or a usage error; argparse already printed it
        return exc.code if isinstance(exc.code, int) else 2
    handler = {"path": _cmd_path, "download": _cmd_download, "verify": _cmd_verify, "clean": _cmd_clean}[args.command]
    try:
        # SIGTERM (`timeout`, `docker stop`) unwinds as Ctrl-C does: the default action ended the
        # process at once, with -15 and its partial download left behind.
        with RaiseOnTerm():
            return handler(args)
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # Only a download writes anything: it keeps what it received where it can resume it, else nothing.
        kept = ""
        if args.command == "download":
            kept = kept_note(partial_download_bytes(_download_dest(args))) or "; no partial file was kept"
        if isinstance(exc, Terminated):
            print(f"error: terminated by SIGTERM{kept}", file=sys.stderr)
            return EXIT_SIGTERM
        print(f"error: interrupted{kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(weights_main(sys.argv[1:]))
