"""Synthetic video scenes with exact ground truth.

A :class:`Scene` is a deterministic description of a short clip: a static,
textured background and a few flat-shaded objects (circles, rectangles,
ellipses) moving at constant velocity and bouncing off the borders.
:meth:`Scene.render` draws any frame on demand and returns the exact visible
mask of every object, so tests and benchmarks can score segmentation and
tracking without hand labels.

Conventions:

* images are ``HxWx3 uint8`` **BGR**; masks are ``HxW bool``;
* positions are pixel coordinates ``(x, y)`` with the centre of pixel
  ``(col, row)`` at ``(col, row)``;
* objects are painted in list order, so later objects occlude earlier ones,
  and the ground truth is each object's *visible* part.

The background is noise-free but textured (a colour gradient, a few smooth
sinusoidal ripples and some static stripes) so optical flow and feature
matching have structure to lock on to; each object carries a two-tone
checker texture that moves with it.
"""

from __future__ import annotations

import os
import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

import cv2
import numpy as np

from realtime_sam.errors import ConfigError
from realtime_sam.tracking.association import mask_to_box

__all__ = [
    "SceneObject",
    "Scene",
    "standard_scene",
    "crossing_scene",
    "appearing_scene",
    "write_video",
    "write_gt",
    "read_gt",
    "shade_of",
    "pick_object",
    "mask_logits",
]

Shape = Literal["circle", "rect", "ellipse"]
BackgroundStyle = Literal["textured", "flat"]

_SHAPES = ("circle", "rect", "ellipse")
# Saturated BGR colours, far from the muted background palette.
_PALETTE: tuple[tuple[int, int, int], ...] = (
    (40, 40, 230),  # red
    (40, 200, 40),  # green
    (230, 90, 30),  # blue
    (30, 220, 230),  # yellow
    (220, 40, 220),  # magenta
    (230, 230, 40),  # cyan
    (30, 140, 255),  # orange
    (255, 255, 255),  # white
)
# The checker's dark cells are the object colour scaled by this factor.
_SHADE_FACTOR = 0.55


