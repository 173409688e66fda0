"""Turning a :class:`~realtime_sam.config.ModelConfig` into a ready model.

Resolves the weights (explicit path, ``$REALTIME_SAM_WEIGHTS``, cache,
download), the device, the precision and the backend, then builds either the
engine's :class:`~realtime_sam.tracking.model_runner.ModelRunner` (:func:`load_runner`) or a
SAM-compatible :class:`~realtime_sam.model.predictor.SamPredictor`
(:func:`load_predictor`). :func:`check_model_config` raises what loading would,
without loading, for callers that must fail before they touch files;
:func:`prepare_model` does that and, where loading can still fail after the
check (an exported backend's encoder export), loads the model then too.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from realtime_sam.errors import CheckpointDamagedError
from realtime_sam.model.device import resolve_device, resolve_precision
from realtime_sam.model.predictor import SamPredictor
from realtime_sam.model.runners import InferenceRunner
from realtime_sam.model.runtime import InferenceModel, load_inference_model
from realtime_sam.model.runtime.model import EXPORTED_BACKENDS, resolve_backend
from realtime_sam.model.weights import check_weights, damaged_weights_error, resolve_weights

if TYPE_CHECKING:
    from realtime_sam.config import ModelConfig
    from realtime_sam.tracking.model_runner import ModelRunner

__all__ = [
    "InferenceRunner",
    "check_model_config",
    "load_model",
    "load_runner",
    "load_predictor",
    "prepare_model",
    "resolve_device",
]


def check_model_config(model_config: ModelConfig, *, weights: bool = True) -> str:
    """Raise now what :func:`load_model` would raise for ``model_config``, short of downloading and building.

    The device is present, the precision runs there, the backend fits both and its
    package imports, and (unless ``weights`` is false: a caller that makes its own
    checkpoint, such as the benchmark scripts) the weights file (named, or the cache's) is a complete
    checkpoint of ``model_config.model_type`` as far as its keys and shapes
    (:func:`~realtime_sam.model.weights.check_weights`; milliseconds, the tensors are
    not read). The app calls this before it opens its outputs, which truncates an earlier
    run's files: a mistake here then loses nothing. Returns the concrete backend
    (``auto`` resolved).

    An exported backend's encoder export (a first run; a cached file that does not load)
    is not checked here: it can fail (a full disk, an exporter error) only by doing it;
    :func:`prepare_model` does it.

    Raises:
        ConfigError: the device, precision or backend (see :func:`load_model`).
        CheckpointError: the weights file is missing, damaged or of another model.
    """
    device = resolve_device(model_config.device)
    dtype = resolve_precision(model_config.precision, device, warn=False)
    backend = resolve_backend(model_config.backend, device, model_config.model_type, dtype)
    if backend in EXPORTED_BACKENDS:
        from realtime_sam.model.runtime.export import require_package

        require_package(backend)
    if weights:
        check_weights(model_config.weights, model_type=model_config.model_type)
    return backend


def prepare_model(
    model_config: ModelConfig, *, progress: bool = True, on_export: Callable[[Path], None] | None = None
) -> InferenceModel | None:
    """What must happen before an app opens its outputs: :func:`check_model_config`, and for an
    exported backend (``onnxruntime``, ``openvino``) the model itself, loaded now.

    Opening an output truncates an earlier run's file. Whatever can fail the load must therefore
    fail before: :func:`check_model_config` covers the rest in milliseconds, but the encoder
    export (a first run, or a cached file that does not load) can fail only by doing it, and
    it needs the weights (downloaded first if none are here yet). Returns that model (pass it
    on: nothing is loaded twice), or ``None`` for the other backends, which load after the
    outputs open (a bad output path then fails before a download).

    Raises:
        ConfigError, CheckpointError: as :func:`check_model_config` and :func:`load_model`.
    """
    if check_model_config(model_config) not in EXPORTED_BACKENDS:
        return None
    return load_model(model_config, progress=progress, on_export=on_export)


def load_model(
    model_config: ModelConfig, *, progress: bool = True, on_export: Callable[[Path], None] | None = None
) -> InferenceModel:
    """The :class:`InferenceModel` that ``model_config`` names (weights resolved, downloaded if needed).

    ``on_export(path)``: with an exported backend, called as the encoder's export starts
    (see :func:`~realtime_sam.model.runtime.export.ensure_encoder_onnx`).
    """
    weights = resolve_weights(model_config.weights, model_type=model_config.model_type, progress=progress)
    try:
        return load_inference_model(weights, model_config, on_export=on_export)
    except CheckpointDamagedError as exc:
        raise damaged_weights_error(exc, weights, model_config.model_type) from exc


def load_predictor(model_config: ModelConfig, *, progress: bool = True) -> SamPredictor:
    """A :class:`SamPredictor` for ``model_config``.

    The predictor keeps SAM's fp32 interface, so it runs the chosen backend's
    networks only in fp32; half precision is for the engine (:func:`load_runner`).
    """
    # SamPredictor feeds fp32 tensors straight into the encoder: build it in fp32 at once.
    model = load_model(replace(model_config, precision="fp32"), progress=progress)
    return SamPredictor(model.sam)


def load_runner(model_config: ModelConfig, *, progress: bool = True) -> ModelRunner:
    """The engine's model interface for ``model_config`` (any backend, device and precision)."""
    return InferenceRunner(load_model(model_config, progress=progress))
