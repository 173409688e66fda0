"""Helpers shared by the scripts in this folder (and by the tests that drive them).

* :func:`rss_mb`: resident memory of this process, from ``/proc/self/statm``;
* :func:`peak_rss_mb`: its peak;
* ``BoxRunner``, ``LoopingSceneSource``: re-exported from
  :mod:`realtime_sam.testing.fakes`, their home;
* :func:`weights_or_random`: the golden checkpoint when present, else a
  random ``vit_t`` checkpoint written once;
* :func:`median`, :func:`percentile`: plain statistics for timings;
* :func:`frame_size`: the ``--size WIDTHxHEIGHT`` argument type;
* :func:`check_model_args`: ``--device``, ``--precision`` and ``--weights``
  checked before any model loads (a :class:`~realtime_sam.errors.RealtimeSamError`);
* :func:`check_output_file`: an output file such as ``--json`` checked before
  the run, not after minutes of it;
* :func:`fail`: the one-line ``error: ...`` on stderr and exit status 2.

Nothing here runs on import.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from realtime_sam.testing.fakes import BoxRunner, LoopingSceneSource
from realtime_sam.tracking.tracks import TrackerConfig

__all__ = [
    "REPO",
    "GOLDEN_CKPT",
    "rss_mb",
    "peak_rss_mb",
    "BoxRunner",
    "LoopingSceneSource",
    "weights_or_random",
    "median",
    "percentile",
    "frame_size",
    "check_model_args",
    "check_output_file",
    "fail",
]

REPO = Path(__file__).resolve().parents[1]
GOLDEN_CKPT = REPO.parent / "shared" / "golden" / "mobile_sam_random_seed0.pt"
"""The project's golden checkpoint (random weights with realistic BatchNorm statistics); absent on users' machines."""

_LOWRES = 256  # side of SAM's low-resolution logits
_IMG = 1024  # side of SAM's padded input image


def rss_mb() -> float:
    """Resident set size of this process in MiB (current, not peak).

    Reads ``/proc/self/statm`` (Linux); on Windows the working set; elsewhere (macOS) falls back
    to the peak RSS from :func:`resource.getrusage`, which can only grow. NaN when none can be read.
    """
    try:
        with open("/proc/self/statm", "rb") as f:
            resident_pages = int(f.read().split()[1])
        return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    windows = _windows_memory()
    if windows is not None:
        return windows[0] / 2**20
    return _peak_from_getrusage()


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB. ``VmHWM`` where Linux has it (unlike ``ru_maxrss``
    it is not inherited from the parent's peak across fork + exec); on Windows the peak working set;
    elsewhere ``ru_maxrss``. NaN when none can be read."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    windows = _windows_memory()
    if windows is not None:
        return windows[1] / 2**20
    return _peak_from_getrusage()


def _peak_from_getrusage() -> float:
    try:
        import resource  # POSIX only: imported here so that the scripts run on Windows too
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss is bytes on macOS, KiB elsewhere.
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def _windows_memory() -> tuple[int, int] | None:
    """``(working set, peak working set)`` in bytes on Windows (``GetProcessMemoryInfo``), else ``None``."""
    if sys.platform != "win32":
        return None
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):  # PROCESS_MEMORY_COUNTERS
        _fields_ = [
            ("cb", wintypes.DWORD),
            ("PageFaultCount", wintypes.DWORD),
            ("PeakWorkingSetSize", ctypes.c_size_t),
            ("WorkingSetSize", ctypes.c_size_t),
            ("QuotaPeakPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPagedPoolUsage", ctypes.c_size_t),
            ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t),
            ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
            ("PagefileUsage", ctypes.c_size_t),
            ("PeakPagefileUsage", ctypes.c_size_t),
        ]

    try:
        kernel32 = ctypes.windll.kernel32  # type: ignore[attr-defined]
        kernel32.GetCurrentProcess.restype = wintypes.HANDLE
        kernel32.K32GetProcessMemoryInfo.argtypes = [wintypes.HANDLE, ctypes.POINTER(Counters), wintypes.DWORD]
        counters = Counters()
        counters.cb = ctypes.sizeof(Counters)
        if not kernel32.K32GetProcessMemoryInfo(kernel32.GetCurrentProcess(), ctypes.byref(counters), counters.cb):
            return None
    except (OSError, AttributeError):
        return None
    return int(counters.WorkingSetSize), int(counters.PeakWorkingSetSize)


def weights_or_random(weights: str | os.PathLike[str] | None, scratch: Path) -> Path:
    """``weights`` if given; else the golden checkpoint when present; else a random ``vit_t`` checkpoint in ``scratch``."""
    if weights is not None:
        return Path(weights)
    if GOLDEN_CKPT.exists():
        return GOLDEN_CKPT
    import torch

    from realtime_sam.model.build import build_sam

    path = Path(scratch) / "mobile_sam_random_seed0.pt"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(build_sam("vit_t").state_dict(), path)
    return path


def median(values: Sequence[float]) -> float:
    """The median (NaN for no values)."""
    return percentile(values, 50.0)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile with linear interpolation (NaN for no values)."""
    if not len(values):
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