def shade_of(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """The darker tone of an object's two-tone texture (BGR)."""
    return tuple(int(round(c * _SHADE_FACTOR)) for c in colour)  # type: ignore[return-value]


@dataclass(frozen=True)
class SceneObject:
    """One moving object.

    Attributes:
        id: positive ground-truth id, unique within a scene.
        shape: ``"circle"`` (diameter ``size``), ``"rect"`` (``size`` wide,
            ``size * aspect`` tall) or ``"ellipse"`` (axes ``size`` and
            ``size * aspect``).
        colour: BGR colour of the light texture cells; the dark cells are
            :func:`shade_of` it.
        size: width in pixels (> 0).
        start: centre ``(x, y)`` at frame 0, in pixels.
        velocity: ``(vx, vy)`` in pixels per frame.
        aspect: height / width for ``"rect"`` and ``"ellipse"``.
        appear_at: first frame in which the object exists.
        disappear_at: first frame in which it no longer exists (``None``:
            never disappears).
        bounce: reflect off the image borders (else it may leave the frame).
    """

    id: int
    shape: Shape
    colour: tuple[int, int, int]
    size: float
    start: tuple[float, float]
    velocity: tuple[float, float] = (0.0, 0.0)
    aspect: float = 1.0
    appear_at: int = 0
    disappear_at: int | None = None
    bounce: bool = True

    def __post_init__(self) -> None:
        if self.id < 1:
            raise ConfigError(f"scene object id must be >= 1, got {self.id}")
        if self.shape not in _SHAPES:
            raise ConfigError(f"scene object shape must be one of {_SHAPES}, got {self.shape!r}")
        if len(self.colour) != 3 or not all(0 <= int(c) <= 255 for c in self.colour):
            raise ConfigError(f"scene object colour must be three ints in 0..255 (BGR), got {self.colour!r}")
        if not self.size > 0:
            raise ConfigError(f"scene object size must be > 0 pixels, got {self.size}")
        if not self.aspect > 0:
            raise ConfigError(f"scene object aspect must be > 0, got {self.aspect}")
        if self.appear_at < 0:
            raise ConfigError(f"scene object appear_at must be >= 0, got {self.appear_at}")
        if self.disappear_at is not None and self.disappear_at <= self.appear_at:
            raise ConfigError(
                f"scene object disappear_at ({self.disappear_at}) must be after appear_at ({self.appear_at})"
            )

    @property
    def half_extent(self) -> tuple[float, float]:
        """Half width and half height of the object's bounding box, pixels."""
        if self.shape == "circle":
            return (self.size / 2.0, self.size / 2.0)
        return (self.size / 2.0, self.size * self.aspect / 2.0)

    def exists_at(self, index: int) -> bool:
        """True when the object is part of the scene at frame ``index``."""
        return index >= self.appear_at and (self.disappear_at is None or index < self.disappear_at)


def _fold(p: float, lo: float, hi: float) -> float:
    """Position ``p`` of a point bouncing between ``lo`` and ``hi`` (a triangle wave)."""
    span = hi - lo
    if span <= 0:
        return (lo + hi) / 2.0
    q = (p - lo) % (2.0 * span)
    return lo + (q if q <= span else 2.0 * span - q)


@dataclass(frozen=True)
class Scene:
    """A deterministic synthetic clip.

    Attributes:
        width, height: frame size in pixels.
        num_frames: clip length.
        objects: the objects, in painting order (later ones occlude earlier ones).
        seed: fixes the background texture.
        background: ``"textured"`` (gradient, ripples, stripes) or ``"flat"`` grey.
    """

    width: int
    height: int
    num_frames: int
    objects: tuple[SceneObject, ...]
    seed: int = 0
    background: BackgroundStyle = "textured"
    _bg: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.width < 16 or self.height < 16:
            raise ConfigError(f"scene size must be at least 16x16, got {self.width}x{self.height}")
        if self.num_frames < 1:
            raise ConfigError(f"scene num_frames must be >= 1, got {self.num_frames}")
        if self.background not in ("textured", "flat"):
            raise ConfigError(f"scene background must be 'textured' or 'flat', got {self.background!r}")
        objects = tuple(self.objects)
        ids = [o.id for o in objects]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"scene object ids must be unique, got {ids}")
        object.__setattr__(self, "objects", objects)
        bg = _make_background(self.width, self.height, self.seed, self.background)
        bg.setflags(write=False)
        # A frozen dataclass cannot assign normally; the background is derived
        # data, computed once because every render starts from it.
        object.__setattr__(self, "_bg", bg)

    @property
    def ids(self) -> tuple[int, ...]:
        """Object ids in painting order."""
        return tuple(o.id for o in self.objects)

    def get(self, object_id: int) -> SceneObject:
        """The object with this id (``KeyError`` when absent)."""
        for o in self.objects:
            if o.id == object_id:
                return o
        raise KeyError(object_id)

    def center(self, index: int, object_id: int) -> tuple[float, float]:
        """Centre ``(x, y)`` of an object at frame ``index`` (pixels, may be off-frame)."""
        o = self.get(object_id)
        x = o.start[0] + o.velocity[0] * index
        y = o.start[1] + o.velocity[1] * index
        if o.bounce:
            hx, hy = o.half_extent
            x = _fold(x, hx, self.width - 1 - hx)
            y = _fold(y, hy, self.height - 1 - hy)
        return (x, y)

    def full_mask(self, index: int, object_id: int) -> np.ndarray:
        """``HxW bool`` silhouette of an object ignoring occlusion (all False when absent)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        o = self.get(object_id)
        if not o.exists_at(index):
            return mask
        window = self._shape_window(index, o)
        if window is not None:
            (y0, y1, x0, x1), inside, _ = window
            mask[y0:y1, x0:x1] = inside
        return mask

    def render(self, index: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Draw frame ``index``.

        Returns:
            ``(image, masks)``: ``image`` is ``HxWx3 uint8`` BGR; ``masks`` maps
            the id of every object that exists in this frame to its ``HxW
            bool`` *visible* mask (all False when fully occluded or off-frame).
            Objects that do not exist yet / any more are absent from the dict.
        """
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} is outside 0..{self.num_frames - 1}")
        image = self._bg.copy()
        owner = np.zeros((self.height, self.width), dtype=np.int32)  # 0 = background
        present: list[int] = []
        for o in self.objects:
            if not o.exists_at(index):
                continue
            present.append(o.id)
            window = self._shape_window(index, o)
            if window is None:
                continue
            (y0, y1, x0, x1), inside, dark = window
            light = np.asarray(o.colour, dtype=np.uint8)
            shade = np.asarray(shade_of(o.colour), dtype=np.uint8)
            patch = image[y0:y1, x0:x1]
            patch[inside & ~dark] = light
            patch[inside & dark] = shade
            owner[y0:y1, x0:x1][inside] = o.id
        return image, {oid: owner == oid for oid in present}

    def frames(self) -> Iterator[tuple[int, np.ndarray, dict[int, np.ndarray]]]:
        """Iterate ``(index, image, masks)`` over the whole clip."""
        for i in range(self.num_frames):
            image, masks = self.render(i)
            yield i, image, masks

    def _shape_window(
        self, index: int, o: SceneObject
    ) -> tuple[tuple[int, int, int, int], np.ndarray, np.ndarray] | None:
        """The object's bounding window clipped to the frame, its silhouette and its dark checker cells."""
        cx, cy = self.center(index, o.id)
        hx, hy = o.half_extent
        x0 = max(0, int(math.floor(cx - hx)))
        x1 = min(self.width, int(math.ceil(cx + hx)) + 1)
        y0 = max(0, int(math.floor(cy - hy)))
        y1 = min(self.height, int(math.ceil(cy + hy)) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        u = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
        v = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
        if o.shape == "rect":
            inside = (np.abs(u) <= hx) & (np.abs(v) <= hy)
        else:  # circle and ellipse: (u/a)^2 + (v/b)^2 <= 1
            inside = (u / hx) ** 2 + (v / hy) ** 2 <= 1.0
        # The checker is anchored to the object's centre so the texture moves with it.
        cell = max(4.0, o.size / 4.0)
        dark = ((np.floor(u / cell) + np.floor(v / cell)) % 2) == 1
        return (y0, y1, x0, x1), inside, dark


def _make_background(width: int, height: int, seed: int, style: BackgroundStyle) -> np.ndarray:
    """Static ``HxWx3 uint8`` BGR background; deterministic in ``seed``."""
    if style == "flat":
        return np.full((height, width, 3), 110, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    # Muted gradient so saturated object colours stand out from it.
    b = 70.0 + 60.0 * xx / width
    g = 80.0 + 50.0 * yy / height
    r = 90.0 + 40.0 * (xx + yy) / (width + height)
    ripple = np.zeros_like(xx)
    for _ in range(3):
        period = rng.uniform(18.0, 70.0)
        theta = rng.uniform(0.0, math.pi)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        ripple += 9.0 * np.sin(2.0 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period + phase)
    img = np.stack([b, g, r], axis=-1) + ripple[..., None]
    # A few static stripes: strong, straight edges that never move.
    for _ in range(3):
        theta = rng.uniform(0.0, math.pi)
        offset = rng.uniform(0.2, 0.8) * (width * abs(math.cos(theta)) + height * abs(math.sin(theta)))
        half = rng.uniform(3.0, 7.0)
        d = xx * math.cos(theta) + yy * math.sin(theta)
        lo = min(0.0, width * math.cos(theta))
        img[np.abs(d - lo - offset) <= half] -= 35.0
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------- factories


def _obj_size(width: int, height: int, fraction: float) -> float:
    return max(8.0, round(fraction * min(width, height)))


def standard_scene(
    width: int = 640, height: int = 480, num_frames: int = 150, num_objects: int = 3, seed: int = 0
) -> Scene:
    """Objects moving over a textured background; objects 1 and 2 cross mid-clip.

    Object 1 (circle) moves right and object 2 (rectangle, painted over it)
    moves left along nearly the same row, so they overlap around frame
    ``num_frames // 2`` with object 1 partly hidden. Object 3 (ellipse)
    bounces around the lower part of the frame; further objects (up to 8)
    get seeded random shapes, positions and velocities.
    """
    if not 1 <= num_objects <= len(_PALETTE):
        raise ConfigError(f"num_objects must be in 1..{len(_PALETTE)}, got {num_objects}")
    if num_frames < 4:
        raise ConfigError(f"standard_scene needs num_frames >= 4, got {num_frames}")
    rng = np.random.default_rng(seed + 1)
    s = _obj_size(width, height, 0.2)
    mid = num_frames / 2.0
    cx, cy = (width - 1) / 2.0, height * 0.38
    # Both start far enough from the centre to reach it exactly at mid-clip,
    # without bouncing on the way.
    travel = max(0.0, (width - 1) / 2.0 - s * 0.75)
    v = travel / mid
    objects = [
        SceneObject(1, "circle", _PALETTE[0], s, (cx - v * mid, cy), (v, 0.0)),
        SceneObject(2, "rect", _PALETTE[1], s * 1.1, (cx + v * mid, cy + s * 0.15), (-v, 0.0), aspect=0.8),
    ]
    if num_objects >= 3:
        e = s * 0.9
        objects.append(
            SceneObject(
                3, "ellipse", _PALETTE[2], e, (width * 0.25, height * 0.78), (v * 0.6, -v * 0.25), aspect=0.6
            )
        )
    for k in range(4, num_objects + 1):
        size = float(rng.uniform(0.1, 0.18) * min(width, height))
        objects.append(
            SceneObject(
                k,
                _SHAPES[int(rng.integers(0, 3))],
                _PALETTE[k - 1],
                size,
                (float(rng.uniform(size, width - size)), float(rng.uniform(size, height - size))),
                (float(rng.uniform(-1, 1) * v), float(rng.uniform(-1, 1) * v)),
                aspect=float(rng.uniform(0.6, 1.0)),
            )
        )
    return Scene(width, height, num_frames, tuple(objects[:num_objects]), seed=seed)


def crossing_scene(
    width: int = 640, height: int = 480, num_frames: int = 60, occluded_frames: int = 6, seed: int = 0
) -> Scene:
    """Two objects crossing; the smaller one (id 1) is *fully* hidden for a few frames.

    Object 1 (circle) moves right, object 2 (a larger rectangle painted on
    top) moves left along the same row; they are centred on each other at
    frame ``num_frames // 2``, and object 1 is completely covered for about
    ``occluded_frames`` frames around it.
    """
    if num_frames < 8:
        raise ConfigError(f"crossing_scene needs num_frames >= 8, got {num_frames}")
    if occluded_frames < 1:
        raise ConfigError(f"occluded_frames must be >= 1, got {occluded_frames}")
    small = _obj_size(width, height, 0.12)
    mid = num_frames // 2
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    travel = max(0.0, (width - 1) / 2.0 - small)
    v = travel / mid  # speed of each object; relative speed 2v
    # Fully hidden while |relative offset| <= (wide - small) / 2, i.e. for
    # (wide - small) / (2 v) frames: solve for the rectangle's width.
    wide = small + 2.0 * v * occluded_frames + 2.0
    objects = (
        SceneObject(1, "circle", _PALETTE[0], small, (cx - v * mid, cy), (v, 0.0)),
        SceneObject(2, "rect", _PALETTE[1], wide, (cx + v * mid, cy), (-v, 0.0), aspect=(small + 6.0) / wide),
    )
    return Scene(width, height, num_frames, objects, seed=seed)


def appearing_scene(
    width: int = 640, height: int = 480, num_frames: int = 90, appear_at: int | None = None, seed: int = 0
) -> Scene:
    """One object from the start, a second (id 2) that appears at ``appear_at`` (default ``num_frames // 3``)."""
    if num_frames < 3:
        raise ConfigError(f"appearing_scene needs num_frames >= 3, got {num_frames}")
    at = num_frames // 3 if appear_at is None else appear_at
    if not 0 < at < num_frames:
        raise ConfigError(f"appear_at must be in 1..{num_frames - 1}, got {at}")
    s = _obj_size(width, height, 0.18)
    v = 0.5 * width / num_frames
    objects = (
        SceneObject(1, "circle", _PALETTE[0], s, (width * 0.25, height * 0.3), (v, v * 0.3)),
        SceneObject(2, "rect", _PALETTE[2], s, (width * 0.7, height * 0.7), (-v, -v * 0.2), aspect=0.7, appear_at=at),
    )
    return Scene(width, height, num_frames, objects, seed=seed)


# ---------------------------------------------------------------- writing


def write_video(
    scene: Scene,
    path: str | Path,
    *,
    fps: float = 25,
    codec: str = "libx264",
    crf: int = 18,
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    faststart: bool = False,
    display_rotation: int | None = None,
) -> Path:
    """Encode the scene to a video file with PyAV and return its path.

    Args:
        scene: the clip to render.
        path: output file; the container follows the suffix (``.mp4``,
            ``.mkv``, ``.mov``, ``.avi``, ``.ts``...).
        fps: frame rate written in the stream.
        codec: an FFmpeg encoder name (``"libx264"``, ``"mpeg4"``...).
        crf: quality for x264/x265 (lower is better); for other encoders it
            is mapped to a fixed quantiser.
        pix_fmt: encoder pixel format.
        gop: keyframe interval in frames (``None``: the encoder's default).
        faststart: put an MP4/MOV index at the front of the file.
        display_rotation: counter-clockwise rotation stored as display-matrix
            side data (players rotate the image by this angle when showing it).

    The file is written beside ``path`` under a hidden name and moved onto
    ``path`` once complete: an interrupted write (Ctrl-C, an error) leaves
    whatever ``path`` held before, not a shorter clip that plays as if whole.
    """
    path = Path(path)
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")  # same suffix: PyAV picks the container by it
    try:
        _encode(scene, partial, fps, codec, crf, pix_fmt, gop, faststart, display_rotation)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _encode(
    scene: Scene, path: Path, fps: float, codec: str, crf: int, pix_fmt: str, gop: int | None, faststart: bool,
    display_rotation: int | None,
) -> None:
    import av  # local: only writers and readers of files need PyAV

    rate = Fraction(fps).limit_denominator(1001)
    container_options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_options) as out:
        stream = out.add_stream(codec, rate=rate)
        stream.width = scene.width
        stream.height = scene.height
        stream.pix_fmt = pix_fmt
        options: dict[str, str] = {}
        if codec in ("libx264", "libx265"):
            options["crf"] = str(crf)
        else:
            # FFmpeg's "-q:v": a fixed quantiser, in lambda units (FF_QP2LAMBDA = 118).
            q = max(2, min(31, 2 + crf // 6))
            options.update({"flags": "+qscale", "global_quality": str(q * 118)})
        if gop is not None:
            stream.codec_context.gop_size = int(gop)
            if codec == "libx264":
                options["x264-params"] = f"keyint={int(gop)}:min-keyint={int(gop)}:scenecut=0"
        stream.options = options
        if display_rotation:
            stream.set_display_rotation(int(display_rotation))
        for i in range(scene.num_frames):
            image, _ = scene.render(i)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def write_gt(scene: Scene, path: str | Path) -> Path:
    """Save every frame's visible masks to a compressed ``.npz``.

    Keys: ``ids`` (K int32), ``present`` (N x K bool: the object exists in the
    frame), ``masks`` (N x K x H x ceil(W/8) uint8, the masks packed along the
    width with :func:`numpy.packbits`), ``width``, ``height``. Read it back
    with :func:`read_gt`.
    """
    path = Path(path)
    ids = scene.ids
    n, k = scene.num_frames, len(ids)
    present = np.zeros((n, k), dtype=bool)
    packed = np.zeros((n, k, scene.height, (scene.width + 7) // 8), dtype=np.uint8)
    for i in range(n):
        _, masks = scene.render(i)
        for j, oid in enumerate(ids):
            if oid in masks:
                present[i, j] = True
                packed[i, j] = np.packbits(masks[oid], axis=-1)
    np.savez_compressed(
        path,
        ids=np.asarray(ids, dtype=np.int32),
        present=present,
        masks=packed,
        width=np.int32(scene.width),
        height=np.int32(scene.height),
    )
    return path


def read_gt(path: str | Path) -> list[Mapping[int, np.ndarray]]:
    """Load a :func:`write_gt` file: per frame, ``{object_id: HxW bool visible mask}``."""
    with np.load(Path(path)) as data:
        ids = [int(i) for i in data["ids"]]
        present = data["present"]
        packed = data["masks"]
        width = int(data["width"])
    frames: list[Mapping[int, np.ndarray]] = []
    for i in range(present.shape[0]):
        frames.append(
            {
                oid: np.unpackbits(packed[i, j], axis=-1, count=width).astype(bool)
                for j, oid in enumerate(ids)
                if present[i, j]
            }
        )
    return frames


# -- an oracle decoder -------------------------------------------------------------------
# Tests and the benchmark's tracking-quality rounds stand in a perfect decoder for
# SAM: each prompt is answered with the ground truth of the object it points at.


def pick_object(
    masks: Mapping[int, np.ndarray],
    *,
    box: Sequence[float] | None = None,
    point: Sequence[float] | None = None,
    min_score: float = 0.1,
) -> int | None:
    """The object a prompt means, judged from the ground truth ``masks`` (``{id: HxW bool}``).

    A box (``XYXY`` pixels) means the object whose visible mask's bounding box
    overlaps it most (IoU); a point (``XY``) means the object under it. ``None``
    when the best score is at most ``min_score`` (or the point hits background).
    """
    if (box is None) == (point is None):
        raise ValueError("pick_object needs exactly one of box or point")
    best, best_score = None, 0.0
    for oid, m in masks.items():
        if not m.any():
            continue
        if point is not None:
            x, y = int(point[0]), int(point[1])
            score = float(m[y, x]) if 0 <= y < m.shape[0] and 0 <= x < m.shape[1] else 0.0
        else:
            b = mask_to_box(m)
            ix = max(0.0, min(box[2], b[2]) - max(box[0], b[0]))
            iy = max(0.0, min(box[3], b[3]) - max(box[1], b[1]))
            inter = ix * iy
            union = (box[2] - box[0]) * (box[3] - box[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            score = inter / union if union > 0 else 0.0
        if score > best_score:
            best, best_score = oid, score
    return best if best_score > min_score else None


def mask_logits(mask: np.ndarray, input_size: tuple[int, int], img_size: int = 1024) -> np.ndarray:
    """``HxW bool`` mask -> ``256x256 float32`` logits laid out as SAM's decoder gives them.

    ``input_size`` is the image's ``(h, w)`` after the longest-side resize to
    ``img_size`` (the rest of the square is padding). Inside the mask +10,
    outside -10, so thresholding at 0 gives the mask back up to resampling.
    """
    h, w = input_size
    padded = np.zeros((img_size, img_size), np.float32)
    padded[:h, :w] = cv2.resize(mask.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    small = cv2.resize(padded, (256, 256), interpolation=cv2.INTER_AREA)
    return np.where(small > 0.5, 10.0, -10.0).astype(np.float32)
