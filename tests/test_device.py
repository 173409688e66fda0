"""Device, precision, thread and backend selection (no model run: fast)."""

from __future__ import annotations

import dataclasses
import logging
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from realtime_sam.errors import ConfigError
from realtime_sam.model.device import (
    available_devices,
    configure_cpu_threads,
    cpu_has_fast_bf16,
    resolve_device,
    resolve_precision,
    usable_cpu_count,
)
from realtime_sam.model.runtime import InferenceOptions, ModelConfig, resolve_backend

CPU = torch.device("cpu")
CUDA = torch.device("cuda", 0)  # constructing a device object needs no GPU
MPS_AVAILABLE = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def test_auto_is_the_first_available_device_and_cpu_is_always_there():
    have = available_devices()
    assert have[-1] == "cpu"
    assert str(resolve_device("auto")) == have[0]
    if torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cuda", 0)
    elif MPS_AVAILABLE:
        assert resolve_device("auto").type == "mps"
    else:
        assert resolve_device("auto") == CPU


@pytest.mark.parametrize("spec", ["cpu", " CPU ", CPU])
def test_cpu_spellings(spec):
    assert resolve_device(spec) == CPU


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present: the unavailable-device error cannot happen")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "cuda:3"])
def test_missing_cuda_is_one_line_error_listing_what_is_available(spec):
    with pytest.raises(ConfigError) as err:
        resolve_device(spec)
    msg = str(err.value)
    assert "\n" not in msg and "not available" in msg and "available: " in msg and "cpu" in msg


@pytest.mark.skipif(MPS_AVAILABLE, reason="MPS is present")
def test_missing_mps_is_a_config_error():
    with pytest.raises(ConfigError, match="'mps' is not available"):
        resolve_device("mps")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_index_resolves_when_present():
    n = torch.cuda.device_count()
    assert resolve_device(f"cuda:{n - 1}") == torch.device("cuda", n - 1)
    with pytest.raises(ConfigError):
        resolve_device(f"cuda:{n}")


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cuda:-1", "tpu", "", 3, None])
def test_malformed_device_names(spec):
    with pytest.raises(ConfigError):
        resolve_device(spec)


def test_precision_auto_is_fp32_on_cpu_and_fp16_on_gpus():
    assert resolve_precision("auto", CPU) == torch.float32
    assert resolve_precision("auto", CUDA) == torch.float16
    assert resolve_precision("auto", torch.device("mps")) == torch.float16


@pytest.mark.parametrize(
    "spec, device, dtype",
    [
        ("fp32", CPU, torch.float32),
        ("FP32", CUDA, torch.float32),
        ("fp16", CUDA, torch.float16),
        ("bf16", CUDA, torch.bfloat16),
        (torch.float32, CPU, torch.float32),
    ],
)
def test_explicit_precisions(spec, device, dtype):
    assert resolve_precision(spec, device) == dtype


def test_fp16_on_cpu_is_refused_with_what_to_use_instead():
    with pytest.raises(ConfigError) as err:
        resolve_precision("fp16", CPU)
    assert "fp32" in str(err.value) and "\n" not in str(err.value)


def test_bf16_on_cpu_is_allowed_and_warns_when_emulated(caplog):
    with caplog.at_level(logging.WARNING, logger="realtime_sam.model.device"):
        assert resolve_precision("bf16", CPU) == torch.bfloat16
    warned = any("bf16" in r.getMessage() for r in caplog.records)
    assert warned == (not cpu_has_fast_bf16())


@pytest.mark.parametrize("spec", ["fp8", "half", "", torch.int8])
def test_unknown_precisions(spec):
    with pytest.raises(ConfigError):
        resolve_precision(spec, CPU)


def test_threads_default_keeps_torch_choice_within_the_usable_cpus():
    before = torch.get_num_threads()
    try:
        n = configure_cpu_threads()
        assert n == torch.get_num_threads()
        assert 1 <= n <= max(before, 1)
        assert n <= usable_cpu_count()
    finally:
        torch.set_num_threads(before)