# Random weights give noise-like masks that the default tracker rightly drops
# as implausible, leaving nothing to track after a few frames (and a benchmark
# or soak of an idle engine). Accepting every mask keeps all objects alive, so
# the real model does the full work on every frame.
KEEP_EVERY_MASK = TrackerConfig(
    match_iou_thresh=0.01, min_score=0.0, min_area_frac=0.0, max_area_frac=1.0, max_area_change=1e9,
    max_lost_frames=10_000,
)


def frame_size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (e.g. ``640x480``) as ``(width, height)``: an ``argparse`` type."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 640x480, got {text!r}") from None
    return w, h


def check_model_args(device: str | None = None, precision: str | None = None, weights: str | None = None) -> None:
    """Raise now, before a model loads, if ``device`` is not here, ``precision`` does not fit it, or ``weights`` is missing.

    ``None`` skips that check (``weights=None``: the golden or a random checkpoint, nothing to check).

    Raises:
        RealtimeSamError: a :class:`~realtime_sam.errors.ConfigError` or
            :class:`~realtime_sam.errors.CheckpointError` whose message is the one line to print.
    """
    from realtime_sam.model.device import resolve_device, resolve_precision
    from realtime_sam.model.weights import resolve_weights

    if device is not None:
        resolved = resolve_device(device)
        if precision is not None:
            resolve_precision(precision, resolved)
    if weights is not None and str(weights).strip():
        resolve_weights(weights, download=False)


def check_output_file(path: str | os.PathLike[str], flag: str) -> None:
    """Raise ``ValueError`` (its message the one line to print) now if ``path`` cannot be written later.

    A benchmark writes its file at the end: a missing folder found then would cost the whole run.
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if target.is_dir():
        raise ValueError(f"{flag} {path} is a folder; give a file name, e.g. {Path(path) / 'bench.json'}")
    if not parent.is_dir():
        raise ValueError(f"{flag} {path}: no folder {parent}; create it or give a path in an existing folder")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise ValueError(f"{flag} {path} is not writable; give a path you can write")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors (a bad value, an unknown flag, ``parser.error``) are one line,
    ``error: ... (see --help)``, and exit status 2, as the scripts' other bad input."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {message} (see --help)\n")


def strict_json(value):
    """``value`` as strict JSON holds it (``json.dumps(..., allow_nan=False)`` accepts it): numpy
    numbers as Python ones, tuples as lists, NaN and infinities (a figure there is none of) as ``None``."""
    if isinstance(value, Mapping):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def fail(message: object) -> int:
    """Print ``error: <message>`` (one line) on stderr; the exit status for bad input, 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return 2
