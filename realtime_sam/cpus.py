"""How many CPUs this process may use: one answer for the model's thread settings and the engine's flow thread.

Torch-free, so the tracking engine (which imports without torch) asks the same
question as :mod:`realtime_sam.model.device`.
"""

from __future__ import annotations

import os

__all__ = ["usable_cpu_count"]


def usable_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which containers and ``taskset`` restrict)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)
