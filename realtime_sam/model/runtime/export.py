"""The image encoder on ONNX Runtime or OpenVINO (CPU), exported once and cached.

Both runtimes are optional: they are imported only when their backend is
chosen, and a missing one is a :class:`ConfigError` that names the pip extra.

The encoder is exported from the plain PyTorch model to ONNX once per
weights file and kept next to it (``<weights dir>/.realtime_sam_cache/``, or
``encoders/`` in the weights cache when that is not writable, or a temporary
folder for one run when neither is), under a name that holds a hash of the
weights, the model type and :data:`EXPORT_VERSION`, so a changed checkpoint or
exporter never reuses a stale file. Start-up after the first run only loads
the file (about a second). The file is written to a temporary name and
renamed, so an interrupted export leaves no partial file under the cached
name; a cached file the runtime cannot load is exported again. A new export
removes the ones it supersedes (:func:`remove_superseded_exports`): the same
weights' by another :data:`EXPORT_VERSION`, and beside the weights, those of
what the weights file held before it was replaced.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from realtime_sam.errors import ConfigError, describe_error

__all__ = [
    "EXPORT_VERSION",
    "OnnxRuntimeEncoder",
    "OpenVinoEncoder",
    "default_cache_dir",
    "encoder_onnx_path",
    "ensure_encoder_onnx",
    "is_encoder_export",
    "is_temporary_export",
    "load_exported_encoder",
    "remove_superseded_exports",
    "weights_digest",
]

_log = logging.getLogger(__name__)

EXPORT_VERSION = 1
"""Bump when the exported graph changes, so cached files are rebuilt."""

_EXTRA = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def require_package(module: str) -> object:
    """Import ``module`` (``onnxruntime`` or ``openvino``), or raise a one-line :class:`ConfigError` naming the pip extra."""
    try:
        return __import__(module)
    except ImportError as exc:
        raise ConfigError(
            f"backend '{module}' needs the {module} package: pip install 'realtime-sam[{_EXTRA[module]}]' "
            f"(or choose backend 'torch'); import failed: {exc}"
        ) from None


def weights_digest(path: str | os.PathLike) -> str:
    """First 16 hex digits of the SHA-256 of a weights file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def default_cache_dir(weights: str | os.PathLike | None) -> Path:
    """``<weights dir>/.realtime_sam_cache`` if writable, else ``encoders`` in the weights cache.

    A weights folder whose mode lets no one write is left alone even by root (:func:`_writable`).

    The weights cache is :func:`realtime_sam.model.weights.default_cache_dir`
    (``$REALTIME_SAM_CACHE``, else ``~/.cache/realtime-sam`` on Linux).
    """
    if weights is not None:
        beside = _beside(weights)
        try:
            if _writable(beside if beside.is_dir() else beside.parent):
                beside.mkdir(exist_ok=True)
                return beside
        except OSError:
            pass
    from realtime_sam.model.weights import default_cache_dir as weights_cache_dir

    return weights_cache_dir() / "encoders"


def _writable(folder: Path) -> bool:
    """Whether to write in ``folder``: the OS lets us, and its mode gives someone write access.

    The mode matters to root, whom the OS lets write anywhere: a folder made read-only
    for everyone (a shared, read-only copy of the weights) is not written into.
    """
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


#: ``<weights file name>-<model type>-<16 hex digits of the weights' SHA-256>-encoder-v<EXPORT_VERSION>.onnx``
_EXPORT_NAME = re.compile(r"(?P<stem>.+)-(?P<model_type>vit_[a-z])-(?P<digest>[0-9a-f]{16})-encoder-v(?P<version>\d+)\.onnx")


