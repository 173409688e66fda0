"""Benchmark the model's backends against the plain eager model, in one interleaved run.

::

    python scripts/benchmark_model.py                       # CPU, all installed backends, 5 repeats
    python scripts/benchmark_model.py --repeats 9 --backends eager torch openvino
    python scripts/benchmark_model.py --device cuda --precision fp16

The baseline, ``plain``, is the eager model in a separate worker process
with the default memory allocator: what the project ran before any
optimisation. In this process every backend runs as ``load_inference_model``
sets it up on the CPU (allocator tuned, see
:func:`realtime_sam.model.device.tune_cpu_allocator`), so ``eager`` here shows what
the allocator alone gives. For every backend it prints, as medians over
``--repeats`` rounds (min in brackets):

* the image encoder at 1024x1024;
* on a GPU (or with ``--encode-batch``), the encoder over 4 and 8 images in
  one batched call against the same images one call each, the way
  several streams share one model (``realtime_sam.app.scheduler``);
* the decoder for 1, 4, 8 and 16 box prompts in one batched call, for 8 box
  prompts each with a mask prompt (as the tracker decodes), and for 8
  one-prompt calls one after another;
* peak memory: on the CPU the peak resident set (``VmHWM``) of a fresh
  child process that loads that backend and runs it once (one process per
  backend, so the numbers do not mix); on CUDA ``max_memory_allocated``.

Rounds alternate between backends (A B C A B C ...; the worker process runs
its turn while this one waits), so a machine whose load changes during the
run slows all of them alike. Each figure is also given as
a ratio to the eager baseline and to the FLOP floor: the time the measured
fp32 matrix-multiply rate of this machine would need for the network's FLOPs
(encoder 77.5 GFLOP, decoder 3.6 GFLOP per prompt, MobileSAM).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from _common import check_output_file, peak_rss_mb

from realtime_sam.errors import RealtimeSamError
from realtime_sam.model.device import (
    configure_cpu_threads,
    resolve_device,
    resolve_precision,
)
from realtime_sam.model.runtime import (
    BACKENDS,
    InferenceModel,
    InferenceOptions,
    ModelConfig,
    load_inference_model,
)
from realtime_sam.model.weights import resolve_weights

GOLDEN_CKPT = REPO.parent / "shared" / "golden" / "mobile_sam_random_seed0.pt"
ENCODER_GFLOP = 77.5
DECODER_GFLOP_PER_PROMPT = 3.6
BATCHES = (1, 4, 8, 16)
SEQUENTIAL = 8
PLAIN = "plain"  # the baseline: eager model, default allocator, own process


@dataclass
class Case:
    name: str
    prompts: int  # for the FLOP floor (0: an encoder case)
    run: Callable[[], object]
    images: int = 1  # images the encoder case encodes (for the FLOP floor)


def sync_device(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """Measured rate of a large square matrix product (GFLOP/s): this machine's practical peak."""
    n = 2048 if device.type == "cpu" else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        sync_device(device)
        t = time.perf_counter()
        torch.mm(a, b)
        sync_device(device)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def _image(seed: int = 0) -> np.ndarray:
    """A 720x1280 RGB test image with structure (gradients and shapes), deterministic."""
    rng = np.random.default_rng(seed)
    h, w = 720, 1280
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + yy) * 255 // (h + w)], axis=-1).astype(np.uint8)
    for _ in range(12):
        x0, y0 = rng.integers(0, w - 200), rng.integers(0, h - 150)
        img[y0 : y0 + rng.integers(40, 150), x0 : x0 + rng.integers(40, 200)] = rng.integers(0, 256, 3)
    return img


