"""How far an optical flow alone can carry a mask: the ground truth itself, carried frame by frame.

Between two encodes the engine moves each mask by optical flow. This script
asks what the flow allows at best: on a DAVIS-layout folder (the same as
``eval_vos.py`` reads), from every ``--every``-th frame it takes the ground
truth of each object, carries it ``--steps`` frames on by the flow alone
(the backward flows composed, so the mask is resampled once per step from
the start frame, as the engine composes its fields) and scores J (region
IoU) against the ground truth there. Printed: mean J over sequences, per
flow and per number of frames carried, and per sequence for the first flow.

::

    python scripts/flow_bound.py                                   # ../shared/davis, DIS medium/fast/ultrafast
    python scripts/flow_bound.py --flows medium,ultrafast,lk-grid --steps 4
    python scripts/flow_bound.py --root DAVIS --sequences goat,camel --logits

Set it against ``eval_vos.py``'s one-way rows by frames since a decode: where
the engine scores as much as the ground truth carried by the flow it runs,
its loss between decodes is the flow's own error. Rows ``still`` (the mask
left where it was) and, with ``--logits``, the ground truth put through
SAM's ``256x256`` low-res logits before it is carried (what a decode can
hold) come with every run. Each flow's row ends with its median time a
frame pair, in ms, at the footage's size (time it on a quiet machine).

As in ``eval_vos.py``, an object is scored where it has at least 150 pixels
(at the start frame and at the frame scored). Flows run on the whole frame
in grey.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import eval_vos  # noqa: E402  (a neighbour: the DAVIS-layout reader and J)

from realtime_sam.model.transforms import preprocess_shape  # noqa: E402
from realtime_sam.testing.oracle import upsample_logits  # noqa: E402
from realtime_sam.testing.synthetic import mask_logits  # noqa: E402

Flow = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``flow(a, b)``: ``HxW uint8`` grey frames -> ``HxWx2 float32`` displacement from ``a`` to ``b``, pixels."""


def _dis(preset: int, **settings: float) -> Flow:
    dis = cv2.DISOpticalFlow_create(preset)
    for name, value in settings.items():
        getattr(dis, f"set{name}")(value)
    return lambda a, b: dis.calc(a, b, None)


def _farneback(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 5, 21, 5, 7, 1.5, 0)


