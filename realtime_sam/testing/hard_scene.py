"""A synthetic scene about as hard as real video, with exact ground truth.

The easy scenes of :mod:`realtime_sam.testing.synthetic` (flat checker shapes at
constant speed on a still background) are the easy case; tracking scores
well above what it scores on real footage there. :func:`hard_scene` builds a
clip with what makes real video hard, while still knowing every pixel:

* **photographic textures**: the background is a large mosaic of the photos
  bundled with scikit-image (they load offline), with a few static
  photo cut-outs on it as distractors; every object is textured with a photo
  too;
* **a moving camera**: every frame is a warp of the background canvas that
  pans, zooms, rolls and shakes (roll, zoom and shake move the objects too);
* **non-rigid objects**: blob outlines whose radii wobble over time, textures
  warped by a smooth travelling sine field, objects that rotate, grow and
  shrink and accelerate; one small fast object;
* **crossings** in which each of the two objects is in front in turn (the
  depth order changes only while objects are apart, as with real objects
  walking round each other); ground truth masks are the *visible* parts;
* **an object that leaves the frame** for several seconds and comes back
  (:attr:`HardScene.leaving_object`, frames :attr:`HardScene.out_of_frame`);
* **lighting flicker** (global gain changes, a sudden auto-exposure step),
  a vignette, **sensor noise**, and **H.264 compression** when written with
  :func:`write_davis` (:func:`realtime_sam.testing.synthetic.write_video` at the
  scene's :attr:`HardScene.crf`).

:class:`HardScene` has the interface of :class:`realtime_sam.testing.synthetic.Scene`
that the rest of the project uses (``render``, ``num_frames``, ``width``,
``height``, ``ids``, ``objects``, ``get``, ``center``, ``full_mask``,
``frames``), so :func:`~realtime_sam.testing.synthetic.write_video`,
:func:`~realtime_sam.testing.synthetic.write_gt`,
:func:`~realtime_sam.testing.synthetic.pick_object` and the benchmark's oracle work
with it unchanged.

Object ids (the default five; ``num_objects`` keeps the first ones):

1. a large cat-textured blob in the middle band; crosses object 2 twice
   (around 25 % and 75 % of the clip), in front the first time, behind the second;
2. a large blob textured with the astronaut photo, turning slowly;
3. the **leaving object** (a stained-tissue texture, upper band): it exits on
   the right at about a third of the clip and comes back at about two
   thirds (not one pixel in frames 94-207 of the default 300 at seed 0:
   3.8 s; the exact frames are :attr:`HardScene.out_of_frame`);
4. the **small fast object** (about 35 px wide, a rocket photo, spinning),
   crossing the whole frame at up to ~24 px per frame, over and under the others;
5. a medium blob textured with the coffee photo in the lower band.

The small fast object also crosses objects 1, 3 and 5 twice each, in front
once; :attr:`HardScene.crossings` lists every crossing with its frames and
the object in front. The paths are fixed; the seed changes the mosaic,
shapes, rotations, camera, lighting and noise.

Conventions as :mod:`realtime_sam.testing.synthetic`: images ``HxWx3 uint8`` BGR,
masks ``HxW bool``, pixel centres at integer coordinates. Everything is
deterministic for a seed; a 640x480 frame renders in about 9 ms (one core),
building the scene takes about half a second.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from realtime_sam.errors import ConfigError
from realtime_sam.testing.synthetic import write_video

__all__ = [
    "HardObject",
    "Crossing",
    "HardScene",
    "hard_scene",
    "write_davis",
    "davis_palette",
    "BACKGROUND_PHOTOS",
]

# Photos bundled inside scikit-image's wheel (no download): name of the
# skimage.data function. The background mosaic uses these ...
BACKGROUND_PHOTOS: tuple[str, ...] = (
    "rocket",
    "coffee",
    "hubble_deep_field",
    "retina",
    "grass",
    "gravel",
    "brick",
    "camera",
    "moon",
    "coins",
    "clock",
    "cell",
    "page",
    "text",
)
# ... and the objects these (with the crop that shows the interesting part:
# centre x, centre y as fractions of the photo, and the side of the square
# that fills the outline's nominal diameter, as a fraction of the photo's
# smaller dimension). Indexed by object id - 1.
_OBJECT_PHOTOS: tuple[tuple[str, float, float, float], ...] = (
    ("chelsea", 0.5, 0.5, 0.95),
    ("astronaut", 0.45, 0.4, 0.6),
    ("immunohistochemistry", 0.5, 0.5, 0.5),
    ("rocket", 0.5, 0.78, 0.3),
    ("coffee", 0.42, 0.45, 0.8),
)
_ROLES = ("crossing", "crossing", "leaving", "small fast", "plain")
# Flat object colours of the ``solid`` test mode (BGR, none of them a plausible photo pixel).
_SOLID = ((1, 254, 3), (254, 2, 253), (3, 252, 254), (253, 251, 1), (2, 5, 251))
_VERTICES = 96  # outline polygon resolution
_NOISE_SIGMA = 4.0  # sensor noise, grey levels
_NOISE_BANK = 4  # precomputed noise fields, cropped at random offsets per frame
_NOISE_PAD = 16


@lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as ``HxWx3 uint8`` BGR (read-only, cached)."""
    try:
        from skimage import data
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ImportError("the hard synthetic scene needs scikit-image for its photos: pip install scikit-image") from exc
    img = np.asarray(getattr(data, name)())
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2BGR)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    img = np.ascontiguousarray(img)
    img.setflags(write=False)
    return img


