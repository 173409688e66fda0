"""Write the demo clip that ``realtime-sam --source demo`` plays, and its preset prompts.

::

    python scripts/make_demo.py                 # realtime_sam/demo/clip.mp4 + realtime_sam/demo/prompts.yaml
    python scripts/make_demo.py --out /tmp/demo # somewhere else, to look at it

The clip is 8 s of :func:`realtime_sam.testing.hard_scene.hard_scene` (photo
textures, a moving camera, deforming objects that cross, one that leaves the
frame and comes back) at 640x480 and 15 fps, encoded as H.264 at CRF 32 so
that it ships inside the package at about 330 KB. The prompts are boxes
around three objects in the first frame (the cat, the astronaut and the
coffee cup), taken from the scene's ground truth with a small margin, in the
format of ``--prompts`` (:func:`realtime_sam.tracking.prompts.load_prompts_file`).
The output is deterministic for the scene; rerun this script only when the
scene's look changes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402

from realtime_sam.errors import describe_error  # noqa: E402
from realtime_sam.testing.hard_scene import hard_scene  # noqa: E402
from realtime_sam.testing.synthetic import write_video  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "realtime_sam" / "demo"
WIDTH, HEIGHT, FPS, SECONDS, CRF = 640, 480, 15.0, 8.0, 32
# Scene object id -> label of the preset prompt (see the hard scene's docstring for the objects).
OBJECTS = {1: "cat", 2: "astronaut", 5: "cup"}
MARGIN = 4  # pixels added round each ground-truth box: a user's box is never tight


def prompts_yaml(masks: dict[int, np.ndarray], width: int, height: int) -> str:
    """The preset prompts as ``--prompts`` YAML: one box per object of :data:`OBJECTS`, from its frame-0 mask."""
    lines = [
        "# Preset prompts of `realtime-sam --source demo` (written by scripts/make_demo.py):",
        "# one box per object in the first frame, XYXY pixels. Prompts given on the command",
        "# line (--box, --point, --prompts) replace these.",
    ]
    for oid, label in OBJECTS.items():
        ys, xs = np.nonzero(masks[oid])
        box = [max(0, int(xs.min()) - MARGIN), max(0, int(ys.min()) - MARGIN),
               min(width - 1, int(xs.max()) + MARGIN), min(height - 1, int(ys.max()) + MARGIN)]
        lines += [f"- box: [{', '.join(map(str, box))}]", f"  label: {label}"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help="folder for clip.mp4 and prompts.yaml (default: the package's demo folder)")
    args = p.parse_args(argv)
    scene = hard_scene(WIDTH, HEIGHT, fps=FPS, seconds=SECONDS, seed=0)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        clip = write_video(scene, args.out / "clip.mp4", fps=FPS, crf=CRF)
        (args.out / "prompts.yaml").write_text(prompts_yaml(scene.render(0)[1], WIDTH, HEIGHT), encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write the demo to {args.out}: {describe_error(exc)} (give a writable folder)", file=sys.stderr)
        return 2
    print(f"wrote {clip} ({clip.stat().st_size // 1024} KB, {scene.num_frames} frames) and {args.out / 'prompts.yaml'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