def _lk_grid(step: int = 8, win: int = 11) -> Flow:
    """Dense flow made from sparse flow: pyramidal Lucas-Kanade on a grid of points, spread over every pixel.

    A point every ``step`` px (cell centres), tracked ``a -> b`` and back with a
    ``win x win`` window and three pyramid levels; a point that does not come
    back within 1 px carries no weight. The grid's displacements are spread by
    normalised Gaussian smoothing (sigma one grid cell; where no kept point is
    near, four cells) and upsampled bilinearly to the frame. Kept to measure the
    idea against DIS: it is not cheaper for the same quality (README, the record).
    """
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 10, 0.03)

    def flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        h, w = a.shape
        gy, gx = np.mgrid[step // 2 : h : step, step // 2 : w : step].astype(np.float32)
        gh, gw = gx.shape
        p0 = np.stack([gx.ravel(), gy.ravel()], 1).reshape(-1, 1, 2)
        lk = dict(winSize=(win, win), maxLevel=3, criteria=criteria)
        p1, found, _ = cv2.calcOpticalFlowPyrLK(a, b, p0, None, **lk)
        back, found_back, _ = cv2.calcOpticalFlowPyrLK(b, a, p1, None, **lk)
        kept = (found.ravel() == 1) & (found_back.ravel() == 1) & (np.linalg.norm((back - p0).reshape(-1, 2), axis=1) < 1.0)
        weight = kept.reshape(gh, gw).astype(np.float32)
        shift = (p1 - p0).reshape(gh, gw, 2) * weight[..., None]
        near = cv2.GaussianBlur(shift, (0, 0), 1.0) / np.maximum(cv2.GaussianBlur(weight, (0, 0), 1.0), 1e-6)[..., None]
        far = cv2.GaussianBlur(shift, (0, 0), 4.0) / np.maximum(cv2.GaussianBlur(weight, (0, 0), 4.0), 1e-6)[..., None]
        cells = np.where((cv2.GaussianBlur(weight, (0, 0), 1.0) > 0.05)[..., None], near, far).astype(np.float32)
        # Cell centres at step/2 + k*step: a resize to gw*step x gh*step puts them there; the edge is repeated.
        field = cv2.resize(cells, (gw * step, gh * step), interpolation=cv2.INTER_LINEAR)
        return np.pad(field[:h, :w], ((0, max(0, h - field.shape[0])), (0, max(0, w - field.shape[1])), (0, 0)), mode="edge")

    return flow


FLOWS: Mapping[str, Callable[[], Flow]] = {
    "medium": lambda: _dis(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM),  # what the engine's dense propagation runs
    "fast": lambda: _dis(cv2.DISOPTICAL_FLOW_PRESET_FAST),
    "ultrafast": lambda: _dis(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST),
    "medium-fs0": lambda: _dis(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, FinestScale=0),
    "farneback": lambda: _farneback,
    "lk-grid": _lk_grid,  # a point every 8 px, an 11 px window
}


def _timed(flow: Flow, seconds: list[float]) -> Flow:
    """``flow``, appending each call's wall time to ``seconds`` (the flows run one at a time, in turn)."""

    def timed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        start = time.perf_counter()
        field = flow(a, b)
        seconds.append(time.perf_counter() - start)
        return field

    return timed


def _logits_round_trip(mask: np.ndarray) -> np.ndarray:
    """``HxW bool`` -> the same mask put through SAM's 256x256 logits and upsampled back."""
    h, w = mask.shape
    size = preprocess_shape(h, w, 1024)  # SAM's input size, as the oracle's decoder lays out its logits
    return upsample_logits(mask_logits(mask, size)[None], size, (h, w))[0]


def carried(
    seq: eval_vos.VosSequence, flow: Flow | None, *, every: int = 5, steps: int = 4, logits: bool = False
) -> list[float]:
    """Mean J of the ground truth carried ``1..steps`` frames by ``flow`` (``None``: left still), one per step.

    From each frame ``t`` with ``t % every == 0`` and ``t + steps`` in the sequence,
    every object of the ground truth there (pixel value > 0; each id its own object)
    is carried on; ``logits``: put through the low-res logits first. A step with
    no scored object is ``nan``.
    """
    n = len(seq.frames)
    h, w = seq.labels[0].shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grey = [cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in seq.frames] if flow is not None else []
    scores: list[list[float]] = [[] for _ in range(steps)]
    for t in range(0, n - steps, every):
        ids = [int(i) for i in np.unique(seq.labels[t]) if i]
        starts = {}
        for i in ids:
            m = seq.labels[t] == i
            if np.count_nonzero(m) >= eval_vos.MIN_AREA:
                starts[i] = (_logits_round_trip(m) if logits else m).astype(np.float32)
        if not starts:
            continue
        mx, my = xx.copy(), yy.copy()  # where each pixel of frame t + k was at frame t
        for k in range(1, steps + 1):
            if flow is not None:
                back = flow(grey[t + k], grey[t + k - 1])  # frame t+k -> t+k-1
                sx, sy = xx + back[..., 0], yy + back[..., 1]
                mx = cv2.remap(mx, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                my = cv2.remap(my, sx, sy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            for i, start in starts.items():
                gt = seq.labels[t + k] == i
                if np.count_nonzero(gt) < eval_vos.MIN_AREA:
                    continue
                moved = cv2.remap(start, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) > 0.5
                scores[k - 1].append(eval_vos.region_j(moved, gt))
    return [float(np.mean(s)) if s else float("nan") for s in scores]


def _parser() -> argparse.ArgumentParser:
    default_root = Path(__file__).resolve().parents[2] / "shared" / "davis"
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--root", type=Path, default=default_root, help="DAVIS-layout folder (default: ../shared/davis)")
    p.add_argument("--sequences", default="", help="comma-separated sequence names (default: all)")
    p.add_argument("--flows", default="medium,fast,ultrafast", help=f"flows to compare: {', '.join(FLOWS)}")
    p.add_argument("--every", type=int, default=5, help="start from every N-th frame (default: 5)")
    p.add_argument("--steps", type=int, default=4, help="frames to carry the mask on (default: 4)")
    p.add_argument("--logits", action="store_true", help="also a row with the ground truth put through the 256x256 logits first")
    p.add_argument("--max-frames", type=int, default=0, help="read at most this many frames per sequence (0: all)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    names = [f.strip() for f in args.flows.split(",") if f.strip()]
    unknown = [f for f in names if f not in FLOWS]
    if unknown or not names:
        print(f"error: unknown flow {', '.join(unknown) or '(none)'}; choose from {', '.join(FLOWS)}", file=sys.stderr)
        return 2
    if args.every < 1 or args.steps < 1:
        print("error: --every and --steps must be at least 1", file=sys.stderr)
        return 2
    if args.max_frames < 0:
        print(f"error: --max-frames must be >= 0 (0: all frames), got {args.max_frames}", file=sys.stderr)
        return 2
    try:
        found = eval_vos.find_sequences(args.root)
        wanted = eval_vos.sequence_names(args.sequences, found)
        missing = [s for s in wanted if s not in found]
        if missing:
            raise eval_vos.EvalError(f"no sequence {', '.join(missing)} in {args.root}")
        seqs = [eval_vos.load_sequence(args.root, s, found[s], max_frames=args.max_frames) for s in wanted]
    except eval_vos.EvalError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    rows: dict[str, list[list[float]]] = {}
    costs: dict[str, list[float]] = {}  # seconds of each flow call, per flow
    rows["still"] = [carried(q, None, every=args.every, steps=args.steps) for q in seqs]
    if np.isnan(np.array(rows["still"], dtype=np.float64)).all():  # no start frame with t + steps in a sequence
        longest = max(len(q.frames) for q in seqs)
        print(f"error: no start frame is --steps {args.steps} frames from a sequence's end with an object to score "
              f"(longest sequence read: {longest} frames); lower --steps or read more frames", file=sys.stderr)
        return 2
    for name in names:
        flow = _timed(FLOWS[name](), costs.setdefault(name, []))
        rows[name] = [carried(q, flow, every=args.every, steps=args.steps) for q in seqs]
        if name == names[0] and args.logits:
            row = f"{name}, through the logits"
            flow = _timed(FLOWS[name](), costs.setdefault(row, []))
            rows[row] = [carried(q, flow, every=args.every, steps=args.steps, logits=True) for q in seqs]

    head = " | ".join(f"{k} frame{'s' if k > 1 else ''} on" for k in range(1, args.steps + 1))
    print(f"\nThe ground truth carried by the flow alone, mean J over {len(seqs)} sequence(s):\n")
    print(f"| carried by | {head} | ms a frame pair |")
    print("|---|" + "---:|" * (args.steps + 1))
    for name, per_seq in rows.items():
        means = np.nanmean(np.array(per_seq, dtype=np.float64), axis=0)
        cost = f"{1000 * float(np.median(costs[name])):.1f}" if costs.get(name) else "-"
        print(f"| {name} | " + " | ".join(f"{v:.3f}" for v in means) + f" | {cost} |")
    first = names[0]
    print(f"\nPer sequence, {first}:\n")
    print(f"| sequence | {head} |")
    print("|---|" + "---:|" * args.steps)
    for q, values in zip(seqs, rows[first]):
        print(f"| {q.name} | " + " | ".join(f"{v:.3f}" for v in values) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
