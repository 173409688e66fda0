"""Measure what CUDA graphs (and, with ``--compile``, torch.compile) would give the encoder and decoder on a GPU.

::

    python scripts/benchmark_cuda_graphs.py --precision fp16 [--compile] [--json out.json]

The figures behind ``model.cuda_graphs`` (on in ``--config gpu``;
:mod:`realtime_sam.model.runtime.cuda_graphs`), measured here on bare
captures, and torch.compile, which the product does not use. On a GPU the
model is bound by Python and kernel launches, not arithmetic (README, "On
a GPU"); a CUDA graph replays a captured call's kernels with one launch, so
the gap between ``eager`` and ``graph`` below is what launch overhead costs. For each case it prints medians over ``--repeats`` calls:

* the encoder on one 1024x1024 image (``1x3x1024x1024``);
* the prompt encoder + mask decoder for 1, 5 and 16 box prompts, each with
  a mask prompt (as the tracker decodes between encodes);
* with ``--compile``: the encoder under ``torch.compile`` (inductor, no
  graphs) and the decoder under ``mode="reduce-overhead"`` (inductor with
  CUDA graphs), compile time included in the printout.

Every replayed output is compared with the eager output of the same inputs
(max absolute difference), so a graph that captured the wrong thing shows.
Graphs need static shapes: the product (``GraphCache``) keeps one graph per
prompt count and copies each call's inputs into the captured tensors; the
timing here includes that copy.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing

import numpy as np
import torch

from realtime_sam.errors import RealtimeSamError
from realtime_sam.model.device import resolve_device, resolve_precision
from realtime_sam.model.runtime import InferenceOptions, ModelConfig, load_inference_model
from realtime_sam.model.runtime.cuda_graphs import capture_graph

GOLDEN_CKPT = REPO.parent / "shared" / "golden" / "mobile_sam_random_seed0.pt"
PROMPTS = (1, 5, 16)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of one ``fn()`` call, synchronised on both sides."""
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def _max_diff(a: object, b: object) -> float:
    if isinstance(a, (tuple, list)):
        return max(_max_diff(x, y) for x, y in zip(a, b))
    return float((a.float() - b.float()).abs().max())  # type: ignore[union-attr]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="a CUDA device (cuda, cuda:N)")
    p.add_argument("--precision", default="fp16", help="fp16 or fp32")
    p.add_argument("--repeats", type=int, default=50, help="timed calls per case (median reported)")
    p.add_argument("--weights", default=None, help="vit_t checkpoint (default: the golden one if present, else random)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (takes minutes to compile)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    try:  # a device not here, a precision it lacks, a missing --weights: one line, exit 2
        device = resolve_device(args.device)
        if device.type != "cuda":
            p.error(f"CUDA graphs need a CUDA device; {args.device!r} resolved to {device}")
        if args.weights is None and GOLDEN_CKPT.exists():
            args.weights = str(GOLDEN_CKPT)
        dtype = resolve_precision(args.precision, device)
        model = load_inference_model(args.weights, ModelConfig(device=args.device, precision=args.precision), InferenceOptions())
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {str(dtype).replace('torch.', '')}, {model!r}")
    rng = np.random.default_rng(0)
    results: dict[str, dict[str, float]] = {}

    def report(name: str, eager: float, other: str, ms: float, diff: float) -> None:
        results.setdefault(name, {"eager_ms": eager})[f"{other}_ms"] = ms
        results[name][f"{other}_max_abs_diff"] = diff
        print(f"{name:<26} eager {eager:7.2f} ms   {other:<15} {ms:7.2f} ms   x{eager / ms:5.2f}   max |diff| {diff:.2e}")

    with torch.inference_mode():
        images = [torch.from_numpy(rng.integers(0, 256, (3, 1024, 1024), dtype=np.uint8)).to(device) for _ in range(2)]
        xs = [model.sam_reference.preprocess(im[None].float()).to(dtype) for im in images]
        emb = model.encode(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8))
        try:
            static_x = xs[0].clone()
            graph, (g_out,) = capture_graph(lambda t: (model.encoder(t),), (static_x,), device=device)
            eager = median_ms(lambda: model.encoder(xs[1]), args.repeats)

            def replay() -> None:
                static_x.copy_(xs[1])
                graph.replay()

            ms = median_ms(replay, args.repeats)
            report("encoder 1024", eager, "graph", ms, _max_diff(g_out, model.encoder(xs[1])))
        except Exception:  # an experiment: report and go on to the decoder
            traceback.print_exc()

        def prompts(b: int) -> tuple[torch.Tensor, torch.Tensor]:
            """``b`` random 150x150 boxes (``bx4``) and mask prompts (``bx1x256x256``)."""
            corners = torch.tensor(rng.uniform(0, 600, (b, 2)), dtype=torch.float32, device=device)
            return torch.cat([corners, corners + 150.0], dim=1), torch.randn(b, 1, 256, 256, device=device)

        def decode(bx: torch.Tensor, mk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return model.decode_embedded(emb, None, bx, mk, False)

        for b in PROMPTS:
            try:
                boxes, masks = prompts(b)
                sb, sm = boxes.clone(), torch.zeros_like(masks)
                graph, g_out = capture_graph(decode, (sb, sm), device=device)
                eager = median_ms(lambda: decode(boxes, masks), args.repeats)

                def replay_dec() -> None:
                    sb.copy_(boxes)
                    sm.copy_(masks)
                    graph.replay()

                ms = median_ms(replay_dec, args.repeats)
                report(f"decode {b:>2} boxes + mask", eager, "graph", ms, _max_diff(g_out, decode(boxes, masks)))
            except Exception:
                traceback.print_exc()

    if args.compile:
        try:
            t = time.perf_counter()
            enc_c = torch.compile(model.encoder)
            with torch.inference_mode():
                ref = model.encoder(xs[1])
                enc_c(xs[0])
                compile_s = time.perf_counter() - t
                eager = median_ms(lambda: model.encoder(xs[1]), args.repeats)
                ms = median_ms(lambda: enc_c(xs[1]), args.repeats)
                report("encoder 1024", eager, "compile", ms, _max_diff(enc_c(xs[1]), ref))
            results["encoder 1024"]["compile_s"] = compile_s
            print(f"  (encoder compiled in {compile_s:.0f} s)")
        except Exception:
            traceback.print_exc()
        try:
            boxes, masks = prompts(5)
            t = time.perf_counter()
            dec_c = torch.compile(decode, mode="reduce-overhead")
            with torch.inference_mode():
                for _ in range(3):  # reduce-overhead records its graph on a later call
                    dec_c(boxes, masks)
                compile_s = time.perf_counter() - t
                eager = median_ms(lambda: decode(boxes, masks), args.repeats)
                ms = median_ms(lambda: dec_c(boxes, masks), args.repeats)
                report("decode  5 boxes + mask", eager, "compile-graphs", ms, _max_diff(dec_c(boxes, masks), decode(boxes, masks)))
            print(f"  (decoder compiled in {compile_s:.0f} s)")
        except Exception:
            traceback.print_exc()

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
