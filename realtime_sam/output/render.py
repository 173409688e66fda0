"""Draw tracks, labels and a heads-up line on BGR frames.

:class:`Renderer` turns a :class:`~realtime_sam.types.FrameResult` into an
annotated copy of a frame; the window and :class:`~realtime_sam.output.video.VideoSink`
both use it, so what is saved looks like what was shown.

How tracks are drawn:

* ``TENTATIVE`` and ``CONFIRMED`` tracks: the mask tinted with the track's
  colour (:func:`track_color`, fixed per id so an object keeps its colour for
  the whole run), its outer contour, and a label ``"<id> <label>"`` on a
  filled tag above the object; tentative tracks get a ``?`` and a thinner
  contour;
* ``LOST`` tracks have no mask: their last box is drawn as a dashed grey
  rectangle tagged ``"<id> lost"`` so the user sees what is being searched
  for (``RenderConfig.show_lost=False`` hides them);
* ``REMOVED`` tracks are never drawn.

Blending touches only the pixels of each mask, and only inside the mask's
bounding box, so the cost grows with the objects' size, not the frame's
(720p with five objects: about 2-4 ms here). All colours are BGR.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError
from realtime_sam.types import Box, FrameResult, TrackResult, TrackState

__all__ = ["RenderConfig", "HudInfo", "Renderer", "model_rate", "track_color", "LOST_COLOR"]

Color = tuple[int, int, int]

LOST_COLOR: Color = (160, 160, 160)
"""BGR grey used for lost tracks."""

_GOLDEN = 0.6180339887498949
_MIN_HUD_SCALE = 0.35  # smaller Hershey text is unreadable
_FONT = cv2.FONT_HERSHEY_SIMPLEX


def track_color(track_id: int) -> Color:
    """The fixed BGR colour of a track id.

    Hues step by the golden ratio so consecutive ids (the ones most often on
    screen together) land far apart on the colour wheel; saturation and
    brightness cycle through three tiers so ids whose hues come close again
    still differ. Deterministic: the same id gives the same colour in every
    process.
    """
    tid = int(track_id)
    hue = (tid * _GOLDEN) % 1.0
    sat = (0.95, 0.70, 0.85)[tid % 3]
    val = (1.00, 0.90, 0.75)[(tid // 3) % 3]
    r, g, b = colorsys.hsv_to_rgb(hue, sat, val)
    return (int(round(b * 255)), int(round(g * 255)), int(round(r * 255)))


@dataclass(frozen=True)
class RenderConfig:
    """How the overlay looks.

    Attributes:
        alpha: opacity of the mask tint, ``0`` (invisible) to ``1`` (solid).
        contour_thickness: outline width in pixels; ``0`` draws no outline.
        show_labels: draw the id tag of each track.
        show_lost: draw lost tracks as dashed grey boxes.
        font_scale: OpenCV font scale of tags and the HUD; ``None`` scales
            with the image height (0.55 at 720 rows).
        hud_alpha: opacity of the dark band behind the HUD and help text.
    """

    alpha: float = 0.45
    contour_thickness: int = 2
    show_labels: bool = True
    show_lost: bool = True
    font_scale: float | None = None
    hud_alpha: float = 0.6

    def __post_init__(self) -> None:
        check_numbers(self, "render")  # by type first: "5" < 1 is a TypeError naming no key
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"render.alpha must be in [0, 1], got {self.alpha}")
        if not 0 <= self.contour_thickness <= 20:
            raise ConfigError(f"render.contour_thickness must be in [0, 20], got {self.contour_thickness}")
        if self.font_scale is not None and not 0.1 <= self.font_scale <= 5.0:
            raise ConfigError(f"render.font_scale must be in [0.1, 5] or null, got {self.font_scale}")
        if not 0.0 <= self.hud_alpha <= 1.0:
            raise ConfigError(f"render.hud_alpha must be in [0, 1], got {self.hud_alpha}")


def encode_every(seconds: float | None) -> str:
    """``", encode every 0.62 s"`` (``1.4 s`` from one second on), ``""`` for ``None``: how often the
    model refreshed the masks, shown after the model's frame rate on the HUD and status lines."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    return f", encode every {seconds:.2f} s" if seconds < 1 else f", encode every {seconds:.1f} s"


