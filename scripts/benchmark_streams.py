"""Several live streams: one process with one shared model against K separate processes, in the same run.

::

    python scripts/benchmark_streams.py                       # K = 1, 2, 4, 8; 20 s each
    python scripts/benchmark_streams.py --streams 1 2 4 --seconds 15 --config cpu
    python scripts/benchmark_streams.py --streams 1 8 --config cpu --set streams.frame_budget=0   # no cap

For each K, K live 640x480 streams at 30 fps (FFmpeg ``testsrc2`` graphs
paced in real time, each tracking two boxes) run

* **together**: one process, one model, ``realtime_sam.app.multi`` (encodes
  scheduled stalest stream first);
* **apart**: K processes at once, each with its own model and one stream.

and the script prints, per K and mode: processed frames per second per
stream (median over streams), the median encode age per stream (seconds
since the frame behind its newest embedding went to the encoder, sampled
every 0.5 s), the resident memory (the one process's, or the K processes'
sum), the cap the shared encoder's frame budget put on each stream's
processed frame rate (median over the samples and streams where it was
capped, and the share of those samples; ``-`` when never capped, see
``realtime_sam.app.budget``), and the ratios the issue's targets
are about: memory against one process with one stream, encode age against
one stream alone.

Weights default to the golden checkpoint or a random one (speed and memory
do not depend on the values). ``--inner K`` is the worker mode the script
runs itself in; it prints one JSON line.

Bad input (``--streams`` below 1, ``--seconds`` not above 0, a missing
``--config`` or ``--weights``, an unknown ``--set`` key, a device not here)
is one ``error: ...`` line on stderr and exit status 2, before any worker
starts; a worker's own one-line error is passed on the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    KEEP_EVERY_MASK,
    check_model_args,
    fail,
    median,
    rss_mb,
    weights_or_random,
)

from realtime_sam.errors import RealtimeSamError

GRAPH = "lavfi:testsrc2=size=640x480:rate=30"
BOXES = ((100.0, 100.0, 260.0, 240.0), (360.0, 220.0, 560.0, 420.0))


def inner(k: int, seconds: float, weights: str, config_name: str | None, device: str, overrides: list[str]) -> dict:
    """Run ``k`` live streams in this process for ``seconds``; the figures as a dict."""
    import cv2  # noqa: F401  (before PyAV, as in the app)

    from realtime_sam.app.multi import open_streams
    from realtime_sam.app.streams import StreamSpec
    from realtime_sam.config import load_config
    from realtime_sam.types import ObjectPrompt

    config = load_config(config_name, [f"model.weights={weights}", f"model.device={device}", *overrides])
    config = replace(config, tracker=KEEP_EVERY_MASK)  # random weights: keep every mask, so the work is real
    specs = [StreamSpec(f"s{i}", GRAPH) for i in range(k)]
    prompts = [ObjectPrompt(box=b) for b in BOXES]
    multi = open_streams(specs, config, prompts=prompts)
    ages: dict[str, list[float]] = {s.name: [] for s in specs}
    rss: list[float] = []
    caps: list[float] = []
    with multi:
        # Warm-up: until every stream has its first encode.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and any(st.encodes == 0 for st in multi.status()):
            failed = [st for st in multi.status() if st.state == "failed"]
            if failed:  # it would never encode: say why instead of waiting out the deadline
                raise SystemExit(f"stream {failed[0].name} failed: {failed[0].error}")
            multi.poll(0.05)
        start = {st.name: st.frames_processed for st in multi.status()}
        t0 = time.monotonic()
        next_sample = t0
        while time.monotonic() - t0 < seconds:
            multi.poll(0.02)
            if time.monotonic() >= next_sample:
                next_sample += 0.5
                for st in multi.status():
                    if st.encode_age_s is not None:
                        ages[st.name].append(st.encode_age_s)
                    caps.append(st.fps_cap or 0.0)
                rss.append(rss_mb())
        elapsed = time.monotonic() - t0
        end = {st.name: st.frames_processed for st in multi.status()}
    return {
        "fps": [(end[n] - start[n]) / elapsed for n in ages],
        "age": [median(v) for v in ages.values()],
        "rss_mb": max(rss) if rss else rss_mb(),
        "cap": median([c for c in caps if c]) if any(caps) else None,
        "capped": sum(1 for c in caps if c) / len(caps) if caps else 0.0,
    }


def run_inner(k: int, args, weights: Path) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--inner", str(k), "--seconds", str(args.seconds), "--weights", str(weights), "--device", args.device]
    if args.config:
        cmd += ["--config", args.config]
    for item in args.set:
        cmd += ["--set", item]
    # stderr to a file, not a pipe: K workers at once cannot block on a full pipe while another is read.
    log = tempfile.TemporaryFile(mode="w+", encoding="locale")  # noqa: SIM115  (closed in _figures, once the worker exits); the locale's, as the worker's stderr
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    proc.stderr_log = log  # type: ignore[attr-defined]
    return proc


class WorkerError(Exception):
    """A worker reported bad input in one ``error: ...`` line (its exit status 2): the message."""


def collect(procs: list[subprocess.Popen]) -> list[dict]:
    """Each worker's figures; a worker's ``error:`` line raises :class:`WorkerError`, any other failure exits."""
    try:
        return [_figures(p) for p in procs]
    finally:
        for p in procs:  # after a failure: the workers not yet read stop too
            if p.poll() is None:
                p.kill()
                p.wait()


def _figures(p: subprocess.Popen) -> dict:
    """One worker's figures, once it exits."""
    stdout, _ = p.communicate(timeout=900)
    p.stderr_log.seek(0)  # type: ignore[attr-defined]
    err = p.stderr_log.read()  # type: ignore[attr-defined]
    p.stderr_log.close()  # type: ignore[attr-defined]
    lines = err.strip().splitlines()
    if p.returncode == 2 and lines and lines[-1].startswith("error: "):
        raise WorkerError(lines[-1][len("error: "):])
    sys.stderr.write(err)  # warnings, or a bug's traceback: as the worker wrote them
    if p.returncode != 0:
        raise SystemExit(f"a worker failed with exit status {p.returncode}")
    return json.loads(stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8], help="values of K (default 1 2 4 8)")
    p.add_argument("--seconds", type=float, default=20.0, help="measured seconds per run, after warm-up (default 20)")
    p.add_argument("--weights", help="checkpoint (default: golden or a random one)")
    p.add_argument("--config", help="preset or YAML (default: the defaults; 'cpu' = background encodes)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="a config override (repeats)")
    p.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.inner is not None:
        try:
            figures = inner(args.inner, args.seconds, args.weights, args.config, args.device, args.set)
        except RealtimeSamError as exc:
            fail(exc)
            sys.stdout.flush()
            os._exit(2)  # as below: a background encode may still run
        print(json.dumps(figures), flush=True)
        # A background encode still running in torch (seconds on a busy CPU; its result is not needed)
        # would abort a normal interpreter exit: the figures are out, leave at once.
        sys.stderr.flush()
        os._exit(0)
    if min(args.streams) < 1:
        return fail(f"--streams needs values of K >= 1, e.g. 1 2 4 (got {' '.join(map(str, args.streams))})")
    if not args.seconds > 0:
        return fail(f"--seconds must be > 0 (got {args.seconds:g})")
    try:
        from realtime_sam.config import load_config

        check_model_args(args.device, weights=args.weights)
        load_config(args.config, args.set)  # a bad --config or --set key: now, not in every worker
    except RealtimeSamError as exc:
        return fail(exc)
    rows: list[tuple[int, dict, list[dict]]] = []
    with tempfile.TemporaryDirectory() as scratch:
        weights = weights_or_random(args.weights, Path(scratch))
        try:
            for k in args.streams:
                together = collect([run_inner(k, args, weights)])[0]
                apart = collect([run_inner(1, args, weights) for _ in range(k)])
                rows.append((k, together, apart))
                print(f"K={k} done", file=sys.stderr, flush=True)
        except WorkerError as exc:
            return fail(exc)
        except KeyboardInterrupt:  # Ctrl-C: the workers are stopped (collect); keep the K already measured
            done = " ".join(str(k) for k, _, _ in rows) or "none"
            print(f"interrupted: the table has the K measured before it ({done})", file=sys.stderr, flush=True)
            _print_table(rows)
            return 130
    _print_table(rows)
    return 0


def _print_table(rows: list[tuple[int, dict, list[dict]]]) -> None:
    """The figures of each K measured, one process against K processes."""
    if not rows:
        return
    base = next((t for k, t, _ in rows if k == 1), None)
    print(f"{'K':>2} {'mode':<9} {'fps/stream':>10} {'fps cap':>9} {'encode age':>10} {'RSS MB':>8} {'RSS vs 1':>8} {'age vs 1':>8}")
    for k, together, apart in rows:
        for mode, fps, cap, age, rss in (
            ("together", together["fps"], together.get("cap") and f"{together['cap']:.1f} {together['capped']:.0%}",
             together["age"], together["rss_mb"]),
            ("apart", [f for a in apart for f in a["fps"]], None, [x for a in apart for x in a["age"]], sum(a["rss_mb"] for a in apart)),
        ):
            mem = f"{rss / base['rss_mb']:.2f}x" if base else "-"
            worst = max(age) if age else float("nan")
            ratio = f"{worst / base['age'][0]:.2f}x" if base and base["age"] and base["age"][0] > 0 else "-"
            capped = cap or "-"
            print(f"{k:>2} {mode:<9} {median(fps):>10.1f} {capped:>9} {median(age):>9.2f}s {rss:>8.0f} {mem:>8} {ratio:>8}")
    print("encode age: median per stream, then the median over streams; 'age vs 1': the worst stream's against one stream alone")
    print("fps cap: the frame budget's cap on each stream's processed rate (median while capped, share of samples capped; '-': never)")


if __name__ == "__main__":
    raise SystemExit(main())