def test_threads_explicit_count_is_applied():
    before = torch.get_num_threads()
    try:
        assert configure_cpu_threads(1) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("n", [0, -2, True, 1.5])
def test_threads_bad_counts(n):
    with pytest.raises(ConfigError):
        configure_cpu_threads(n)


@pytest.mark.parametrize(
    "cls, kwargs",
    [
        (ModelConfig, {"backend": "tensorrt"}),
        (ModelConfig, {"precision": "fp64"}),
        (InferenceOptions, {"num_threads": 0}),
        (InferenceOptions, {"decoder_chunk": 0}),
        (InferenceOptions, {"decoder_chunk": True}),
    ],
)
def test_inference_config_validation(cls, kwargs):
    with pytest.raises(ConfigError):
        cls(**kwargs)


def test_the_runtime_and_the_config_share_one_model_section():
    """One set of device/precision/backend defaults: the documented ``model:`` section's."""
    import inspect

    from realtime_sam import config
    from realtime_sam.model import runtime

    assert runtime.ModelConfig is config.ModelConfig
    assert inspect.signature(runtime.load_inference_model).parameters["model"].default == config.Config().model
    assert not {"device", "precision", "backend"} & {f.name for f in dataclasses.fields(InferenceOptions)}


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_exported_backends_are_cpu_fp32_vit_t_only(backend):
    with pytest.raises(ConfigError, match="CPU only"):
        resolve_backend(backend, CUDA, "vit_t", torch.float32)
    with pytest.raises(ConfigError, match="vit_t only"):
        resolve_backend(backend, CPU, "vit_b", torch.float32)
    with pytest.raises(ConfigError, match="fp32 only"):
        resolve_backend(backend, CPU, "vit_t", torch.bfloat16)
    assert resolve_backend(backend, CPU, "vit_t", torch.float32) == backend


@pytest.mark.parametrize(
    "device, model_type, dtype",
    [(CPU, "vit_t", torch.float32), (CPU, "vit_h", torch.float32), (CPU, "vit_t", torch.bfloat16), (CUDA, "vit_t", torch.float16)],
)
def test_auto_backend_is_torch(device, model_type, dtype):
    # The exported encoders were no faster than the torch one (see runtime.model); they stay opt-in.
    assert resolve_backend("auto", device, model_type, dtype) == "torch"


def test_missing_optional_runtime_names_the_extra(monkeypatch):
    from realtime_sam.model.runtime import export

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes ``import openvino`` fail
    with pytest.raises(ConfigError, match=r"realtime-sam\[openvino\]"):
        export.require_package("openvino")


_FAULTS_SCRIPT = """
import resource, sys
import torch
sys.path.insert(0, {repo!r})
from realtime_sam.model.device import tune_cpu_allocator
if {tune}:
    assert tune_cpu_allocator()
faults = []
for _ in range(16):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20)  # 64 MiB: above glibc's largest mmap threshold
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(max(faults[-4:]))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning is Linux-only")
def test_tuned_allocator_reuses_large_blocks_instead_of_faulting_them_in_again():
    """Once warm, a freed 64 MiB block is reused without page faults; by default every allocation faults it in."""
    repo = str(Path(__file__).resolve().parents[1])

    def steady_faults(tune: bool) -> int:
        code = _FAULTS_SCRIPT.format(repo=repo, tune=tune)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
        return int(out.stdout.strip().splitlines()[-1])

    # The heap needs a few rounds to hold enough free blocks (alignment slack); then no faults.
    assert steady_faults(True) < 1000
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if thp.exists() and "[always]" in thp.read_text():
        pytest.skip("transparent huge pages are always on: default allocations may fault only a few times")
    assert steady_faults(False) > 8000  # 16384 pages of 4 KiB every time
