"""The image encoder on ONNX Runtime or OpenVINO (CPU), exported once and cached.

Both runtimes are optional: they are imported only when their backend is
chosen, and a missing one is a :class:`ConfigError` that names the pip extra.

The encoder is exported from the plain PyTorch model to ONNX once per
weights file and kept next to it (``<weights dir>/.realtime_sam_cache/``, or
the user cache directory when that is not writable), under a name that holds
a hash of the weights, the model type and :data:`EXPORT_VERSION`, so a
changed checkpoint or exporter never reuses a stale file. Start-up after the
first run only loads the file (about a second). The file is written to a
temporary name and renamed, so an interrupted export leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from realtime_sam.errors import ConfigError

__all__ = [
    "EXPORT_VERSION",
    "OnnxRuntimeEncoder",
    "OpenVinoEncoder",
    "default_cache_dir",
    "encoder_onnx_path",
    "ensure_encoder_onnx",
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
    """``<weights dir>/.realtime_sam_cache`` if writable, else ``$XDG_CACHE_HOME/realtime_sam`` (or ``~/.cache``)."""
    if weights is not None:
        beside = Path(weights).resolve().parent / ".realtime_sam_cache"
        try:
            beside.mkdir(exist_ok=True)
            if os.access(beside, os.W_OK):
                return beside
        except OSError:
            pass
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "realtime_sam"


def encoder_onnx_path(weights: str | os.PathLike, model_type: str, cache_dir: str | os.PathLike | None) -> Path:
    """Where the exported encoder of ``weights`` lives (the file may not exist yet)."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir(weights)
    stem = Path(weights).stem
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
) -> Path:
    """The ONNX file of ``encoder``: from the cache if present, else exported now.

    With ``weights=None`` (random weights) there is nothing to key a cache on:
    the file goes to a fresh temporary directory.
    """
    if weights is None:
        path = Path(tempfile.mkdtemp(prefix="realtime_sam_")) / f"{model_type}-random-encoder.onnx"
    else:
        path = encoder_onnx_path(weights, model_type, cache_dir)
        if path.is_file():
            return path
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the encoder cache directory {path.parent}: {exc}; set cache_dir") from None
    _log.info("exporting the %s image encoder to %s (once per weights file)", model_type, path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if next(encoder.parameters()).dtype != torch.float32:
            raise ConfigError("the ONNX export needs the fp32 encoder; use precision 'fp32'")
        with torch.no_grad():
            _export(encoder.eval(), img_size, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


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
