"""Write the hard synthetic scene in the DAVIS-2017 layout, for the VOS evaluator and for eyeballing.

::

    python scripts/make_hard_scene.py OUT_DIR                 # OUT_DIR/hard.mp4 + OUT_DIR/Annotations/480p/hard/
    python scripts/make_hard_scene.py OUT_DIR --name hard_s1 --seed 1 --seconds 6

The clip is :func:`realtime_sam.testing.hard_scene.hard_scene` (photo textures, a
moving camera, deforming objects, crossings, an object that leaves the frame
and comes back, flicker, noise) encoded as H.264; the annotations are
8-bit palette PNGs whose pixel values are the object ids (0: background).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))

from _common import frame_size  # noqa: E402

from realtime_sam.errors import RealtimeSamError, describe_error  # noqa: E402
from realtime_sam.testing.hard_scene import hard_scene, write_davis  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("out_dir", help="folder to write <name>.mp4 and Annotations/480p/<name>/ into")
    p.add_argument("--name", default="hard", help="sequence name")
    p.add_argument("--seed", type=int, default=0, help="scene seed (looks, camera, lighting, noise)")
    p.add_argument("--seconds", type=float, default=10.0, help="clip length")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate")
    p.add_argument("--size", type=frame_size, default=(640, 480), help="frame size WIDTHxHEIGHT")
    p.add_argument("--crf", type=int, default=None, help="H.264 quality (default: the scene's, 23)")
    args = p.parse_args(argv)
    try:
        t = time.perf_counter()
        scene = hard_scene(args.size[0], args.size[1], fps=args.fps, seconds=args.seconds, seed=args.seed)
        video, folder = write_davis(scene, args.out_dir, args.name, crf=args.crf)
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write the scene to {args.out_dir}: {describe_error(exc)} (give a writable folder)", file=sys.stderr)
        return 2
    print(f"wrote {video} and {scene.num_frames} annotations in {folder} ({time.perf_counter() - t:.1f} s)")
    out = scene.out_of_frame
    if scene.leaving_object is not None and out:
        print(f"object {scene.leaving_object} is out of the frame in frames {out.start}..{out.stop - 1} ({len(out) / scene.fps:.1f} s)")
    if scene.small_fast_object is not None:
        print(f"object {scene.small_fast_object} is the small fast one")
    for c in scene.crossings:
        print(f"objects {c.a} and {c.b} cross in frames {c.start}..{c.stop - 1}, {c.front} in front")
    return 0


if __name__ == "__main__":
    sys.exit(main())