def remove_superseded_exports(path: Path, *, beside_weights: bool) -> list[Path]:
    """Delete the exports in ``path``'s folder that ``path`` (a fresh export) makes useless; return them.

    Those of the same weights (same name, model type and hash) by another
    :data:`EXPORT_VERSION` go: this code never reads them. Where the folder is the one beside
    the weights (``beside_weights``), those of the same name and model type with another hash
    go too: they were made from what the weights file held before it was replaced. In a
    shared folder (``encoders/`` in the weights cache, or one the caller named) two weights
    files of the same name from different folders may both be in use, so those stay.
    Exports named as releases before the whole file name was used (``mobile_sam-vit_t-...``
    for ``mobile_sam.pt``, which this code never reads) are taken as the same weights'
    under those rules, except beside the weights where a weights file of that name is there.
    A file that cannot be removed (open elsewhere, on Windows) is left; nothing here is an error.
    """
    new = _EXPORT_NAME.fullmatch(path.name)
    if new is None:
        return []
    stems = [new["stem"]]
    former = Path(new["stem"]).stem  # the name without its suffix, as exports were named before
    if former != new["stem"] and not (beside_weights and (path.parent.parent / former).exists()):
        stems.append(former)
    removed = []
    for other in (p for stem in stems for p in path.parent.glob(f"{glob.escape(stem)}-{new['model_type']}-*-encoder-v*.onnx")):
        old = _EXPORT_NAME.fullmatch(other.name)
        if other == path or old is None or (old["stem"] not in stems) or old["model_type"] != new["model_type"]:
            continue
        if old["digest"] == new["digest"] or beside_weights:
            try:
                other.unlink()
            except OSError:
                continue
            _log.info("removed the superseded encoder export %s", other)
            removed.append(other)
    return removed


def is_encoder_export(path: str | os.PathLike) -> bool:
    """Whether ``path``'s name is that of an encoder export (:func:`encoder_onnx_path`)."""
    return _EXPORT_NAME.fullmatch(Path(path).name) is not None


def _beside(weights: str | os.PathLike) -> Path:
    return Path(weights).resolve().parent / ".realtime_sam_cache"


