"""Benchmark ``realtime-sam annotate``'s per-image work: all boxes in one decoder call against one call per box.

::

    python scripts/benchmark_annotate.py                    # CPU, 640x480, 1/4/8/16 boxes, 5 repeats
    python scripts/benchmark_annotate.py --device cuda --boxes 8 32 --repeats 9

For each box count it times, on one image already encoded (the encode is
the same for both and is reported once):

* ``batched``: what :func:`realtime_sam.app.annotate.annotate` does, one
  ``decode`` of all boxes, masks upsampled 16 at a time, polygons;
* ``per box``: the baseline, one ``decode`` and one upsampling per box, then
  the same polygons.

Rounds alternate (batched, per box, batched, ...), so a change in machine
load slows both alike. Medians (min in brackets) and the ratio batched /
per box. Speed does not depend on the weights, so the checkpoint is random
unless ``--weights`` is given.

Bad input (``--boxes`` or ``--repeats`` under 1, a ``--size`` side under 64, a device not here, a missing
``--weights``) is one ``error: ...`` line on stderr and exit status 2, before
the model loads.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))

import numpy as np
import torch

from _common import check_model_args, fail
from realtime_sam.app.annotate import _label_image
from realtime_sam.errors import RealtimeSamError
from realtime_sam.model.runtime import load_inference_model
from realtime_sam.model.config import ModelConfig
from realtime_sam.output.polygons import mask_to_polygons
from realtime_sam.testing.fakes import FixedBoxDetector


def _boxes(n: int, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    x0 = rng.uniform(0, w * 0.7, n)
    y0 = rng.uniform(0, h * 0.7, n)
    return np.stack([x0, y0, x0 + rng.uniform(40, w * 0.3, n), y0 + rng.uniform(40, h * 0.3, n)], axis=1)


def _per_box(model, embedding, boxes: np.ndarray) -> int:
    kept = 0
    for b in boxes:
        low, _ = model.decode(embedding, boxes=b[None], multimask_output=False)
        mask = (model.upscale(low, embedding)[0, 0] > 0).cpu().numpy()
        kept += bool(mask_to_polygons(mask, min_area=10))
    return kept


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--weights", default=None, help="checkpoint (default: random weights)")
    p.add_argument("--boxes", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--size", type=int, nargs=2, default=[640, 480], metavar=("W", "H"))
    args = p.parse_args(argv)
    if min(args.boxes) < 1:
        return fail(f"--boxes needs box counts >= 1, e.g. 1 4 8 (got {' '.join(map(str, args.boxes))})")
    if args.repeats < 1:
        return fail(f"--repeats must be >= 1 (got {args.repeats})")
    if min(args.size) < 64:
        return fail(f"--size needs a width and height of at least 64, e.g. 640 480 (got {' '.join(map(str, args.size))})")
    try:
        check_model_args(args.device, weights=args.weights)
        torch.manual_seed(0)
        model = load_inference_model(args.weights, ModelConfig(device=args.device))
    except RealtimeSamError as exc:
        return fail(exc)
    w, h = args.size
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    t = time.perf_counter()
    embedding = model.encode(image, image_format="BGR")
    encode_ms = (time.perf_counter() - t) * 1e3

    class Encoded:
        """The model with this image's encode already done (both methods share it)."""

        def encode(self, image, image_format="RGB"):
            return embedding

        def __getattr__(self, name):
            return getattr(model, name)

    print(f"model {model!r}, image {w}x{h}, encode {encode_ms:.0f} ms (once, not in the figures)")
    print(f"{'boxes':>5} | {'batched ms':>16} | {'per box ms':>16} | batched / per box")
    for n in args.boxes:
        boxes = _boxes(n, w, h, rng)
        detector = FixedBoxDetector(boxes, [0] * n, {0: "object"})
        times: dict[str, list[float]] = {"batched": [], "per box": []}
        _label_image(image, detector, Encoded(), 0.0, None, n, "largest", 1.0, 10, want_rle=False)  # warm-up
        for _ in range(args.repeats):
            t = time.perf_counter()
            _label_image(image, detector, Encoded(), 0.0, None, n, "largest", 1.0, 10, want_rle=False)
            times["batched"].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            _per_box(model, embedding, boxes)
            times["per box"].append((time.perf_counter() - t) * 1e3)
        med = {k: statistics.median(v) for k, v in times.items()}
        cells = [f"{med[k]:8.0f} [{min(times[k]):5.0f}]" for k in ("batched", "per box")]
        print(f"{n:>5} | {cells[0]:>16} | {cells[1]:>16} | {med['batched'] / med['per box']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
