"""End-to-end benchmark: the model's stages, then the tracking engine against a naive per-frame baseline.

::

    python scripts/benchmark.py                                  # CPU defaults, a few minutes
    python scripts/benchmark.py --device cuda --frames 120 --repeats 5
    python scripts/benchmark.py --backend eager --reencode 1,5,15 --objects 3 --size 640x480

In one run it prints markdown tables (medians over ``--repeats`` rounds):

1. **Model**: the image encoder and the decoder for 1/4/16 box prompts in
   one call, through the same :class:`~realtime_sam.tracking.engine.ModelRunner`
   interface the engine uses, for the configured model
   (:func:`realtime_sam.model.loader.load_runner`'s runner, with ``--backend``,
   ``--precision``, default fp16 on CUDA, and ``--cuda-graphs``) and for the
   baseline (plain eager PyTorch :class:`~realtime_sam.model.predictor.SamPredictor`,
   fp32).
   Each figure is given as a ratio to the baseline and to the FLOP floor:
   the time this machine's measured fp32 matrix-multiply rate would need for
   the network's FLOPs (encoder 77.5 GFLOP, decoder 3.6 GFLOP per prompt).
2. **End to end**, headless, on a synthetic ``--size`` clip written to a
   file (``--scene standard``, or ``hard``: :mod:`realtime_sam.testing.hard_scene`),
   with ``--objects`` objects prompted by their ground-truth boxes at
   frame 0: frames per second and per-frame latency of the engine (through
   :class:`~realtime_sam.app.pipeline.Pipeline`, no sinks, every frame of the
   file as fast as it goes; FPS counted from the first frame with masks,
   i.e. once the prompts' encode is done, which in background mode does not
   hold the first frame: there the reader waits for it) for each
   ``engine.reencode_every`` in ``--reencode``, and of a naive baseline that calls ``set_image`` and one
   ``predict`` per object on every frame (each object prompted with the box
   of its previous mask). Ratios are to the baseline. The engine runs over
   :class:`OracleRunner`: the real network runs (every cost is real) but
   each prompt is answered with the ground truth of the frame that was
   encoded, a perfect decoder. The golden checkpoint's random weights give
   noise masks, which the tracker would rightly drop; with the oracle the
   engine does the work it does with trained weights, and its masks can be
   scored: mean IoU of each visible object's track mask with its ground
   truth. Their errors are the engine's own (frames between encodes,
   optical flow, carrying a background encode forward, association).
   ``--propagation`` picks how masks move between encodes and
   ``--flow-preset`` dense flow's DIS preset (``medium``, the default, or
   the cheaper ``fast`` and ``ultrafast``).
3. The engine's per-stage timings (encode, decode, propagate, associate).
4. **Live** (unless ``--no-live``): each engine variant once more, the
   clip played as a 30 fps camera (``pipeline.realtime``: frames the engine
   is too slow for are dropped, as with a webcam), scored the same way over
   the frames it processed. "FPS processed" is the frames processed after the
   first mask over the seconds they took, ``-`` when they span under a second
   (a short clip is over before the first mask; the frame kept meanwhile,
   done right after it, would read as a rate above the camera's). The ceiling row is a perfect decoder on every
   frame (what SAM's 256x256 logits lose).

Rounds alternate between the variants (rotating the order every round), so
a machine whose load changes during the run slows all of them alike.

Timings do not depend on the weights; mask quality is only the oracle's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))
# As the realtime-sam command does (realtime_sam/app/cli.py), before torch loads:
# the engine's threads share the cores with PyTorch's OpenMP workers.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import OneLineParser, check_output_file, frame_size, median, percentile, strict_json, weights_or_random  # noqa: E402

from realtime_sam.app.pipeline import Pipeline, PipelineConfig  # noqa: E402
from realtime_sam.capture.sources import open_source  # noqa: E402
from realtime_sam.config import ModelConfig  # noqa: E402
from realtime_sam.errors import RealtimeSamError  # noqa: E402
from realtime_sam.model.build import build_sam  # noqa: E402
from realtime_sam.model.predictor import SamPredictor  # noqa: E402
from realtime_sam.model.runners import InferenceRunner, PredictorRunner, low_res_to_masks  # noqa: E402
from realtime_sam.model.transforms import preprocess_shape  # noqa: E402
from realtime_sam.testing.synthetic import (  # noqa: E402
    Scene,
    mask_logits,
    pick_object,
    standard_scene,
    write_video,
)
from realtime_sam.tracking.association import mask_to_box  # noqa: E402
from realtime_sam.tracking.engine import Engine, EngineConfig, ModelRunner  # noqa: E402
from realtime_sam.tracking.propagation import FLOW_PRESETS, METHODS, PropagationConfig  # noqa: E402
from realtime_sam.tracking.tracks import TrackerConfig  # noqa: E402
from realtime_sam.types import FrameResult, ObjectPrompt, TrackState  # noqa: E402

__all__ = [
    "BenchConfig",
    "RunTiming",
    "OracleRunner",
    "Quality",
    "matmul_gflops",
    "time_model",
    "run_engine",
    "run_naive",
    "score_quality",
    "oracle_ceiling",
    "main",
]

# The FLOP figures, the matmul probe and the device sync are the model benchmark's.
from benchmark_model import DECODER_GFLOP_PER_PROMPT, ENCODER_GFLOP, sync_device  # noqa: E402
from benchmark_model import matmul_gflops as _matmul_gflops  # noqa: E402

PROMPT_COUNTS = (1, 4, 16)
STAGES = ("encode", "decode", "propagate", "associate")


HARD_MAX_OBJECTS = 5  # the hard scene's objects (realtime_sam.testing.hard_scene)
# Live rounds: the shortest span after the first mask that gives "FPS processed" (see run_engine).
# The frame or so kept while the first mask is computed then adds at most about 1 fps.
LIVE_MIN_SPAN_S = 1.0


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark run (see the module docstring)."""

    device: str = "auto"
    backend: str = "auto"
    precision: str = "auto"  # fp16 on CUDA (as --config gpu), fp32 elsewhere; the naive baseline stays fp32
    cuda_graphs: bool = False  # model.cuda_graphs (the gpu preset's setting)
    weights: str | None = None
    frames: int = 16
    repeats: int = 2
    model_repeats: int = 3
    reencode: tuple[int, ...] = (1, 5, 15)
    background: tuple[int, ...] = (1,)
    naive_frames: int = 16  # the naive baseline takes seconds per frame: its FPS needs no long clip
    objects: int = 3
    size: tuple[int, int] = (640, 480)  # (width, height)
    live: bool = True  # the rounds paced as a 30 fps camera (section 4 of the module docstring)
    scene: str = "standard"  # the synthetic clip: "standard" (easy) or "hard" (realtime_sam.testing.hard_scene)
    # How the engine moves masks between encodes (propagation.method): "dense", "flow" or "none".
    # Flow runs on the CPU on every frame; on a GPU encoding every frame, the gpu preset uses none.
    propagation: str = "dense"
    # Dense flow's DIS preset (propagation.flow_preset): "medium" (the default), "fast" or "ultrafast".
    flow_preset: str = "medium"

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise ValueError(f"--frames must be >= 2 (the clip's length), got {self.frames}")
        if self.repeats < 1 or self.model_repeats < 1:
            raise ValueError(f"--repeats and --model-repeats must be >= 1, got {self.repeats} and {self.model_repeats}")
        if self.naive_frames < 0:
            raise ValueError(f"--naive-frames must be >= 0 (0: the whole clip), got {self.naive_frames}")
        if not self.reencode or min(self.reencode) < 1:
            raise ValueError("--reencode needs one or more integers >= 1, e.g. 1,5,15")
        if self.background and min(self.background) < 1:
            raise ValueError("--background needs integers >= 1, e.g. 1,8 (or an empty string for none)")
        if not 1 <= self.objects <= 8:
            raise ValueError(f"--objects must be in 1..8, got {self.objects}")
        if self.scene not in ("standard", "hard"):
            raise ValueError("--scene must be standard or hard")
        if self.scene == "hard" and self.objects > HARD_MAX_OBJECTS:
            raise ValueError(f"--scene hard has at most {HARD_MAX_OBJECTS} objects: give --objects 1..{HARD_MAX_OBJECTS}")
        if self.propagation not in METHODS:
            raise ValueError("--propagation must be dense, flow or none")
        if self.flow_preset not in FLOW_PRESETS:
            raise ValueError("--flow-preset must be ultrafast, fast or medium")
        if min(self.size) < 64:
            raise ValueError("--size must be at least 64x64")