def _is_grey(img: np.ndarray) -> bool:
    return bool(np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2]))


@dataclass(frozen=True)
class HardObject:
    """One object of a :class:`HardScene`.

    Attributes:
        id: ground-truth id (1..5).
        photo: the scikit-image photo its texture comes from.
        radius: nominal outline radius in pixels (before wobble, scale and zoom).
        role: ``"crossing"``, ``"leaving"``, ``"small fast"`` or ``"plain"``.
    """

    id: int
    photo: str
    radius: float
    role: str


@dataclass(frozen=True)
class Crossing:
    """A run of frames ``start..stop-1`` in which objects ``a < b`` overlap (silhouettes, inside the frame)
    with ``front`` painted over the other; ``overlap_px`` is the largest overlap in the run."""

    a: int
    b: int
    start: int
    stop: int
    front: int
    overlap_px: int

    @property
    def back(self) -> int:
        return self.b if self.front == self.a else self.a


def _similarity(tx: float, ty: float, scale: float, angle: float) -> np.ndarray:
    """3x3 matrix ``p -> scale * R(angle) p + t``."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _translate(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


class HardScene:
    """A deterministic hard clip (build it with :func:`hard_scene`).

    Attributes:
        width, height, num_frames, fps, seed: as given.
        objects: the :class:`HardObject` s, by id.
        effects: gain flicker, vignette and sensor noise are on (tests turn
            them off to compare pixels).
        crossing_min_px: overlap (pixels) from which two objects touching
            is a crossing rather than a graze (150 at 640x480, scaled by area).
        solid: objects are painted in flat colours instead of photos (a test aid).
        crf: the H.264 quality :func:`write_davis` encodes with (23: a
            typical streaming quality; the easy scenes use 18).
    """

    crf = 23

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        *,
        fps: float = 30.0,
        seconds: float = 10.0,
        seed: int = 0,
        num_objects: int = 5,
        frames: int | None = None,
        effects: bool = True,
        solid: bool = False,
    ) -> None:
        if width < 64 or height < 64:
            raise ConfigError(f"hard scene size must be at least 64x64, got {width}x{height}")
        if not fps > 0:
            raise ConfigError(f"hard scene fps must be > 0, got {fps}")
        if not 1 <= num_objects <= len(_OBJECT_PHOTOS):
            raise ConfigError(f"hard scene num_objects must be in 1..{len(_OBJECT_PHOTOS)}, got {num_objects}")
        plot = int(round(seconds * fps))  # frames the choreography is laid out over
        if plot < 2:
            raise ConfigError(f"hard scene needs at least 2 frames, got {seconds} s at {fps} fps")
        n = plot if frames is None else int(frames)
        if not 1 <= n <= plot:
            raise ConfigError(f"hard scene frames must be in 1..{plot} (seconds * fps), got {frames}")
        self.width, self.height, self.fps, self.seed = int(width), int(height), float(fps), int(seed)
        self.num_frames = n
        self.effects, self.solid = bool(effects), bool(solid)
        W, H = self.width, self.height
        rng = np.random.default_rng([self.seed, 0x4A7D])

        t = np.arange(n) / self.fps  # seconds
        u = np.arange(n) / plot  # share of the clip: the choreography scales with its length
        self._t = t

        # ------------------------------------------------------------ camera
        # Frame = G . B . canvas: B pans and zooms over the canvas, G rolls,
        # zooms and shakes the whole picture (objects included).
        zb = 1.0 + 0.12 * np.sin(2 * np.pi * 0.8 * u + rng.uniform(0, 2 * np.pi))
        zg = 1.0 + 0.06 * np.sin(2 * np.pi * 0.5 * u + rng.uniform(0, 2 * np.pi))
        roll = math.radians(5.0) * np.sin(2 * np.pi * 0.6 * u + rng.uniform(0, 2 * np.pi))
        shake = np.zeros((3, n))
        for axis, amp in enumerate((0.006 * W, 0.006 * W, math.radians(0.35))):
            for _ in range(3):  # a few incommensurate 1.5-8 Hz tremors
                f = rng.uniform(1.5, 8.0)
                shake[axis] += amp / 2.0 * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
        shake_max = float(np.abs(shake[:2]).max()) if n else 0.0
        margin = 0.5 * math.hypot(W, H) / (0.88 * 0.94) + shake_max + 6.0
        cw, ch = int(2 * margin + 1.3 * W), int(2 * margin + 0.7 * H)
        pan_x = cw / 2.0 + (cw / 2.0 - margin) * np.sin(2 * np.pi * 0.7 * u + rng.uniform(0, 2 * np.pi))
        pan_y = ch / 2.0 + (ch / 2.0 - margin) * np.sin(2 * np.pi * 1.1 * u + rng.uniform(0, 2 * np.pi))
        centre = ((W - 1) / 2.0, (H - 1) / 2.0)
        c0 = _translate(*centre)
        self._G = np.empty((n, 3, 3))
        self._cam = np.empty((n, 2, 3))
        for i in range(n):
            g = _translate(shake[0, i], shake[1, i]) @ c0 @ _similarity(0, 0, zg[i], roll[i] + shake[2, i]) @ _translate(-centre[0], -centre[1])
            b = c0 @ _similarity(0, 0, zb[i], 0.0) @ _translate(-pan_x[i], -pan_y[i])
            self._G[i] = g
            self._cam[i] = (g @ b)[:2]
        self._canvas = _make_canvas(cw, ch, H, rng)

        # ------------------------------------------------------------ objects
        def j(scale: float = math.pi) -> float:
            return float(rng.uniform(-scale, scale))

        two_pi = 2 * np.pi
        # The paths are fixed (the seed changes looks, not the plot) and
        # symmetric in time about the middle of the clip: every meeting of
        # two objects at v has a twin at -v, which the depth order gives the
        # other object in front (see _depth_orders). Rotation, deformation,
        # camera and lighting are not symmetric, so the halves look different.
        v = (np.arange(n) - (plot - 1) / 2.0) / plot  # -0.5 .. 0.5
        specs: list[tuple[np.ndarray, ...]] = []
        # 1: big, middle band, left to right and back; meets 2 at v = -0.25 and 0.25.
        specs.append((
            W * (0.5 + 0.31 * np.cos(two_pi * v)),
            H * (0.53 + 0.05 * np.cos(two_pi * 2 * v)),
            1 + 0.22 * np.cos(two_pi * 1.5 * v),
            0.7 * np.sin(two_pi * 0.9 * u + j()),
            np.cos(two_pi * (u - 0.25)),
        ))
        # 2: big, the mirror path, turning slowly.
        specs.append((
            W * (0.5 - 0.30 * np.cos(two_pi * v)),
            H * (0.44 - 0.05 * np.cos(two_pi * 2 * v)),
            0.95 - 0.2 * np.cos(two_pi * 1.6 * v),
            two_pi * 0.55 * u + 0.25 * np.sin(two_pi * 2.3 * u + j()),
            np.zeros(n),
        ))
        # 3: upper band; leaves on the right (x up to 1.4 W) and comes back.
        specs.append((
            W * (0.30 + 1.1 * np.cos(np.pi * v) ** 2),
            H * (0.19 + 0.04 * np.cos(two_pi * 1.5 * v)),
            1 + 0.15 * np.cos(two_pi * 2 * v),
            -two_pi * 0.4 * u + j(),
            0.6 * np.sin(two_pi * 1.5 * u),
        ))
        # 4: small and fast, all over the frame, fastest at the ends of the clip; spins.
        specs.append((
            W * (0.5 + 0.43 * np.cos(two_pi * (2.3 * v + 1.2 * v**3))),
            H * (0.5 - 0.40 * np.cos(two_pi * (2.9 * v + 0.5 * v**3))),
            1 + 0.2 * np.cos(two_pi * 3 * v),
            two_pi * 3.0 * u + j(),
            np.sin(two_pi * 3.5 * u),
        ))
        # 5: medium, lower band, back and forth.
        specs.append((
            W * (0.5 - 0.36 * np.cos(two_pi * 1.3 * v)),
            H * (0.82 + 0.04 * np.cos(two_pi * 2.1 * v)),
            1 + 0.25 * np.cos(two_pi * 0.7 * v),
            0.5 * np.sin(two_pi * 1.7 * u + j()),
            0.8 * np.sin(two_pi * 1.5 * u),
        ))
        radii = (0.15 * H, 0.14 * H, 0.09 * H, 0.036 * H, 0.11 * H)

        phi = np.arange(_VERTICES) * (2 * np.pi / _VERTICES)
        self._cos_phi, self._sin_phi = np.cos(phi), np.sin(phi)
        self.objects: tuple[HardObject, ...] = ()
        self._pose: dict[int, np.ndarray] = {}  # (n, 3, 3): local (patch-centred) -> frame
        self._radii: dict[int, np.ndarray] = {}  # (n, VERTICES) outline radii, local pixels
        self._texture: dict[int, np.ndarray] = {}
        self._warp: dict[int, tuple] = {}
        depth: dict[int, np.ndarray] = {}
        objects = []
        for k in range(num_objects):
            oid = k + 1
            x, y, s, theta, d = specs[k]
            r0 = float(radii[k])
            objects.append(HardObject(oid, _OBJECT_PHOTOS[k][0], r0, _ROLES[k]))
            depth[oid] = d
            # Outline: static harmonics (the object's own shape) plus travelling ones (it deforms).
            rad = np.ones((n, _VERTICES))
            for h in (2, 3, 4):
                rad += rng.uniform(0.03, 0.08) * np.cos(h * phi[None, :] + rng.uniform(0, 2 * np.pi))
            for h in (2, 3, 4, 5):
                w = rng.choice((-1, 1)) * rng.uniform(0.3, 0.9)  # Hz
                rad += rng.uniform(0.03, 0.06) * np.sin(h * phi[None, :] + two_pi * w * t[:, None] + rng.uniform(0, 2 * np.pi))
            rad *= r0
            self._radii[oid] = rad
            pose = np.empty((n, 3, 3))
            for i in range(n):
                pose[i] = self._G[i] @ _similarity(x[i], y[i], s[i], theta[i])
            self._pose[oid] = pose
            # Texture: a square photo crop, warped per frame by a smooth travelling sine field.
            amp = max(1.0, 0.05 * r0)
            side = 2 * int(math.ceil(1.45 * r0 + amp + 3)) + 1
            self._texture[oid] = _object_texture(k, side, r0) if not solid else np.full((side, side, 3), _SOLID[k], np.uint8)
            self._warp[oid] = (
                amp,
                two_pi / (0.9 * r0),
                two_pi / (1.3 * r0),
                rng.uniform(0.4, 1.2, 4) * rng.choice((-1, 1), 4) * two_pi,  # temporal rates, rad/s
                rng.uniform(0, 2 * np.pi, 4),
            )
        self.objects = tuple(objects)
        self.crossing_min_px = max(20, int(round(150 * W * H / (640 * 480))))
        self._order = _depth_orders(self, depth)

        # ------------------------------------------------------------ lighting and sensor
        gain = 1.0 + 0.08 * np.sin(two_pi * 0.35 * t + rng.uniform(0, 2 * np.pi))
        gain += 0.04 * np.sin(two_pi * 1.7 * t + rng.uniform(0, 2 * np.pi))
        gain += 0.02 * np.sin(two_pi * 11.0 * t)  # lamp flicker beating with the frame rate
        for te in (rng.uniform(0.15, 0.3) * seconds, rng.uniform(0.55, 0.8) * seconds):
            # Auto-exposure: a sudden step that recovers over about half a second.
            step = rng.choice((-1, 1)) * rng.uniform(0.12, 0.2)
            gain += np.where(t >= te, step * np.exp(-(t - te) / 0.5), 0.0)
        self._gain = gain
        yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
        r2 = ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (centre[0] ** 2 + centre[1] ** 2)
        self._vignette = np.repeat(np.rint(255 * (1.0 - 0.3 * r2))[..., None], 3, axis=2).astype(np.uint8)
        noise = rng.normal(0.0, _NOISE_SIGMA, (_NOISE_BANK, H + _NOISE_PAD, W + _NOISE_PAD, 3))
        noise = np.rint(noise)
        self._noise_pos = np.clip(noise, 0, 255).astype(np.uint8)
        self._noise_neg = np.clip(-noise, 0, 255).astype(np.uint8)

    # ---------------------------------------------------------------- Scene interface

    @property
    def ids(self) -> tuple[int, ...]:
        """Object ids (1..num_objects)."""
        return tuple(o.id for o in self.objects)

    @property
    def seconds(self) -> float:
        return self.num_frames / self.fps

    def get(self, object_id: int) -> HardObject:
        """The object with this id (``KeyError`` when absent)."""
        for o in self.objects:
            if o.id == object_id:
                return o
        raise KeyError(object_id)

    def center(self, index: int, object_id: int) -> tuple[float, float]:
        """Centre ``(x, y)`` of an object's outline in frame ``index`` (pixels, may be off-frame)."""
        m = self._pose[object_id][index]
        return (float(m[0, 2]), float(m[1, 2]))

    def full_mask(self, index: int, object_id: int) -> np.ndarray:
        """``HxW bool`` silhouette of an object ignoring occlusion (its part inside the frame)."""
        mask = np.zeros((self.height, self.width), dtype=bool)
        sil = self._silhouette(index, object_id)
        if sil is not None:
            (x0, y0, x1, y1), inside = sil
            mask[y0:y1, x0:x1] = inside
        return mask

    def render(self, index: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Draw frame ``index``: ``(HxWx3 uint8 BGR image, {id: HxW bool visible mask})``.

        Every object is in the dict in every frame (its mask is all False
        while it is out of the frame or fully hidden).
        """
        self._check(index)
        image = self._background(index)
        owner = np.zeros((self.height, self.width), dtype=np.uint8)
        for oid in self._order[index]:
            sil = self._silhouette(index, oid)
            if sil is None:
                continue
            (x0, y0, x1, y1), inside = sil
            patch_to_frame = self._pose[oid][index] @ _translate(-self._half(oid), -self._half(oid))
            m = (patch_to_frame - np.array([[0, 0, x0], [0, 0, y0], [0, 0, 0]]))[:2]
            patch = cv2.warpAffine(
                self._warped_texture(index, oid), m, (x1 - x0, y1 - y0),
                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101,
            )
            np.copyto(image[y0:y1, x0:x1], patch, where=inside[..., None])
            owner[y0:y1, x0:x1][inside] = oid
        self._finish(index, image)
        return image, {oid: owner == oid for oid in self.ids}

    def render_background(self, index: int) -> np.ndarray:
        """Frame ``index`` without the objects (same camera, lighting and noise)."""
        self._check(index)
        image = self._background(index)
        self._finish(index, image)
        return image

    def frames(self) -> Iterator[tuple[int, np.ndarray, dict[int, np.ndarray]]]:
        """Iterate ``(index, image, masks)`` over the whole clip."""
        for i in range(self.num_frames):
            image, masks = self.render(i)
            yield i, image, masks

    # ---------------------------------------------------------------- metadata

    def camera(self, index: int) -> np.ndarray:
        """The ``2x3`` affine map from background-canvas pixels to frame pixels at frame ``index``."""
        return self._cam[index].copy()

    def gain(self, index: int) -> float:
        """Global brightness gain of frame ``index`` (1: nominal; flicker and exposure steps)."""
        return float(self._gain[index])

    def depth_order(self, index: int) -> tuple[int, ...]:
        """Ids in painting order at frame ``index``, back to front."""
        return self._order[index]

    @property
    def leaving_object(self) -> int | None:
        """Id of the object that leaves the frame and comes back (3), ``None`` if the scene has fewer objects."""
        return 3 if 3 in self.ids else None

    @property
    def small_fast_object(self) -> int | None:
        """Id of the small fast object (4), ``None`` if the scene has fewer objects."""
        return 4 if 4 in self.ids else None

    @cached_property
    def out_of_frame(self) -> range:
        """The longest run of frames in which no pixel of :attr:`leaving_object` is in the frame (empty range if none)."""
        oid = self.leaving_object
        best = range(0)
        if oid is None:
            return best
        start = None
        for i in range(self.num_frames + 1):
            out = i < self.num_frames and self._silhouette(i, oid) is None
            if out and start is None:
                start = i
            elif not out and start is not None:
                if i - start > len(best):
                    best = range(start, i)
                start = None
        return best

    @property
    def crossings(self) -> tuple[Crossing, ...]:
        """The :attr:`contacts` in which the overlap reaches :attr:`crossing_min_px` at some frame.

        For every pair of objects, successive crossings alternate which one
        is in front (so each is in front in turn when a pair crosses more
        than once, as every pair of the default scene does).
        """
        return tuple(c for c in self.contacts if c.overlap_px >= self.crossing_min_px)

    @cached_property
    def contacts(self) -> tuple[Crossing, ...]:
        """Every run of frames in which two objects' silhouettes overlap inside the frame (grazes included)."""
        ids = self.ids
        runs: list[Crossing] = []
        current: dict[tuple[int, int], list] = {}  # (a, b) -> [start, stop, front, overlap_px]
        for i in range(self.num_frames):
            sils = {oid: self._silhouette(i, oid) for oid in ids}
            rank = {oid: r for r, oid in enumerate(self._order[i])}
            for ai, a in enumerate(ids):
                for b in ids[ai + 1 :]:
                    px = _overlap(sils[a], sils[b])
                    if not px:
                        continue
                    front = a if rank[a] > rank[b] else b
                    cur = current.get((a, b))
                    if cur is not None and cur[1] == i and cur[2] == front:
                        cur[1], cur[3] = i + 1, max(cur[3], px)
                    else:
                        if cur is not None:
                            runs.append(Crossing(a, b, *cur))
                        current[(a, b)] = [i, i + 1, front, px]
        runs += [Crossing(a, b, *cur) for (a, b), cur in current.items()]
        return tuple(sorted(runs, key=lambda c: (c.start, c.a, c.b)))

    # ---------------------------------------------------------------- drawing

    def _check(self, index: int) -> None:
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} is outside 0..{self.num_frames - 1}")

    def _half(self, oid: int) -> float:
        return (self._texture[oid].shape[0] - 1) / 2.0

    def _background(self, index: int) -> np.ndarray:
        return cv2.warpAffine(
            self._canvas, self._cam[index], (self.width, self.height),
            flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101,
        )

    def _finish(self, index: int, image: np.ndarray) -> None:
        """Vignette, gain and sensor noise, in place (nothing in ``solid`` or effect-free scenes)."""
        if not self.effects:
            return
        cv2.multiply(image, self._vignette, dst=image, scale=1.0 / 255.0)
        lut = np.clip(np.rint(np.arange(256) * self._gain[index]), 0, 255).astype(np.uint8)
        cv2.LUT(image, lut, dst=image)
        r = np.random.default_rng([self.seed, index, 0x5E45])
        k = int(r.integers(_NOISE_BANK))
        oy, ox = (int(v) for v in r.integers(0, _NOISE_PAD + 1, 2))
        h, w = self.height, self.width
        cv2.add(image, np.ascontiguousarray(self._noise_pos[k, oy : oy + h, ox : ox + w]), dst=image)
        cv2.subtract(image, np.ascontiguousarray(self._noise_neg[k, oy : oy + h, ox : ox + w]), dst=image)

    def _outline(self, index: int, oid: int) -> np.ndarray:
        """The outline polygon in frame pixels, ``(VERTICES, 2)``."""
        r = self._radii[oid][index]
        m = self._pose[oid][index]
        lx, ly = r * self._cos_phi, r * self._sin_phi
        return np.stack([m[0, 0] * lx + m[0, 1] * ly + m[0, 2], m[1, 0] * lx + m[1, 1] * ly + m[1, 2]], axis=1)

    def _silhouette(self, index: int, oid: int) -> tuple[tuple[int, int, int, int], np.ndarray] | None:
        """``((x0, y0, x1, y1), bool mask of that window)``: the filled outline clipped to the frame; ``None`` when no pixel is in it."""
        poly = self._outline(index, oid)
        x0 = max(0, int(math.floor(poly[:, 0].min())))
        y0 = max(0, int(math.floor(poly[:, 1].min())))
        x1 = min(self.width, int(math.ceil(poly[:, 0].max())) + 1)
        y1 = min(self.height, int(math.ceil(poly[:, 1].max())) + 1)
        if x0 >= x1 or y0 >= y1:
            return None
        canvas = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = np.rint((poly - (x0, y0)) * 16).astype(np.int32)  # 4 fractional bits
        cv2.fillPoly(canvas, [pts], 1, lineType=cv2.LINE_8, shift=4)
        inside = canvas.astype(bool)
        if not inside.any():
            return None
        return (x0, y0, x1, y1), inside

    def _warped_texture(self, index: int, oid: int) -> np.ndarray:
        """The object's texture under a smooth travelling sine displacement (non-rigid)."""
        tex = self._texture[oid]
        if self.solid:
            return tex
        amp, k1, k2, rates, phases = self._warp[oid]
        t = self._t[index]
        side = tex.shape[0]
        g = np.arange(side, dtype=np.float32)
        c = g - (side - 1) / 2.0
        ph = phases + rates * t
        # x shift: a wave along y plus a diagonal wave; y shift: a wave along x plus the other diagonal.
        wy = np.sin(k1 * c + ph[0]).astype(np.float32)
        wx = np.sin(k1 * c + ph[1]).astype(np.float32)
        sa, ca = np.sin(k2 * c + ph[2]).astype(np.float32), np.cos(k2 * c + ph[2]).astype(np.float32)
        sb, cb = np.sin(k2 * c + ph[3]).astype(np.float32), np.cos(k2 * c + ph[3]).astype(np.float32)
        # sin(k2 (x + y) + p) = sin(k2 x + p) cos(k2 y) + cos(k2 x + p) sin(k2 y): outer products, no per-pixel sin.
        cy, sy = np.cos(k2 * c).astype(np.float32), np.sin(k2 * c).astype(np.float32)
        diag1 = sa[None, :] * cy[:, None] + ca[None, :] * sy[:, None]
        diag2 = sb[None, :] * cy[:, None] - cb[None, :] * sy[:, None]  # sin(k2 (x - y) + p)
        map_x = g[None, :] + amp * wy[:, None] + 0.5 * amp * diag1
        map_y = g[:, None] + amp * wx[None, :] + 0.5 * amp * diag2
        return cv2.remap(tex, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)