def _boxes(n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(0, 1000, n)
    y0 = rng.uniform(0, 500, n)
    return np.stack([x0, y0, x0 + rng.uniform(40, 280, n), y0 + rng.uniform(40, 220, n)], axis=1)


def build_cases(model: InferenceModel, image: np.ndarray, encode_batches: Sequence[int] = ()) -> list[Case]:
    emb = model.encode(image)
    dev = model.device
    boxes = {b: _boxes(b) for b in (*BATCHES, SEQUENTIAL)}
    low8, _ = model.decode(emb, boxes=boxes[8])
    mask8 = low8.clone()
    cases = [Case("encoder 1024", 0, lambda: model.encode(image))]
    for b in encode_batches:
        images = [_image(seed) for seed in range(b)]  # different images, as from different streams
        cases.append(Case(f"encode {b} batched", 0, lambda images=images: model.encode_batch(images), images=b))
        cases.append(Case(f"encode {b} one by one", 0, lambda images=images: [model.encode(i) for i in images], images=b))
    for b in BATCHES:
        cases.append(Case(f"decode {b:>2} batched", b, lambda b=b: model.decode(emb, boxes=boxes[b])))
    cases.append(Case(" 8 batched +mask", 8, lambda: model.decode(emb, boxes=boxes[8], mask_input=mask8)))
    seq = boxes[SEQUENTIAL]
    cases.append(
        Case(
            f"{SEQUENTIAL} x 1 sequential",
            SEQUENTIAL,
            lambda: [model.decode(emb, boxes=seq[i : i + 1]) for i in range(SEQUENTIAL)],
        )
    )
    for c in cases:  # warm-up (first calls allocate and pick kernels)
        c.run()
    sync_device(dev)
    return cases


def time_interleaved(
    runners: dict[str, Callable[[int], float]], names: list[str], repeats: int
) -> dict[str, dict[str, list[float]]]:
    """``{backend: {case: [seconds...]}}``; ``runners[backend](i)`` times case ``i`` once."""
    out: dict[str, dict[str, list[float]]] = {b: {n: [] for n in names} for b in runners}
    for _ in range(repeats):
        for i, name in enumerate(names):
            for backend, run in runners.items():
                out[backend][name].append(run(i))
    return out


def _timer(cases: list[Case], device: torch.device) -> Callable[[int], float]:
    def run(i: int) -> float:
        sync_device(device)
        t = time.perf_counter()
        cases[i].run()
        sync_device(device)
        return time.perf_counter() - t

    return run


class BaselineWorker:
    """The plain eager model in a child process with the default allocator, driven case by case over a pipe."""

    def __init__(self, args: argparse.Namespace) -> None:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--baseline-worker", *_common_args(args)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self._read()
        if not line.startswith("READY "):
            raise RuntimeError(f"baseline worker failed to start: {line!r}")
        self.load_s = float(line.split()[1])

    def _read(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"baseline worker exited (code {self.proc.poll()})")
        return line.strip()

    def __call__(self, i: int) -> float:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        return float(self._read())

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _run_baseline_worker(args: argparse.Namespace) -> None:
    t = time.perf_counter()
    model = _load(args, args.weights or None, "eager", tune_allocator=False)
    load_s = time.perf_counter() - t
    cases = build_cases(model, _image(), args.encode_batch or ())
    run = _timer(cases, model.device)
    print(f"READY {load_s:.2f}", flush=True)
    for line in sys.stdin:
        print(f"{run(int(line)):.6f}", flush=True)


def _common_args(args: argparse.Namespace) -> list[str]:
    out = ["--device", args.device, "--precision", args.precision, "--weights", str(args.weights or "")]
    if args.cache_dir:
        out += ["--cache-dir", args.cache_dir]
    if args.threads:
        out += ["--threads", str(args.threads)]
    if args.encode_batch:
        out += ["--encode-batch", *map(str, args.encode_batch)]
    return out


def memory_probe(args: argparse.Namespace, backend: str) -> float:
    """Peak RSS (MiB) of a child process that loads ``backend`` and runs encode + a 16-prompt decode."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-probe", backend, *_common_args(args)]
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"memory probe for {backend} failed: {res.stderr.strip().splitlines()[-1:]}")
    return float(res.stdout.strip().splitlines()[-1])


def _run_probe(args: argparse.Namespace) -> None:
    plain = args.memory_probe == PLAIN
    backend = "eager" if plain else args.memory_probe
    model = _load(args, args.weights or None, backend, tune_allocator=not plain)
    emb = model.encode(_image())
    model.decode(emb, boxes=_boxes(16))
    print(peak_rss_mb())


def _load(args: argparse.Namespace, weights, backend: str, *, tune_allocator: bool = True) -> InferenceModel:
    model = ModelConfig(device=args.device, precision=args.precision, backend=backend)
    options = InferenceOptions(num_threads=args.threads, cache_dir=args.cache_dir, tune_allocator=tune_allocator)
    return load_inference_model(weights, model, options)


def _installed(backend: str) -> bool:
    if backend in ("onnxruntime", "openvino"):
        import importlib.util

        return importlib.util.find_spec(backend) is not None
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--precision", default="auto", help="auto, fp32, fp16 (GPU) or bf16")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds per case (median reported)")
    p.add_argument("--weights", default=None, help="vit_t checkpoint (default: the golden one if present, else random)")
    p.add_argument("--backends", nargs="+", default=None, help=f"backends besides eager (default: the installed ones of {BACKENDS[2:]})")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice)")
    p.add_argument("--cache-dir", default=None, help="where exported encoders are cached (default: beside the weights)")
    p.add_argument("--no-memory", action="store_true", help="skip the per-backend peak-memory probes")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument(
        "--encode-batch", type=int, nargs="*", default=None,
        help="image counts for the batched-encoder cases (default: 4 8 on a GPU, none on the CPU)",
    )
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    p.add_argument("--baseline-worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    try:
        return _main(p, args)
    except RealtimeSamError as exc:  # a device not here, a precision it lacks, a missing --weights: one line
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    if args.weights is None and GOLDEN_CKPT.exists():
        args.weights = str(GOLDEN_CKPT)
    if args.memory_probe:
        _run_probe(args)
        return 0
    if args.baseline_worker:
        _run_baseline_worker(args)
        return 0
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    if args.encode_batch and min(args.encode_batch) < 2:
        p.error("--encode-batch needs image counts of 2 or more, e.g. 4 8")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1 (got {args.threads}); leave it out for PyTorch's choice")
    unknown = [b for b in args.backends or () if b not in BACKENDS]
    if unknown:  # now, not after the other backends' loads
        p.error(f"unknown --backends {' '.join(unknown)}; choose from {' '.join(BACKENDS)}")
    if args.json:
        try:
            check_output_file(args.json, "--json")  # now, not after every case has run
        except ValueError as exc:
            p.error(str(exc))

    device = resolve_device(args.device)
    dtype = resolve_precision(args.precision, device)
    if args.weights:
        resolve_weights(args.weights, download=False)  # missing: now, not in the worker after the loads
    threads = configure_cpu_threads(args.threads) if device.type == "cpu" else None
    wanted = args.backends or [b for b in ("torch", "onnxruntime", "openvino") if _installed(b)]
    if device.type != "cpu":
        wanted = [b for b in wanted if b not in ("onnxruntime", "openvino")]
    local = ["eager"] + [b for b in wanted if b != "eager"]

    print(f"device {device}, precision {str(dtype).replace('torch.', '')}, threads {threads}, torch {torch.__version__}")
    print(f"weights: {args.weights or 'random'}")
    omp = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS") if k in os.environ}
    print(f"OpenMP environment: {omp or 'defaults'} (on a busy machine OMP_WAIT_POLICY=PASSIVE avoids spinning threads)")
    gflops = matmul_gflops(device, dtype if device.type != "cpu" else torch.float32)
    print(f"matmul rate {gflops:.0f} GFLOP/s -> floor: encoder {ENCODER_GFLOP / gflops * 1e3:.0f} ms, "
          f"decoder {DECODER_GFLOP_PER_PROMPT / gflops * 1e3:.1f} ms/prompt")

    encode_batches = args.encode_batch if args.encode_batch is not None else ((4, 8) if device.type != "cpu" else ())
    image = _image()
    runners: dict[str, Callable[[int], float]] = {}
    load_s: dict[str, float] = {}
    worker = None
    if device.type == "cpu":
        worker = BaselineWorker(args)
        runners[PLAIN] = worker
        load_s[PLAIN] = worker.load_s
        print(f"loaded {PLAIN} in {worker.load_s:.1f} s (eager, default allocator, worker process)")
    names: list[str] = []
    prompts: dict[str, int] = {}
    images: dict[str, int] = {}
    for b in local:
        t = time.perf_counter()
        model = _load(args, args.weights, b)
        load_s[b] = time.perf_counter() - t
        cases = build_cases(model, image, encode_batches)
        names = [c.name for c in cases]
        prompts = {c.name: c.prompts for c in cases}
        images = {c.name: c.images for c in cases}
        runners[b] = _timer(cases, device)
        print(f"loaded {b} in {load_s[b]:.1f} s ({model!r})")
    backends = list(runners)
    baseline = backends[0]

    try:
        times = time_interleaved(runners, names, args.repeats)
    finally:
        if worker is not None:
            worker.close()

    memory: dict[str, float] = {}
    if device.type == "cuda":
        # One process holds every backend: per-backend GPU peaks need a run per backend.
        for b, run in runners.items():
            torch.cuda.reset_peak_memory_stats(device)
            for i in range(len(names)):
                run(i)
            memory[b] = torch.cuda.max_memory_allocated(device) / 2**20
    elif not args.no_memory:
        for b in backends:
            memory[b] = memory_probe(args, b)

    base = times[baseline]
    floor_ms = {n: (ENCODER_GFLOP * images[n] if prompts[n] == 0 else DECODER_GFLOP_PER_PROMPT * prompts[n]) / gflops * 1e3
                for n in names}
    print()
    print(f"{'case':<22}{'backend':<13}{'median ms':>11}{'(min)':>9}{'x ' + baseline:>9}{'x floor':>9}")
    result: dict[str, object] = {"device": str(device), "precision": str(dtype), "threads": threads, "omp_env": omp,
                                 "matmul_gflops": gflops, "load_s": load_s, "cases": {}, "peak_mem_mib": memory}
    for name in names:
        for b in backends:
            med = statistics.median(times[b][name]) * 1e3
            mn = min(times[b][name]) * 1e3
            rel = med / (statistics.median(base[name]) * 1e3)
            print(f"{name:<22}{b:<13}{med:>11.1f}{mn:>9.1f}{rel:>9.2f}{med / floor_ms[name]:>9.1f}")
            result["cases"].setdefault(name, {})[b] = {"median_ms": med, "min_ms": mn, "x_baseline": rel,  # type: ignore[union-attr]
                                                       "x_floor": med / floor_ms[name]}
        print()
    seq = statistics.median(base[f"{SEQUENTIAL} x 1 sequential"])
    for b in backends:
        batched = statistics.median(times[b]["decode  8 batched"])
        print(f"{b:<13} 8 prompts batched / 8 one-prompt {baseline} calls: {batched / seq:.2f}")
    for n in encode_batches:
        for b in backends:
            batched = statistics.median(times[b][f"encode {n} batched"])
            apart = statistics.median(times[b][f"encode {n} one by one"])
            print(f"{b:<13} encoder, {n} images: one batched call {n / batched:.1f} images/s, one call each "
                  f"{n / apart:.1f} images/s: {apart / batched:.2f}x the throughput")
            result.setdefault("encode_batch", {}).setdefault(b, {})[n] = {  # type: ignore[union-attr]
                "batched_images_per_s": n / batched, "one_by_one_images_per_s": n / apart, "speedup": apart / batched}
    if memory:
        kind = "GPU max allocated" if device.type == "cuda" else "peak RSS of a fresh process"
        print(f"\npeak memory ({kind}): " + ", ".join(f"{b} {m:.0f} MiB" for b, m in memory.items()))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