def encoder_onnx_path(weights: str | os.PathLike, model_type: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the exported encoder of ``weights`` lives (the file may not exist yet)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir(weights)
    # The whole file name, suffix included: ``mobile_sam.pt`` and ``mobile_sam.pth`` in one
    # folder are two weights files, and a new export of one must not remove the other's.
    stem = Path(weights).name
    return root / f"{stem}-{model_type}-{weights_digest(weights)}-encoder-v{EXPORT_VERSION}.onnx"


def _export(encoder: nn.Module, img_size: int, dst: Path) -> None:
    """Export ``encoder`` (fp32, CPU) for a fixed ``1x3xSxS`` input to ``dst``."""
    example = torch.zeros(1, 3, img_size, img_size)
    common = {"input_names": ["image"], "output_names": ["embedding"]}
    errors: list[str] = []
    # The TorchScript-based exporter is quick and needs no extra package; newer
    # PyTorch may drop it, so the torch.export-based one (needs onnxscript) follows.
    for dynamo in (False, True):
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                if dynamo:
                    torch.onnx.export(encoder, (example,), str(dst), dynamo=True, external_data=False, **common)
                else:
                    torch.onnx.export(encoder, (example,), str(dst), dynamo=False, opset_version=17, **common)
            return
        except OSError as exc:
            # Writing failed (a full disk, a file size limit): the other exporter would fail the
            # same way, after tens of seconds.
            raise _CannotWrite(describe_error(exc)) from None
        except Exception as exc:  # noqa: BLE001 - try the other exporter, then report both
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {exc}".splitlines()[0])
    raise ConfigError(f"could not export the image encoder to ONNX ({'; '.join(errors)}); use backend 'torch'")


def ensure_encoder_onnx(
    encoder: nn.Module,
    *,
    img_size: int,
    weights: str | os.PathLike | None,
    model_type: str,
    cache_dir: str | os.PathLike | None = None,
    reuse: bool = True,
    on_export: Callable[[Path], None] | None = None,
) -> Path:
    """The ONNX file of ``encoder``: from the cache if present (and ``reuse``), else exported now.

    With ``weights=None`` (random weights) there is nothing to key a cache on,
    and where the cache directory cannot be written (a read-only folder or
    home): the file goes to a fresh temporary directory, which the caller
    removes (:func:`is_temporary_export`). ``on_export(path)`` is called as an
    export starts (not for a cached file), with where it goes; once: where the cache
    fails mid-export (a full disk) and the export starts over in a temporary folder,
    the warning logged says so instead.

    Raises:
        ConfigError: the export failed, or no directory (cache or temporary) could take the file.
    """
    if weights is None:
        return _export_to_temporary(encoder, img_size, model_type, on_export=on_export)
    path = encoder_onnx_path(weights, model_type, cache_dir)
    if reuse and path.is_file():
        return path
    started: list[Path] = []

    def starting(where: Path) -> None:
        started.append(where)
        if on_export is not None:
            on_export(where)

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _export_to(encoder, img_size, path, starting)
    except (_CannotWrite, OSError) as exc:
        reason = exc.reason if isinstance(exc, _CannotWrite) else describe_error(exc)
    else:
        remove_superseded_exports(path, beside_weights=cache_dir is None and path.parent == _beside(weights))
        return path
    if started:  # the caller has said the export is under way; the warning below says where it goes now
        on_export = None
    _log.warning(
        "cannot write the exported encoder to %s (%s); exporting to a temporary folder for this run only "
        "(set $REALTIME_SAM_CACHE to a writable folder to keep it)",
        path.parent,
        reason,
    )
    return _export_to_temporary(encoder, img_size, model_type, also_tried=path.parent, on_export=on_export)


_TEMP_PREFIX = "realtime_sam_export_"


def _export_to_temporary(
    encoder: nn.Module,
    img_size: int,
    model_type: str,
    also_tried: Path | None = None,
    on_export: Callable[[Path], None] | None = None,
) -> Path:
    temporary = _temporary_path(model_type)
    try:
        return _export_to(encoder, img_size, temporary, on_export)
    except _CannotWrite as exc:
        shutil.rmtree(temporary.parent, ignore_errors=True)
        where = f"{also_tried} or {temporary.parent.parent}" if also_tried else str(temporary.parent.parent)
        raise ConfigError(
            f"cannot write the exported image encoder to {where} ({exc.reason}); free some space or set "
            "$REALTIME_SAM_CACHE to another folder, or use backend 'torch'"
        ) from None
    except BaseException:
        shutil.rmtree(temporary.parent, ignore_errors=True)
        raise


def _temporary_path(model_type: str) -> Path:
    try:
        return Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX)) / f"{model_type}-encoder.onnx"
    except OSError as exc:
        raise ConfigError(
            f"cannot export the image encoder: no writable cache or temporary folder ({describe_error(exc)}); "
            "set $REALTIME_SAM_CACHE to a writable folder, or use backend 'torch'"
        ) from None


def is_temporary_export(path: Path) -> bool:
    """Whether ``path`` is a one-run export (:func:`ensure_encoder_onnx` without a usable cache)."""
    return path.parent.name.startswith(_TEMP_PREFIX) and path.parent.parent == Path(tempfile.gettempdir())