@dataclass
class RunTiming:
    """Timings of one variant over all rounds.

    Attributes:
        fps: frames per second of each round (wall clock, reading included; engine
            rounds from the first result with a decoded mask on).
        latency_ms: processing time of every frame of every round.
        stages_ms: per engine stage, the time of every frame on which it ran.
        encodes: image-encoder runs per round.
        masks_per_frame: per round, the mean number of tracks with a non-empty
            mask in a result (the work propagation and drawing do).
        quality: the masks of every round against the ground truth (engine rounds only).
        first_mask_s: per round, seconds from the start to the first result with a decoded mask
            (not a first look).
        fps_net: per round, frames per second with the stand-in decoder's own work on the
            inference thread left out (engine rounds; see :attr:`OracleRunner.own_s`).
    """

    fps: list[float] = field(default_factory=list)
    latency_ms: list[float] = field(default_factory=list)
    masks_per_frame: list[float] = field(default_factory=list)
    stages_ms: dict[str, list[float]] = field(default_factory=dict)
    encodes: list[int] = field(default_factory=list)
    quality: Quality | None = None
    first_mask_s: list[float] = field(default_factory=list)
    fps_net: list[float] = field(default_factory=list)


def frame_digest(image: np.ndarray) -> str:
    """SHA-1 of an image's pixels: how :class:`OracleRunner` recognises a frame."""
    return hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest()


