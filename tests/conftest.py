"""Shared fixtures: golden parity data, checkpoints, the model.

The golden data lives in ``../shared/golden`` beside the repository on the
project's machines. On a user's machine it is absent: tests that need its
numbers skip with a reason; tests that only need *some* checkpoint make a
random one in the official format.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "golden"
GOLDEN_CKPT = GOLDEN / "mobile_sam_random_seed0.pt"
SKIP_GOLDEN = "golden parity data not found at ../shared/golden (it exists only on the project's machines)"

sys.path.insert(0, str(Path(__file__).resolve().parent))

# The tests that stop the app with SIGINT (Ctrl-C) need it to arrive. A suite started in the
# background by a script (`cmd &`, nohup) inherits SIGINT ignored, and so would every app it
# starts; the app rightly keeps an ignored SIGINT ignored, and those tests hung (a CI run
# started from a script, 2026-12-05). A Python handler, unlike SIG_IGN, is not inherited
# across exec: with one here the apps start with the default disposition, as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)



@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: a run with -p no:xdist still loads this file
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for ``-n auto`` (pyproject's addopts): one per core this process may use, at most 4.

    Many tests wait on real time (live sources, subprocesses, windows, a stream
    server), so two workers on two cores finish the suite in about half the
    time of one. More than 4 mostly repeats the session fixtures (a model per
    worker). ``REALTIME_SAM_TEST_WORKERS=N`` sets the number; ``-n 0`` runs
    everything in this process.
    """
    wanted = os.environ.get("REALTIME_SAM_TEST_WORKERS", "").strip()
    if wanted:
        if not wanted.isdigit():
            raise pytest.UsageError(f"REALTIME_SAM_TEST_WORKERS must be a whole number (0: one process), got {wanted!r}")
        return int(wanted)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(4, cores))


# RTSP server fixtures (they skip themselves where GStreamer is missing).
from fixtures_rtsp import *  # noqa: E402,F401,F403

# The app's clip fixture, here so that test files need not import it (an imported fixture
# used as a parameter reads to a linter as a redefinition).
from fixtures_app import run, small_clip  # noqa: E402,F401

# A private X server for the real-window tests (they skip themselves where Xvfb, xdotool or ImageMagick is missing).
from fixtures_window import xvfb_display  # noqa: E402,F401


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    if not GOLDEN_CKPT.exists():
        pytest.skip(SKIP_GOLDEN)
    return GOLDEN


@pytest.fixture(scope="session")
def golden_cases(golden_dir: Path) -> dict:
    return json.loads((golden_dir / "cases_seed0.json").read_text())


@pytest.fixture(scope="session")
def golden_arrays(golden_dir: Path):
    return np.load(golden_dir / "cases_seed0.npz")


@pytest.fixture(scope="session")
def random_checkpoint(tmp_path_factory) -> Path:
    """A ``vit_t`` checkpoint in the official format with random weights."""
    from realtime_sam.model.build import build_sam

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "mobile_sam_random.pt"
    torch.save(build_sam("vit_t").state_dict(), path)
    return path


@pytest.fixture(scope="session")
def checkpoint_path(random_checkpoint: Path) -> Path:
    """The golden checkpoint where present (its BatchNorm statistics give realistic activations), else a random one."""
    return GOLDEN_CKPT if GOLDEN_CKPT.exists() else random_checkpoint


@pytest.fixture(scope="session")
def sam_model(checkpoint_path: Path):
    from realtime_sam.model.build import build_sam

    return build_sam("vit_t", checkpoint_path)