def model_rate(fps: float | None, encode_interval_s: float | None = None, *, idle: bool = False) -> str:
    """The model's rate as the HUD and the status lines show it after ``model``: ``idle`` (the
    engine had nothing to do on the recent frames), ``-- fps`` (``fps`` not known), ``5.1 fps``, or
    ``5.1 fps, encode every 0.62 s`` once ``encode_interval_s`` is known (:func:`encode_every`)."""
    if idle:
        return "idle"
    if fps is None or not math.isfinite(fps):
        return "-- fps"
    return f"{fps:.1f} fps{encode_every(encode_interval_s) if fps else ''}"


@dataclass(frozen=True)
class HudInfo:
    """Numbers shown on the heads-up line.

    Attributes:
        display_fps: frames shown per second while playing (``None``: not measured yet, or paused).
        model_fps: frames per second of engine time, over the recent frames it had work on
            (``None``: not yet, or idle).
        latency_ms: capture-to-display latency in milliseconds (``None``: not yet).
        encode_age_frames: frames since the image encoder last ran.
        paused: playback is paused.
        auto_mode: the engine picks when to re-encode by itself.
        num_tracks: live tracks.
        message: an optional short status text shown at the end.
        model_idle: the engine had nothing to do on the recent frames (no objects):
            ``model idle`` is shown instead of a rate.
        encode_interval_s: seconds between the encodes that landed (how often the model
            refreshes the masks; with background encodes ``model_fps`` times only the
            frames' own work): ``model 150.0 fps, encode every 0.62 s``; ``None``: not known.
    """

    display_fps: float | None
    model_fps: float | None
    latency_ms: float | None
    encode_age_frames: int
    paused: bool
    auto_mode: bool
    num_tracks: int
    message: str | None = None
    model_idle: bool = False
    encode_interval_s: float | None = None

    def text(self) -> str:
        """The HUD as one line of plain ASCII text."""

        def num(value: float | None, fmt: str) -> str:
            return "--" if value is None or not math.isfinite(value) else format(value, fmt)

        parts = [
            f"display {num(self.display_fps, '.1f')} fps",
            f"model {model_rate(self.model_fps, self.encode_interval_s, idle=self.model_idle)}",
            f"latency {num(self.latency_ms, '.0f')} ms",
            f"enc age {self.encode_age_frames}",
            f"tracks {self.num_tracks}",
            "AUTO" if self.auto_mode else "MANUAL",
        ]
        if self.paused:
            parts.append("PAUSED")
        if self.message:
            parts.append(self.message)
        return " | ".join(parts)