class OracleRunner:
    """A :class:`~realtime_sam.tracking.engine.ModelRunner` with a perfect decoder over a real model.

    ``encode``/``embed`` and ``decode`` run ``inner`` (the real network, so
    the engine pays every real cost, background encodes included), then each
    prompt row's answer is replaced by the ground truth of the frame that was
    encoded: the object the box (or first point) picks
    (:func:`~realtime_sam.testing.synthetic.pick_object`), as ``+-10`` logits
    (:func:`~realtime_sam.testing.synthetic.mask_logits`), predicted IoU 0.95; no
    object: an empty mask, predicted IoU 0.05.

    Frames are recognised by :func:`frame_digest` through ``index_of``
    (``{digest: frame index}``): decoding a video is deterministic, so the
    clip decoded once beforehand gives the pixels the pipeline will read.

    The stand-in's own work (recognising the frame, rendering its ground
    truth, turning masks into logits) is no cost of the engine's, and the
    naive baseline does none of it: :attr:`own_s` sums it on the thread
    that calls ``encode`` and ``decode`` (the inference thread), so that the
    report can leave it out (at 720p with five objects it was about 30 ms a
    frame, a third of the engine's time on a GPU).
    """

    def __init__(self, inner: ModelRunner, scene: Scene, index_of: Mapping[str, int]) -> None:
        if not callable(getattr(inner, "embed", None)) or not callable(getattr(inner, "use", None)):
            raise TypeError("OracleRunner needs a runner with embed() and use() (the engine's background mode calls them)")
        self.inner = inner
        self.scene = scene
        self.index_of = index_of
        self.embeddings = 0  # encodes and embeds finished so far
        self._gt: Mapping[int, np.ndarray] = {}
        self._input = (0, 0)
        self.own_s = 0.0  # the stand-in's own work in encode() and decode(), seconds

    def _frame(self, image_bgr: np.ndarray) -> tuple[int, Mapping[int, np.ndarray]]:
        index = self.index_of.get(frame_digest(image_bgr))
        if index is None:
            raise RuntimeError("OracleRunner got a frame that is not in the clip it was given")
        return index, self.scene.render(index)[1]

    def _make_current(self, gt: Mapping[int, np.ndarray], shape: tuple[int, ...]) -> None:
        self._gt = gt
        self._input = preprocess_shape(shape[0], shape[1], 1024)

    def encode(self, image_bgr: np.ndarray) -> None:
        """Embed ``image_bgr`` (``HxWx3 uint8`` BGR) with the real model; its ground truth becomes current."""
        self.inner.encode(image_bgr)
        t = time.perf_counter()
        self._make_current(self._frame(image_bgr)[1], image_bgr.shape)
        self.own_s += time.perf_counter() - t
        self.embeddings += 1

    def embed(self, image_bgr: np.ndarray) -> tuple[object, Mapping[int, np.ndarray], tuple[int, ...]]:
        """The real embedding plus the frame's ground truth (called on the engine's worker thread)."""
        out = self.inner.embed(image_bgr), self._frame(image_bgr)[1], image_bgr.shape  # type: ignore[attr-defined]
        self.embeddings += 1
        return out

    def use(self, embedding: tuple[object, Mapping[int, np.ndarray], tuple[int, ...]]) -> None:
        """Make an :meth:`embed` result current."""
        real, gt, shape = embedding
        self.inner.use(real)  # type: ignore[attr-defined]
        self._make_current(gt, shape)

    def decode(self, points, labels, boxes, mask_input, multimask):
        """The real decode for its cost, answered from the ground truth (shapes as :class:`ModelRunner`)."""
        low, iou = self.inner.decode(points, labels, boxes, mask_input, multimask)
        t = time.perf_counter()
        low = np.full_like(low, -10.0)
        iou = np.full_like(iou, 0.05)
        for i in range(len(low)):
            oid = pick_object(self._gt, box=boxes[i]) if boxes is not None else pick_object(self._gt, point=points[i][0])
            if oid is not None:
                low[i, :] = mask_logits(self._gt[oid], self._input)
                iou[i, :] = 0.95
        self.own_s += time.perf_counter() - t
        return low, iou

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """The real upsampling: ``Bx256x256`` logits -> ``BxHxW bool``."""
        return self.inner.masks(low_res, size)


@dataclass
class Quality:
    """Masks of oracle rounds against the ground truth.

    Attributes:
        ious: per visible object per processed frame, IoU of its track's mask
            with the object's visible mask (0 when the track has no mask or is gone).
        fps: frames processed per second once tracking (live rounds; NaN when the frames
            after the first mask span under ``LIVE_MIN_SPAN_S``).
        first_mask_s: seconds from the start to the first result with a decoded mask (live rounds).
        shown: the ``ious`` from the first frame with masks on, in each round.
        processed: share of the clip's frames processed (live rounds drop some).
        encodes: image-encoder runs.
    """

    ious: list[float] = field(default_factory=list)
    fps: float = float("nan")
    processed: float = float("nan")
    encodes: int = 0
    first_mask_s: float = float("nan")
    shown: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        """``mean`` IoU, ``recall`` (share with IoU >= 0.5), ``p10`` (10th percentile) and
        ``mean_shown`` (mean IoU from the first frame with masks on)."""
        a = np.asarray(self.ious, dtype=np.float64)
        if not a.size:
            return {"mean": float("nan"), "recall": float("nan"), "p10": float("nan"), "mean_shown": float("nan")}
        shown = np.asarray(self.shown, dtype=np.float64)
        return {
            "mean": float(a.mean()),
            "recall": float((a >= 0.5).mean()),
            "p10": float(np.percentile(a, 10)),
            "mean_shown": float(shown.mean()) if shown.size else float("nan"),
        }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 1.0


