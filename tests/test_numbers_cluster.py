"""The Ray actor's plain class, :class:`~realtime_sam.app.cluster.StreamWorker`, with a real model (no Ray):
its shared encoder's thread ends when it is closed, and the process does not wait for it at exit."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from fixtures_app import app_env

_SCRIPT = textwrap.dedent(
    """
    import json, sys, threading
    from realtime_sam.app.cluster import StreamJob, StreamWorker
    from realtime_sam.app.pipeline import wait_for_lingering
    from realtime_sam.app.streams import StreamSpec
    from realtime_sam.config import load_config
    from realtime_sam.model.config import ModelConfig
    from realtime_sam.types import ObjectPrompt

    ckpt, clip, out = sys.argv[1:4]
    config = load_config("cpu", ["pipeline.max_frames=3", "model.device=cpu", f"model.weights={ckpt}"])
    worker = StreamWorker(ModelConfig(weights=ckpt, device="cpu"))
    started = [t for t in threading.enumerate() if t.name == "rtsam-shared-encoder"]
    job = StreamJob(StreamSpec("a", clip), out, (ObjectPrompt(box=(40, 40, 120, 120)),), config)
    outcome = worker.run(job)  # encodes on the worker's own encoder thread
    closed = worker.close(timeout=60)  # an encode under way may finish first (bounded; slow CI)
    # The pipeline's own encode worker may still finish a stale encode it gave up waiting for (it is
    # waited for at exit, as in one process): the wait below ends once every thread has ended.
    print(json.dumps({
        "started": len(started), "frames": outcome.frames, "closed": closed,
        "alive": [t.is_alive() for t in started], "lingering_none": wait_for_lingering(timeout=60),
    }), flush=True)
    """
)


def test_a_stream_worker_that_loaded_its_model_closes_its_encoder_thread(
    checkpoint_path: Path, small_clip: Path, tmp_path: Path
):
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(checkpoint_path), str(small_clip), str(tmp_path / "a.jsonl")],
        capture_output=True, text=True, env=app_env(), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    # Before: no close(); the idle thread stayed, and the process waited 3 s for it at exit.
    assert got == {"started": 1, "frames": 3, "closed": True, "alive": [False], "lingering_none": True}


def test_closing_a_stream_worker_that_was_given_its_runner_is_a_no_op():
    from realtime_sam.app.cluster import StreamWorker
    from realtime_sam.app.scheduler import EncodeScheduler
    from realtime_sam.testing.fakes import BoxRunner

    sched = EncodeScheduler(lambda images: [BoxRunner().embed(im) for im in images])
    worker = StreamWorker(None, runner_for=BoxRunner, scheduler=sched)
    assert worker.close() is True
