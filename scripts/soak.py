"""Soak test: run an endless live source through the real pipeline and watch memory.

::

    python scripts/soak.py --fake-model --frames 20000          # everything but the network, quickly
    python scripts/soak.py --frames 3000 --every 500            # the real model (slow on a CPU)
    python scripts/soak.py --source synthetic --no-sinks

A live source (default an FFmpeg ``testsrc2`` graph paced at 30 fps; or
``synthetic`` / ``synthetic:WxH``, a synthetic scene played in a loop) feeds
:class:`~realtime_sam.app.pipeline.Pipeline` + :class:`~realtime_sam.tracking.engine.Engine`
with a few tracked objects and, unless ``--no-sinks``, a JSONL and a video
sink writing into a temporary folder. To exercise track creation and removal
the objects are cleared and prompted again every ``--churn-every`` frames, and
one of them is removed half-way between.

Every ``--every`` processed frames it prints the resident memory (from
``/proc/self/statm``), the engine's state sizes and the pipeline's counters;
at the end one verdict line: the growth after warm-up in MB and %, and whether
that is flat (within ``--max-growth-mb`` or ``--max-growth-pct``). The exit
status is 0 when flat, 1 when growing, 2 on a usage error.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _common import (  # noqa: E402
    KEEP_EVERY_MASK,
    BoxRunner,
    LoopingSceneSource,
    rss_mb,
    weights_or_random,
)

from realtime_sam.app.pipeline import Pipeline, PipelineConfig  # noqa: E402
from realtime_sam.errors import RealtimeSamError, SourceError  # noqa: E402
from realtime_sam.testing.synthetic import standard_scene  # noqa: E402
from realtime_sam.tracking.discovery import DiscoveryConfig  # noqa: E402
from realtime_sam.tracking.engine import Engine, EngineConfig  # noqa: E402
from realtime_sam.types import FrameResult, ObjectPrompt  # noqa: E402

__all__ = ["SoakConfig", "MemorySample", "SoakReport", "engine_state", "run_soak", "main"]

DEFAULT_SOURCE = "lavfi:testsrc2=size=640x480:rate=30"


@dataclass(frozen=True)
class SoakConfig:
    """One soak run.

    Attributes:
        source: a ``--source`` spec (``lavfi:...``, a stream URL, a webcam) or
            ``synthetic`` / ``synthetic:WxH`` (a looped synthetic scene).
        fps: pacing of the synthetic source (frames per second).
        frames: processed frames to run for.
        every: print (and record) a memory sample every this many processed frames.
        warmup: processed frames after which the reference sample is taken
            (``None``: ``min(1000, frames // 5)``).
        fake_model: use :class:`BoxRunner` instead of the network.
        weights: checkpoint for the real model (``None``: the golden one, else random weights).
        device, backend: passed to :class:`~realtime_sam.config.ModelConfig`.
        reencode_every: ``engine.reencode_every``.
        background: ``engine.background_encode`` (the CPU preset's way of running).
        keep_tracks: accept every mask (``_common.KEEP_EVERY_MASK``), so that a
            random-weight checkpoint keeps its objects tracked for the whole run.
        objects: objects prompted at the start and after every churn.
        churn_every: clear and prompt again every this many processed frames (0: never).
        auto: run with auto-discovery on (tracks come and go by themselves).
        points_per_side: discovery grid size when ``auto``.
        sinks: write JSONL and video outputs.
        out_dir: where outputs go (``None``: a temporary folder removed at the end).
        max_growth_mb, max_growth_pct: growth after warm-up within either counts as flat.
        trace_python: also record Python-level allocations with :mod:`tracemalloc` (slower).
        seed: placement of the prompted boxes.
    """

    source: str = DEFAULT_SOURCE
    fps: float = 30.0
    frames: int = 5000
    every: int = 1000
    warmup: int | None = None
    fake_model: bool = False
    weights: str | None = None
    device: str = "auto"
    backend: str = "auto"
    reencode_every: int = 5
    background: bool = False
    keep_tracks: bool = False
    objects: int = 3
    churn_every: int = 500
    auto: bool = False
    points_per_side: int = 8
    sinks: bool = True
    out_dir: str | None = None
    max_growth_mb: float = 20.0
    max_growth_pct: float = 5.0
    trace_python: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.frames < 1 or self.every < 1 or self.objects < 0 or self.churn_every < 0:
            raise ValueError("frames and every must be >= 1, objects and churn_every >= 0")
        if self.warmup is not None and not 0 <= self.warmup < self.frames:
            raise ValueError(f"warmup must be in 0..frames-1, got {self.warmup}")

    @property
    def warmup_frames(self) -> int:
        return self.warmup if self.warmup is not None else max(1, min(1000, self.frames // 5))


@dataclass(frozen=True)
class MemorySample:
    """State after ``frame`` processed frames.

    Attributes:
        frame: processed frames so far.
        rss_mb: resident memory, MiB.
        python_mb: memory traced by :mod:`tracemalloc`, MiB (``None`` when not tracing).
        state: the engine's container sizes (see :func:`engine_state`).
        frames_read, frames_dropped: pipeline counters.
        model_fps: the pipeline's recent processing rate.
        elapsed_s: seconds since the run started.
    """

    frame: int
    rss_mb: float
    python_mb: float | None
    state: dict[str, int]
    frames_read: int
    frames_dropped: int
    model_fps: float
    elapsed_s: float


@dataclass(frozen=True)
class SoakReport:
    """What a run found; ``flat`` is the verdict."""

    config: SoakConfig
    samples: tuple[MemorySample, ...]
    reference: MemorySample
    final: MemorySample
    frames_processed: int
    frames_read: int
    frames_dropped: int
    outputs: tuple[str, ...] = field(default_factory=tuple)
    interrupted: bool = False

    @property
    def growth_mb(self) -> float:
        return self.final.rss_mb - self.reference.rss_mb

    @property
    def growth_pct(self) -> float:
        return 100.0 * self.growth_mb / self.reference.rss_mb if self.reference.rss_mb > 0 else 0.0

    @property
    def python_growth_mb(self) -> float | None:
        if self.final.python_mb is None or self.reference.python_mb is None:
            return None
        return self.final.python_mb - self.reference.python_mb

    @property
    def slope_mb_per_1k(self) -> float:
        """Least-squares RSS trend after warm-up, MiB per 1000 frames (0 with fewer than 3 samples)."""
        pts = [s for s in self.samples if s.frame >= self.reference.frame]
        if len(pts) < 3:
            return 0.0
        x = np.array([s.frame for s in pts], dtype=np.float64)
        y = np.array([s.rss_mb for s in pts], dtype=np.float64)
        return float(np.polyfit(x, y, 1)[0] * 1000.0)

    @property
    def flat(self) -> bool:
        cfg = self.config
        return self.growth_mb <= max(cfg.max_growth_mb, cfg.max_growth_pct / 100.0 * self.reference.rss_mb)

    def verdict(self) -> str:
        """One line: growth after warm-up and whether it is flat."""
        cfg = self.config
        word = "FLAT" if self.flat else "GROWING"
        py = self.python_growth_mb
        py_text = f", python heap {py:+.2f} MB" if py is not None else ""
        return (
            f"VERDICT: {word}: resident memory {self.growth_mb:+.1f} MB ({self.growth_pct:+.1f} %) from frame "
            f"{self.reference.frame} ({self.reference.rss_mb:.1f} MB) to frame {self.final.frame} "
            f"({self.final.rss_mb:.1f} MB), trend {self.slope_mb_per_1k:+.2f} MB/1000 frames{py_text}; "
            f"limit {cfg.max_growth_mb:g} MB or {cfg.max_growth_pct:g} %; "
            f"{self.frames_processed} processed, {self.frames_dropped} dropped of {self.frames_read} read"
            + (" (interrupted)" if self.interrupted else "")
        )


def engine_state(engine: Engine) -> dict[str, int]:
    """Sizes of everything the engine keeps between frames (diagnostic: reads private fields).

    ``tracks``: alive tracks; ``pending``: prompts waiting for their start
    frame; ``commands``: queued commands; ``residuals``: per-track state in
    the flow propagator; ``last_tracks``: tracks of the last result;
    ``jobs``: background encodes in flight; ``kept``: frames kept for
    replaying a background encode's new prompts.
    """
    return {
        "tracks": len(engine.tracker),
        "pending": len(getattr(engine, "_pending", ())),
        "commands": len(getattr(engine, "_commands", ())),
        "residuals": len(getattr(engine.propagator, "_residual", {})),
        "last_tracks": len(getattr(engine, "_last_tracks", ())),
        "jobs": len(engine.background.jobs),
        "kept": len(engine.background.history),
    }


def _open(cfg: SoakConfig):
    """The live source named by ``cfg.source``."""
    spec = cfg.source
    if spec == "synthetic" or spec.startswith("synthetic:"):
        w, h = 640, 480
        if ":" in spec:
            try:
                w, h = (int(v) for v in spec.split(":", 1)[1].lower().split("x"))
            except ValueError:
                raise SourceError(f"--source synthetic:WxH expects a size such as synthetic:640x480, got {spec!r}") from None
        return LoopingSceneSource(standard_scene(w, h, num_frames=120, num_objects=3, seed=cfg.seed), fps=cfg.fps)
    from realtime_sam.capture.sources import open_source

    return open_source(spec)


def _runner(cfg: SoakConfig, scratch: Path):
    if cfg.fake_model:
        return BoxRunner()
    from realtime_sam.config import ModelConfig
    from realtime_sam.model.loader import load_runner

    weights = weights_or_random(cfg.weights, scratch)
    return load_runner(ModelConfig(weights=str(weights), device=cfg.device, backend=cfg.backend), progress=False)


def _prompts(rng: np.random.Generator, n: int, width: int, height: int) -> list[ObjectPrompt]:
    """``n`` boxes spread across the frame (``XYXY`` pixels), jittered."""
    out = []
    bw, bh = width / 6.0, height / 4.0
    for k in range(n):
        cx = (k + 1) * width / (n + 1) + rng.uniform(-0.05, 0.05) * width
        cy = height / 2.0 + rng.uniform(-0.2, 0.2) * height
        x0, y0 = max(0.0, cx - bw / 2), max(0.0, cy - bh / 2)
        x1, y1 = min(width - 1.0, cx + bw / 2), min(height - 1.0, cy + bh / 2)
        out.append(ObjectPrompt(box=(x0, y0, x1, y1), label=f"soak{k}"))
    return out


def run_soak(
    cfg: SoakConfig,
    *,
    log: Callable[[str], None] = print,
    on_result: Callable[[FrameResult, Pipeline], None] | None = None,
) -> SoakReport:
    """Run ``cfg`` and return what was measured; ``log`` receives the progress lines.

    ``on_result`` (tests) is called with every result and the pipeline, on the consuming thread.
    """
    tracing = cfg.trace_python and not tracemalloc.is_tracing()
    if tracing:
        tracemalloc.start()
    rng = np.random.default_rng(cfg.seed)
    tmp = tempfile.TemporaryDirectory(prefix="rtsam-soak-") if cfg.out_dir is None else None
    out_dir = Path(tmp.name) if tmp is not None else Path(cfg.out_dir)  # type: ignore[arg-type]
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        runner = _runner(cfg, out_dir)
        engine = Engine(
            runner,
            EngineConfig(reencode_every=cfg.reencode_every, auto=cfg.auto, background_encode=cfg.background),
            discovery_config=DiscoveryConfig(points_per_side=cfg.points_per_side),
            tracker_config=KEEP_EVERY_MASK if cfg.keep_tracks else None,
        )
        source = _open(cfg)
        width, height = source.size
        sinks = []
        if cfg.sinks:
            from realtime_sam.output.sinks import make_sink

            fps = source.fps or (cfg.fps if cfg.fps > 0 else 30.0)
            sinks = [
                make_sink("jsonl", out_dir / "tracks.jsonl", fps=fps, source_name=cfg.source),
                make_sink("video", out_dir / "overlay.mp4", fps=fps),
            ]
        for p in _prompts(rng, cfg.objects, width, height):
            engine.add_object(p)
        log(
            f"soak: {cfg.frames} frames of {source.name} ({width}x{height}), "
            f"{'fake model' if cfg.fake_model else 'real model'}, reencode every {cfg.reencode_every}"
            f"{' (background)' if cfg.background else ''}, "
            f"{cfg.objects} objects (churn every {cfg.churn_every or 'never'}), "
            f"sinks {'on -> ' + str(out_dir) if cfg.sinks else 'off'}"
        )
        samples: list[MemorySample] = []
        reference: MemorySample | None = None
        started = time.monotonic()
        processed = 0

        def sample(pipe: Pipeline) -> MemorySample:
            st = pipe.stats
            return MemorySample(
                frame=processed,
                rss_mb=rss_mb(),
                python_mb=tracemalloc.get_traced_memory()[0] / 2**20 if tracemalloc.is_tracing() else None,
                state=engine_state(engine),
                frames_read=st.frames_read,
                frames_dropped=st.frames_dropped,
                model_fps=st.model_fps,
                elapsed_s=time.monotonic() - started,
            )

        def show(s: MemorySample, tag: str = "") -> None:
            base = reference.rss_mb if reference is not None else s.rss_mb
            py = f"  py {s.python_mb:7.2f} MB" if s.python_mb is not None else ""
            state = " ".join(f"{k} {v}" for k, v in s.state.items())
            log(
                f"frame {s.frame:7d}  rss {s.rss_mb:8.1f} MB ({s.rss_mb - base:+6.1f}){py}  {state}  "
                f"read {s.frames_read} dropped {s.frames_dropped}  {s.model_fps:5.1f} fps  {s.elapsed_s:7.1f} s{tag}"
            )

        half = cfg.churn_every // 2
        interrupted = False
        with Pipeline(source, engine, sinks=sinks, config=PipelineConfig(max_frames=cfg.frames)) as pipe:
            try:
                for result in pipe:
                    processed += 1
                    if on_result is not None:
                        on_result(result, pipe)
                    if cfg.churn_every and processed % cfg.churn_every == 0:
                        engine.clear()
                        for p in _prompts(rng, cfg.objects, width, height):
                            engine.add_object(p)
                    elif cfg.churn_every and half and processed % cfg.churn_every == half and result.tracks:
                        engine.remove_object(result.tracks[0].track_id)
                    if processed == cfg.warmup_frames:
                        reference = sample(pipe)
                        samples.append(reference)
                        show(reference, "  <- warm-up done, reference")
                    elif processed % cfg.every == 0 or processed == cfg.frames:
                        # Sampled here, before the pipeline closes the sinks (which frees their buffers).
                        samples.append(sample(pipe))
                        show(samples[-1])
            except KeyboardInterrupt:
                # Ctrl-C ends the run early; what was measured so far is still reported.
                interrupted = True
                log(f"interrupted after {processed} frames")
            if not samples or samples[-1].frame != processed:
                samples.append(sample(pipe))
                show(samples[-1], "  (end)")
        stats = pipe.stats
        final = samples[-1]
        if reference is None:
            why = "the run was interrupted" if interrupted else "the source ended"
            raise RealtimeSamError(
                f"{why} after {processed} frames, before the {cfg.warmup_frames}-frame warm-up ended; "
                "nothing to compare (use an endless source, or fewer --frames / a smaller --warmup)"
            )
        return SoakReport(
            config=cfg,
            samples=tuple(samples),
            reference=reference,
            final=final,
            frames_processed=stats.frames_processed,
            frames_read=stats.frames_read,
            frames_dropped=stats.frames_dropped,
            outputs=tuple(str(p) for p in sorted(out_dir.iterdir())) if cfg.out_dir is not None else (),
            interrupted=interrupted,
        )
    finally:
        if tracing:
            tracemalloc.stop()
        if tmp is not None:
            tmp.cleanup()


def _parser() -> argparse.ArgumentParser:
    d = SoakConfig()
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--source", default=d.source, help="live source spec, or synthetic / synthetic:WxH (a looped scene)")
    p.add_argument("--fps", type=float, default=d.fps, help="pacing of the synthetic source")
    p.add_argument("--frames", type=int, default=d.frames, help="processed frames to run for")
    p.add_argument("--every", type=int, default=d.every, help="print memory every N processed frames")
    p.add_argument("--warmup", type=int, default=None, help="frames before the reference sample (default min(1000, frames/5))")
    p.add_argument("--fake-model", action="store_true", help="a cheap stand-in model: measures the rest of the system")
    p.add_argument("--weights", default=None, help="checkpoint (default: the golden one if present, else random weights)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--backend", default=d.backend)
    p.add_argument("--reencode-every", type=int, default=d.reencode_every)
    p.add_argument("--background", action="store_true", help="encode on a background worker (engine.background_encode)")
    p.add_argument("--keep-tracks", action="store_true", help="accept every mask (random weights: objects stay tracked)")
    p.add_argument("--objects", type=int, default=d.objects)
    p.add_argument("--churn-every", type=int, default=d.churn_every, help="clear and prompt again every N frames (0 = never)")
    p.add_argument("--auto", action="store_true", help="auto-discovery on")
    p.add_argument("--points-per-side", type=int, default=d.points_per_side, help="discovery grid with --auto")
    p.add_argument("--no-sinks", action="store_true", help="do not write JSONL and video outputs")
    p.add_argument("--out-dir", default=None, help="keep the outputs here (default: a temporary folder, removed)")
    p.add_argument("--max-growth-mb", type=float, default=d.max_growth_mb)
    p.add_argument("--max-growth-pct", type=float, default=d.max_growth_pct)
    p.add_argument("--trace-python", action="store_true", help="also trace Python allocations (tracemalloc; slower)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        cfg = SoakConfig(
            source=args.source,
            fps=args.fps,
            frames=args.frames,
            every=args.every,
            warmup=args.warmup,
            fake_model=args.fake_model,
            weights=args.weights,
            device=args.device,
            backend=args.backend,
            reencode_every=args.reencode_every,
            background=args.background,
            keep_tracks=args.keep_tracks,
            objects=args.objects,
            churn_every=args.churn_every,
            auto=args.auto,
            points_per_side=args.points_per_side,
            sinks=not args.no_sinks,
            out_dir=args.out_dir,
            max_growth_mb=args.max_growth_mb,
            max_growth_pct=args.max_growth_pct,
            trace_python=args.trace_python,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        report = run_soak(cfg)
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(report.verdict())
    return 0 if report.flat else 1


if __name__ == "__main__":
    sys.exit(main())
