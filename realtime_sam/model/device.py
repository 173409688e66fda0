"""Choosing the compute device, the numeric precision and the CPU thread count.

``resolve_device("auto")`` picks CUDA, then Apple's MPS, then the CPU.
``resolve_precision("auto", device)`` picks fp16 on a GPU and fp32 on the CPU:

* fp16 on the CPU is refused: PyTorch's CPU kernels for half are slow or
  missing, and nothing would be gained.
* bf16 on the CPU is allowed but only pays on processors with native bf16
  matrix units (AVX512-BF16 / AMX, e.g. Intel Sapphire Rapids, AMD Zen 4).
  Elsewhere PyTorch emulates it: on a 2-core AVX2 machine one MobileSAM
  encode took 70-140 s in bf16 against about 2 s in fp32, so a warning is
  logged (:func:`cpu_has_fast_bf16` tells which case applies).

Nothing here changes global state except :func:`configure_cpu_threads` and
:func:`tune_cpu_allocator`, and those only when they are called.

Two process-wide facts measured on a 2-core AVX2 machine that matter for CPU
inference speed:

* glibc serves every allocation over 32 MiB with a fresh ``mmap`` and returns
  it on ``free``; MobileSAM's stage-0 activations are 67 MiB, so each encode
  page-faults them in again. :func:`tune_cpu_allocator` keeps freed memory in
  the heap instead: the eager encoder went from 3.4 s to 2.2 s (one thread).
* PyTorch's OpenMP threads spin while waiting. When other processes or the
  application's own threads want the cores, a small network ran 25x slower
  (4 s against 0.15 s). ``OMP_WAIT_POLICY=PASSIVE`` in the environment before
  the first ``import torch`` avoids it; it cannot be changed afterwards.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

import torch

from realtime_sam.cpus import usable_cpu_count  # re-exported: the model's thread settings read it here
from realtime_sam.errors import ConfigError

__all__ = [
    "DEVICE_CHOICES",
    "PRECISION_CHOICES",
    "available_devices",
    "configure_cpu_threads",
    "cpu_has_fast_bf16",
    "precision_name",
    "resolve_device",
    "resolve_precision",
    "tune_cpu_allocator",
    "usable_cpu_count",
]

_log = logging.getLogger(__name__)

DEVICE_CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")
PRECISION_CHOICES = ("auto", "fp32", "fp16", "bf16")

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_NAMES = {v: k for k, v in _DTYPES.items()}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available_devices() -> list[str]:
    """Devices usable in this process, e.g. ``["cuda:0", "cuda:1", "cpu"]``; always ends with ``"cpu"``."""
    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        found.append("mps")
    found.append("cpu")
    return found


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` into a usable :class:`torch.device`.

    ``"auto"`` is the first of CUDA (device 0), MPS, CPU that is present.

    Raises:
        ConfigError: the name is not a device, or the device is not present here.
    """
    if isinstance(spec, torch.device):
        text = str(spec)
    elif isinstance(spec, str):
        text = spec.strip().lower()
    else:
        raise ConfigError(f"device must be a string such as 'auto', 'cpu', 'cuda:0' or 'mps', not {spec!r}")
    have = available_devices()
    if text == "auto":
        return torch.device(have[0])
    if text == "cpu":
        return torch.device("cpu")
    if text == "mps":
        if not _mps_available():
            raise ConfigError(f"device 'mps' is not available here; available: {', '.join(have)}")
        return torch.device("mps")
    if text == "cuda" or text.startswith("cuda:"):
        index = 0
        if text != "cuda":
            suffix = text[len("cuda:") :]
            if not suffix.isdigit():
                raise ConfigError(f"device {spec!r} is not valid; write 'cuda' or 'cuda:N' with N a GPU index")
            index = int(suffix)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ConfigError(f"device {text!r} is not available here; available: {', '.join(have)}")
        return torch.device("cuda", index)
    raise ConfigError(f"unknown device {spec!r}; use one of {', '.join(DEVICE_CHOICES)} (available: {', '.join(have)})")


def resolve_precision(spec: str | torch.dtype, device: torch.device, *, warn: bool = True) -> torch.dtype:
    """Turn ``"auto" | "fp32" | "fp16" | "bf16"`` into a dtype for the networks on ``device``.

    ``"auto"`` is fp16 on CUDA and MPS, fp32 on the CPU. ``warn`` logs that bf16 is
    emulated on a CPU without bf16 instructions (false for a check before the real load).

    Raises:
        ConfigError: unknown name, or fp16 on the CPU.
    """
    if isinstance(spec, torch.dtype):
        if spec not in _NAMES:
            raise ConfigError(f"precision {spec} is not supported; use one of {', '.join(PRECISION_CHOICES)}")
        spec = _NAMES[spec]
    if not isinstance(spec, str) or spec.strip().lower() not in PRECISION_CHOICES:
        raise ConfigError(f"unknown precision {spec!r}; use one of {', '.join(PRECISION_CHOICES)}")
    name = spec.strip().lower()
    if name == "auto":
        name = "fp32" if device.type == "cpu" else "fp16"
    if name == "fp16" and device.type == "cpu":
        raise ConfigError(
            "precision 'fp16' is not supported on the CPU (slow or missing kernels); use 'fp32', or 'bf16' on a CPU "
            "with AVX512-BF16/AMX"
        )
    if warn and name == "bf16" and device.type == "cpu" and not cpu_has_fast_bf16():
        _log.warning(
            "precision 'bf16' on this CPU is emulated (no AVX512-BF16/AMX) and many times slower than fp32; "
            "prefer 'fp32' here"
        )
    return _DTYPES[name]


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has native bf16 kernels on this CPU (AVX512-BF16 or AMX)."""
    check = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    if check is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        return bool(check())
    except Exception:  # noqa: BLE001 - a private probe: unknown means "no"
        return False


def precision_name(dtype: torch.dtype) -> str:
    """``torch.float32 -> "fp32"`` etc."""
    return _NAMES[dtype]


def configure_cpu_threads(num_threads: int | None = None) -> int:
    """Set PyTorch's intra-op thread count and return the count in force.

    ``None`` keeps PyTorch's own choice (one thread per physical core, which
    is what the matrix kernels want) and only lowers it when it exceeds the
    CPUs this process may use: oversubscribed threads in a CPU-limited
    container make every kernel wait on the slowest thread.

    Raises:
        ConfigError: ``num_threads`` is not a positive integer.
    """
    if num_threads is not None:
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ConfigError(f"num_threads must be a positive integer, not {num_threads!r}")
        torch.set_num_threads(num_threads)
        return num_threads
    usable = usable_cpu_count()
    if torch.get_num_threads() > usable:
        torch.set_num_threads(usable)
    return torch.get_num_threads()


_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def tune_cpu_allocator() -> bool:
    """Keep freed large blocks in the heap for reuse (glibc on Linux); return whether it applied.

    Sets ``M_MMAP_MAX = 0`` (no per-allocation ``mmap``) and a 1 GiB
    ``M_TRIM_THRESHOLD`` (do not hand the heap top back to the system), the
    in-process equivalent of ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=...``.
    The cost: the process keeps its peak memory instead of returning it, and
    the heap needs a few rounds to settle. A loop allocating a 64 MiB block
    faulted it in for ~10 rounds while RSS grew by ~450 MiB, then ran with
    no faults at a flat RSS. Peak RSS for encode + a 16-prompt decode: 688 MiB
    for the ``torch`` backend with this tuning, 781 MiB for the plain eager
    model without it. Suits a long-running inference loop. Other C
    libraries: no-op.
    """
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