def score_quality(scene: Scene, kept: Sequence[tuple[int, Mapping[int, np.ndarray]]], into: Quality) -> None:
    """Score ``kept`` (per result: frame index, ``{track id: packed mask rows}``) into ``into``.

    Each object is followed by the track whose mask overlaps it most in the
    first result with tracks (the engine starts one track per ground-truth
    box; with a background encode it shows a first look at each until the
    encode lands; results before the first with a mask score 0). Frames where
    an object is not visible at all are skipped for that object.
    """
    start = next((k for k, (_, masks) in enumerate(kept) if masks), None)
    if start is None:
        into.ious += [0.0 for index, _ in kept for m in scene.render(index)[1].values() if m.any()]
        return
    width = scene.width
    unpack = lambda packed: np.unpackbits(packed, axis=-1, count=width).astype(bool)  # noqa: E731
    first_index, first_masks = kept[start]
    track_of = {
        oid: max(first_masks, key=lambda tid: _iou(unpack(first_masks[tid]), m))
        for oid, m in scene.render(first_index)[1].items()
    }
    for k, (index, masks) in enumerate(kept):
        gt = scene.render(index)[1]
        for oid, tid in track_of.items():
            m = gt.get(oid)
            if m is None or not m.any():
                continue
            v = _iou(unpack(masks[tid]), m) if tid in masks else 0.0
            into.ious.append(v)
            if k >= start:
                into.shown.append(v)


def oracle_ceiling(scene: Scene, frames: int) -> Quality:
    """A perfect decoder on every frame: each visible mask through 256x256 logits and back."""
    out = Quality()
    size = (scene.height, scene.width)
    input_size = preprocess_shape(scene.height, scene.width, 1024)
    for i in range(frames):
        for m in scene.render(i)[1].values():
            if m.any():
                back = low_res_to_masks(mask_logits(m, input_size)[None], input_size, 1024, size)[0]
                out.ious.append(_iou(back, m))
    return out


def matmul_gflops(device: torch.device, repeats: int = 5) -> float:
    """This machine's practical fp32 peak (GFLOP/s) from a timed large matrix product."""
    return float(_matmul_gflops(device, torch.float32, repeats))


def time_model(
    runners: dict[str, ModelRunner], image_bgr: np.ndarray, repeats: int, device: torch.device
) -> dict[str, dict[str, list[float]]]:
    """``{variant: {case: [seconds...]}}`` for the encoder and 1/4/16-prompt decodes, rounds interleaved.

    ``image_bgr``: ``HxWx3 uint8`` BGR. Decodes use box prompts spread over the image.
    """
    h, w = image_bgr.shape[:2]
    rng = np.random.default_rng(1)
    boxes = {}
    for n in PROMPT_COUNTS:
        x0, y0 = rng.uniform(0, 0.7 * w, n), rng.uniform(0, 0.7 * h, n)
        boxes[n] = np.stack([x0, y0, x0 + rng.uniform(0.1, 0.3, n) * w, y0 + rng.uniform(0.1, 0.3, n) * h], axis=1)
    cases: dict[str, Callable[[ModelRunner], object]] = {"encoder": lambda r: r.encode(image_bgr)}
    for n in PROMPT_COUNTS:
        cases[f"decoder {n}"] = lambda r, n=n: r.decode(None, None, boxes[n], None, False)
    for r in runners.values():  # warm-up: the first calls allocate and pick kernels
        for run in cases.values():
            run(r)
    out = {v: {c: [] for c in cases} for v in runners}
    for k in range(repeats):
        for case, run in cases.items():
            order = list(runners.items())
            order = order[k % len(order) :] + order[: k % len(order)]
            for variant, r in order:
                # Decodes use whichever embedding is set: every encode here is of the same image.
                sync_device(device)
                t = time.perf_counter()
                run(r)
                sync_device(device)
                out[variant][case].append(time.perf_counter() - t)
    return out


def make_clip(
    folder: Path, size: tuple[int, int], frames: int, objects: int, kind: str = "standard"
) -> tuple[Path, list[tuple[float, ...]], Scene]:
    """Write a synthetic clip; returns its path, the objects' ground-truth boxes (``XYXY``) at frame 0 and the scene.

    ``kind``: ``"standard"`` (:func:`~realtime_sam.testing.synthetic.standard_scene`) or ``"hard"``: the first
    ``frames`` frames of the 10 s :func:`~realtime_sam.testing.hard_scene.hard_scene` (at most 5 objects, H.264 at its crf).
    """
    if kind == "hard":
        from realtime_sam.testing.hard_scene import hard_scene

        n = max(frames, 4)
        scene = hard_scene(size[0], size[1], fps=30, seconds=max(10.0, n / 30), seed=0, num_objects=objects, frames=n)
        path = write_video(scene, folder / f"bench_hard_{size[0]}x{size[1]}.mp4", fps=30, crf=scene.crf)
    else:
        scene = standard_scene(size[0], size[1], num_frames=max(frames, 4), num_objects=objects, seed=0)
        path = write_video(scene, folder / f"bench_{size[0]}x{size[1]}.mp4", fps=30)
    _, gt = scene.render(0)
    boxes = [tuple(float(v) for v in mask_to_box(gt[oid])) for oid in sorted(gt) if gt[oid].any()]
    return path, boxes, scene


def clip_digests(clip: Path) -> dict[str, int]:
    """``{frame_digest: index}`` for every frame of ``clip`` as this machine decodes it."""
    source = open_source(clip)
    out: dict[str, int] = {}
    try:
        while (frame := source.read()) is not None:
            out.setdefault(frame_digest(frame.image), frame.index)
    finally:
        source.close()
    return out


