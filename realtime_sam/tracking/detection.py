"""Detector-prompted tracking (``--detect MODEL --classes person,car``): a detector's boxes start tracks.

Every ``every_k_frames`` frames the engine runs the detector (with
``engine.background_encode``, on the background worker together with that
frame's encode; otherwise on the frame's own encode), decodes all of its
boxes in one batched decoder call and offers the masks to the tracker as
candidates labelled with their class name. The tracker matches them to the
live tracks by mask IoU (box IoU for lost tracks) and starts new tracks only
for those that overlap none (:meth:`~realtime_sam.tracking.tracks.Tracker.update`),
so an object already tracked never gets a second id; a matched track without
a label takes the class name. Like auto-discovery's, a detector's track
starts ``TENTATIVE`` and is confirmed after ``tracker.min_hits`` good decodes.

This module is torch-free: the detector is any callable
``detector(image_bgr) -> BoxDetections`` with a ``names`` mapping
(:func:`realtime_sam.model.detector.load_yolo` makes one from Ultralytics YOLO).
"""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

import numpy as np

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError, DetectorError
from realtime_sam.tracking.association import mask_iou_matrix
from realtime_sam.tracking.tracks import Detection, Track
from realtime_sam.types import BoxDetections, TrackState

__all__ = [
    "DetectConfig",
    "Detector",
    "DetectorPrompts",
    "parse_classes",
    "select_detections",
    "class_numbers",
    "yield_to_prompts",
    "name_tracks",
]


class Detector(Protocol):
    """What the annotator and the engine need of a detector."""

    names: Mapping[int, str]

    def __call__(self, image_bgr: np.ndarray) -> BoxDetections:
        """Boxes in ``image_bgr`` (``HxWx3 uint8`` BGR), in its pixels."""
        ...


def check_detector(detector: object) -> Detector:
    """``detector`` itself, once it is seen to be a :class:`Detector`: callable and with ``names``.

    Raises:
        TypeError: it is not callable, or has no ``names`` mapping (one line saying what to add).
    """
    label = getattr(detector, "__name__", None) or type(detector).__name__
    if not callable(detector):
        raise TypeError(f"detector {label} is not callable: give a function or object that maps a BGR image to BoxDetections")
    if not isinstance(getattr(detector, "names", None), Mapping):
        # The class filter (names in --classes / detect.classes) and the labels need every class's
        # name before the first detection, so a BoxDetections' own names come too late.
        raise TypeError(
            f"detector {label} has no names (class index -> name, for every class it can report); "
            f"set them, e.g. {label}.names = {{0: 'person', 2: 'car'}}"
        )
    return detector  # type: ignore[return-value]


@dataclass(frozen=True)
class DetectConfig:
    """Detector-prompted tracking.

    Attributes:
        model: an Ultralytics detection checkpoint (``yolo11n.pt``, a path, or a
            model YAML for random weights); ``None``: no detector.
        classes: class names or ids to track (``["person", "car"]``); empty: every class.
        every_k_frames: run the detector on every k-th frame.
        conf: detector score threshold.
    """

    model: str | None = None
    classes: tuple[str | int, ...] = ()
    every_k_frames: int = 15
    conf: float = 0.25

    def __post_init__(self) -> None:
        check_numbers(self, "detect")  # by type first: "5" < 1 is a TypeError naming no key
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.every_k_frames < 1:
            raise ConfigError(f"detect.every_k_frames must be >= 1, got {self.every_k_frames}")
        if not 0.0 <= self.conf <= 1.0:
            raise ConfigError(f"detect.conf must be in [0, 1], got {self.conf}")

    def require_detector(self) -> None:
        """Refuse settings changed from their defaults when there is no detector (no :attr:`model`) to use them.

        A ``detect:`` section at its defaults (as the presets carry it) is no change.
        Call where no detector object is given either (one passed to
        :meth:`~realtime_sam.tracking.engine.Engine.from_config` uses these settings).

        Raises:
            ConfigError: one line naming the settings and how to give a detector.
        """
        if self.model:
            return
        default = DetectConfig()
        changed = [
            f"detect.{f.name}" for f in dataclasses.fields(self) if f.name != "model" and getattr(self, f.name) != getattr(default, f.name)
        ]
        if changed:
            them = "it" if len(changed) == 1 else "them"
            raise ConfigError(
                f"{' and '.join(changed)} {'is' if len(changed) == 1 else 'are'} set but there is no detector to use {them}: "
                f"add --detect MODEL (config detect.model, e.g. yolo11n.pt), or remove {them}"
            )


def parse_classes(classes: str | int | Sequence[str | int] | None, names: Mapping[int, str]) -> tuple[int, ...] | None:
    """Class ids from ids or names (``"person,car"``, ``[0, 2]``, ``["person", 2]``, ``0``); ``None`` = every class.

    Raises:
        DetectorError: a name or id the detector does not know (the message lists some it does).
    """
    if classes is None:
        return None
    if isinstance(classes, numbers.Integral) and not isinstance(classes, bool):
        classes = [int(classes)]  # one id, as Ultralytics' predict(classes=0) takes it
    items = [c.strip() for c in classes.split(",")] if isinstance(classes, str) else list(classes)
    items = [c for c in items if not (isinstance(c, str) and not c.strip())]
    if not items:
        return None
    by_name = {str(n).lower(): int(i) for i, n in names.items()}
    out: list[int] = []
    for item in items:
        text = str(item).strip()
        if text.lower() in by_name:
            cid = by_name[text.lower()]
        elif text.isdigit():
            cid = int(text)
            if names and cid not in names:
                raise DetectorError(f"class id {cid} is not one of the detector's classes 0-{max(names)}")
        else:
            known = ", ".join(str(n) for n in list(names.values())[:12])
            more = ", ..." if len(names) > 12 else ""
            raise DetectorError(f"the detector has no class {text!r}; give ids or names such as {known}{more}")
        if cid not in out:
            out.append(cid)
    return tuple(out)