def _overlap(sa, sb) -> int:
    """Pixels two clipped silhouettes share."""
    if sa is None or sb is None:
        return 0
    (ax0, ay0, ax1, ay1), ma = sa
    (bx0, by0, bx1, by1), mb = sb
    x0, y0, x1, y1 = max(ax0, bx0), max(ay0, by0), min(ax1, bx1), min(ay1, by1)
    if x0 >= x1 or y0 >= y1:
        return 0
    return int(np.count_nonzero(ma[y0 - ay0 : y1 - ay0, x0 - ax0 : x1 - ax0] & mb[y0 - by0 : y1 - by0, x0 - bx0 : x1 - bx0]))


def _depth_orders(scene: "HardScene", depth: dict[int, np.ndarray]) -> list[tuple[int, ...]]:
    """Painting order (back to front) of every frame.

    The relative order of two objects changes only in a frame where their
    silhouettes do not overlap in the picture, so nothing pops in front of
    an object it overlaps (real objects must be apart to change depth).
    While apart, a pair that has met before wants the other order for its
    next meeting, so meetings alternate who is in front; a pair that has not
    met yet follows the objects' wished depths (larger: nearer). Wishes of
    pairs that are close count most. Each frame takes the best of all
    orders (at most 5! = 120) that keeps every overlapping pair as it is.
    """
    ids = list(depth)
    k = len(ids)
    perms = np.array(list(itertools.permutations(range(k))), dtype=np.int64)  # back to front
    rank = np.empty_like(perms)
    rank[np.arange(len(perms))[:, None], perms] = np.arange(k)[None, :]
    pairs = [(p, q) for p in range(k) for q in range(p + 1, k)]
    # front[perm, pair]: the pair's first object is in front of its second
    front = np.stack([rank[:, p] > rank[:, q] for p, q in pairs], axis=1) if pairs else np.zeros((len(perms), 0), bool)
    start = sorted(range(k), key=lambda p: depth[ids[p]][0])
    current = int(np.flatnonzero((perms == np.array(start)).all(axis=1))[0])
    last_front: dict[int, bool] = {}  # pair index -> first object was in front at the last meeting
    out = []
    for i in range(scene.num_frames):
        sils = [scene._silhouette(i, oid) for oid in ids]
        polys = [scene._outline(i, oid) for oid in ids]
        circles = [(pl.mean(axis=0), 0.0) for pl in polys]
        circles = [(c, float(np.hypot(*(pl - c).T).max())) for (c, _), pl in zip(circles, polys)]
        overlap = np.array([_overlap(sils[p], sils[q]) for p, q in pairs], dtype=np.int64)
        touching = overlap > 0
        wish = np.empty(len(pairs), dtype=bool)
        weight = np.empty(len(pairs))
        for x, (p, q) in enumerate(pairs):
            (cp, rp), (cq, rq) = circles[p], circles[q]
            gap = max(0.0, float(np.hypot(*(cp - cq))) - rp - rq)
            closeness = 1.0 / (1.0 + gap / (rp + rq))
            if x in last_front:
                wish[x], weight[x] = not last_front[x], 10.0 * closeness
            else:
                wish[x], weight[x] = depth[ids[p]][i] > depth[ids[q]][i], closeness
        now = front[current]
        score = (front == wish[None, :]) @ weight
        score -= 1e6 * ((front != now[None, :]) & touching[None, :]).sum(axis=1)
        score -= 1e-3 * (front != now[None, :]).sum(axis=1)  # no needless changes
        current = int(np.argmax(score))
        for x in np.flatnonzero(touching):
            if overlap[x] >= scene.crossing_min_px:  # grazes are not meetings
                last_front[int(x)] = bool(front[current, x])
        out.append(tuple(ids[p] for p in perms[current]))
    return out


