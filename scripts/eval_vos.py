"""Score the tracking engine on DAVIS-layout video against ground truth, with a dense-flow baseline.

::

    python scripts/eval_vos.py                                   # ../shared/davis, every configuration
    python scripts/eval_vos.py --network none --no-live          # tracking quality only, fast
    python scripts/eval_vos.py --root DAVIS --sequences goat,camel --reencode 1,5 --json out.json
    python scripts/eval_vos.py --set tracker.max_lost_frames=60 --save-masks masks/
    python scripts/eval_vos.py --reverse --network none --no-live  # every sequence played backwards
    python scripts/eval_vos.py --bounce 3 --network none --no-live --live-sim  # there and back: 3x as long, for live rows
    python scripts/eval_vos.py --stride 2 --scale 0.75 --network none --no-live  # twice the motion a frame, 640x360

**Data** (``--root``, default ``../shared/davis``), either layout:

* ``<root>/<seq>.mp4`` + ``<root>/Annotations/480p/<seq>/NNNNN.png`` (the shared folder);
* ``<root>/JPEGImages/480p/<seq>/NNNNN.jpg`` + the same annotations (standard DAVIS;
  ``--fps`` gives its frame rate, default 24).

Annotations are DAVIS-2016 binary (0/255) or DAVIS-2017 indexed PNGs: every
non-zero value is an object id, 0 is background; a sequence may hold several
objects. ``--imageset 2017/val`` takes the sequences of a standard DAVIS folder's
``ImageSets/2017/val.txt`` (its ``Annotations/480p`` holds the training
sequences too, which are all scored otherwise). Frame ``NNNNN`` (the video's frame ``NNNNN``, or ``NNNNN.jpg``) is paired
with ``NNNNN.png``; a frame or an annotation without its pair is left out with a
warning naming it; frames and annotations of another size than the sequence's
first frame are a one-line error, as is a sequence annotated in one of its
frames only (DAVIS test-dev: no tracking to score). An annotated sequence with neither frames
nor video is left out with a warning naming it (an error when ``--sequences`` or
``--imageset`` names it). ``--sequences a,b`` selects; ``--max-frames K``
cuts every sequence.

**Other footage from the same data**, so that settings tuned on the clips
as they are can be checked on clips they were not tuned on: ``--reverse``
plays every sequence backwards; ``--stride K`` keeps every K-th frame (the
clip at 1/K of its frame rate: K times the motion between frames, ``--fps``
and the file's rate divided by K); ``--scale S`` resizes frames (area
interpolation) and annotations (nearest) by S, e.g. 0.75 for 640x360, as a
webcam gives. ``--max-frames`` cuts before the stride; the 150-pixel rule
below applies to the resized masks.

**Protocol.** Each object is prompted at the first frame where its ground
truth has at least 150 pixels, with that mask's bounding box
(``ObjectPrompt(box=..., start_frame=...)``). The track created from the
prompt (the first new track id that appears after it) is the object's
prediction from then on, empty in frames where that track is absent. Every
frame where the object's ground truth has >= 150 pixels is scored, the first
one included. The decoder is :class:`realtime_sam.testing.oracle.GroundTruthOracle`: the real
MobileSAM network runs on every call for its cost (``--network real``, the
default; ``--weights`` or the golden checkpoint or a random one), but each
prompt is answered with the ground truth of the frame that was encoded, a
perfect decoder; ``--network none`` skips the network (same quality figures,
much faster). The errors left are the engine's own: frames between encodes,
optical flow, association, losing and re-finding objects.

**Configurations** (rows):

* ``engine N=..`` (``--reencode``, default 1,5,15,30): the engine with
  ``engine.reencode_every = N`` and no background encode, every frame of the
  file in turn (config from ``--config`` and ``--set section.key=value``);
* ``live`` (unless ``--no-live``; needs ``--network real``): the CPU preset
  (background encode) through :class:`~realtime_sam.app.pipeline.Pipeline` with
  ``pipeline.realtime``: the file played at its frame rate, frames the engine
  is too slow for dropped as with a camera, real model costs. Every source
  frame is scored with the newest result at or before it (what a viewer
  sees); frames before the first result count as empty;
* ``live-sim`` (``--live-sim``): the same CPU preset on a simulated clock, so
  the figure does not depend on what else the machine is doing. Each
  background encode takes ``--encode-ms`` (default 1400: in the live round
  on two quiet cores an encode lands every 1.6 s, 0.2 s of it the landing's
  decode; the encoder alone takes 0.4 s there, but it shares the cores
  with the inference and capture threads) plus the CPU time the worker
  then spends decoding what will land (the real decoder's with
  ``--network real``), and runs while frames go on; each frame costs the engine the CPU time
  its thread actually spent on it (``time.thread_time``: close to the wall
  time on a quiet machine, and hardly changed by other processes; the
  network's decoder runs for real with ``--network real``; the oracle's own
  work on its answers is not counted). The newest frame
  whose time has come is processed next, older ones are dropped, and scoring
  is as for ``live``. ``--sim-streams K`` plays it as one of K streams on one
  encoder that is always behind: each encode starts after K - 1 other
  streams' (``--encode-ms`` each), and the frame budget caps the stream at
  ``streams.frame_budget x fps / K`` processed frames a second (at least
  ``streams.min_fps``);
* ``flow N=..`` (``--flow``, default 5,15,30): a dense optical-flow baseline:
  OpenCV DIS flow (preset medium) on grey frames whose longest side is 480 px;
  every object's mask is warped per pixel on every frame (backward flow scaled
  to full resolution, :func:`cv2.remap` with nearest-neighbour sampling), and every N frames from its first it is re-prompted with
  the same oracle using the warped mask's bounding box (the ground-truth box
  at its first frame).

**Figures** (per sequence, then the mean over sequences):

* Several objects' masks are scored as DAVIS holds them, one object per pixel:
  a pixel that several claim goes to the smallest mask (ties: the lower id),
  as in ``--save-masks`` and the app's ``--mask-format png`` (:func:`exclusive`).
* J: region IoU; F: boundary F-measure (DAVIS: one-pixel boundary maps,
  matched within a disk of radius ``ceil(0.008 * image diagonal)``); J&F
  their mean. Per object the mean over its scored frames, per sequence the
  mean over its objects. They agree with TrackEval's ``JAndF`` on the same masks.
* recall: share of scored frames with J >= 0.5 (per object, then means);
* id switches: per object, how often the track id that best covers its
  ground truth (IoU >= 0.5) changes among the scored frames it is covered in;
  summed;
* re-acquisition: for each object whose ground truth disappears (< 150 px)
  for at least one frame and comes back, the delay in seconds from the first
  frame it has at least half its median visible area again to the first frame
  where the track with its original id has IoU >= 0.7, searched until it
  disappears again or the sequence ends ("never" otherwise).

**Output**: markdown tables on stdout (per-sequence J for every configuration,
then the summary), progress on stderr; ``--json FILE`` writes every figure (strict
JSON: a figure there is none of, as for a sequence whose objects never reach 150
pixels, is ``null``), rewritten whole after every sequence with ``"complete": false``
until the run ends. Ctrl-C part-way prints the tables of the sequences every
configuration finished, leaves them in ``--json`` and exits with 130;
``--save-masks DIR`` writes each configuration's per-frame masks as DAVIS
indexed PNGs, ``DIR/<config>/<seq>/NNNNN.png`` with the ground truth's object
ids, readable by TrackEval's DAVIS loader. Bad input (a missing folder, no
sequences, an unknown or empty sequence name, a missing ``--weights``, a
device not here) is a one-line error and exit code 2, before the model loads.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
import math
import os
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing
sys.path.insert(1, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the realtime-sam command does, before torch loads

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from _common import REPO, check_model_args, strict_json, weights_or_random  # noqa: E402

from realtime_sam.output.image_file import read_image  # noqa: E402
from realtime_sam.testing.oracle import GroundTruthOracle  # noqa: E402
from realtime_sam.tracking.association import mask_to_box  # noqa: E402
from realtime_sam.types import Frame, ObjectPrompt  # noqa: E402

__all__ = [
    "MIN_AREA",
    "EvalError",
    "VosSequence",
    "find_sequences",
    "load_sequence",
    "region_j",
    "boundary_map",
    "boundary_f",
    "ObjectRecord",
    "SequenceScorer",
    "exclusive",
    "run_engine_file",
    "run_engine_live",
    "run_engine_simulated",
    "run_flow",
    "main",
]

MIN_AREA = 150  # pixels: an object is visible (scored, prompted) from this area on
BOUND_TH = 0.008  # F's boundary tolerance, as a fraction of the image diagonal
REACQ_IOU = 0.7
COVER_IOU = 0.5
FLOW_SIDE = 480


LAYOUT = ("--root must hold Annotations/480p/<seq>/00000.png, ... and either JPEGImages/480p/<seq>/00000.jpg, ... "
          "(standard DAVIS) or <seq>.mp4")


class EvalError(Exception):
    """Bad input: reported as one line, exit code 2."""


# -- data ----------------------------------------------------------------------------------


@dataclass
class VosSequence:
    """One sequence in memory: ``frames`` (``HxWx3 uint8`` BGR), ``labels`` (``HxW`` object-id maps)."""

    name: str
    frames: list[np.ndarray]
    labels: list[np.ndarray]
    fps: float
    objects: tuple[int, ...] = ()
    areas: dict[int, np.ndarray] = field(default_factory=dict)  # per object, pixels per frame
    start: dict[int, int] = field(default_factory=dict)  # per object, its first frame with >= MIN_AREA pixels

    def __post_init__(self) -> None:
        if not self.objects:
            ids: set[int] = set()
            for lab in self.labels:
                ids.update(int(v) for v in np.unique(lab))
            ids.discard(0)
            self.objects = tuple(sorted(ids))
        for oid in self.objects:
            a = np.array([np.count_nonzero(lab == oid) for lab in self.labels], dtype=np.int64)
            self.areas[oid] = a
            visible = np.flatnonzero(a >= MIN_AREA)
            if len(visible):
                self.start[oid] = int(visible[0])

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.frames[0].shape[0]), int(self.frames[0].shape[1])

    def gt(self, index: int) -> dict[int, np.ndarray]:
        """``{object id: HxW bool}`` of frame ``index``."""
        lab = self.labels[index]
        return {oid: lab == oid for oid in self.objects}


def _annotations_dir(root: Path) -> Path:
    return root / "Annotations" / "480p"


def find_sequences(root: Path) -> dict[str, Path | None]:
    """``{name: video file or None}`` (``None``: frames in ``JPEGImages/480p/<name>``) of every annotated sequence."""
    root = Path(root)
    if not root.is_dir():
        raise EvalError(f"data folder not found: {root} ({LAYOUT})")
    ann = _annotations_dir(root)
    if not ann.is_dir():
        near = (root / "DAVIS", *sorted(root.iterdir()), root.parent, root.parent.parent)  # one level off
        inner = [p for p in near if p.is_dir() and _annotations_dir(p).is_dir()]
        hint = f"; did you mean --root {inner[0]}?" if inner else ""
        raise EvalError(f"no Annotations/480p/ in {root} ({LAYOUT}){hint}")
    out: dict[str, Path | None] = {}
    for d in sorted(p for p in ann.iterdir() if p.is_dir()):
        if not any(d.glob("*.png")):
            continue
        if (root / f"{d.name}.mp4").is_file():
            out[d.name] = root / f"{d.name}.mp4"
        elif (root / "JPEGImages" / "480p" / d.name).is_dir():
            out[d.name] = None
    if not out:
        lacking = frameless(root, out)
        if lacking:
            raise EvalError(f"no sequences found in {root}: {_no_frames(root, lacking)}")
        raise EvalError(f"no sequences found in {root}: {LAYOUT}")
    return out


def frameless(root: Path, found: Mapping[str, Path | None]) -> list[str]:
    """The sequences of ``root`` with annotations (``Annotations/480p/<name>/*.png``) but neither
    ``JPEGImages/480p/<name>/`` nor ``<name>.mp4``: :func:`find_sequences` leaves them out."""
    ann = _annotations_dir(Path(root))
    return [d.name for d in sorted(ann.iterdir()) if d.is_dir() and d.name not in found and any(d.glob("*.png"))]


def _no_frames(root: Path, names: Sequence[str]) -> str:
    first = names[0]
    return (f"{len(names)} annotated sequence(s) have no frames ({_some(list(names))}): add "
            f"{Path(root) / 'JPEGImages' / '480p' / first}/00000.jpg, ... or {Path(root) / (first + '.mp4')}")


def sequence_names(text: str, found: Sequence[str]) -> list[str]:
    """``--sequences``' comma-separated names (``""``: every one ``found``); a value naming none (``","``) is an error."""
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))  # each once, in order
    if text.strip() and not names:
        raise EvalError(f"--sequences {text!r} names no sequence; give comma-separated names "
                        f"(or leave it out for all): {', '.join(found)}")
    return names or list(found)


def imageset_names(root: Path, which: str) -> list[str]:
    """The sequences of DAVIS's ``ImageSets/<which>.txt`` (``2017/val``, ``2016/val``, ...), in its order:
    one name a line, or (DAVIS 2016's own files) frame paths such as ``/JPEGImages/480p/bear/00000.jpg``."""
    path = Path(root) / "ImageSets" / f"{which.removesuffix('.txt')}.txt"
    if not path.is_file():
        there = sorted(str(q.relative_to(q.parents[1]).with_suffix("")) for q in (Path(root) / "ImageSets").glob("*/*.txt"))
        raise EvalError(f"--imageset {which}: no {path}" + (f"; there are: {', '.join(there)}" if there else
                                                             " (a standard DAVIS folder holds ImageSets/2017/val.txt)"))
    names: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        item = line.split()[0] if line.split() else ""
        name = Path(item).parent.name if "/" in item else item
        if name and name not in names:
            names.append(name)
    if not names:
        raise EvalError(f"--imageset {which}: {path} names no sequence")
    return names


def _read_label(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        if im.mode not in ("P", "L", "I", "I;16", "1"):
            raise EvalError(f"{path}: annotation PNG must be indexed or greyscale (object ids), not {im.mode}")
        return np.asarray(im).astype(np.uint16 if im.mode.startswith("I") else np.uint8)


def _frame_key(path: Path) -> int | str:
    """A frame's or annotation's number from its file name (``00012.jpg``: 12), else its stem."""
    return int(path.stem) if path.stem.isdigit() else path.stem


def _frame_order(item) -> tuple[int, int | str]:
    key = _frame_key(item) if isinstance(item, Path) else item
    return (0, key) if isinstance(key, int) else (1, key)


def _some(keys: Sequence[int | str], most: int = 5) -> str:
    text = ", ".join(f"{k:05d}" if isinstance(k, int) else str(k) for k in keys[:most])
    return text + (f" (and {len(keys) - most} more)" if len(keys) > most else "")


def _frozen(image: np.ndarray) -> np.ndarray:
    """``image``, made read-only (the engine must not draw on a sequence's frames); returns it."""
    image.setflags(write=False)
    return image


def load_sequence(
    root: Path, name: str, video: Path | None, *, max_frames: int = 0, fps: float = 24.0, reverse: bool = False,
    legs: int = 1, stride: int = 1, scale: float = 1.0,
) -> VosSequence:
    """Decode the frames and read the annotations of one sequence (cut to ``max_frames`` when > 0).

    ``reverse``: the sequence (its first ``max_frames``) played backwards, frames and masks
    in reverse order: a clip the tracker was not tuned on, from the same footage.
    ``legs``: the sequence played there and back, ``legs`` runs in all (forward,
    backward, forward, ...; each turn's frame shown once): ``n`` frames become
    ``legs * (n - 1) + 1``. A DAVIS clip (2-4 s) ends before a live CPU's first
    encodes land; bounced, it is real footage long enough for the live rows.
    ``stride``: every ``stride``-th frame from the first (of the first ``max_frames``), at
    ``fps / stride``. ``scale``: frames resized by it (``INTER_AREA``), annotations
    (``INTER_NEAREST``) to the same size.
    """
    ann = {_frame_key(p): p for p in (_annotations_dir(Path(root)) / name).glob("*.png")}
    frames: list[np.ndarray] = []
    keys: list[int | str] = []  # each frame's number (its file's stem in JPEGImages/), to pair it with its annotation
    if video is not None:
        from realtime_sam.capture.sources import open_source
        from realtime_sam.errors import RealtimeSamError

        named = sorted(str(k) for k in ann if not isinstance(k, int))
        if named:
            raise EvalError(f"sequence {name}: annotations must be named by frame number (00000.png, 00001.png, ...)"
                            f" beside {video.name}, not {named[0]}.png")
        try:
            source = open_source(video)
        except RealtimeSamError as exc:  # not a video FFmpeg can read: the one-line error, not a traceback
            raise EvalError(f"sequence {name}: {exc}") from None
        try:
            fps = float(getattr(source, "fps", None) or fps)
            while (fr := source.read()) is not None and not (max_frames and len(frames) >= max_frames):
                keys.append(len(frames))
                frames.append(_frozen(np.ascontiguousarray(fr.image)))
        finally:
            source.close()
        cut = bool(max_frames) and len(frames) >= max_frames
    else:
        folder = Path(root) / "JPEGImages" / "480p" / name
        files = sorted((p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")), key=_frame_order)
        cut = bool(max_frames) and len(files) > max_frames
        for p in files[: max_frames or None]:
            if _frame_key(p) not in ann:
                keys.append(_frame_key(p))
                frames.append(None)  # type: ignore[arg-type]  # left out below, not worth decoding
                continue
            image = read_image(p)  # not cv2.imread: on Windows it does not find a name outside the ANSI code page
            if image is None:
                raise EvalError(f"cannot read frame {p}")
            first = next((f for f in frames if f is not None), image)
            if image.shape != first.shape:
                raise EvalError(f"sequence {name}: frame {p.name} is {image.shape[1]}x{image.shape[0]} but the first "
                                f"is {first.shape[1]}x{first.shape[0]}; every frame of a sequence must have one size")
            keys.append(_frame_key(p))
            frames.append(_frozen(image))
    # Each frame with the annotation of the same number: a frame or an annotation missing in the
    # middle must not shift every later pair.
    unannotated = [k for k in keys if k not in ann]
    have = set(keys)
    orphans = [] if cut else sorted((k for k in ann if k not in have), key=_frame_order)
    pairs = [(f, ann[k]) for k, f in zip(keys, frames) if k in ann]
    if not pairs:
        raise EvalError(f"sequence {name}: no frames or no annotations (need frame NNNNN and Annotations/480p/{name}/NNNNN.png)")
    if len(pairs) == 1 and len(keys) > 1:  # DAVIS test-dev and challenge give the first frame's mask only
        raise EvalError(f"sequence {name}: only frame {_some([next(k for k in keys if k in ann)])} of its {len(keys)} has an "
                        f"annotation, so there is no tracking to score; give every frame's Annotations/480p/{name}/NNNNN.png "
                        "(DAVIS's train and val sets have them, test-dev and challenge only the first)")
    if unannotated or orphans:
        said = []
        if unannotated:
            said.append(f"frame(s) {_some(unannotated)} have no annotation")
        if orphans:
            said.append(f"annotation(s) {_some(orphans)} have no frame")
        print(f"warning: {name}: {'; '.join(said)}; scoring the {len(pairs)} frames that have both", file=sys.stderr)
    frames = [f for f, _ in pairs]
    labels = []
    for _, p in pairs:
        lab = _read_label(p)
        if lab.shape != frames[0].shape[:2]:
            raise EvalError(f"sequence {name}: annotation {p.name} is {lab.shape[1]}x{lab.shape[0]} but the frames are "
                            f"{frames[0].shape[1]}x{frames[0].shape[0]}; give annotations of the frames' size")
        labels.append(lab)
    if stride > 1:
        frames, labels, fps = frames[::stride], labels[::stride], fps / stride
    if scale != 1.0:
        h, w = frames[0].shape[:2]
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        frames = [_frozen(cv2.resize(f, size, interpolation=cv2.INTER_AREA)) for f in frames]
        labels = [cv2.resize(lab, size, interpolation=cv2.INTER_NEAREST) for lab in labels]
    if reverse:
        frames, labels = frames[::-1], labels[::-1]
    n = len(frames)  # after the stride
    if legs > 1 and n > 1:
        order = list(range(n))
        for leg in range(1, legs):
            order += list(range(n - 2, -1, -1) if leg % 2 else range(1, n))
        frames, labels = [frames[i] for i in order], [labels[i] for i in order]
    return VosSequence(name, frames, labels, fps)


# -- figures -------------------------------------------------------------------------------


def region_j(pred: np.ndarray, gt: np.ndarray) -> float:
    """Region similarity J: IoU of two ``HxW bool`` masks (1 when both are empty, as DAVIS)."""
    union = np.count_nonzero(pred | gt)
    return float(np.count_nonzero(pred & gt) / union) if union else 1.0


def boundary_map(mask: np.ndarray) -> np.ndarray:
    """DAVIS's one-pixel boundary map of a mask: pixels that differ from their east, south or
    south-east neighbour (the last row compares with the east one only, the last column with the
    south one only, the bottom-right corner is never a boundary)."""
    seg = np.asarray(mask, dtype=bool)
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ diag)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


_DISKS: dict[int, np.ndarray] = {}


def _disk(radius: int) -> np.ndarray:
    if radius not in _DISKS:
        r = np.arange(-radius, radius + 1)
        _DISKS[radius] = ((r[:, None] ** 2 + r[None, :] ** 2) <= radius * radius).astype(np.uint8)
    return _DISKS[radius]


def boundary_f(pred: np.ndarray, gt: np.ndarray, bound_th: float = BOUND_TH) -> float:
    """Boundary F-measure (DAVIS): boundary precision and recall, each boundary pixel matched
    when the other mask's boundary lies within a disk of radius ``ceil(bound_th * diagonal)``.

    No boundary in either mask gives 1; in just one of them, 0.
    """
    pred = np.asarray(pred, dtype=bool)
    gt = np.asarray(gt, dtype=bool)
    h, w = gt.shape
    radius = int(bound_th) if bound_th >= 1 else int(math.ceil(bound_th * math.hypot(h, w)))
    # Work on the region around both masks (identical figures: boundaries only lie next to mask
    # pixels and the margin holds the whole dilation; a crop that reaches the bottom or right edge
    # keeps that edge's special rule).
    any_rows = np.flatnonzero((pred | gt).any(axis=1))
    if len(any_rows) == 0:
        return 1.0
    any_cols = np.flatnonzero((pred | gt).any(axis=0))
    m = radius + 2
    y0, y1 = max(0, any_rows[0] - m), min(h, any_rows[-1] + 1 + m)
    x0, x1 = max(0, any_cols[0] - m), min(w, any_cols[-1] + 1 + m)
    pb = boundary_map(pred[y0:y1, x0:x1])
    gb = boundary_map(gt[y0:y1, x0:x1])
    n_p, n_g = int(np.count_nonzero(pb)), int(np.count_nonzero(gb))
    if n_p == 0 and n_g == 0:
        return 1.0
    if n_p == 0 or n_g == 0:
        return 0.0
    disk = _disk(radius)
    p_dil = cv2.dilate(pb.astype(np.uint8), disk).astype(bool)
    g_dil = cv2.dilate(gb.astype(np.uint8), disk).astype(bool)
    precision = np.count_nonzero(pb & g_dil) / n_p
    recall = np.count_nonzero(gb & p_dil) / n_g
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def exclusive(tracks: Mapping[int, np.ndarray], original: Mapping[int, int]) -> dict[int, np.ndarray]:
    """``tracks`` with the objects' own tracks (``original``: ``{object: track id}``) made one object
    per pixel, as DAVIS scores them and as the PNGs of ``--save-masks`` hold them: a pixel several of
    them claim stays with the smallest mask (ties: the lower object id), the rule of the app's
    ``--mask-format png``. Other tracks are left as they are."""
    mine = sorted((int(np.count_nonzero(tracks[t])), oid, t) for oid, t in original.items() if t in tracks)
    if len(mine) < 2:
        return dict(tracks)
    out = dict(tracks)
    taken = np.zeros(tracks[mine[0][2]].shape, bool)
    for _, _, t in mine:  # the smallest first: it keeps what it covers
        m = np.asarray(tracks[t], dtype=bool)
        out[t] = m & ~taken
        taken |= m
    return out


@dataclass
class ObjectRecord:
    """One object's per-frame figures in one run."""

    j: dict[int, float] = field(default_factory=dict)  # scored frames
    f: dict[int, float] = field(default_factory=dict)  # scored frames
    iou: dict[int, float] = field(default_factory=dict)  # every frame from its start: IoU of the original track
    best: dict[int, int | None] = field(default_factory=dict)  # scored frames: best-covering track id (IoU >= 0.5)


class SequenceScorer:
    """Scores one run over one sequence, frame by frame (``add``), then sums it up (``summary``)."""

    def __init__(self, seq: VosSequence) -> None:
        self.seq = seq
        self.records = {oid: ObjectRecord() for oid in seq.start}

    def add(self, index: int, tracks: Mapping[int, np.ndarray], original: Mapping[int, int]) -> None:
        """Frame ``index``'s predictions: ``tracks`` ``{track id: HxW bool}``, ``original`` ``{object: track id}``
        (the objects' tracks scored one object per pixel, see :func:`exclusive`)."""
        tracks = exclusive(tracks, original)
        gt = self.seq.gt(index)
        empty = None
        for oid, rec in self.records.items():
            if index < self.seq.start[oid]:
                continue
            m = gt[oid]
            tid = original.get(oid)
            pred = tracks.get(tid) if tid is not None else None
            if pred is None:
                empty = np.zeros(m.shape, bool) if empty is None else empty
                pred = empty
            j = region_j(pred, m)
            rec.iou[index] = j
            if self.seq.areas[oid][index] >= MIN_AREA:
                rec.j[index] = j
                rec.f[index] = boundary_f(pred, m)
                best_tid, best = None, COVER_IOU
                for t, tm in tracks.items():
                    v = j if t == tid else region_j(tm, m)
                    if v >= best:
                        best_tid, best = t, v
                rec.best[index] = best_tid

    def reacquisitions(self, oid: int) -> list[dict]:
        """The object's disappearances and how long its original track took to find it again."""
        a = self.seq.areas[oid]
        rec = self.records[oid]
        visible = a >= MIN_AREA
        if not visible.any():
            return []
        half = 0.5 * float(np.median(a[visible]))
        out = []
        n = len(a)
        i = self.seq.start[oid]
        while i < n:
            if visible[i]:
                i += 1
                continue
            g0 = i
            while i < n and not visible[i]:
                i += 1
            if i >= n:
                break  # gone until the end: it never came back
            g1 = i
            nxt = g1
            while nxt < n and visible[nxt]:
                nxt += 1  # the next disappearance (or the end) bounds this event
            back = next((k for k in range(g1, nxt) if a[k] >= half), None)
            if back is None:
                continue
            found = next((k for k in range(back, nxt) if rec.iou.get(k, 0.0) >= REACQ_IOU), None)
            out.append({
                "object": oid, "gone": [g0, g1 - 1], "back": back,
                "delay_s": None if found is None else (found - back) / self.seq.fps,
            })
        return out

    def summary(self) -> dict:
        objects = {}
        for oid, rec in self.records.items():
            js = np.array([rec.j[k] for k in sorted(rec.j)], dtype=np.float64)
            fs = np.array([rec.f[k] for k in sorted(rec.f)], dtype=np.float64)
            covered = [rec.best[k] for k in sorted(rec.best) if rec.best[k] is not None]
            switches = sum(1 for a, b in zip(covered, covered[1:]) if a != b)
            objects[oid] = {
                "J": float(js.mean()) if js.size else float("nan"),
                "F": float(fs.mean()) if fs.size else float("nan"),
                "recall": float((js >= 0.5).mean()) if js.size else float("nan"),
                "frames": int(js.size),
                "id_switches": switches,
                "reacquisition": self.reacquisitions(oid),
            }
        vals = list(objects.values())
        mean = lambda key: float(np.mean([o[key] for o in vals])) if vals else float("nan")  # noqa: E731
        j, f = mean("J"), mean("F")
        return {
            "J": j, "F": f, "J&F": (j + f) / 2, "recall": mean("recall"),
            "id_switches": int(sum(o["id_switches"] for o in vals)),
            "reacquisition": [e for o in vals for e in o["reacquisition"]],
            "objects": {str(k): v for k, v in objects.items()},
        }


# -- masks out -----------------------------------------------------------------------------


def _palette() -> list[int]:
    """The usual 256-colour segmentation palette (bits of the index spread over R, G, B)."""
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for k in range(8):
            r |= ((c >> 0) & 1) << (7 - k)
            g |= ((c >> 1) & 1) << (7 - k)
            b |= ((c >> 2) & 1) << (7 - k)
            c >>= 3
        pal += [r, g, b]
    return pal


class MaskWriter:
    """Writes one configuration's masks of one sequence as DAVIS indexed PNGs (object ids as values)."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)

    def write(self, index: int, shape: tuple[int, int], tracks: Mapping[int, np.ndarray], original: Mapping[int, int]) -> None:
        if self.folder is None:
            return
        from PIL import Image

        out = np.zeros(shape, np.uint8)
        tracks = exclusive(tracks, original)  # no two objects on a pixel: the order below does not matter
        for oid in sorted(original):
            m = tracks.get(original[oid])
            if m is not None:
                out[m] = min(oid, 255)
        im = Image.fromarray(out, mode="P")
        im.putpalette(_palette())
        im.save(self.folder / f"{index:05d}.png")


# -- runs ----------------------------------------------------------------------------------


def make_engine(config, runner):
    """An engine for ``config`` over ``runner``: ``Engine.from_config(config, runner=...)`` when it takes one."""
    from realtime_sam.tracking.engine import Engine

    factory = getattr(Engine, "from_config", None)
    if factory is not None:
        try:
            takes_runner = "runner" in inspect.signature(factory).parameters
        except (TypeError, ValueError):
            takes_runner = False
        if takes_runner:
            return factory(config, runner=runner)
    return Engine(
        runner, config.engine, tracker_config=config.tracker,
        propagation_config=config.propagation, discovery_config=config.discovery,
    )


def _prompt_all(engine, seq: VosSequence) -> deque[int]:
    """Queue every object's ground-truth box at its first visible frame; the objects in prompt order."""
    order = sorted(seq.start, key=lambda oid: (seq.start[oid], oid))
    for oid in order:
        s = seq.start[oid]
        box = mask_to_box(seq.labels[s] == oid)
        engine.add_object(ObjectPrompt(box=tuple(float(v) for v in box), start_frame=s))  # type: ignore[arg-type]
    return deque(order)


class _Ids:
    """Maps objects to the tracks created from their prompts: the new track ids, in prompt order."""

    def __init__(self, seq: VosSequence, pending: deque[int]) -> None:
        self.seq, self.pending = seq, pending
        self.seen = 0
        self.original: dict[int, int] = {}

    def update(self, index: int, track_ids: Iterable[int]) -> None:
        for tid in sorted(t for t in track_ids if t > self.seen):
            self.seen = tid
            if self.pending and self.seq.start[self.pending[0]] <= index:
                self.original[self.pending.popleft()] = tid


def _track_masks(result) -> dict[int, np.ndarray]:
    return {t.track_id: np.asarray(t.mask, dtype=bool) for t in result.tracks if t.mask is not None}


def run_engine_file(seq: VosSequence, runner, config, *, masks_dir: Path | None = None) -> SequenceScorer:
    """The engine over every frame of ``seq`` in turn (no pipeline, no background encode); scored."""
    engine = make_engine(config, runner)
    ids = _Ids(seq, _prompt_all(engine, seq))
    scorer = SequenceScorer(seq)
    writer = MaskWriter(masks_dir)
    # As the Pipeline runs a file: two-way when the config and the engine have it, and
    # dense flow's thread lent (the same masks, sooner).
    make = getattr(engine, "two_way", None)
    two_way = make() if getattr(config.pipeline, "two_way", False) and callable(make) else None
    flow_worker = None
    if getattr(engine, "wants_flow_worker", False):
        from realtime_sam.app.pipeline import SerialWorker

        flow_worker = SerialWorker("eval-flow")
        engine.attach_flow_worker(flow_worker.submit)

    def score(result) -> None:
        tracks = _track_masks(result)
        ids.update(result.frame.index, tracks)
        scorer.add(result.frame.index, tracks, ids.original)
        writer.write(result.frame.index, seq.size, tracks, ids.original)

    try:
        for i, image in enumerate(seq.frames):
            result = engine.process(Frame(i, image, i / seq.fps, time.monotonic()))
            for done in two_way.push(result, engine.soft_masks()) if two_way is not None else (result,):
                score(done)
        for done in two_way.finish(engine) if two_way is not None else ():
            score(done)
    finally:
        if flow_worker is not None:
            engine.attach_flow_worker(None)
            flow_worker.close(5.0)
    return scorer


class MemorySource:
    """A sequence's decoded frames as a file source (``live`` false: ``pipeline.realtime`` paces it
    by the timestamps, ``index / fps``)."""

    live = False

    def __init__(self, frames: Sequence[np.ndarray], fps: float) -> None:
        self.frames, self.fps = frames, float(fps)
        self.size = (int(frames[0].shape[1]), int(frames[0].shape[0]))
        self.name = "memory"
        self.num_frames = len(frames)
        self._i = 0
        self._stopped = False

    def read(self) -> Frame | None:
        if self._stopped or self._i >= len(self.frames):
            return None
        i = self._i
        self._i += 1
        return Frame(i, self.frames[i], i / self.fps, time.monotonic())

    def interrupt(self) -> None:
        self._stopped = True

    def close(self) -> None:
        self._stopped = True


def run_engine_live(seq: VosSequence, runner, config, *, masks_dir: Path | None = None) -> tuple[SequenceScorer, dict]:
    """The engine through a real-time pipeline (frames dropped when it is busy); every source frame
    scored with the newest result at or before it. Returns the scorer and run statistics."""
    from realtime_sam.app.pipeline import Pipeline

    engine = make_engine(config, runner)
    ids = _Ids(seq, _prompt_all(engine, seq))
    kept: list[tuple[int, dict[int, np.ndarray]]] = []
    t0 = time.perf_counter()
    pcfg = dataclasses.replace(config.pipeline, realtime=True)
    with Pipeline(MemorySource(seq.frames, seq.fps), engine, config=pcfg) as pipe:
        for result in pipe:
            kept.append((result.index, _packed(result)))
    wall = time.perf_counter() - t0
    scorer = _score_as_seen(seq, kept, ids, masks_dir)
    stats = {"processed": len(kept), "frames": len(seq), "wall_s": wall, "longest_drop": _longest_drop(kept)}
    return scorer, stats


def _longest_drop(kept: Sequence[tuple[int, object]]) -> int:
    """The most source frames dropped in a row between two processed ones (a stall a viewer sees)."""
    idx = [i for i, _ in kept]
    return max((b - a - 1 for a, b in zip(idx, idx[1:])), default=0)


def _packed(result) -> dict[int, np.ndarray]:
    """A result's masks, bit-packed along rows (a clip's worth of full masks would take gigabytes)."""
    return {t.track_id: np.packbits(t.mask, axis=-1) for t in result.tracks if t.mask is not None}


def _score_as_seen(
    seq: VosSequence, kept: Sequence[tuple[int, dict[int, np.ndarray]]], ids: _Ids, masks_dir: Path | None
) -> SequenceScorer:
    """Score every source frame with the newest result at or before it (``kept``: frame index and
    :func:`_packed` masks, in order), as a viewer of a live stream sees them."""
    scorer = SequenceScorer(seq)
    writer = MaskWriter(masks_dir)
    w = seq.size[1]
    tracks: dict[int, np.ndarray] = {}
    k = 0
    for i in range(len(seq)):
        while k < len(kept) and kept[k][0] <= i:
            index, packed = kept[k]
            tracks = {tid: np.unpackbits(p, axis=-1, count=w).astype(bool) for tid, p in packed.items()}
            ids.update(index, tracks)
            k += 1
        scorer.add(i, tracks, ids.original)
        writer.write(i, seq.size, tracks, ids.original)
    return scorer


class _SimFuture:
    """A background encode on the simulated clock: done when the clock reaches ``due`` (ms).

    Its call runs when the clock reaches its start (:meth:`_SimClock.run_due`,
    at once when the worker is free and nothing queues); until then ``due`` is
    infinite and ``value`` is ``None``.
    """

    def __init__(self, clock: _SimClock) -> None:
        self.clock, self.value, self.due = clock, None, math.inf

    def done(self) -> bool:
        self.clock.run_due()
        return self.clock.now >= self.due

    def result(self, timeout=None):
        if self.due == math.inf:
            self.clock.run_due(until=self)  # the inference thread waits for it: to its start, then its end
        self.clock.now = max(self.clock.now, self.due)
        return self.value


class _SimClock:
    """Simulated time (ms) for :func:`run_engine_simulated`; one worker that runs encodes in order.

    A submitted call (the engine's embed, then the decode of what will land)
    takes ``encode_ms`` plus the CPU time its decoding actually spent: the
    call's thread time less the embedding's (``runner.embed_s``, which
    ``encode_ms`` stands for) and the oracle's own work on its answers.

    With ``queue_ms`` (other streams' encodes on a shared encoder, each
    stalest-first round taking that long before this stream's turn) a call
    starts ``queue_ms`` after the worker could have started it, and runs only
    then (the frames processed meanwhile are the engine's to offer it).
    """

    def __init__(self, encode_ms: float, runner, queue_ms: float = 0.0) -> None:
        self.now = 0.0
        self.encode_ms = float(encode_ms)
        self.queue_ms = float(queue_ms)
        self.runner = runner
        self.worker_free = 0.0
        self.excluded = 0.0  # thread CPU seconds spent inside submitted calls (not the engine's cost), less the oracle's
        self.pending: list[tuple[float, _SimFuture, object, tuple]] = []  # (submitted at, future, fn, args)

    def submit(self, fn, *args) -> _SimFuture:
        future = _SimFuture(self)
        self.pending.append((self.now, future, fn, args))
        self.run_due()
        return future

    def run_due(self, until: _SimFuture | None = None) -> None:
        """Run the queued calls whose start has come (and, with ``until``, all up to that one)."""
        while self.pending:
            submitted, future, fn, args = self.pending[0]
            start = max(submitted, self.worker_free) + self.queue_ms
            if start > self.now and until is None:
                return
            self.pending.pop(0)
            self.now = max(self.now, start)
            own, embed = getattr(self.runner, "own_time_s", 0.0), self.runner.embed_s
            t = time.thread_time()
            future.value = fn(*args)
            spent = time.thread_time() - t
            own = getattr(self.runner, "own_time_s", 0.0) - own
            self.excluded += spent - own  # the oracle's answers in here are subtracted with the others
            decode = spent - (self.runner.embed_s - embed) - own
            self.worker_free = start + self.encode_ms + max(0.0, decode) * 1e3
            future.due = self.worker_free
            if future is until:
                return


class _TimedEmbed:
    """``runner`` with the thread time of its ``embed`` calls summed in ``embed_s``."""

    def __init__(self, runner) -> None:
        self._runner = runner
        self.embed_s = 0.0

    def embed(self, image):
        t = time.thread_time()
        try:
            return self._runner.embed(image)
        finally:
            self.embed_s += time.thread_time() - t

    def __getattr__(self, name):
        return getattr(self._runner, name)


def run_engine_simulated(
    seq: VosSequence, runner, config, *, encode_ms: float = 1400.0, streams: int = 1, masks_dir: Path | None = None
) -> tuple[SequenceScorer, dict]:
    """The CPU preset played live on a simulated clock (see the module docstring); scored like :func:`run_engine_live`.

    ``streams`` > 1: one of that many streams on one encoder that is always
    behind (see ``--sim-streams``): each encode waits for ``streams - 1``
    others, and the frame budget caps the processed rate.
    """
    runner = _TimedEmbed(runner)
    engine = make_engine(config, runner)
    clock = _SimClock(encode_ms, runner, queue_ms=(streams - 1) * encode_ms)
    budget = config.streams  # type: ignore[attr-defined]
    cap_fps = max(budget.min_fps, budget.frame_budget * seq.fps / streams) if streams > 1 and budget.frame_budget else 0.0
    gap = 1000.0 / cap_fps if cap_fps else 0.0
    engine.attach_worker(clock.submit)
    ids = _Ids(seq, _prompt_all(engine, seq))
    period = 1000.0 / seq.fps
    kept: list[tuple[int, dict[int, np.ndarray]]] = []
    costs: list[float] = []
    i = 0
    while i < len(seq):
        # The newest frame that has arrived; the engine waits for the next one when it is ahead.
        clock.now = max(clock.now, i * period)
        i = max(i, min(len(seq) - 1, int(math.floor(clock.now / period + 1e-9))))
        started = clock.now
        clock.excluded = 0.0
        own = getattr(runner, "own_time_s", 0.0)  # the oracle's answers are not a decoder's cost
        t = time.thread_time()
        result = engine.process(Frame(i, seq.frames[i], i / seq.fps, time.monotonic()))
        cost = (time.thread_time() - t - clock.excluded - (getattr(runner, "own_time_s", 0.0) - own)) * 1e3
        costs.append(cost)
        clock.now = max(clock.now + cost, started + gap)  # the frame budget's cap: the next frame no sooner
        kept.append((i, _packed(result)))
        i += 1
    engine.attach_worker(None)
    scorer = _score_as_seen(seq, kept, ids, masks_dir)
    stats = {
        "processed": len(kept), "frames": len(seq), "median_ms": float(np.median(costs)) if costs else 0.0,
        "longest_drop": _longest_drop(kept),
    }
    return scorer, stats


def run_flow(seq: VosSequence, oracle: GroundTruthOracle, every: int, *, masks_dir: Path | None = None) -> SequenceScorer:
    """The dense-flow baseline: masks warped by DIS flow every frame, re-prompted every ``every`` frames."""
    h, w = seq.size
    s = FLOW_SIDE / max(h, w)
    small = (max(1, round(w * s)), max(1, round(h * s)))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    masks: dict[int, np.ndarray] = {}
    scorer = SequenceScorer(seq)
    writer = MaskWriter(masks_dir)
    prev = None
    for i, image in enumerate(seq.frames):
        grey = cv2.cvtColor(cv2.resize(image, small, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY)
        if prev is not None and masks:
            flow = dis.calc(grey, prev, None)  # backward: where each pixel of this frame was in the last one
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
            mx = gx + flow[..., 0] * np.float32(w / small[0])
            my = gy + flow[..., 1] * np.float32(h / small[1])
            for oid, m in masks.items():
                masks[oid] = cv2.remap(m.view(np.uint8), mx, my, cv2.INTER_NEAREST, borderValue=0) > 0
        prev = grey
        prompts: list[tuple[int, np.ndarray]] = []
        for oid, start in seq.start.items():
            if i == start:
                prompts.append((oid, mask_to_box(seq.labels[i] == oid)))
            elif i > start and (i - start) % every == 0:
                box = mask_to_box(masks[oid])
                if box is not None:
                    prompts.append((oid, box))
        if prompts:
            oracle.encode(image, index=i)
            low, _ = oracle.decode(None, None, np.stack([b for _, b in prompts]), None, False)
            out = oracle.masks(low[:, 0], (h, w))
            for (oid, _), m in zip(prompts, out):
                masks[oid] = m
        scorer.add(i, masks, {oid: oid for oid in masks})
        writer.write(i, seq.size, masks, {oid: oid for oid in masks})
    return scorer


# -- report --------------------------------------------------------------------------------


def _fmt(v: float, digits: int = 3) -> str:
    return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def _reacq_cell(events: list[dict]) -> str:
    if not events:
        return "-"
    return f"{len(events)}: " + ", ".join("never" if e["delay_s"] is None else f"{e['delay_s']:.2f} s" for e in events)


def summarize(per_seq: Mapping[str, dict]) -> dict:
    """Mean over sequences of J, F, J&F and recall; id switches and re-acquisitions summed / listed."""
    vals = list(per_seq.values())
    def mean(key: str) -> float:  # over the sequences that have the figure (one with nothing to score has none)
        have = [v[key] for v in vals if np.isfinite(v[key])]
        return float(np.mean(have)) if have else float("nan")

    events = [dict(e, sequence=name) for name, v in per_seq.items() for e in v["reacquisition"]]
    delays = [e["delay_s"] for e in events if e["delay_s"] is not None]
    return {
        "J": mean("J"), "F": mean("F"), "J&F": mean("J&F"), "recall": mean("recall"),
        "id_switches": int(sum(v["id_switches"] for v in vals)),
        "reacquisition": events,
        "reacquisition_median_s": float(np.median(delays)) if delays else None,
        "reacquisition_never": sum(1 for e in events if e["delay_s"] is None),
    }


def report(results: Mapping[str, Mapping[str, dict]], sequences: Sequence[str]) -> str:
    """Markdown: per-sequence J per configuration, then the summary per configuration."""
    names = list(results)
    lines = ["**J per sequence**", "", "| sequence | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for seq in sequences:
        lines.append(f"| {seq} | " + " | ".join(_fmt(results[n]["sequences"][seq]["J"]) if seq in results[n]["sequences"] else "-" for n in names) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{_fmt(results[n]['mean']['J'])}**" for n in names) + " |")
    lines += [
        "", "**Summary** (means over sequences; id switches summed; re-acquisition: events and delays)", "",
        "| configuration | J | F | J&F | recall | id switches | re-acquisition |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for n in names:
        m = results[n]["mean"]
        lines.append(
            f"| {n} | {_fmt(m['J'])} | {_fmt(m['F'])} | {_fmt(m['J&F'])} | {_fmt(100 * m['recall'], 1)} % | "
            f"{m['id_switches']} | {_reacq_cell(m['reacquisition'])} |"
        )
    for n in names:
        stats = results[n].get("live")
        if stats:
            done, total = sum(v["processed"] for v in stats.values()), sum(v["frames"] for v in stats.values())
            longest = max(v.get("longest_drop", 0) for v in stats.values())
            lines += ["", (
                f"{n}: {done} of {total} frames processed ({100 * done / max(total, 1):.0f} %), the rest dropped as a "
                f"camera drops them; at most {longest} in a row"
            )]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------


def _ints(text: str) -> tuple[int, ...]:
    try:
        out = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 1,5,15, got {text!r}") from None
    if any(v < 1 for v in out):
        raise argparse.ArgumentTypeError(f"every value must be >= 1, got {text!r}")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="eval_vos.py", description="Score the tracking engine on DAVIS-layout video (see the module docstring).",
    )
    p.add_argument("--root", type=Path, default=REPO.parent / "shared" / "davis", help="data folder (default ../shared/davis)")
    p.add_argument("--sequences", default="", help="comma-separated sequence names (default: all)")
    p.add_argument("--imageset", default="", metavar="YEAR/SPLIT",
                   help="the sequences of <root>/ImageSets/YEAR/SPLIT.txt, e.g. 2017/val (standard DAVIS)")
    p.add_argument("--reencode", type=_ints, default=(1, 5, 15, 30), help="engine.reencode_every values (default 1,5,15,30)")
    p.add_argument("--flow", type=_ints, default=(5, 15, 30), help="flow baseline re-prompt periods (default 5,15,30; '' for none)")
    p.add_argument("--no-live", action="store_true", help="skip the live (real-time, CPU preset) configuration")
    p.add_argument("--live-sim", action="store_true",
                   help="add the live configuration on a simulated clock (independent of machine load)")
    p.add_argument("--encode-ms", type=float, default=1400.0,
                   help="simulated time of one background encode for --live-sim (default 1400, as measured live here)")
    p.add_argument("--sim-streams", type=int, default=1, metavar="K",
                   help="--live-sim as one of K streams on one encoder that is always behind: each encode waits"
                        " for K-1 others of --encode-ms, and the frame budget caps the frames processed (default 1)")
    p.add_argument("--network", choices=("real", "none"), default="real",
                   help="run the real network on every oracle call (default) or skip it (same figures, fast)")
    p.add_argument("--weights", default=None, help="checkpoint (default: the golden one, else a random one)")
    p.add_argument("--device", default="cpu", help="model device (default cpu)")
    p.add_argument("--config", default=None, help="config file or preset for the engine rows")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="config override, repeatable (applies to every engine configuration)")
    p.add_argument("--max-frames", type=int, default=0, help="cut every sequence to its first K frames")
    p.add_argument(
        "--reverse", action="store_true",
        help="play every sequence backwards (new clips for the tracker from the same footage)",
    )
    p.add_argument(
        "--bounce", type=int, default=1, metavar="LEGS",
        help="play every sequence there and back, LEGS runs in all (long real clips for the live rows; default 1: once)",
    )
    p.add_argument("--stride", type=int, default=1, metavar="K",
                   help="keep every K-th frame: the clip at 1/K of its frame rate, K times the motion a frame (default 1)")
    p.add_argument("--scale", type=float, default=1.0, metavar="S",
                   help="resize frames and annotations by S, e.g. 0.75 for 640x360 (default 1)")
    p.add_argument("--fps", type=float, default=24.0, help="frame rate of JPEG sequences (default 24)")
    p.add_argument("--json", type=Path, default=None, help="write every figure to this file")
    p.add_argument("--save-masks", type=Path, default=None, help="write per-frame masks as DAVIS PNGs under this folder")
    return p


def _config_dir(name: str) -> str:
    return name.replace(" N=", "-N").replace(" ", "-")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    try:
        from realtime_sam.config import load_config
        from realtime_sam.errors import RealtimeSamError

        live = not args.no_live
        if live and args.network != "real":
            raise EvalError("the live configuration needs --network real (add --no-live to skip it)")
        if args.encode_ms <= 0:
            raise EvalError("--encode-ms must be > 0")
        if args.sim_streams < 1:
            raise EvalError("--sim-streams must be >= 1")
        if args.max_frames < 0:
            raise EvalError("--max-frames must be >= 0")
        if args.bounce < 1:
            raise EvalError("--bounce must be >= 1 (1: each sequence played once)")
        if args.stride < 1:
            raise EvalError("--stride must be >= 1 (1: every frame)")
        if not 0.05 <= args.scale <= 4.0:
            raise EvalError("--scale must be between 0.05 and 4 (1: frames as they are)")
        if args.json is not None:
            if args.json.is_dir():
                raise EvalError(f"--json {args.json} is a folder; give a file name such as {args.json / 'eval.json'}")
            try:
                args.json.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise EvalError(f"--json {args.json}: cannot create its folder ({exc.strerror})") from None
        found = find_sequences(args.root)
        if args.imageset and args.sequences:
            raise EvalError("give --imageset or --sequences, not both")
        names = imageset_names(args.root, args.imageset) if args.imageset else sequence_names(args.sequences, found)
        lacking = frameless(args.root, found)
        named = args.imageset or args.sequences.strip()
        if named and [s for s in names if s in lacking]:
            raise EvalError(_no_frames(args.root, [s for s in names if s in lacking]))
        unknown = [s for s in names if s not in found]
        if unknown:
            raise EvalError(f"unknown sequence(s) {', '.join(unknown)} in {args.root}; available: {', '.join(found)}")
        if lacking and not named:  # left out of "every sequence": say so, or the mean is over fewer than the folder holds
            log(f"warning: {_no_frames(args.root, lacking)}; left out, scoring the {len(names)} that have frames")
        try:
            base = load_config(args.config, args.overrides)
            live_cfg = load_config("cpu", args.overrides) if live else None
            sim_cfg = load_config("cpu", args.overrides) if args.live_sim else None
            if args.network == "real":
                check_model_args(args.device, weights=args.weights)
        except RealtimeSamError as exc:
            raise EvalError(str(exc)) from None
    except EvalError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    configs: dict[str, object] = {}
    for n in args.reencode:
        configs[f"engine N={n}"] = dataclasses.replace(
            base, engine=dataclasses.replace(base.engine, reencode_every=n, background_encode=False)
        )
    if live_cfg is not None:
        configs["live"] = dataclasses.replace(live_cfg, engine=dataclasses.replace(live_cfg.engine, background_encode=True))
    if sim_cfg is not None:
        configs["live-sim"] = dataclasses.replace(sim_cfg, engine=dataclasses.replace(sim_cfg.engine, background_encode=True))
    for n in args.flow:
        configs[f"flow N={n}"] = n

    inner = None
    with tempfile.TemporaryDirectory(prefix="rtsam-eval-") as tmp:
        if args.network == "real":
            from realtime_sam.config import ModelConfig
            from realtime_sam.model.loader import load_runner

            weights = weights_or_random(args.weights, Path(tmp))
            log(f"loading the model ({weights}) on {args.device} ...")
            inner = load_runner(ModelConfig(weights=str(weights), device=args.device), progress=False)

        results: dict[str, dict] = {name: {"sequences": {}} for name in configs}
        extra: dict[str, dict] = {}
        done: list[str] = []  # the sequences every configuration has finished
        stopped: str | None = None  # why the run ended early: an error line, or the interruption
        unwritten: str | None = None  # the error line of a --json write that failed
        warm = False
        try:
            for name in names:
                t = time.perf_counter()
                try:
                    seq = load_sequence(
                        args.root, name, found[name], max_frames=args.max_frames, fps=args.fps, reverse=args.reverse,
                        legs=args.bounce, stride=args.stride, scale=args.scale,
                    )
                except EvalError as exc:
                    stopped = f"error: {exc}"
                    break
                log(f"{name}: {len(seq)} frames, {len(seq.start)} object(s), {seq.fps:g} fps ({time.perf_counter() - t:.1f} s to load)")
                if not seq.start:
                    log(f"warning: {name}: no object has {MIN_AREA} pixels in any frame; nothing to score (figures '-')")
                oracle = GroundTruthOracle(seq.gt, seq.frames, inner=inner)
                if inner is not None and not warm:
                    inner.embed(seq.frames[0])  # first calls allocate and pick kernels: keep that out of the rounds
                    warm = True
                for cname, cfg in configs.items():
                    t = time.perf_counter()
                    masks_dir = args.save_masks / _config_dir(cname) / name if args.save_masks is not None else None
                    if cname.startswith("flow"):
                        scorer = run_flow(seq, oracle, int(cfg), masks_dir=masks_dir)  # type: ignore[arg-type]
                    elif cname == "live":
                        scorer, stats = run_engine_live(seq, oracle, cfg, masks_dir=masks_dir)
                        extra.setdefault(cname, {})[name] = stats
                    elif cname == "live-sim":
                        scorer, stats = run_engine_simulated(
                            seq, oracle, cfg, encode_ms=args.encode_ms, streams=args.sim_streams, masks_dir=masks_dir
                        )
                        extra.setdefault(cname, {})[name] = stats
                    else:
                        scorer = run_engine_file(seq, oracle, cfg, masks_dir=masks_dir)
                    s = results[cname]["sequences"][name] = scorer.summary()
                    log(f"  {cname:<12} J {_fmt(s['J'])}  F {_fmt(s['F'])}  ({time.perf_counter() - t:.1f} s)")
                del seq, oracle
                done.append(name)
                if args.json is not None:  # after every sequence: a run cut short keeps what it finished
                    try:
                        _write_json(args.json, _payload(args, _figures(results, extra, done), done, complete=False))
                    except EvalError as exc:  # a run that cannot keep its figures stops: they are reported below
                        unwritten = f"error: {exc}; stopped after {len(done)} of {len(names)} sequence(s), reported above"
                        break
        except KeyboardInterrupt:
            stopped = "interrupted"
    figures = _figures(results, extra, done)
    if done:
        print(report(figures, done))
    if args.json is not None and unwritten is None:
        try:
            _write_json(args.json, _payload(args, figures, done, complete=stopped is None))
        except EvalError as exc:
            unwritten = f"error: {exc}" + ("; the figures are those reported above" if done else "")
    if unwritten is not None:
        print(unwritten, file=sys.stderr)
        return 1
    if stopped == "interrupted":
        print(f"interrupted: reported the {len(done)} of {len(names)} sequence(s) every configuration finished"
              + (f", in {args.json}" if args.json is not None else ""), file=sys.stderr)
        return 130
    if stopped is not None:
        print(stopped, file=sys.stderr)
        return 2
    return 0


def _figures(results: Mapping[str, dict], extra: Mapping[str, dict], done: Sequence[str]) -> dict[str, dict]:
    """Every configuration's figures over the sequences in ``done`` (a sequence half run is left out)."""
    out: dict[str, dict] = {}
    for cname, r in results.items():
        seqs = {n: r["sequences"][n] for n in done}
        out[cname] = {"sequences": seqs, "mean": summarize(seqs)}
        if cname in extra:
            out[cname]["live"] = {n: extra[cname][n] for n in done if n in extra[cname]}
    return out


def _payload(args: argparse.Namespace, figures: Mapping[str, dict], done: Sequence[str], *, complete: bool) -> dict:
    return {
        "root": str(args.root), "network": args.network, "sequences": list(done), "complete": complete,
        "imageset": args.imageset or None,
        "max_frames": args.max_frames, "reverse": args.reverse, "bounce": args.bounce, "stride": args.stride,
        "scale": args.scale, "configurations": figures,
    }


def _write_json(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path`` whole or not at all (a temporary file beside it, then renamed over it).

    Raises:
        EvalError: the file could not be written (a full disk, no permission, its folder removed);
            the file as it was, and no temporary file, are left.
    """
    from realtime_sam.errors import describe_error

    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_text(json.dumps(strict_json(payload), indent=1, allow_nan=False), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise EvalError(f"--json {path}: cannot write it ({describe_error(exc)})") from None


if __name__ == "__main__":
    sys.exit(main())
