"""The overlay renderer: mask tint, untouched background, fixed colours, HUD, help, box preview."""

from __future__ import annotations

import itertools
import time

import cv2
import numpy as np
import pytest

from realtime_sam.errors import ConfigError
from realtime_sam.output.render import (
    LOST_COLOR,
    HudInfo,
    RenderConfig,
    Renderer,
    model_rate,
    track_color,
)
from realtime_sam.output.rle import mask_to_box
from realtime_sam.types import Frame, FrameResult, TrackResult, TrackState

H, W = 120, 160


def gradient(h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([xx * 255 // w, yy * 255 // h, (xx + 2 * yy) % 256], axis=-1)
    return np.ascontiguousarray(img.astype(np.uint8))


def circle(cx: float, cy: float, r: float, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def rect(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def track(tid: int, mask: np.ndarray, state: TrackState = TrackState.CONFIRMED, label: str | None = None,
          box=None) -> TrackResult:
    if box is None:
        box = mask_to_box(mask) or (0.0, 0.0, 0.0, 0.0)
    return TrackResult(track_id=tid, mask=mask, box=box, score=0.9, state=state, label=label)


def result(image: np.ndarray, *tracks: TrackResult, index: int = 0) -> FrameResult:
    return FrameResult(frame=Frame(index=index, image=image, timestamp=index / 30, capture_time=0.0), tracks=tracks)


def erode(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=px).astype(bool)


def dilate(mask: np.ndarray, px: int) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=px).astype(bool)


def expected_blend(image: np.ndarray, color, alpha: float) -> np.ndarray:
    return image.astype(np.float64) * (1 - alpha) + np.array(color, np.float64) * alpha


NO_LABELS = RenderConfig(alpha=0.5, contour_thickness=2, show_labels=False)


def test_pixels_under_a_mask_take_the_track_colour_blend():
    img = gradient()
    ball, box = circle(50, 60, 22), rect(95, 30, 150, 100)
    out = Renderer(NO_LABELS).annotate(img, result(img, track(3, ball), track(7, box)))
    for tid, mask in ((3, ball), (7, box)):
        inner = erode(mask, 3)  # away from the contour line
        want = expected_blend(img[inner], track_color(tid), 0.5)
        assert np.abs(out[inner].astype(np.float64) - want).max() <= 1.0


def test_pixels_away_from_masks_are_unchanged():
    img = gradient()
    ball, box = circle(50, 60, 22), rect(95, 30, 150, 100)
    out = Renderer(NO_LABELS).annotate(img, result(img, track(3, ball), track(7, box)))
    # The 2 px contour may reach 1 px outside the mask; nothing else may change.
    outside = ~dilate(ball | box, 2)
    np.testing.assert_array_equal(out[outside], img[outside])
    assert (out[ball] != img[ball]).any()


def test_input_image_is_not_modified():
    img = gradient()
    before = img.copy()
    lost = track(9, np.zeros((H, W), bool), TrackState.LOST, box=(10.0, 10.0, 40.0, 40.0))
    hud = HudInfo(30.0, 10.0, 50.0, 2, False, True, 2, "hi")
    out = Renderer().annotate(img, result(img, track(1, circle(80, 60, 20), label="cup"), lost), hud)
    np.testing.assert_array_equal(img, before)
    assert out is not img and not np.shares_memory(out, img)
    assert (out != img).any()


def test_same_id_same_colour_across_calls_and_renderers():
    solid = RenderConfig(alpha=1.0, contour_thickness=0, show_labels=False)
    img = gradient()
    seen = []
    for renderer, (cx, cy) in zip((Renderer(solid), Renderer(solid), Renderer(solid)), ((40, 40), (100, 70), (60, 90))):
        mask = circle(cx, cy, 15)
        out = renderer.annotate(img, result(img, track(5, mask), track(6, rect(0, 0, 10, 10))))
        colours = np.unique(out[mask], axis=0)
        assert len(colours) == 1
        seen.append(tuple(int(c) for c in colours[0]))
    assert seen[0] == seen[1] == seen[2] == track_color(5)


def test_distinct_ids_get_clearly_different_colours():
    colours = {tid: np.array(track_color(tid), int) for tid in range(1, 13)}
    for a, b in itertools.combinations(colours, 2):
        assert np.abs(colours[a] - colours[b]).max() >= 40, (a, b)
    assert track_color(4) == track_color(4)


def test_labels_are_drawn_above_the_object_in_its_colour():
    img = gradient()
    mask = rect(60, 60, 120, 110)
    out = Renderer(RenderConfig(contour_thickness=0)).annotate(img, result(img, track(4, mask, label="box")))
    changed = (out != img).any(axis=2) & ~mask
    ys, xs = np.nonzero(changed)
    assert ys.size > 0
    # The tag sits just above the box, starting at its left edge.
    assert ys.max() < 60 and ys.min() >= 60 - 30
    assert xs.min() >= 60
    tag = out[ys, xs]
    assert (tag == np.array(track_color(4), np.uint8)).all(axis=1).any()


def test_tentative_tracks_are_tinted_too():
    img = gradient()
    mask = circle(80, 60, 25)
    out = Renderer(NO_LABELS).annotate(img, result(img, track(2, mask, TrackState.TENTATIVE)))
    inner = erode(mask, 2)
    want = expected_blend(img[inner], track_color(2), 0.5)
    assert np.abs(out[inner].astype(np.float64) - want).max() <= 1.0


def test_lost_tracks_are_dashed_grey_boxes_or_hidden():
    img = gradient()
    lost = track(8, np.zeros((H, W), bool), TrackState.LOST, box=(20.0, 30.0, 100.0, 90.0))
    out = Renderer(RenderConfig(show_labels=False)).annotate(img, result(img, lost))
    top = out[30, 20:100]
    grey = (top == np.array(LOST_COLOR, np.uint8)).all(axis=1)
    assert grey.sum() > 20  # drawn ...
    assert (~grey).sum() > 10  # ... with gaps: dashed
    inside = (slice(35, 85), slice(25, 95))
    np.testing.assert_array_equal(out[inside], img[inside])
    hidden = Renderer(RenderConfig(show_lost=False)).annotate(img, result(img, lost))
    np.testing.assert_array_equal(hidden, img)


def test_removed_tracks_are_never_drawn():
    img = gradient()
    gone = track(3, circle(80, 60, 30), TrackState.REMOVED)
    np.testing.assert_array_equal(Renderer().annotate(img, result(img, gone)), img)


def test_hud_draws_only_in_a_top_band():
    img = gradient(360, 640)
    hud = HudInfo(29.97, 12.3, 85.0, 4, True, True, 3, "saved")
    out = Renderer().annotate(img, result(img), hud)
    rows = np.nonzero((out != img).any(axis=(1, 2)))[0]
    assert rows.size > 0 and rows.min() == 0 and rows.max() < 40


def test_hud_text_formats_numbers_and_flags():
    text = HudInfo(None, 12.345, 85.6, 3, True, False, 2, "saved").text()
    assert "display -- fps" in text
    assert "model 12.3 fps" in text
    assert "latency 86 ms" in text
    assert "enc age 3" in text and "tracks 2" in text
    assert "PAUSED" in text and "MANUAL" in text and text.endswith("saved")
    assert "PAUSED" not in HudInfo(1.0, 1.0, 1.0, 0, False, True, 0).text()


def _changed_bounds(a: np.ndarray, b: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero((a != b).any(axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def test_help_panel_is_centred_and_grows_with_the_key_list():
    img = gradient(480, 640)
    before = img.copy()
    renderer = Renderer()
    few = renderer.draw_help(img, [("q", "quit"), ("space", "pause")])
    many = renderer.draw_help(img, [(k, f"action {k}") for k in "abcdefgh"])
    np.testing.assert_array_equal(img, before)
    x0, y0, x1, y1 = _changed_bounds(few, img)
    assert abs((x0 + x1) / 2 - 320) < 40 and abs((y0 + y1) / 2 - 240) < 40
    mx0, my0, mx1, my1 = _changed_bounds(many, img)
    assert (my1 - my0) > (y1 - y0) + 60


def test_help_panel_fits_a_small_frame():
    img = gradient(120, 160)
    keys = [("q", "quit the program"), ("space", "pause or resume"), ("a", "automatic re-encode"),
            ("r", "reset all tracks"), ("h", "toggle this help")]
    out = Renderer().draw_help(img, keys)
    x0, y0, x1, y1 = _changed_bounds(out, img)
    assert x0 >= 0 and y0 >= 0 and x1 <= 159 and y1 <= 119
    assert out.shape == img.shape


def test_box_preview_draws_the_outline_for_any_corner_order():
    img = gradient()
    renderer = Renderer()
    a = renderer.draw_box_preview(img, (30.0, 20.0, 110.0, 90.0))
    b = renderer.draw_box_preview(img, (110.0, 90.0, 30.0, 20.0))
    np.testing.assert_array_equal(a, b)
    assert (a[20, 30:111] == 255).all() and (a[20:91, 110] == 255).all()
    np.testing.assert_array_equal(a[25:85, 35:105], img[25:85, 35:105])
    np.testing.assert_array_equal(img, gradient())


def test_bad_inputs_raise_clear_errors():
    img = gradient()
    with pytest.raises(ValueError, match="mask"):
        Renderer().annotate(img, result(img, track(1, np.ones((10, 10), bool), box=(0.0, 0.0, 10.0, 10.0))))
    with pytest.raises(ValueError, match="uint8"):
        Renderer().annotate(img.astype(np.float32), result(img))


@pytest.mark.parametrize(
    "kwargs", [{"alpha": 1.5}, {"alpha": -0.1}, {"contour_thickness": -1}, {"font_scale": 0.0}, {"hud_alpha": 2.0}]
)
def test_config_is_validated(kwargs):
    with pytest.raises(ConfigError):
        RenderConfig(**kwargs)


def test_hd_frame_with_five_masks_performance_report():
    """Prints the cost of one 720p annotation (not asserted: timing depends on the machine)."""
    h, w = 720, 1280
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8), (9, 9), 3)
    tracks = [track(i + 1, circle(140 + 250 * i, 360, 60 + 15 * i, h, w), label="obj" if i % 2 else None)
              for i in range(5)]
    res = result(img, *tracks)
    hud = HudInfo(30.0, 15.0, 70.0, 1, False, True, 5)
    renderer = Renderer()
    out = renderer.annotate(img, res, hud)
    runs = 20
    start = time.perf_counter()
    for _ in range(runs):
        renderer.annotate(img, res, hud)
    ms = (time.perf_counter() - start) / runs * 1e3
    print(f"\nRenderer.annotate 1280x720, 5 masks, labels + HUD: {ms:.2f} ms/frame")
    for t in tracks:
        inner = erode(t.mask, 4)
        want = expected_blend(img[inner], track_color(t.track_id), renderer.config.alpha)
        assert np.abs(out[inner].astype(np.float64) - want).max() <= 1.0


def _text_lines(image: np.ndarray, band: int) -> int:
    """Runs of rows in the top ``band`` rows that hold white (HUD text) pixels."""
    white = (image[:band] >= 200).all(axis=2).any(axis=1)
    return int(np.count_nonzero(white[1:] & ~white[:-1]) + white[0])


def test_hud_wraps_on_a_narrow_frame_instead_of_running_off_it():
    img = gradient(240, 320)
    hud = HudInfo(29.97, 12.3, 1732.0, 8, True, True, 2, "snapshot saved: snapshot-000123.png")
    out = Renderer().annotate(img, result(img), hud)
    changed = (out != img).any(axis=2)
    cols = np.nonzero(changed.any(axis=0))[0]
    rows = np.nonzero(changed.any(axis=1))[0]
    assert cols.max() < 320 - 1  # the band (and so the text) ends inside the frame
    # Wrapped onto more lines than the same HUD on a frame wide enough for it (font
    # metrics vary between OpenCV versions: the same text, lines counted as runs of
    # rows holding white text in the band).
    wide = gradient(240, 1600)
    one_line = Renderer().annotate(wide, result(wide), hud)
    assert _text_lines(out, rows.max() + 1) >= 2 and _text_lines(one_line, rows.max() + 1) == 1


@pytest.mark.parametrize(
    "model_fps, frames_processed, interval, said",
    [
        (0.0, 0, None, "-- fps"),  # before the first frame
        (0.0, 40, 0.62, "idle"),  # frames, none with work for the engine
        (5.06, 40, None, "5.1 fps"),  # fewer than two encodes landed
        (150.0, 40, 0.62, "150.0 fps, encode every 0.62 s"),
        (3.0, 40, 1.66, "3.0 fps, encode every 1.7 s"),
    ],
)
def test_hud_and_status_lines_say_the_model_rate_in_the_same_words(model_fps, frames_processed, interval, said):
    # One function builds the text; the HUD (as the window fills HudInfo from the pipeline's stats)
    # and the status lines (pipeline.model_rate) both use it.
    from types import SimpleNamespace

    from realtime_sam.app.pipeline import model_rate as status_rate

    stats = SimpleNamespace(model_fps=model_fps, frames_processed=frames_processed, encode_interval_s=interval)
    fps = model_fps or None
    hud = HudInfo(
        display_fps=30.0, model_fps=fps, latency_ms=10.0, encode_age_frames=0, paused=False, auto_mode=True,
        num_tracks=1, model_idle=fps is None and bool(frames_processed), encode_interval_s=interval,
    )
    assert status_rate(stats) == said
    assert f"| model {said} |" in hud.text()
    assert model_rate(fps, interval, idle=fps is None and bool(frames_processed)) == said
