"""Small typed values passed between the pipeline's stages.

Data flows: a source yields :class:`Frame` objects; the engine turns each frame
into a :class:`FrameResult` holding one :class:`TrackResult` per visible track;
sinks and the renderer consume results. Everything here is immutable, arrays
included (made read-only), so a value can cross a thread boundary without a lock.

Conventions used throughout the package:

* images are ``HxWx3 uint8`` in **BGR** order (OpenCV's), C-contiguous;
  the model wrapper converts to RGB once, at encode time;
* boxes are ``XYXY`` floats in source-image pixels;
* masks are ``HxW bool`` at source resolution;
* times are seconds (``float``), stage timings milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

__all__ = ["Frame", "TrackState", "TrackResult", "FrameResult", "ObjectPrompt", "Box", "BoxDetections"]

Box = tuple[float, float, float, float]
"""``(x0, y0, x1, y1)`` in pixels, ``x1 >= x0`` and ``y1 >= y0``."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    Attributes:
        index: 0-based count of frames the source delivered, without gaps
            (also across reconnects; after damage a file's true position is
            unknowable, so ``timestamp`` carries real time).
        image: ``HxWx3 uint8`` BGR, read-only (``Frame`` makes the array it is given
            read-only; draw on ``image.copy()``).
        timestamp: presentation time in seconds from the stream
            (``pts * time_base``); for cameras, seconds since the source opened.
        capture_time: ``time.monotonic()`` when the frame was read.
        name: the source's own name for the frame, for per-frame output
            files: an image sequence's file name without its extension
            (``None`` for video, streams, cameras).
    """

    index: int
    image: np.ndarray
    timestamp: float
    capture_time: float
    name: str | None = None

    def __post_init__(self) -> None:
        # Read-only: the sinks render this image on their own thread and the engine keeps it for
        # later flows and encodes, so drawing on it in place (an overlay for one's own window)
        # showed in some frames of the output video and not in others. The array itself, not a
        # view: the engine's frame is the one given (a buffer refilled for the next frame would
        # change the engine's last frame under it).
        if isinstance(self.image, np.ndarray):
            self.image.setflags(write=False)

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    @property
    def width(self) -> int:
        return int(self.image.shape[1])


class TrackState(str, enum.Enum):
    """Lifecycle of a track.

    ``TENTATIVE`` -> ``CONFIRMED`` after enough good frames; ``CONFIRMED`` ->
    ``LOST`` when its mask is poor or missing; ``LOST`` -> ``CONFIRMED`` on
    re-acquisition, or ``REMOVED`` after too long (or by the user).
    ``REMOVED`` is final and its id is never reused.
    """

    TENTATIVE = "tentative"
    CONFIRMED = "confirmed"
    LOST = "lost"
    REMOVED = "removed"


@dataclass(frozen=True, eq=False)
class TrackResult:
    """One track as seen in one frame.

    Attributes:
        track_id: positive id, unique for the lifetime of an engine.
        mask: ``HxW bool`` at source resolution (all False when lost), read-only:
            the engine goes on from it (``mask.copy()`` to edit one).
        box: ``XYXY`` pixels, the mask's bounding box (or the last
            predicted box when the mask is empty).
        score: the decoder's predicted IoU in ``[0, 1]`` (0 when not decoded).
        state: the track's lifecycle state after this frame.
        label: optional user label (from a prompts file), else ``None``.
    """

    track_id: int
    mask: np.ndarray
    box: Box
    score: float
    state: TrackState
    label: str | None = None

    def __post_init__(self) -> None:
        # Read-only: the engine goes on from this array (the next frame's mask is moved from it)
        # and the sinks read it on their own thread, so a caller's in-place edit (clearing it,
        # `&=` with a region) corrupted the next frames (measured: 10 frames of an empty mask).
        if isinstance(self.mask, np.ndarray):
            self.mask.setflags(write=False)


@dataclass(frozen=True, eq=False)
class FrameResult:
    """The engine's output for one frame.

    Attributes:
        frame: the input frame.
        tracks: the tracks that are alive after this frame (not ``REMOVED``),
            ordered by id.
        encoded: True when this frame's masks come fresh from the decoder: the
            image encoder ran on this frame, or (with ``engine.background_encode``)
            an encode of an earlier frame landed here, its masks carried to this
            frame (``Engine.last_encode_index`` names the encoded frame).
        timings: milliseconds per stage (``"encode"``, ``"decode"``,
            ``"propagate"``, ``"associate"``, ``"total"``) on the thread that
            called ``process``; stages that did not run there are absent (with
            ``background_encode`` a landing's encode and decode ran on the worker).
    """

    frame: Frame
    tracks: tuple[TrackResult, ...]
    encoded: bool = False
    timings: Mapping[str, float] = field(default_factory=dict)

    @property
    def index(self) -> int:
        return self.frame.index

    @property
    def timestamp(self) -> float:
        return self.frame.timestamp


@dataclass(frozen=True)
class ObjectPrompt:
    """A user's request to segment and track one object.

    Attributes:
        points: ``((x, y), ...)`` in source pixels (may be empty when ``box`` is given).
        labels: one per point: 1 foreground, 0 background.
        box: ``XYXY`` source pixels, or ``None``.
        label: optional name shown next to the object's id.
        start_frame: first frame index at which to apply the prompt (0 = at once).
        track_id: when set, refine this existing track (e.g. add a negative point)
            instead of creating a new one.
    """

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: Box | None = None
    label: str | None = None
    start_frame: int = 0
    track_id: int | None = None


@dataclass(frozen=True, eq=False)
class BoxDetections:
    """One image's detector output, as a struct of arrays (row ``i`` is one object).

    Attributes:
        xyxy: ``Nx4 float64`` boxes, ``XYXY`` source pixels.
        confidence: ``N float64`` detector scores in ``[0, 1]``.
        class_id: ``N int64`` class indices into ``names``.
        names: class index -> class name, for every class the detector knows
            (not only those present).
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Mapping[int, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        conf = np.asarray(self.confidence, dtype=np.float64).reshape(-1)
        cls = np.asarray(self.class_id, dtype=np.int64).reshape(-1)
        if not len(xyxy) == len(conf) == len(cls):
            raise ValueError(f"BoxDetections: {len(xyxy)} boxes, {len(conf)} scores and {len(cls)} class ids")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "class_id", cls)
        object.__setattr__(self, "names", dict(self.names))

    def __len__(self) -> int:
        return len(self.xyxy)

    @property
    def labels(self) -> tuple[str, ...]:
        """Each row's class name (its index as text when ``names`` lacks it)."""
        return tuple(self.names.get(int(c), str(int(c))) for c in self.class_id)

    def select(self, keep: np.ndarray) -> "BoxDetections":
        """The rows picked by ``keep`` (a boolean mask or indices)."""
        return BoxDetections(self.xyxy[keep], self.confidence[keep], self.class_id[keep], self.names)