def select_detections(
    detections: BoxDetections,
    *,
    conf: float = 0.0,
    classes: Sequence[int] | None = None,
    max_det: int | None = None,
    size: tuple[int, int] | None = None,
) -> BoxDetections:
    """The rows with ``confidence >= conf`` of the ``classes`` (all when ``None``), best ``max_det`` first.

    With ``size = (H, W)`` boxes are clipped into the image and those left
    without area are dropped.
    """
    keep = detections.confidence >= conf
    if classes is not None:
        keep &= np.isin(detections.class_id, np.asarray(list(classes), dtype=np.int64))
    d = detections.select(keep)
    if size is not None and len(d):
        h, w = size
        xyxy = d.xyxy.copy()
        xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, w)
        xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, h)
        d = BoxDetections(xyxy, d.confidence, d.class_id, d.names)
        d = d.select((xyxy[:, 2] > xyxy[:, 0]) & (xyxy[:, 3] > xyxy[:, 1]))
    order = np.argsort(-d.confidence, kind="stable")
    if max_det is not None:
        order = order[: max(0, int(max_det))]
    return d.select(order)


def class_numbers(names: Mapping[int, str], classes: Sequence[int] | None) -> dict[str, int]:
    """Class name -> the class id written to MOTS files for tracks with that label.

    The selected ``classes`` are numbered 1, 2, ... in the order given (so
    ``--classes car,person`` writes KITTI MOTS' car 1, pedestrian 2); with
    every class, a class's id is its index + 1.
    """
    if classes:
        return {names.get(c, str(c)): k + 1 for k, c in enumerate(classes)}
    return {name: int(i) + 1 for i, name in names.items()}


def yield_to_prompts(
    candidates: Sequence[Detection], prompted: Sequence[Detection], iou_thresh: float
) -> tuple[list[Detection], list[Detection]]:
    """Candidates decoded on the same encode as new user prompts give way to them.

    The tracker adds a user's new object after it has matched the candidates,
    so a candidate on the same object would start a second track. Returns the
    candidates that overlap no prompted mask by ``iou_thresh`` (mask IoU) or
    more, and the prompted detections, an unlabelled one taking the label of
    the best-overlapping candidate it displaced.
    """
    if not candidates or not prompted:
        return list(candidates), list(prompted)
    iou = mask_iou_matrix([d.mask for d in prompted], [c.mask for c in candidates])
    covered = (iou >= iou_thresh).any(axis=0)
    out = []
    for r, d in enumerate(prompted):
        if d.label is None and (iou[r] >= iou_thresh).any():
            best = candidates[int(np.argmax(iou[r]))]
            d = dataclasses.replace(d, label=best.label)
        out.append(d)
    return [c for c, hit in zip(candidates, covered) if not hit], out


def name_tracks(tracks: Sequence[Track], candidates: Sequence[Detection], iou_thresh: float) -> None:
    """Give each visible unlabelled track the label of the labelled candidate that overlaps it most (mask IoU >= ``iou_thresh``).

    A detection on an object already tracked (say, clicked by the user) starts
    no track; the track takes its class name instead.
    """
    named = [c for c in candidates if c.label is not None]
    bare = [t for t in tracks if t.label is None and t.mask is not None and t.state is not TrackState.LOST]
    if not named or not bare:
        return
    iou = mask_iou_matrix([t.mask for t in bare], [c.mask for c in named])
    for r, t in enumerate(bare):
        j = int(np.argmax(iou[r]))
        if iou[r, j] >= iou_thresh:
            t.label = named[j].label


class DetectorPrompts:
    """When the detector runs, and its filtered boxes (the engine decodes them).

    Args:
        detector: the :class:`Detector`.
        config: the ``detect`` section (``model`` is not read here: the detector is given).
    """

    def __init__(self, detector: Detector, config: DetectConfig = DetectConfig()) -> None:
        self.detector = check_detector(detector)
        self.config = config
        self.classes = parse_classes(list(config.classes), detector.names)
        self.names = dict(detector.names)
        self._since: int | None = None  # frames since the detector last ran (None: never)
        self.in_flight = False  # a run submitted to the worker has not landed yet
        self.runs = 0

    def due(self) -> bool:
        """True on the first frame and every ``every_k_frames`` frames after the last run, unless one is in flight."""
        if self.in_flight:
            return False
        return self._since is None or self._since + 1 >= self.config.every_k_frames

    def restart(self) -> None:
        """Forget when the detector last ran: it is due on the next frame (a new source's first)."""
        self._since = None

    def tick(self) -> None:
        """One frame passed without a run."""
        if self._since is not None:
            self._since += 1

    def started(self) -> None:
        """A run starts on this frame."""
        self._since = 0
        self.runs += 1

    def __call__(self, image_bgr: np.ndarray) -> BoxDetections:
        """Detect in ``image_bgr`` (any thread) and keep the boxes of the configured classes and score."""
        h, w = image_bgr.shape[:2]
        return select_detections(self.detector(image_bgr), conf=self.config.conf, classes=self.classes, size=(h, w))

    def class_numbers(self) -> dict[str, int]:
        """Class name -> MOTS class id (see :func:`class_numbers`)."""
        return class_numbers(self.names, self.classes)