def _mask_window(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """``(x0, y0, x1, y1)`` integer bounds (exclusive far edges) or ``None``."""
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    x0, x1 = int(cols[0]), int(cols[-1]) + 1
    rows = np.flatnonzero(mask[:, x0:x1].any(axis=1))
    return x0, int(rows[0]), x1, int(rows[-1]) + 1


def _text_color(bg: Color) -> Color:
    b, g, r = bg
    # Rec. 601 luma: dark text on light tags, white text on dark ones.
    return (0, 0, 0) if 0.299 * r + 0.587 * g + 0.114 * b > 140 else (255, 255, 255)


def _blend_rect(image: np.ndarray, x0: int, y0: int, x1: int, y1: int, color: Color, alpha: float) -> None:
    """Tint a rectangle of ``image`` in place (clipped to the image)."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 <= x0 or y1 <= y0:
        return
    roi = image[y0:y1, x0:x1]
    roi[...] = cv2.addWeighted(roi, 1.0 - alpha, _solid_like(roi, color), alpha, 0.0)


def _solid_like(roi: np.ndarray, color: Color) -> np.ndarray:
    # cv2.rectangle fills ~30x faster than numpy broadcasting a 3-tuple.
    solid = np.empty_like(roi)
    cv2.rectangle(solid, (0, 0), (solid.shape[1], solid.shape[0]), color, cv2.FILLED)
    return solid


def _dashed_rect(image: np.ndarray, box: tuple[int, int, int, int], color: Color, thickness: int, dash: int) -> None:
    x0, y0, x1, y1 = box
    edges = (((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0)))
    for (ax, ay), (bx, by) in edges:
        length = max(abs(bx - ax), abs(by - ay))
        if length == 0:
            continue
        for start in range(0, length, 2 * dash):
            end = min(start + dash, length)
            p = (ax + (bx - ax) * start // length, ay + (by - ay) * start // length)
            q = (ax + (bx - ax) * end // length, ay + (by - ay) * end // length)
            cv2.line(image, p, q, color, thickness, cv2.LINE_8)


class Renderer:
    """Draws :class:`FrameResult` overlays; holds only its configuration.

    Every drawing method returns a new image and leaves its input untouched,
    so one captured frame can feed the window, the video sink and the model.
    """

    def __init__(self, config: RenderConfig | None = None) -> None:
        self.config = config if config is not None else RenderConfig()

    # -- sizing -----------------------------------------------------------

    def _font(self, image: np.ndarray) -> tuple[float, int]:
        scale = self.config.font_scale
        if scale is None:
            scale = min(1.5, max(0.35, image.shape[0] / 720.0 * 0.55))
        thickness = 1 if scale < 0.8 else 2
        return scale, thickness

    # -- public API ---------------------------------------------------------

    def annotate(self, image_bgr: np.ndarray, result: FrameResult, hud: HudInfo | None = None) -> np.ndarray:
        """Draw every track of ``result`` (and the HUD) on a copy of the image.

        Args:
            image_bgr: ``HxWx3 uint8`` BGR, usually ``result.frame.image``.
            result: the tracks to draw; masks must be ``HxW`` like the image.
            hud: numbers for the heads-up line at the top left, or ``None``.

        Returns:
            A new ``HxWx3 uint8`` BGR image.

        Raises:
            ValueError: when the image is not ``HxWx3 uint8`` or a mask's size
                differs from the image's.
        """
        image_bgr = np.asarray(image_bgr)
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"image must be HxWx3 uint8 BGR, got {image_bgr.shape} {image_bgr.dtype}")
        out = np.array(image_bgr, copy=True, order="C")
        scale, thick = self._font(out)
        tags: list[tuple[str, tuple[int, int, int, int], Color]] = []
        for track in result.tracks:
            if track.state is TrackState.REMOVED:
                continue
            mask = np.asarray(track.mask)
            if mask.shape != out.shape[:2]:
                raise ValueError(
                    f"track {track.track_id}: mask is {mask.shape[1]}x{mask.shape[0]} but the image is "
                    f"{out.shape[1]}x{out.shape[0]}"
                )
            window = _mask_window(mask) if track.state is not TrackState.LOST else None
            if window is None:
                if self.config.show_lost and track.state is TrackState.LOST:
                    bounds = self._draw_lost(out, track)
                    if bounds is not None:
                        tags.append((f"{self._tag(track)} lost", bounds, LOST_COLOR))
                continue
            color = track_color(track.track_id)
            self._draw_mask(out, mask.astype(bool, copy=False), window, color, track.state)
            suffix = "?" if track.state is TrackState.TENTATIVE else ""
            tags.append((self._tag(track) + suffix, window, color))
        # Tags last, so no later mask tints over an earlier object's label.
        if self.config.show_labels:
            for text, bounds, color in tags:
                self._draw_tag(out, text, bounds, color, scale, thick)
        if hud is not None:
            self._draw_hud(out, hud.text(), scale, thick)
        return out

    def draw_hud(self, image_bgr: np.ndarray, hud: HudInfo) -> np.ndarray:
        """Draw the heads-up line at the top left of a copy of the image, sized for this image.

        ``annotate(image, result, hud)`` is ``draw_hud(annotate(image, result), hud)``;
        the live window draws it apart, on the frame as scaled for the screen,
        so its text is as large on screen whatever the frame's size.
        """
        out = np.array(image_bgr, copy=True, order="C")
        scale, thick = self._font(out)
        self._draw_hud(out, hud.text(), scale, thick)
        return out

    def draw_help(self, image_bgr: np.ndarray, keys: Sequence[tuple[str, str]], title: str = "Keys") -> np.ndarray:
        """Overlay a centred panel listing key bindings.

        Args:
            image_bgr: ``HxWx3 uint8`` BGR.
            keys: ``(key, description)`` pairs, shown in order.
            title: the panel's first line.

        Returns:
            A new image; the panel shrinks its font to fit small frames.
        """
        out = np.array(image_bgr, copy=True, order="C")
        h, w = out.shape[:2]
        rows = [(str(key), str(desc)) for key, desc in keys]
        scale, thick = self._font(out)
        gap = 0
        # Shrink until the panel fits the frame with a margin.
        while True:
            gap = int(round(20 * scale))
            title_size = cv2.getTextSize(title, _FONT, scale, thick)
            key_sizes = [cv2.getTextSize(k, _FONT, scale, thick) for k, _ in rows]
            desc_sizes = [cv2.getTextSize(d, _FONT, scale, thick) for _, d in rows]
            every = [title_size, *key_sizes, *desc_sizes]
            line_h = max(s[0][1] + s[1] for s in every) + int(round(10 * scale))
            key_w = max((s[0][0] for s in key_sizes), default=0)
            desc_w = max((s[0][0] for s in desc_sizes), default=0)
            width = max(title_size[0][0], key_w + gap + desc_w)
            height = line_h * (len(rows) + 1)
            if (width + 48 <= w and height + 48 <= h) or scale <= 0.3:
                break
            scale *= 0.85
            thick = 1
        margin = 16
        x0 = max(0, (w - width) // 2 - margin)
        y0 = max(0, (h - height) // 2 - margin)
        # The help panel is read, not glanced at: keep it at least 75 % opaque.
        panel_alpha = max(self.config.hud_alpha, 0.75)
        _blend_rect(out, x0, y0, x0 + width + 2 * margin, y0 + height + 2 * margin, (0, 0, 0), panel_alpha)
        descent = int(round(6 * scale))
        y = y0 + margin + line_h
        cv2.putText(out, title, (x0 + margin, y - descent), _FONT, scale, (80, 220, 255), thick, cv2.LINE_AA)
        for (key, desc), ((kw, _), _) in zip(rows, key_sizes):
            y += line_h
            # Keys right-aligned in their column, descriptions left-aligned.
            kx = x0 + margin + key_w - kw
            cv2.putText(out, key, (kx, y - descent), _FONT, scale, (80, 220, 255), thick, cv2.LINE_AA)
            dx = x0 + margin + key_w + gap
            cv2.putText(out, desc, (dx, y - descent), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
        return out

    def draw_box_preview(self, image_bgr: np.ndarray, box: Box | Sequence[float]) -> np.ndarray:
        """Draw a box being dragged (any corner order) on a copy of the image.

        Args:
            image_bgr: ``HxWx3 uint8`` BGR.
            box: ``(x0, y0, x1, y1)`` pixels; corners may be given in any order.

        Returns:
            A new image with a white rectangle on a dark outline, visible on
            any background.
        """
        out = np.array(image_bgr, copy=True, order="C")
        x0, y0, x1, y1 = (float(v) for v in box)
        p = (int(round(min(x0, x1))), int(round(min(y0, y1))))
        q = (int(round(max(x0, x1))), int(round(max(y0, y1))))
        cv2.rectangle(out, p, q, (0, 0, 0), 3, cv2.LINE_8)
        cv2.rectangle(out, p, q, (255, 255, 255), 1, cv2.LINE_8)
        return out

    # -- pieces -----------------------------------------------------------------

    @staticmethod
    def _tag(track: TrackResult) -> str:
        return f"{track.track_id} {track.label}" if track.label else str(track.track_id)

    def _draw_mask(
        self,
        out: np.ndarray,
        mask: np.ndarray,
        window: tuple[int, int, int, int],
        color: Color,
        state: TrackState,
    ) -> None:
        x0, y0, x1, y1 = window
        roi = out[y0:y1, x0:x1]
        sub = mask[y0:y1, x0:x1]
        alpha = self.config.alpha
        sub8 = sub.view(np.uint8)
        if alpha > 0:
            tinted = cv2.addWeighted(roi, 1.0 - alpha, _solid_like(roi, color), alpha, 0.0)
            # cv2.copyTo writes through the strided window in place and is ~40x
            # faster than numpy's masked copy; fall back if it ever reallocates.
            written = cv2.copyTo(tinted, sub8, roi)
            if written is not roi:
                np.copyto(roi, tinted, where=sub[..., None])
        thickness = self.config.contour_thickness
        if state is TrackState.TENTATIVE:
            thickness = min(thickness, 1)
        if thickness > 0:
            # A bool view as uint8 costs nothing; OpenCV accepts the strided window.
            contours, _ = cv2.findContours(
                sub8, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
            )
            cv2.drawContours(out, contours, -1, color, thickness, cv2.LINE_8)

    def _draw_lost(self, out: np.ndarray, track: TrackResult) -> tuple[int, int, int, int] | None:
        h, w = out.shape[:2]
        x0, y0, x1, y1 = (float(v) for v in track.box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 <= x0 or y1 <= y0:
            return None
        # Exclusive far edges: the last pixel row/column inside is x1 - 1.
        bx0 = int(np.clip(math.floor(x0), 0, w - 1))
        by0 = int(np.clip(math.floor(y0), 0, h - 1))
        bx1 = int(np.clip(math.ceil(x1) - 1, 0, w - 1))
        by1 = int(np.clip(math.ceil(y1) - 1, 0, h - 1))
        if bx1 <= bx0 or by1 <= by0:
            return None
        _dashed_rect(out, (bx0, by0, bx1, by1), LOST_COLOR, max(1, self.config.contour_thickness), dash=8)
        return bx0, by0, bx1 + 1, by1 + 1

    def _draw_tag(
        self, out: np.ndarray, text: str, bounds: tuple[int, int, int, int], color: Color, scale: float, thick: int
    ) -> None:
        h, w = out.shape[:2]
        (tw, th), base = cv2.getTextSize(text, _FONT, scale, thick)
        pad = max(2, int(round(3 * scale)))
        x0, y0 = bounds[0], bounds[1]
        box_h = th + base + 2 * pad
        # Above the object when there is room, else just inside its top edge.
        top = y0 - box_h if y0 - box_h >= 0 else min(y0, max(0, h - box_h))
        left = min(max(0, x0), max(0, w - tw - 2 * pad))
        cv2.rectangle(out, (left, top), (left + tw + 2 * pad - 1, top + box_h - 1), color, cv2.FILLED)
        cv2.putText(out, text, (left + pad, top + pad + th), _FONT, scale, _text_color(color), thick, cv2.LINE_AA)

    def _draw_hud(self, out: np.ndarray, text: str, scale: float, thick: int) -> None:
        """The HUD line at the top left; on narrow frames shrunk, then wrapped at ``" | "``.

        Below ``_MIN_HUD_SCALE`` the text would be unreadable, so a line that
        still does not fit is broken into several, each as wide as the frame allows.
        """
        width = out.shape[1]
        (tw, _), _ = cv2.getTextSize(text, _FONT, scale, thick)
        if tw + 10 > width:
            scale = max(_MIN_HUD_SCALE, scale * (width - 10) / tw)
            thick = 1
        lines: list[str] = []
        for part in text.split(" | "):
            joined = f"{lines[-1]} | {part}" if lines else part
            if lines and cv2.getTextSize(joined, _FONT, scale, thick)[0][0] + 10 <= width:
                lines[-1] = joined
            else:
                lines.append(part)
        sizes = [cv2.getTextSize(line, _FONT, scale, thick) for line in lines]
        th = max(sz[0][1] for sz in sizes)
        base = max(sz[1] for sz in sizes)
        tw = max(sz[0][0] for sz in sizes)
        pad = max(3, int(round(5 * scale)))
        row = th + base + pad
        _blend_rect(out, 0, 0, min(width, tw + 2 * pad), row * len(lines) + pad, (0, 0, 0), self.config.hud_alpha)
        for i, line in enumerate(lines):
            cv2.putText(out, line, (pad, pad + th + i * row), _FONT, scale, (255, 255, 255), thick, cv2.LINE_AA)
