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
file that a later run would trust.

This module is also the ``realtime-sam weights`` sub-command
(:func:`weights_main`), runnable as ``python -m realtime_sam.model.weights``.
"""

from __future__ import annotations

import argparse
import errno
import glob
import hashlib
import http.client
import os
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
    "damaged_weights_error",
    "locate_checkpoint",
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

#: Meta's segment-anything release files; only named in messages, never auto-downloaded.
OFFICIAL_SAM_URLS: Mapping[str, str] = {
    mt: f"https://dl.fbaipublicfiles.com/segment_anything/{WEIGHTS_FILENAMES[mt]}"
    for mt in ("vit_b", "vit_l", "vit_h")
}

_CHUNK = 1 << 20
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
    if not path.is_file():
        raise CheckpointNotFoundError(f"weights file not found: {path} ({where}); {fix}")
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


def _fetch(url: str, out: BinaryIO, *, label: str, progress: bool, timeout: float) -> int:
    """Stream ``url`` into ``out``; return the byte count.

    Raises:
        _TransferFailed: the server could not be reached, answered with an error,
            or the transfer stopped before ``Content-Length`` bytes arrived.
        _WriteFailed: ``out`` could not be written (disk full, ...).
    """
    try:
        # Request parses the URL: a malformed one ("ftp//host/x", no scheme) fails here.
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        # A new opener reads the proxy variables now, as _proxy_for does; urlopen's is built
        # once per process and would miss a $HTTPS_PROXY set after the first download.
        resp = urllib.request.build_opener().open(request, timeout=timeout)
    except ValueError as exc:  # unknown url type, malformed URL
        raise _TransferFailed(f"not a usable URL ({describe_error(exc)})") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        failed = _describe_connect_error(exc)
        proxy = _proxy_for(url) if failed.offline else None
        if proxy is not None:  # nobody answered: the proxy, not the server, nor the network as a whole
            scheme = urllib.parse.urlsplit(url).scheme.upper()
            failed = _TransferFailed(f"{failed.reason}, proxy {proxy}", proxy_env=f"{scheme}_PROXY")
        raise failed from exc

    received = 0
    bar = None
    with resp:
        length = _content_length(resp)
        if progress and length is not None:
            from tqdm import tqdm  # imported lazily: only a download needs it

            bar = tqdm(
                total=length,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                leave=False,
            )
        try:
            while True:
                try:
                    chunk = resp.read(_CHUNK)
                except (TimeoutError, socket.timeout) as exc:
                    raise _TransferFailed(f"timed out after {received} bytes") from exc
                except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
                    raise _TransferFailed(
                        f"transfer interrupted after {received} bytes ({describe_error(exc)})"
                    ) from exc
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
) -> Path:
    """Download the ``model_type`` checkpoint to ``dest``, verified, atomically.

    Each URL in ``urls`` is tried in order (default: :func:`weights_urls`, i.e.
    ``$REALTIME_SAM_WEIGHTS_URL`` or :data:`OFFICIAL_URLS`; only ``vit_t`` has
    default URLs). A URL is accepted only when the byte count matches
    ``Content-Length`` and the file passes
    :func:`realtime_sam.model.checkpoint.load_checkpoint`; then it is renamed onto
    ``dest`` (replacing any old file). The temporary file lives next to
    ``dest`` and is removed on every failure, Ctrl-C included; those of earlier
    downloads that were killed outright are removed first (:func:`remove_stale_parts`). ``progress``
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

    remove_stale_parts(dest)

    name = checkpoint.MODEL_NAMES[model_type]
    failures: list[tuple[str, _TransferFailed]] = []
    for i, url in enumerate(urls):
        if progress:
            print(f"downloading {name} weights from {url}", file=sys.stderr, flush=True)
        try:
            fd, tmp = create_part_file(dest)
        except OSError as exc:
            raise WeightsDownloadError(
                f"cannot write to {dest.parent} ({describe_error(exc)}); set {ENV_CACHE} to a writable "
                f"directory or pass another destination"
            ) from exc
        try:
            try:
                with os.fdopen(fd, "wb") as out:
                    _fetch(url, out, label=dest.name, progress=progress, timeout=timeout)
            except _WriteFailed as exc:
                raise WeightsDownloadError(
                    f"cannot write the download to {tmp.parent} ({exc}); free some space or "
                    f"set {ENV_CACHE} to another directory"
                ) from exc
            except OSError as exc:  # closing (flushing) the temp file failed
                raise WeightsDownloadError(
                    f"cannot write the download to {tmp.parent} ({describe_error(exc)}); free some "
                    f"space or set {ENV_CACHE} to another directory"
                ) from exc
            try:
                checkpoint.load_checkpoint(tmp, model_type)
            except CheckpointError as exc:
                raise _TransferFailed(
                    f"the file is not a valid {name} checkpoint ({_checkpoint_reason(exc, tmp)})"
                ) from exc
            os.replace(tmp, dest)
        except _TransferFailed as exc:
            failures.append((url, exc))
            if progress and i + 1 < len(urls):
                print(f"  failed: {exc.reason}; trying the next mirror", file=sys.stderr, flush=True)
            continue
        finally:
            # Also reached on KeyboardInterrupt: a half-written file must not survive.
            tmp.unlink(missing_ok=True)
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
    raise WeightsDownloadError(
        f"could not download the {name} weights, nothing was saved. Tried: {tried}.{offline} "
        f"Download it by hand: curl -L -o {dest} {urls[0]}"
    )


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