def run_engine(
    runner: ModelRunner,
    clip: Path,
    boxes: Sequence[tuple[float, ...]],
    reencode: int,
    into: RunTiming,
    background: bool = False,
    keep: list[tuple[int, dict[int, np.ndarray]]] | None = None,
    realtime: bool = False,
    propagation: str = "dense",
    flow_preset: str = "medium",
    landed: list[int] | None = None,
) -> None:
    """One round of the engine over ``clip`` (every frame, headless); appends to ``into``.

    ``background``: the periodic encodes run on the pipeline's worker thread
    (``engine.background_encode``) while frames go on with optical flow.
    ``keep``: when given, every result's masks are appended to it as
    ``(frame index, {track id: np.packbits(mask, axis=-1)})``.
    ``realtime``: play the file as a live camera at its frame rate (frames
    the engine is too slow for are dropped).
    ``propagation``: ``propagation.method`` (``"dense"``, ``"flow"`` or ``"none"``).
    ``flow_preset``: ``propagation.flow_preset``, dense flow's DIS preset.
    ``landed``: when given, the index of every frame whose masks are fresh
    from the decoder (``FrameResult.encoded``: an encode done there, or one
    in the background landed there) is appended to it.
    """
    engine = Engine(
        runner, EngineConfig(reencode_every=reencode, background_encode=background), tracker_config=TrackerConfig(),
        propagation_config=PropagationConfig(method=propagation, flow_preset=flow_preset),  # type: ignore[arg-type]
    )
    for b in boxes:
        engine.add_object(ObjectPrompt(box=b))  # type: ignore[arg-type]
    source = open_source(clip)
    if isinstance(runner, OracleRunner) and not realtime:
        source = _AfterFirstEncode(source, runner)
    encodes = masks = 0
    t0 = time.perf_counter()
    n = 0
    first: tuple[int, float] | None = None  # (results before, time) at the first result with a mask
    own_at_first = own_at_last = 0.0  # the stand-in's own seconds then and at the last result (OracleRunner.own_s)
    last = t0
    with Pipeline(source, engine, config=PipelineConfig(realtime=realtime)) as pipe:
        for result in pipe:
            last = time.perf_counter()
            own_at_last = getattr(runner, "own_s", 0.0)
            n += 1
            encodes += int(result.encoded)
            if landed is not None and result.encoded:
                landed.append(result.index)
            shown = sum(1 for t in result.tracks if t.mask is not None and t.mask.any())
            masks += shown
            # The first decoded mask (a first look, shown before the prompts' encode lands, is not one).
            if first is None and any(t.state is not TrackState.TENTATIVE and t.mask.any() for t in result.tracks):
                first = (n - 1, last)
                own_at_first = own_at_last
            if keep is not None:
                keep.append(_packed(result))
            into.latency_ms.append(result.timings["total"])
            for stage in STAGES:
                if stage in result.timings:
                    into.stages_ms.setdefault(stage, []).append(result.timings[stage])
    end = time.perf_counter()
    # Frames per second once the objects are tracked: the results after the first
    # one with a mask (the prompts' encode done) over the time they took, to the
    # last result (not counting the pipeline's shutdown). The first such result's
    # own work was done before its stamp, so it is not counted: one result alone
    # gives no rate (NaN, printed "-"). Live, the frame the camera delivered while the
    # first mask was computed is done right after it: over a short span that frame
    # alone reads as a rate above the camera's (100 fps from a 6-frame clip), so a
    # span under LIVE_MIN_SPAN_S gives no rate either.
    min_span = LIVE_MIN_SPAN_S if realtime else 0.0
    if first is None:
        into.fps.append(n / (end - t0))
    else:
        after = n - 1 - first[0]
        span = last - first[1]
        measured = after > 0 and span > 0 and span >= min_span
        into.fps.append(after / span if measured else float("nan"))
        net = span - (own_at_last - own_at_first)
        into.fps_net.append(after / net if measured and net > 0 else float("nan"))
    into.encodes.append(encodes)
    into.masks_per_frame.append(masks / max(n, 1))
    into.first_mask_s.append(first[1] - t0 if first is not None else float("nan"))


class _AfterFirstEncode:
    """A file source that holds frame 1 back until ``runner`` finished its first encode.

    With a background encode the first frame does not wait for the prompts'
    encode; read as fast as possible, a short clip would be over before it
    lands, and the round would time an engine with nothing to track.
    """

    def __init__(self, source, runner: OracleRunner, timeout_s: float = 120.0) -> None:
        self.source, self.runner, self.timeout_s = source, runner, timeout_s
        self.live = False
        self._delivered = 0
        self._before = runner.embeddings  # the runner serves round after round

    def read(self):
        if self._delivered == 1:
            deadline = time.monotonic() + self.timeout_s
            while self.runner.embeddings <= self._before and time.monotonic() < deadline:
                time.sleep(0.005)
        self._delivered += 1
        return self.source.read()

    def close(self) -> None:
        self.source.close()


def _packed(result: FrameResult) -> tuple[int, dict[int, np.ndarray]]:
    """``(frame index, {track id: mask packed along rows})``: 1/8 of the memory until scoring."""
    return result.index, {t.track_id: np.packbits(t.mask, axis=-1) for t in result.tracks if t.mask is not None}