def _cover(photo: np.ndarray, w: int, h: int, rng: np.random.Generator, zoom: float) -> np.ndarray:
    """A ``h x w`` random crop of ``photo`` (aspect matched, ``zoom`` >= 1 crops tighter), resized."""
    ph, pw = photo.shape[:2]
    scale = min(pw / w, ph / h) / zoom
    cw, ch = max(2, int(w * scale)), max(2, int(h * scale))
    x0 = int(rng.integers(0, pw - cw + 1))
    y0 = int(rng.integers(0, ph - ch + 1))
    crop = photo[y0 : y0 + ch, x0 : x0 + cw]
    interp = cv2.INTER_AREA if cw > w else cv2.INTER_CUBIC
    return cv2.resize(crop, (w, h), interpolation=interp)


def _tinted(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Grey photos get a colour cast (warm or cool), as under real light."""
    if not _is_grey(img):
        return img
    tint = 1.0 + rng.uniform(-0.25, 0.25, 3)
    return np.clip(img.astype(np.float32) * tint, 0, 255).astype(np.uint8)


def _split(rect: tuple[int, int, int, int], rng: np.random.Generator, max_side: int, out: list) -> None:
    x0, y0, x1, y1 = rect
    w, h = x1 - x0, y1 - y0
    if max(w, h) <= max_side:
        out.append(rect)
        return
    f = rng.uniform(0.35, 0.65)
    if w >= h:
        xm = x0 + int(w * f)
        _split((x0, y0, xm, y1), rng, max_side, out)
        _split((xm, y0, x1, y1), rng, max_side, out)
    else:
        ym = y0 + int(h * f)
        _split((x0, y0, x1, ym), rng, max_side, out)
        _split((x0, ym, x1, y1), rng, max_side, out)


def _make_canvas(cw: int, ch: int, frame_h: int, rng: np.random.Generator) -> np.ndarray:
    """The background: a mosaic of photo tiles with a few static photo cut-outs on it (distractors)."""
    canvas = np.empty((ch, cw, 3), np.uint8)
    rects: list[tuple[int, int, int, int]] = []
    _split((0, 0, cw, ch), rng, int(0.9 * frame_h), rects)
    names = list(BACKGROUND_PHOTOS)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        if k % len(names) == 0:
            rng.shuffle(names)
        photo = _photo(names[k % len(names)])
        tile = _cover(photo, x1 - x0, y1 - y0, rng, zoom=rng.uniform(1.0, 1.8))
        canvas[y0:y1, x0:x1] = _tinted(tile, rng)
    # Static blobs cut from photos, the objects' photos among them: look-alikes that never move.
    pool = names + [p[0] for p in _OBJECT_PHOTOS]
    count = max(4, int(round(8 * cw * ch / (2400 * 1700))))
    for _ in range(count):
        r = rng.uniform(0.05, 0.14) * frame_h
        side = int(2 * 1.3 * r) + 3
        cx, cy = rng.uniform(side, cw - side), rng.uniform(side, ch - side)
        tile = _tinted(_cover(_photo(pool[int(rng.integers(len(pool)))]), side, side, rng, zoom=rng.uniform(1.0, 2.0)), rng)
        phi = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        rad = r * (1 + sum(rng.uniform(0.03, 0.1) * np.cos(h * phi + rng.uniform(0, 2 * np.pi)) for h in (2, 3, 4)))
        pts = np.stack([side / 2 + rad * np.cos(phi), side / 2 + rad * np.sin(phi)], axis=1)
        mask = np.zeros((side, side), np.uint8)
        cv2.fillPoly(mask, [np.rint(pts).astype(np.int32)], 1)
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        np.copyto(canvas[y0 : y0 + side, x0 : x0 + side], tile, where=mask.astype(bool)[..., None])
    canvas.setflags(write=False)
    return canvas


def _object_texture(k: int, side: int, radius: float) -> np.ndarray:
    """The ``side x side`` texture patch of object ``k``: its photo crop spans the nominal outline's diameter."""
    name, fx, fy, fs = _OBJECT_PHOTOS[k]
    photo = _photo(name)
    ph, pw = photo.shape[:2]
    scale = 2.0 * radius / (fs * min(ph, pw))  # patch pixels per photo pixel
    half = (side - 1) / 2.0
    if scale < 1:  # shrink with area averaging, then only place it
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        ph, pw, scale = photo.shape[0], photo.shape[1], 1.0
    m = np.array([[scale, 0.0, half - scale * fx * (pw - 1)], [0.0, scale, half - scale * fy * (ph - 1)]])
    tex = cv2.warpAffine(photo, m, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    tex.setflags(write=False)
    return tex


def hard_scene(
    width: int = 640,
    height: int = 480,
    *,
    fps: float = 30.0,
    seconds: float = 10.0,
    seed: int = 0,
    num_objects: int = 5,
    frames: int | None = None,
    effects: bool = True,
    solid: bool = False,
) -> HardScene:
    """The hard clip: five photo-textured, deforming objects under a moving camera (see the module docstring).

    Args:
        width, height: frame size (at least 64x64).
        fps, seconds: frame rate and length (``round(seconds * fps)`` frames);
            the choreography scales with the length, so the leaving object
            is out of the frame for about 30 % of the clip.
        seed: fixes textures, shapes, phases, camera, lighting and noise.
        num_objects: keep objects ``1..num_objects`` (the others are left out).
        frames: keep only the first ``frames`` frames of the ``seconds``-long
            clip (default: all); the motion stays that of the full clip.
        effects: gain flicker, vignette and sensor noise.
        solid: paint objects in flat colours (a test aid).
    """
    return HardScene(
        width, height, fps=fps, seconds=seconds, seed=seed, num_objects=num_objects, frames=frames,
        effects=effects, solid=solid,
    )


# -------------------------------------------------------------------- DAVIS layout


def davis_palette() -> bytes:
    """The 256-colour palette of DAVIS / PASCAL VOC annotation PNGs (index 0 black, 1 dark red, 2 green...)."""
    pal = bytearray()
    for i in range(256):
        r = g = b = 0
        c = i
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        pal += bytes((r, g, b))
    return bytes(pal)


class _LabelTee:
    """Renders a scene for :func:`write_video` and writes each frame's label PNG on the way."""

    def __init__(self, scene, folder: Path) -> None:
        self.scene, self.folder = scene, folder
        self.width, self.height, self.num_frames = scene.width, scene.height, scene.num_frames
        self._palette = davis_palette()

    def render(self, index: int):
        from PIL import Image

        image, masks = self.scene.render(index)
        label = np.zeros((self.height, self.width), np.uint8)
        for oid, m in masks.items():
            label[m] = oid
        png = Image.frombytes("P", (self.width, self.height), label.tobytes())
        png.putpalette(self._palette)
        png.save(self.folder / f"{index:05d}.png", optimize=False)
        return image, masks


def write_davis(scene, root: str | Path, name: str = "hard", *, crf: int | None = None) -> tuple[Path, Path]:
    """Write ``scene`` in the DAVIS-2017 multi-object layout, in one rendering pass.

    * ``<root>/<name>.mp4``: the clip, H.264 at the scene's frame rate
      (:func:`~realtime_sam.testing.synthetic.write_video`, ``crf`` default the
      scene's ``crf`` attribute, else 23);
    * ``<root>/Annotations/480p/<name>/00000.png``, ...: one 8-bit indexed
      (palette) PNG per frame, pixel value = object id of the visible
      object, 0 = background.

    Ids must be 1..255. Returns ``(video path, annotation folder)``.
    """
    root = Path(root)
    if any(not 1 <= oid <= 255 for oid in scene.ids):
        raise ConfigError(f"DAVIS annotations hold ids 1..255, the scene has {scene.ids}")
    folder = root / "Annotations" / "480p" / name
    # The labels go to a hidden folder beside it and the clip to a hidden file (write_video), and
    # both replace the old ones only once complete: an interrupted write leaves the sequence there was.
    partial = folder.with_name(f".{name}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    quality = int(crf if crf is not None else getattr(scene, "crf", 23))
    try:
        video = write_video(_LabelTee(scene, partial), root / f"{name}.mp4", fps=getattr(scene, "fps", 30.0), crf=quality)
        folder.mkdir(exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        for png in sorted(partial.glob("*.png")):
            os.replace(png, folder / png.name)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return video, folder