class _CannotWrite(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _export_to(encoder: nn.Module, img_size: int, path: Path, on_export: Callable[[Path], None] | None = None) -> Path:
    """Export ``encoder`` to ``path`` by way of a locked temporary file beside it, renamed when complete.

    The temporary file is removed on every failure, Ctrl-C included; one left by an export
    killed outright (SIGKILL, a power cut) is removed by a later export, as for the weights
    download (:func:`realtime_sam.model.weights.remove_stale_parts`). The file gets the mode
    the umask gives (not ``mkstemp``'s 0600), so a cache in a shared folder serves everyone.
    """
    from realtime_sam.model.weights import create_part_file, remove_stale_parts

    if next(encoder.parameters()).dtype != torch.float32:
        raise ConfigError("the ONNX export needs the fp32 encoder; use precision 'fp32'")
    remove_stale_parts(path)
    try:
        fd, tmp = create_part_file(path)
    except OSError as exc:
        raise _CannotWrite(describe_error(exc)) from None
    _log.info("exporting the image encoder to %s (once per weights file)", path)
    if on_export is not None:
        on_export(path)
    try:
        try:
            with torch.no_grad():
                _export(encoder.eval(), img_size, tmp)
            os.fsync(fd)  # the rename must not land before the bytes (a power cut would leave an empty file)
        finally:
            os.close(fd)  # drops the lock
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_exported_encoder(
    backend: str,
    encoder: nn.Module,
    *,
    img_size: int,
    weights: str | os.PathLike | None,
    model_type: str,
    cache_dir: str | os.PathLike | None = None,
    num_threads: int | None = None,
    on_export: Callable[[Path], None] | None = None,
) -> nn.Module:
    """``encoder`` exported (or taken from the cache) and loaded by ``backend`` (``onnxruntime`` or ``openvino``).

    A cached file the runtime cannot load (damaged on disk, or written by an exporter
    this runtime does not read) is exported again, once; a fresh export that does not
    load is a :class:`ConfigError`. ``on_export(path)``: see :func:`ensure_encoder_onnx`.
    """
    cls = OpenVinoEncoder if backend == "openvino" else OnnxRuntimeEncoder
    require_package(backend)
    kwargs = {"img_size": img_size, "weights": weights, "model_type": model_type, "cache_dir": cache_dir, "on_export": on_export}
    cached = weights is not None and encoder_onnx_path(weights, model_type, cache_dir).is_file()
    path = ensure_encoder_onnx(encoder, **kwargs)
    while True:
        try:
            runner = cls(path, img_size=img_size, num_threads=num_threads)
        except Exception as exc:  # noqa: BLE001 - each runtime raises its own types
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]  # OpenVINO spreads it over lines
            if not cached:
                _discard_temporary(path)
                raise ConfigError(f"{backend} cannot load the exported encoder {path} ({reason}); use backend 'torch'") from None
            _log.warning("the cached encoder %s does not load (%s); exporting it again", path, reason)
            cached = False
            path = ensure_encoder_onnx(encoder, **kwargs, reuse=False)
            continue
        _discard_temporary(path)
        return runner


def _discard_temporary(path: Path) -> None:
    """Remove a one-run export's folder (the runtime has read the file by then)."""
    if is_temporary_export(path):
        shutil.rmtree(path.parent, ignore_errors=True)


class OnnxRuntimeEncoder(nn.Module):
    """The exported encoder on ONNX Runtime's CPU provider. ``1x3xSxS`` fp32 (normalised, padded) -> ``1x256x64x64``."""

    def __init__(self, onnx_path: Path, *, img_size: int, num_threads: int | None = None) -> None:
        super().__init__()
        ort = require_package("onnxruntime")
        opts = ort.SessionOptions()  # type: ignore[attr-defined]
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL  # type: ignore[attr-defined]
        if num_threads is not None:
            opts.intra_op_num_threads = num_threads
        # Spinning worker threads steal the cores from the application's other threads
        # (capture, drawing) and from each other on a busy machine.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])  # type: ignore[attr-defined]
        self.input_name = self.session.get_inputs()[0].name
        self.img_size = img_size
        # Empty, but lets callers ask the module for the dtype it expects (SamPredictor does).
        self.dtype_probe = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


class OpenVinoEncoder(nn.Module):
    """The exported encoder compiled by OpenVINO for the CPU (fp32). Same contract as :class:`OnnxRuntimeEncoder`."""

    def __init__(self, onnx_path: Path, *, img_size: int, num_threads: int | None = None) -> None:
        super().__init__()
        ov = require_package("openvino")
        core = ov.Core()  # type: ignore[attr-defined]
        # f32 explicitly: on CPUs with bf16 units OpenVINO would otherwise pick bf16 by itself.
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if num_threads is not None:
            config["INFERENCE_NUM_THREADS"] = num_threads
        self.compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.img_size = img_size
        self.dtype_probe = nn.Parameter(torch.empty(0), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        out = self.request.infer({0: arr})
        return torch.from_numpy(np.array(next(iter(out.values())), copy=True))