def run_naive(
    predictor: SamPredictor, clip: Path, boxes: Sequence[tuple[float, ...]], into: RunTiming, max_frames: int = 0
) -> None:
    """One round of the naive baseline: ``set_image`` + one ``predict`` per object on every frame.

    ``max_frames``: stop after that many frames (0: the whole clip); its cost per frame is constant.
    """
    source = open_source(clip)
    current = [np.asarray(b, dtype=np.float64) for b in boxes]
    n = nonempty = 0
    t0 = time.perf_counter()
    try:
        while (frame := source.read()) is not None and not (max_frames and n >= max_frames):
            t = time.perf_counter()
            predictor.set_image(frame.image, image_format="BGR")
            for i, box in enumerate(current):
                masks, _, _ = predictor.predict(box=box, multimask_output=False)
                nonempty += int(masks[0].any())
                found = mask_to_box(masks[0])
                if found is not None:
                    current[i] = np.asarray(found, dtype=np.float64)
            sync_device(predictor.device)
            into.latency_ms.append((time.perf_counter() - t) * 1e3)
            n += 1
    finally:
        source.close()
    into.fps.append(n / (time.perf_counter() - t0))
    into.masks_per_frame.append(nonempty / max(n, 1))
    into.encodes.append(n)


def _backend_name(runner: object, asked: str) -> str:
    """The backend a runner resolved to, when it says; else what was asked for."""
    for obj in (runner, getattr(runner, "model", None)):
        name = getattr(obj, "backend", None)
        if isinstance(name, str):
            return name
    return "eager" if isinstance(runner, PredictorRunner) else asked


def _fmt(v: float, digits: int = 1) -> str:
    return "-" if not np.isfinite(v) else f"{v:.{digits}f}"


def _label(name: str) -> str:
    if name == "naive":
        return "naive: set_image + predict per object, every frame"
    if name.startswith("bg"):
        return f"engine, reencode_every={name[2:]}, background encode"
    return f"engine, reencode_every={name}"


