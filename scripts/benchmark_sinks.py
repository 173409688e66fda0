"""How much sink work the inference thread no longer does, now that sinks have their own thread.

::

    python scripts/benchmark_sinks.py                   # 150 frames, 640x480, 3 objects, video + JSONL
    python scripts/benchmark_sinks.py --frames 300 --outputs video,jsonl,png

A synthetic clip's frames go through the real :class:`~realtime_sam.app.pipeline.Pipeline`
with a stand-in engine that answers each frame with the scene's ground-truth
masks after a fixed model time (``--model-ms``, a sleep: like PyTorch and
OpenCV, it releases the GIL), into real sinks writing real files (the
annotated H.264 video and the JSONL masks of ``--output`` and
``--save-masks``). Two modes, in the same run, alternating:

* ``inline``: the engine writes every result to the sinks itself, on the
  inference thread, right after its model work: what the pipeline did
  before sinks had a thread (the baseline);
* ``sink thread``: the pipeline's own sink thread writes them.

Per frame it records the inference thread's time outside the model (from
the end of one frame's model work to the start of the next: sink writes
when inline, handing the result over otherwise) and prints medians, the frames
per second of the whole run, and how long one sink write takes.

Bad input (an unknown or empty ``--outputs``, ``--frames`` under 4,
``--repeats`` under 1, a negative ``--model-ms``) is one ``error: ...`` line
on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))

import cv2  # noqa: E402,F401  (before PyAV, see realtime_sam/app/cli.py)
from _common import fail  # noqa: E402

from realtime_sam.app.pipeline import Pipeline  # noqa: E402
from realtime_sam.output.render import Renderer  # noqa: E402
from realtime_sam.output.sinks import open_sinks  # noqa: E402
from realtime_sam.testing.synthetic import standard_scene  # noqa: E402
from realtime_sam.tracking.association import mask_to_box  # noqa: E402
from realtime_sam.types import Frame, FrameResult, TrackResult, TrackState  # noqa: E402

OUTPUTS = ("video", "jsonl", "png", "mots")
MIN_FRAMES = 4  # the synthetic scene's shortest clip


class _Frames:
    """A file-like source (not live: the pipeline loses no frame) over pre-rendered frames."""

    live = False

    def __init__(self, images) -> None:
        self.images, self.i = images, 0

    def read(self) -> Frame | None:
        if self.i >= len(self.images):
            return None
        frame = Frame(self.i, self.images[self.i], self.i / 25.0, time.monotonic())
        self.i += 1
        return frame

    def close(self) -> None:
        pass


class _TimedEngine:
    """Answers each frame with its ground-truth tracks after ``model_s``; records the time between calls."""

    def __init__(self, truth, model_s: float, inline_sinks=None) -> None:
        self.truth, self.model_s, self.inline_sinks = truth, model_s, inline_sinks
        self.outside_ms: list[float] = []  # per frame: inference-thread time not spent in process()
        self.write_ms: list[float] = []  # inline mode: one frame's sink writes
        self._last_end: float | None = None

    def process(self, frame: Frame) -> FrameResult:
        start = time.perf_counter()
        if self._last_end is not None:
            self.outside_ms.append((start - self._last_end) * 1e3)
        time.sleep(self.model_s)
        self._last_end = time.perf_counter()  # the model's work ends here; the rest counts as outside it
        result = FrameResult(frame=frame, tracks=self.truth[frame.index])
        if self.inline_sinks is not None:
            self.inline_sinks.write(result)
            self.write_ms.append((time.perf_counter() - self._last_end) * 1e3)
        return result


def _run(images, truth, outputs, folder: Path, model_s: float, inline: bool) -> tuple[list[float], list[float], float]:
    h, w = images[0].shape[:2]
    specs = [f"{kind}:{folder / name}" for kind, name in
             zip(OUTPUTS, ("out.mp4", "masks.jsonl", "pngs/", "mots.txt")) if kind in outputs]
    sinks = open_sinks(specs, fps=25.0, renderer=Renderer(), source_name="synthetic", size=(w, h))
    engine = _TimedEngine(truth, model_s, sinks if inline else None)
    t0 = time.perf_counter()
    with Pipeline(_Frames(images), engine, sinks=[] if inline else [sinks]) as pipe:
        n = pipe.run()
    elapsed = time.perf_counter() - t0
    if inline:
        sinks.close()
    return engine.outside_ms, engine.write_ms, n / elapsed


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--frames", type=int, default=150, help="frames per run")
    p.add_argument("--repeats", type=int, default=2, help="runs per mode (alternating)")
    p.add_argument("--model-ms", type=float, default=30.0, help="stand-in model time per frame")
    p.add_argument("--outputs", default="video,jsonl", help=f"comma-separated: {', '.join(OUTPUTS)}")
    args = p.parse_args(argv)
    outputs = {o.strip() for o in args.outputs.split(",") if o.strip()}
    unknown = sorted(outputs - set(OUTPUTS))
    if unknown or not outputs:
        what = f"unknown --outputs {', '.join(unknown)}" if unknown else "--outputs names no output"
        return fail(f"{what}; give one or more of {', '.join(OUTPUTS)}, comma-separated (e.g. video,jsonl)")
    if args.frames < MIN_FRAMES:
        return fail(f"--frames must be >= {MIN_FRAMES} (got {args.frames})")
    if args.repeats < 1:
        return fail(f"--repeats must be >= 1 (got {args.repeats})")
    if not args.model_ms >= 0:
        return fail(f"--model-ms must be >= 0 (got {args.model_ms:g})")
    scene = standard_scene(640, 480, num_frames=args.frames, num_objects=3)
    images, truth = [], []
    for i in range(args.frames):
        image, masks = scene.render(i)
        images.append(image)
        truth.append(tuple(
            TrackResult(oid, m, tuple(float(v) for v in mask_to_box(m)), 0.9, TrackState.CONFIRMED, f"object {oid}")
            for oid, m in sorted(masks.items()) if m.any()
        ))
    stats: dict[str, dict[str, list[float]]] = {"inline": {"outside": [], "fps": []}, "sink thread": {"outside": [], "fps": []}}
    writes: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for mode in ("inline", "sink thread"):
                folder = Path(tmp) / f"{mode.replace(' ', '_')}_{r}"
                folder.mkdir()
                outside, write_ms, fps = _run(images, truth, outputs, folder, args.model_ms / 1e3, mode == "inline")
                stats[mode]["outside"] += outside
                stats[mode]["fps"].append(fps)
                writes += write_ms
    print(f"{args.frames} frames of 640x480, 3 objects, outputs: {', '.join(sorted(outputs))}, "
          f"stand-in model {args.model_ms:.0f} ms/frame, {args.repeats} runs per mode")
    print(f"one frame's sink writes (inline): median {statistics.median(writes):.1f} ms")
    print("| mode | inference-thread ms per frame outside the model (median) | FPS (median) |")
    print("|---|---:|---:|")
    for mode, s in stats.items():
        print(f"| {mode} | {statistics.median(s['outside']):.2f} | {statistics.median(s['fps']):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