def remove_stale_parts(dest: Path) -> None:
    """Delete the ``.part`` files of earlier downloads to ``dest`` that were killed before cleaning up.

    A download killed outright (SIGKILL, SIGTERM or SIGHUP, a power cut) leaves its
    temporary file behind. One is removed when it has not been written for
    :data:`_STALE_PART_S` and no process holds its lock (a download still running
    elsewhere does); on Windows, where a file open elsewhere cannot be deleted, the
    failed delete is the test. Nothing here is an error.
    """
    now = time.time()
    for part in dest.parent.glob(f".{glob.escape(dest.name)}.*.part"):
        try:
            if now - part.stat().st_mtime < _STALE_PART_S:
                continue
            if fcntl is None:
                part.unlink()
                continue
            with open(part, "rb") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # held by a live download, or locks unsupported: leave it
                part.unlink()
        except OSError:
            continue


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
    digest = hashlib.sha256()
    with p.open("rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return VerifyReport(
        path=p,
        model_type=model_type,
        num_tensors=len(state),
        num_parameters=sum(int(t.numel()) for t in state.values()),
        sha256=digest.hexdigest(),
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


def _cmd_download(args: argparse.Namespace) -> int:
    _check_timeout(args.timeout, "--timeout")
    dest = args.dest.expanduser() if args.dest is not None else default_weights_path("vit_t")[0]
    if dest.is_dir():
        dest = dest / WEIGHTS_FILENAMES["vit_t"]
    dest = dest.absolute()
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
    except CheckpointDamagedError as exc:
        # The cache's file (or $REALTIME_SAM_WEIGHTS's) says how to replace it; a file given is the user's.
        raise damaged_weights_error(exc, path, model_type or "vit_t", own_file_advice=None) from exc
    print(f"ok: {report.path}")
    print(f"model:      {checkpoint.MODEL_NAMES[report.model_type]} ({report.model_type})")
    print(f"tensors:    {report.num_tensors}")
    print(f"parameters: {report.num_parameters:,}")
    print(f"size:       {report.size_bytes:,} bytes")
    print(f"sha256:     {report.sha256}")
    return 0


def weights_main(argv: Sequence[str]) -> int:
    """Run ``realtime-sam weights <path|download|verify> ...``; return the exit status.

    0 on success, 2 on a usage error or a :class:`RealtimeSamError` (printed as
    ``error: <message>`` on stderr), 130 on Ctrl-C, 143 on SIGTERM.
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:  # --help or a usage error; argparse already printed it
        return exc.code if isinstance(exc.code, int) else 2
    handler = {"path": _cmd_path, "download": _cmd_download, "verify": _cmd_verify}[args.command]
    try:
        # SIGTERM (`timeout`, `docker stop`) unwinds as Ctrl-C does: the default action ended the
        # process at once, with -15 and its partial download left behind.
        with RaiseOnTerm():
            return handler(args)
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # Only a download writes anything (and removes its partial file when interrupted).
        kept = "; no partial file was kept" if args.command == "download" else ""
        if isinstance(exc, Terminated):
            print(f"error: terminated by SIGTERM{kept}", file=sys.stderr)
            return EXIT_SIGTERM
        print(f"error: interrupted{kept}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(weights_main(sys.argv[1:]))