def _report(
    cfg: BenchConfig, info: dict, model: dict, gflops: float, e2e: dict[str, RunTiming], live: dict[str, Quality]
) -> str:
    lines = [
        f"device `{info['device']}`, backend `{info['backend']}`, {info.get('precision', 'fp32')}, "
        f"CUDA graphs {'on' if info.get('cuda_graphs') else 'off'}, torch {info['torch']}, {info['threads']} threads, "
        f"weights `{info['weights']}`",
        f"fp32 matmul rate {gflops:.0f} GFLOP/s -> floor: encoder {ENCODER_GFLOP / gflops * 1e3:.0f} ms, "
        f"decoder {DECODER_GFLOP_PER_PROMPT / gflops * 1e3:.1f} ms per prompt",
        "",
        f"**Model** (median of {cfg.model_repeats}; baseline = eager PyTorch SamPredictor)",
        "",
        "| stage | baseline ms | this ms | x baseline | x FLOP floor | baseline x floor |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for case in model["baseline"]:
        base = median(model["baseline"][case]) * 1e3
        this = median(model["this"][case]) * 1e3
        gflop = ENCODER_GFLOP if case == "encoder" else DECODER_GFLOP_PER_PROMPT * int(case.split()[1])
        floor = gflop / gflops * 1e3
        name = "encoder (1024x1024)" if case == "encoder" else f"decoder, {case.split()[1]} prompts"
        lines.append(f"| {name} | {_fmt(base)} | {_fmt(this)} | {_fmt(this / base, 2)} | {_fmt(this / floor, 1)} | {_fmt(base / floor, 1)} |")
    naive = e2e["naive"]
    naive_fps, naive_mean = median(naive.fps), float(np.mean(naive.latency_ms))
    lines += [
        "",
        f"**End to end**, {cfg.size[0]}x{cfg.size[1]} {cfg.scene} synthetic clip, {cfg.frames} frames "
        f"(naive: the first {cfg.naive_frames or cfg.frames}), {cfg.objects} objects "
        f"(box prompts at frame 0), propagation `{cfg.propagation}`"
        + (f" (DIS preset `{cfg.flow_preset}`)" if cfg.propagation == "dense" else "")
        + f", median of {cfg.repeats} rounds, every frame; "
        "latency = processing time per frame; "
        "FPS less stand-in: the perfect decoder's own work (frame lookup, ground truth, logits), which the naive "
        "baseline does not do, left out; "
        "mean IoU of the engine's masks with the ground truth (perfect decoder over the real model)",
        "",
        "| method | FPS | x naive | FPS less stand-in | x naive | latency mean ms | p50 ms | max ms | x naive (mean) | encodes / frame | masks / frame | mean IoU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in e2e.items():
        fps, mean = median(t.fps), float(np.mean(t.latency_ms))
        net = f"{_fmt(median(t.fps_net), 2)} | {_fmt(median(t.fps_net) / naive_fps, 2)}" if t.fps_net else "- | -"
        lines.append(
            f"| {_label(name)} | {_fmt(fps, 2)} | {_fmt(fps / naive_fps, 2)} | {net} | {_fmt(mean)} | {_fmt(percentile(t.latency_ms, 50))} | "
            f"{_fmt(max(t.latency_ms))} | {_fmt(mean / naive_mean, 2)} | {_fmt(median(t.encodes) / (len(t.latency_ms) / len(t.fps)), 3)} | "
            f"{_fmt(median(t.masks_per_frame), 2) if t.masks_per_frame else '-'} | "
            f"{_fmt(t.quality.summary()['mean'], 3) if t.quality is not None else '-'} |"
        )
    lines += [
        "",
        "**Engine stages** (median ms over the frames on which the stage ran; count in brackets)",
        "",
        "| reencode_every | " + " | ".join(STAGES) + " |",
        "|---|" + "---:|" * len(STAGES),
    ]
    for name, t in e2e.items():
        if name == "naive":
            continue
        cells = [f"{_fmt(median(t.stages_ms.get(s, [])))} ({len(t.stages_ms.get(s, []))})" for s in STAGES]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if live:
        lines += [
            "",
            "**Live**: the clip played as a 30 fps camera (frames the engine is too slow for are dropped), one round each; "
            "FPS processed = the frames processed after the first mask over the seconds they took "
            f"(- when they span under {LIVE_MIN_SPAN_S:g} s: too short a clip to hold a rate); "
            "IoU of each visible object's track mask with its ground truth over the processed frames",
            "",
            "| method | FPS processed | frames processed | encodes | first mask after s | mean IoU | "
            "IoU >= 0.5 | 10th percentile IoU | mean IoU once shown |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, q in live.items():
            sm = q.summary()
            if name == "ceiling":
                head = "| ceiling: a perfect decoder on every frame | - | 100 % | every frame | -"
            else:
                head = f"| {_label(name)} | {_fmt(q.fps, 1)} | {_fmt(100 * q.processed, 0)} % | {q.encodes} | {_fmt(q.first_mask_s, 1)}"
            lines.append(
                f"{head} | {_fmt(sm['mean'], 3)} | {_fmt(100 * sm['recall'])} % | {_fmt(sm['p10'], 3)} | {_fmt(sm['mean_shown'], 3)} |"
            )
    return "\n".join(lines)


def _model_config(cfg: BenchConfig, weights: str | os.PathLike[str] | None) -> ModelConfig:
    """The ``model:`` settings of ``cfg`` (:class:`ModelConfig` checks the values' names)."""
    return ModelConfig(
        weights=None if weights is None else str(weights), device=cfg.device, backend=cfg.backend, precision=cfg.precision,
        cuda_graphs=cfg.cuda_graphs,
    )


def run(cfg: BenchConfig, *, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> tuple[str, dict]:
    """Run the whole benchmark; returns the markdown report and the raw numbers."""
    from realtime_sam.model.device import precision_name, resolve_device
    from realtime_sam.model.loader import load_model

    with tempfile.TemporaryDirectory(prefix="rtsam-bench-") as tmp:
        weights = weights_or_random(cfg.weights, Path(tmp))
        device = resolve_device(cfg.device)
        log(f"loading the model ({weights}) on {device} ...")
        inference = load_model(_model_config(cfg, weights), progress=False)
        this = InferenceRunner(inference)  # what load_runner gives the engine
        base_predictor = SamPredictor(build_sam("vit_t", weights).to(device).eval())
        baseline = PredictorRunner(base_predictor)
        gflops = matmul_gflops(device)

        clip, boxes, scene = make_clip(Path(tmp), cfg.size, cfg.frames, cfg.objects, cfg.scene)
        first = open_source(clip)
        image = first.read().image  # type: ignore[union-attr]
        first.close()

        log(f"timing the model ({cfg.model_repeats} rounds) ...")
        model = time_model({"baseline": baseline, "this": this}, image, cfg.model_repeats, device)

        index_of = clip_digests(clip)
        oracle = OracleRunner(this, scene, index_of)

        def engine_round(into: RunTiming, n: int, background: bool) -> None:
            kept: list[tuple[int, dict[int, np.ndarray]]] = []
            run_engine(
                oracle, clip, boxes, n, into, background=background, keep=kept, propagation=cfg.propagation,
                flow_preset=cfg.flow_preset,
            )
            into.quality = into.quality or Quality()
            score_quality(scene, kept, into.quality)

        variants: dict[str, Callable[[RunTiming], None]] = {"naive": lambda into: run_naive(base_predictor, clip, boxes, into, cfg.naive_frames)}
        for n in cfg.reencode:
            variants[str(n)] = lambda into, n=n: engine_round(into, n, False)
        for n in cfg.background:
            variants[f"bg{n}"] = lambda into, n=n: engine_round(into, n, True)
        e2e = {name: RunTiming() for name in variants}
        names = list(variants)
        for k in range(cfg.repeats):
            order = names[k % len(names) :] + names[: k % len(names)]
            for name in order:
                t = time.perf_counter()
                variants[name](e2e[name])
                log(f"round {k + 1}/{cfg.repeats} {name:>5}: {time.perf_counter() - t:6.1f} s, {e2e[name].fps[-1]:.2f} fps")

        live: dict[str, Quality] = {}
        if cfg.live:
            live["ceiling"] = oracle_ceiling(scene, len(index_of))
            for name in names:
                if name == "naive":
                    continue
                background, n = name.startswith("bg"), int(name.removeprefix("bg"))
                kept: list[tuple[int, dict[int, np.ndarray]]] = []
                timing = RunTiming()
                run_engine(
                    oracle, clip, boxes, n, timing, background=background, keep=kept, realtime=True, propagation=cfg.propagation,
                    flow_preset=cfg.flow_preset,
                )
                q = live[name] = Quality(
                    fps=timing.fps[-1], processed=len(kept) / len(index_of), encodes=timing.encodes[-1],
                    first_mask_s=timing.first_mask_s[-1],
                )
                score_quality(scene, kept, q)
                log(f"live round {name:>5}: {_fmt(timing.fps[-1]):>5} fps processed, mean IoU {q.summary()['mean']:.3f}")

        info = {
            "device": str(device),
            "backend": _backend_name(this, cfg.backend),
            "precision": precision_name(inference.dtype),
            "cuda_graphs": inference.graphs is not None,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "weights": Path(weights).name,
        }
        report = _report(cfg, info, model, gflops, e2e, live)
        raw = {
            "config": asdict(cfg),
            "info": info,
            "matmul_gflops": gflops,
            "model_s": model,
            "end_to_end": {
                k: {**{f: getattr(v, f) for f in ("fps", "fps_net", "latency_ms", "masks_per_frame", "stages_ms", "encodes", "first_mask_s")},
                    "quality": v.quality.summary() if v.quality is not None else None}
                for k, v in e2e.items()
            },
            "live": {
                k: {**v.summary(), "fps": v.fps, "processed": v.processed, "encodes": v.encodes, "first_mask_s": v.first_mask_s}
                for k, v in live.items()
            },
        }
        return report, raw


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,5,15, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    d = BenchConfig()
    p = OneLineParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--backend", default=d.backend, help="model backend: eager, torch, onnxruntime, openvino or auto")
    p.add_argument("--weights", default=None, help="vit_t checkpoint (default: the golden one if present, else random)")
    p.add_argument("--precision", default=d.precision, help="auto (fp16 on CUDA, else fp32), fp32, fp16 or bf16")
    p.add_argument("--cuda-graphs", action="store_true", help="replay the model as CUDA graphs (model.cuda_graphs)")
    p.add_argument("--frames", type=int, default=d.frames, help="frames in the synthetic clip")
    p.add_argument("--repeats", type=int, default=d.repeats, help="end-to-end rounds per variant")
    p.add_argument("--model-repeats", type=int, default=d.model_repeats, help="rounds of the encoder/decoder timings")
    p.add_argument("--reencode", type=_ints, default=d.reencode, help="engine.reencode_every values")
    p.add_argument(
        "--background", type=_ints, default=d.background,
        help="engine.reencode_every values to run with engine.background_encode (empty string: none)",
    )
    p.add_argument("--naive-frames", type=int, default=d.naive_frames, help="frames the naive baseline runs (0: all)")
    p.add_argument("--objects", type=int, default=d.objects, help=f"tracked objects: 1..8, 1..{HARD_MAX_OBJECTS} with --scene hard")
    p.add_argument("--size", type=frame_size, default=d.size, help="clip size WIDTHxHEIGHT")
    p.add_argument(
        "--scene", choices=("standard", "hard"), default=d.scene,
        help="synthetic clip: standard (flat shapes, still camera) or hard (photo textures, moving camera, "
        "deforming objects, crossings, an object leaving the frame; the first --frames of 10 s, up to 5 objects)",
    )
    p.add_argument(
        "--propagation", choices=METHODS, default=d.propagation,
        help="how the engine moves masks between encodes (propagation.method; the gpu preset, encoding every frame, uses none)",
    )
    p.add_argument(
        "--flow-preset", choices=FLOW_PRESETS, default=d.flow_preset,
        help="dense flow's DIS preset (propagation.flow_preset): ultrafast halves its time for less accuracy",
    )
    p.add_argument("--no-live", action="store_true", help="skip the rounds with the clip paced as a 30 fps camera")
    p.add_argument("--json", default=None, help="also write the raw numbers to this file")
    args = p.parse_args(argv)
    try:
        cfg = BenchConfig(
            device=args.device,
            backend=args.backend,
            precision=args.precision,
            cuda_graphs=args.cuda_graphs,
            weights=args.weights,
            frames=args.frames,
            repeats=args.repeats,
            model_repeats=args.model_repeats,
            reencode=tuple(args.reencode),
            background=tuple(args.background),
            naive_frames=args.naive_frames,
            objects=args.objects,
            size=tuple(args.size),  # type: ignore[arg-type]
            live=not args.no_live,
            scene=args.scene,
            propagation=args.propagation,
            flow_preset=args.flow_preset,
        )
        if args.json:
            check_output_file(args.json, "--json")
        # Before anything loads, as the realtime-sam command does: the names of --backend and
        # --precision, the device, the precision and backend on it, the backend's package, and
        # --weights when given (without it the golden or a random checkpoint is used).
        from realtime_sam.model.loader import check_model_config

        check_model_config(_model_config(cfg, cfg.weights), weights=cfg.weights is not None)
    except (ValueError, RealtimeSamError) as exc:
        p.error(str(exc))
    try:
        report, raw = run(cfg)
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report)
    if args.json:
        Path(args.json).write_text(json.dumps(strict_json(raw), indent=2, allow_nan=False), encoding="utf-8")  # a missing figure: null
    return 0


if __name__ == "__main__":
    sys.exit(main())
