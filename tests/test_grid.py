"""The window for several streams: layout and click routing (pure), and a real grid window under Xvfb.

The window tests run ``python -m realtime_sam`` with two real video files,
press keys and click with xdotool, and read what the window shows from a
screenshot of it (ImageMagick's ``import``).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pytest
from fixtures_window import WindowApp, disc_clip, launch, model_args, private_display, red_centre, red_pixels, still_clip

from realtime_sam.app.grid import GridLayout, GridWindow, route
from realtime_sam.app.ui import AddObject, ClearAll, Interaction, RefineObject, RemoveAt, SaveSnapshot
from realtime_sam.types import Frame, FrameResult, ObjectPrompt, TrackResult, TrackState


def test_layout_places_tiles_in_a_near_square_grid_and_scales_big_frames_down():
    layout = GridLayout.for_sizes([(320, 240), (1280, 960), (160, 120)], max_cell=(640, 480))
    assert layout.cols == 2 and layout.cell == (640, 480) and layout.canvas_size == (1280, 960)
    assert layout.scales(0) == (1.0, 1.0) and layout.scales(1) == (0.5, 0.5) and layout.scales(2) == (1.0, 1.0)  # never enlarged
    assert [layout.origin(i) for i in range(3)] == [(0, 0), (640, 0), (0, 480)]
    assert layout.locate(10, 20) == (0, 10, 20)
    assert layout.locate(640 + 100, 50) == (1, 200.5, 100.5)  # back in the big stream's pixels (pixel centres)
    assert layout.locate(400, 100) is None  # right of stream 0's 320-pixel tile
    assert layout.locate(700, 700) is None  # the empty fourth cell
    assert layout.locate(20, 500) == (2, 20, 20)


def test_a_layout_in_a_resized_window_fills_it_and_maps_clicks_through_it():
    """The window the user resized: cells are its share of it, tiles enlarged to fill them, the grid
    centred, the image the window's size; clicks map back through that layout."""
    layout = GridLayout.for_sizes([(320, 240), (320, 240)], aspects=[1.0, 1.0], window=(960, 400))
    assert layout.canvas_size == (960, 400) and layout.tile_size(1) == (480, 360)
    assert [layout.origin(i) for i in range(2)] == [(0, 20), (480, 20)]  # centred down
    assert layout.locate(480 + 360.25, 20 + 270.25) == (1, 240.0, 180.0)
    assert layout.locate(100, 10) is None  # the band above the grid
    canvas = layout.compose([np.full((240, 320, 3), 50, np.uint8), np.full((240, 320, 3), 200, np.uint8)])
    assert canvas.shape == (400, 960, 3) and (canvas[20:380, 480:] == 200).all() and (canvas[:20] == 0).all()
    # One anamorphic stream alone: its display shape, as large as fits, centred.
    alone = GridLayout.for_sizes([(720, 576)], aspects=[64 / 45], window=(1200, 576))
    assert alone.tile_size(0) == (1024, 576) and alone.origin(0) == (88, 0)


def test_compose_puts_each_stream_in_its_tile():
    layout = GridLayout.for_sizes([(40, 30), (80, 60)], max_cell=(40, 30))
    a = np.full((30, 40, 3), 50, np.uint8)
    b = np.full((60, 80, 3), 200, np.uint8)
    canvas = layout.compose([a, b])
    assert canvas.shape == (30, 80, 3)
    assert (canvas[:, :40] == 50).all() and (canvas[:, 40:] == 200).all()
    assert (layout.compose([None, b])[:, :40] == 0).all()  # not shown yet: black


def test_clicks_and_boxes_go_to_the_stream_under_them():
    layout = GridLayout.for_sizes([(320, 240), (640, 480)], max_cell=(320, 240))
    shown = [0, 1]
    click = AddObject(ObjectPrompt(points=((330.0, 20.0),), labels=(1,)))
    assert route(click, layout, shown) == (1, AddObject(ObjectPrompt(points=((20.5, 40.5),), labels=(1,))))
    box = AddObject(ObjectPrompt(box=(10.0, 10.0, 110.0, 60.0)))
    assert route(box, layout, shown) == (0, box)
    assert route(RemoveAt(400.0, 100.0), layout, shown) == (1, RemoveAt(160.5, 200.5))
    assert route(ClearAll(), layout, shown) is None
    # One stream shown alone (key 2): the whole window is stream 1 at full size.
    alone = GridLayout.for_sizes([(640, 480)], max_cell=(640, 480))
    assert route(click, alone, [1]) == (1, click)


def test_an_anamorphic_stream_is_tiled_at_its_display_shape():
    # A PAL 16:9 file (720x576, 64:45 pixels: 1024x576 as shown) beside a square-pixel 640x360 stream.
    layout = GridLayout.for_sizes([(720, 576), (640, 360)], max_cell=(512, 480), aspects=[64 / 45, 1.0])
    assert layout.tile_size(0) == (512, 288) and layout.tile_size(1) == (512, 288)
    sx, sy = layout.scales(0)
    assert sx / sy == pytest.approx(64 / 45) and sy == pytest.approx(0.5)
    # A click on the tile's centre is the stored frame's centre.
    assert layout.locate(255.5, 143.5) == pytest.approx((0, 359.5, 287.5))
    canvas = layout.compose([np.full((576, 720, 3), 50, np.uint8), np.full((360, 640, 3), 200, np.uint8)])
    assert canvas.shape == (288, 1024, 3) and (canvas[:, :512] == 50).all() and (canvas[:, 512:] == 200).all()


@pytest.mark.parametrize(
    "sizes, screen, want",
    [
        ([(1280, 720)] * 4, (1366, 768), (1226, 690)),  # four 720p streams, 2x2: 1280x720 did not fit
        ([(1920, 1080)] * 2, (800, 600), (720, 202)),  # two 1080p side by side on a small screen
        ([(1920, 1080)] * 3, (1024, 768), (920, 518)),  # 2x2 with an empty cell
        ([(320, 240)] * 2, (1920, 1080), (640, 240)),  # small streams: at their own size
    ],
)
def test_the_grid_fits_the_screen(sizes, screen, want):
    window = GridWindow()
    window.screen = screen
    layout, _ = window.layout(sizes)
    w, h = layout.canvas_size
    assert (w, h) == want
    assert w <= 0.9 * screen[0] and h <= 0.9 * screen[1]
    # One stream alone (key 1) is fitted as the single window fits it.
    window.focus = 0
    alone, shown = window.layout(sizes)
    from realtime_sam.app.ui import fit_view

    view = fit_view(*sizes[0], screen=screen)
    assert shown == [0] and np.abs(np.subtract(alone.canvas_size, (view.width, view.height))).max() <= 1  # (rounding)


class _Engine:
    """Records what the grid asks; one object, id 7, over the left half of a 320x240 frame."""

    def __init__(self) -> None:
        self.calls: list = []
        self.next_id = 20

    def track_at(self, x: float, y: float):
        return 7 if x < 160 else None

    def remove_object(self, track_id: int) -> None:
        self.calls.append(("remove", track_id))

    def add_object(self, prompt: ObjectPrompt) -> int:
        self.calls.append(("add", prompt))
        if prompt.track_id is not None:
            return prompt.track_id
        self.next_id += 1
        return self.next_id


def test_d_and_right_click_where_there_is_no_object_say_so_in_the_grid():
    """In the grid, d or a right-click on a spot with no object did nothing and said nothing;
    the single window says what happened (and a right-click refines the newest added object)."""
    from types import SimpleNamespace

    said: list[str] = []
    window = GridWindow(on_message=said.append)
    engines = [_Engine(), _Engine()]
    runs = [SimpleNamespace(name=name, engine=e) for name, e in zip(("door", "yard"), engines)]
    mask = np.zeros((240, 320), bool)
    mask[:, :160] = True
    result = FrameResult(Frame(0, np.zeros((240, 320, 3), np.uint8), 0.0, 0.0),
                         (TrackResult(7, mask, (0.0, 0.0, 160.0, 240.0), 0.9, TrackState.CONFIRMED),))
    last = [SimpleNamespace(result=result), SimpleNamespace(result=result)]
    layout, shown = window.layout([(320, 240), (320, 240)])
    assert layout.canvas_size == (640, 240)

    def key(x: int, y: int, code: int = ord("d")) -> str:
        """Point at window pixel (x, y), press the key, and give what the window said."""
        interaction = Interaction()
        interaction.on_mouse(cv2.EVENT_MOUSEMOVE, x, y, 0)
        said.clear()
        for command in interaction.on_key(code):
            window._apply(command, layout, shown, runs, last)
        return " / ".join(said)

    def right_click(x: int, y: int) -> str:
        said.clear()
        for command in Interaction().on_mouse(cv2.EVENT_RBUTTONDOWN, x, y, 0):
            window._apply(command, layout, shown, runs, last)
        return " / ".join(said)

    # d on the right half of the yard's picture: no object there.
    assert key(320 + 250, 100) == "yard: no object under the cursor to remove"
    assert engines[1].calls == []
    # d on the object: removed, as before.
    assert key(320 + 50, 100) == "yard: removed object 7" and engines[1].calls == [("remove", 7)]
    # A right-click on no object of a stream where none was added: what to do first.
    assert right_click(250, 100) == "door: no object selected: click an object first, then right-click to exclude areas"
    assert engines[0].calls == []
    # On the object: its negative point.
    assert right_click(40, 100) == "door: excluded point 40,100 from object 7"
    assert engines[0].calls[-1][1].track_id == 7 and engines[0].calls[-1][1].labels == (0,)
    # After a click adds an object there, a right-click beside it refines that one (the single window's rule).
    said.clear()
    window._apply(AddObject(ObjectPrompt(points=((200.0, 50.0),), labels=(1,))), layout, shown, runs, last)
    assert right_click(250, 100) == "door: excluded point 250,100 from object 21"
    # d with the mouse never over the window: the single window's hint.
    said.clear()
    for command in Interaction().on_key(ord("d")):
        window._apply(command, layout, shown, runs, last)
    assert said == ["point at an object with the mouse first, then press d (or Delete) to remove it"]


def test_d_off_every_stream_in_the_grid_says_there_is_no_object():
    from types import SimpleNamespace

    said: list[str] = []
    window = GridWindow(on_message=said.append)
    runs = [SimpleNamespace(name=f"s{i}", engine=_Engine()) for i in range(3)]
    layout, shown = window.layout([(320, 240)] * 3)  # 2x2: the fourth cell is empty
    window._apply(RemoveAt(500.0, 300.0), layout, shown, runs, [None] * 3)
    window._apply(RefineObject(500.0, 300.0), layout, shown, runs, [None] * 3)
    assert said == ["no object under the cursor to remove", "no stream under the cursor: right-click inside a stream's picture"]


def test_two_grid_snapshots_within_a_second_make_two_files(tmp_path):
    """The grid's snapshot is named by the second: a second press in the same second is numbered
    (``-2``), as the single window's is, instead of overwriting the first file."""
    from types import SimpleNamespace

    said: list[str] = []
    window = GridWindow(on_message=said.append, snapshot_dir=tmp_path)
    runs = [SimpleNamespace(name=f"s{i}", engine=_Engine()) for i in range(2)]
    layout, shown = window.layout([(320, 240)] * 2)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    while time.strftime("%Y%m%d-%H%M%S") == stamp:  # start at the top of a second: both presses fall in it
        time.sleep(0.01)
    for _ in range(3):
        window._apply(SaveSnapshot(), layout, shown, runs, [None] * 2)
    base = tmp_path / f"realtime-sam-grid-{time.strftime('%Y%m%d-%H%M%S')}"
    files = [Path(f"{base}{suffix}.png") for suffix in ("", "-2", "-3")]
    assert said == [f"snapshot saved: {f}" for f in files]
    assert sorted(tmp_path.iterdir()) == sorted(files)
    assert all(cv2.imread(str(f)).shape == (240, 640, 3) for f in files)


@contextmanager
def _two_streams(display: str, tmp_path: Path, checkpoint_path: Path, left: Path, right: Path, *, grid_timeout: float) -> Iterator[WindowApp]:
    """The app on two 320x240 files named left and right, each stream's masks saved to ``{name}.jsonl`` in
    ``tmp_path``, once its 640x240 grid window shows (within ``grid_timeout`` seconds) and both streams wrote a frame."""
    from fixtures_app import app_command, frame_lines

    command = app_command(
        "--source", str(left), "--source", str(right), "--realtime", "--save-masks", str(tmp_path / "{name}.jsonl"),
        *model_args(checkpoint_path),
    )
    with launch(command, display, tmp_path / "app.err", cwd=tmp_path) as app:
        app.find_window(180)
        # Two 320x240 streams side by side.
        app.wait_geometry("640x240", grid_timeout, "the grid")
        app.wait(lambda: frame_lines(tmp_path / "left.jsonl") and frame_lines(tmp_path / "right.jsonl"), 60, "frames")
        yield app


def test_a_click_in_a_real_grid_window_goes_to_that_stream(xvfb_display, tmp_path, checkpoint_path):
    from fixtures_app import frame_lines

    from realtime_sam.testing.synthetic import standard_scene, write_video

    clips = [write_video(standard_scene(320, 240, num_frames=300, seed=s), tmp_path / f"{n}.mp4", fps=5) for s, n in ((1, "left"), (2, "right"))]
    err_path = tmp_path / "app.err"
    with _two_streams(xvfb_display, tmp_path, checkpoint_path, *clips, grid_timeout=60) as app:
        app.click(480, 120)  # the right tile's centre
        app.wait(lambda: any(f["tracks"] for f in frame_lines(tmp_path / "right.jsonl")), 90, "the new object")
        app.quit(60, err_tail=None)
    right = frame_lines(tmp_path / "right.jsonl")
    left = frame_lines(tmp_path / "left.jsonl")
    assert all(not f["tracks"] for f in left)  # the click went to the right stream only
    first = next(f for f in right if f["tracks"])
    assert [t["id"] for t in first["tracks"]] == [1]
    assert "error" not in err_path.read_text().lower()


# Two flat colours far apart in every channel (BGR), each stream's whole picture.
LEFT_BGR, RIGHT_BGR = (40, 40, 200), (200, 160, 40)
LABEL_ROWS = 24  # each tile's bottom band, where its "1 left  tracks ..." label is drawn


def _flat_clip(path: Path, bgr: tuple[int, int, int]) -> Path:
    """A 320x240 H.264 file of one flat colour, long enough to outlast the test when played in real time."""
    image = np.empty((240, 320, 3), np.uint8)
    image[:] = bgr
    return still_clip(path, image)


def _share(image: np.ndarray, bgr: tuple[int, int, int]) -> float:
    """The fraction of ``image``'s pixels within 25 of ``bgr`` in every channel (H.264 shifts flat colours a little)."""
    return float(np.mean((np.abs(image.astype(int) - np.array(bgr)) <= 25).all(axis=2)))


def test_keys_show_one_stream_alone_and_back_to_the_grid_in_a_real_window(xvfb_display, tmp_path, checkpoint_path):
    from fixtures_app import frame_lines

    left = _flat_clip(tmp_path / "left.mp4", LEFT_BGR)
    right = _flat_clip(tmp_path / "right.mp4", RIGHT_BGR)
    err_path = tmp_path / "app.err"
    with _two_streams(xvfb_display, tmp_path, checkpoint_path, left, right, grid_timeout=30) as app:
        body = np.s_[: 240 - LABEL_ROWS]

        def shows(name: str, width: int, want, what: str) -> np.ndarray:
            """The window's screenshot once it is ``width`` x 240 and ``want(shot)`` holds (the next paint may lag a key)."""

            def check() -> list[np.ndarray]:
                shot = app.screenshot(tmp_path / name)
                return [shot] if shot.shape == (240, width, 3) and want(shot) else []

            return app.wait(check, 30, what)[0]

        def grid_shows_both(name: str) -> None:
            shows(name, 640, lambda s: _share(s[body][:, :320], LEFT_BGR) > 0.95 and _share(s[body][:, 320:], RIGHT_BGR) > 0.95,
                  f"each stream's colour in its own cell ({name})")

        grid_shows_both("grid.png")

        # 2: stream 2 alone, at its own size, over the whole window.
        app.key("2")
        app.wait_geometry("320x240", 30, "stream 2 alone")
        alone = shows("alone.png", 320, lambda s: _share(s[body], RIGHT_BGR) > 0.95, "stream 2's colour over the window")
        assert _share(alone[body], LEFT_BGR) == 0.0
        assert _share(alone, RIGHT_BGR) > 0.85  # the label band too, but for its text

        # g: the grid again, each stream in its cell.
        app.key("g")
        app.wait_geometry("640x240", 30, "the grid after g")
        grid_shows_both("grid_again.png")

        # A click at the window's centre while stream 2 is shown alone is a click on stream 2
        # (in the grid the same window pixel is in stream 1's tile).
        app.key("2")
        app.wait_geometry("320x240", 30, "stream 2 alone again")
        app.click(160, 120)
        app.wait(lambda: any(f["tracks"] for f in frame_lines(tmp_path / "right.jsonl")), 90, "the new object in stream 2")
        # 0: back to the grid as well.
        app.key("0")
        app.wait_geometry("640x240", 30, "the grid after 0")
        app.quit(60)
    assert frame_lines(tmp_path / "left.jsonl") and all(not f["tracks"] for f in frame_lines(tmp_path / "left.jsonl"))
    first = next(f for f in frame_lines(tmp_path / "right.jsonl") if f["tracks"])
    assert [t["id"] for t in first["tracks"]] == [1]
    assert "right: new object" in err_path.read_text()


def test_d_and_right_click_on_no_object_say_so_in_a_real_grid_window(xvfb_display, tmp_path, checkpoint_path):
    """With xdotool over the real grid: d and a right-click on a stream where nothing is tracked
    answered nothing (stderr stayed empty of them); now they say what happened, with the stream's name."""
    from fixtures_app import frame_lines

    left = _flat_clip(tmp_path / "left.mp4", LEFT_BGR)
    right = _flat_clip(tmp_path / "right.mp4", RIGHT_BGR)
    err_path = tmp_path / "app.err"
    with _two_streams(xvfb_display, tmp_path, checkpoint_path, left, right, grid_timeout=60) as app:
        app.xdo("mousemove", "--window", app.wid, "480", "120")  # the right stream's tile, nothing tracked
        time.sleep(0.5)  # the motion event reaches the window's loop
        app.key("d")
        app.wait(lambda: "right: no object under the cursor to remove" in err_path.read_text(), 30, "d's answer")
        app.xdo("click", "3")
        app.wait(lambda: "right: no object selected: click an object first" in err_path.read_text(), 30, "the right-click's answer")
        app.quit(60)
    assert all(not f["tracks"] for name in ("left", "right") for f in frame_lines(tmp_path / f"{name}.jsonl"))


@pytest.fixture
def small_display():
    """A private X server with an 800x600 screen; yields its DISPLAY name."""
    with private_display("800x600") as display:
        yield display


def test_a_grid_of_big_streams_fits_a_small_screen_and_clicks_land_on_stream_pixels(small_display, tmp_path, checkpoint_path):
    """A 1080p stream beside an anamorphic PAL one (720x576 at 64:45) on an 800x600 screen: the grid
    window fits 90% of the screen (it was 1280x360, most of the second stream off screen), the
    PAL stream at its display shape; a click on each red disc as shown prompts at its centre in
    that stream's pixels, in the grid and with the stream shown alone (1: it was 1920x1080)."""
    from fixtures_app import app_command

    hd_disc, pal_disc = (1440, 810), (540, 432)
    hd = disc_clip(tmp_path / "hd.mp4", (1920, 1080), hd_disc, seconds=120)
    pal = disc_clip(tmp_path / "pal.mp4", (720, 576), pal_disc, sar=Fraction(64, 45), seconds=120)
    err_path = tmp_path / "app.err"
    command = app_command("--source", str(hd), "--source", str(pal), "--realtime", *model_args(checkpoint_path))

    def click_disc(app: WindowApp, region: np.ndarray, offset: int, stream: str, shot_name: str) -> tuple[int, int]:
        """Click the red disc's centre inside window columns ``offset:``; the prompt ``stream`` got."""
        before = len(re.findall(rf"{stream}: new object from point", err_path.read_text()))
        cx, cy = red_centre(region)
        app.click(cx + offset, cy)
        said = app.wait(lambda: re.findall(rf"{stream}: new object from point (\d+),(\d+)", err_path.read_text())[before:],
                        60, f"the prompt in {stream} ({shot_name})")
        return int(said[0][0]), int(said[0][1])

    with launch(command, small_display, err_path, cwd=tmp_path) as app:
        app.find_window(180)
        # Waited for, not slept on: on a loaded machine the second stream's first frame (which
        # sizes its cell) came later than a fixed second.
        sizes: list[tuple[int, int]] = []
        app.wait(lambda: sizes.append(app.geometry()) or sizes[-1] == (720, 202), 60,
                 "the grid of two 360x202 cells (each stream at 16:9)")
        assert all(w <= 800 * 0.9 + 1 and h <= 600 * 0.9 + 1 for w, h in sizes), sizes
        shot = app.wait(lambda: [s for s in [app.screenshot(tmp_path / "grid.png")]
                                 if len(red_pixels(s[:, :360])[0]) > 100 and len(red_pixels(s[:, 360:])[0]) > 100],
                        30, "both discs on screen")[0]
        # The PAL stream's disc is round as shown (stored 81 pixels across for 115 down).
        ys, xs = red_pixels(shot[:, 360:])
        assert abs((xs.max() - xs.min()) / (ys.max() - ys.min()) - 1) < 0.15, (xs.max() - xs.min(), ys.max() - ys.min())
        tol = 1920 / 360 + 1  # one screen pixel, in the 1080p stream's pixels
        px, py = click_disc(app, shot[:, :360], 0, "hd", "grid")
        assert abs(px - hd_disc[0]) <= tol and abs(py - hd_disc[1]) <= tol, (px, py)
        px, py = click_disc(app, shot[:, 360:], 360, "pal", "grid")
        assert abs(px - pal_disc[0]) <= 720 / 360 + 1 and abs(py - pal_disc[1]) <= 576 / 202 + 1, (px, py)

        # 1: the 1080p stream alone, fitted as the single window is (720x405), clicks in its pixels.
        # The objects cleared first: a mask tinting the disc would move its centre as seen.
        app.key("c")
        app.wait(lambda: "cleared all objects" in err_path.read_text(), 30, "the objects cleared")
        app.key("1")
        app.wait(lambda: app.geometry() == (720, 405), 30, "stream 1 alone")
        # The disc as drawn at this size (about 5000 px; the grid's two discs make about 2500 together):
        # the grid's last frame may still be on screen a moment after the window changed size.
        alone = app.wait(lambda: [s for s in [app.screenshot(tmp_path / "alone.png")] if len(red_pixels(s)[0]) > 3000],
                         30, "the disc at stream 1's own size")[0]
        px, py = click_disc(app, alone, 0, "hd", "alone")
        assert abs(px - hd_disc[0]) <= 1920 / 720 + 1 and abs(py - hd_disc[1]) <= 1920 / 720 + 1, (px, py)
        app.quit(60)


def test_an_image_folder_of_several_sizes_in_a_real_grid_is_shown_and_clicked_at_each_image_size(xvfb_display, tmp_path, checkpoint_path):  # noqa: F811
    """Folder ``mixed`` starts with one 320x240 image, then 640x240 ones with a red disc at (480, 120);
    beside it, a folder of 320x240 images. The grid showed every image squeezed into the first one's
    tile (its layout fixed at the sources' first sizes) and a click on the disc prompted (240, 120),
    the pixel it would be at in a 320x240 image; the tile now follows the image shown, and the
    prompt lands on the disc."""
    from fixtures_app import app_command

    disc = (480, 120)
    mixed, plain = tmp_path / "mixed", tmp_path / "plain"
    mixed.mkdir()
    plain.mkdir()
    cv2.imwrite(str(mixed / "0000.png"), np.full((240, 320, 3), 60, np.uint8))
    wide = np.full((240, 640, 3), 60, np.uint8)
    cv2.circle(wide, disc, 30, (0, 0, 255), -1)
    small = np.full((240, 320, 3), 60, np.uint8)
    for k in range(1, 400):  # 80 s at 5 images a second: outlasts the test
        cv2.imwrite(str(mixed / f"{k:04d}.png"), wide)
    for k in range(400):
        cv2.imwrite(str(plain / f"{k:04d}.png"), small)
    err_path = tmp_path / "app.err"
    command = app_command("--source", str(mixed), "--source", str(plain), "--realtime", "--set", "source.image_fps=5",
                          *model_args(checkpoint_path))
    with launch(command, xvfb_display, err_path, cwd=tmp_path) as app:
        app.find_window(180)
        # Cells 576 wide: the 640x240 images fitted to 90% of the 1280x720 screen (576x216), the
        # other stream's 320x240 beside them (it stayed two 320x240 cells, the first image's size).
        app.wait(lambda: app.geometry() == (1152, 240), 60, "the wide images' tile (a 1152x240 window)")
        shot = app.wait(lambda: [s for s in [app.screenshot(tmp_path / "grid.png")] if len(red_pixels(s[:, :576])[0]) > 400],
                        30, "the disc on screen")[0]
        assert shot.shape[:2] == (240, 1152), shot.shape
        cx, cy = red_centre(shot[:, :576])
        ys, xs = red_pixels(shot[:, :576])
        assert abs((xs.max() - xs.min()) / (ys.max() - ys.min()) - 1) < 0.15  # round, not squeezed
        app.click(cx, cy)
        said = app.wait(lambda: re.findall(r"mixed: new object from point (\d+),(\d+)", err_path.read_text()), 60,
                        "the prompt")
        px, py = int(said[0][0]), int(said[0][1])
        assert abs(px - disc[0]) <= 2 and abs(py - disc[1]) <= 2, (px, py)
        app.quit(60)


def test_a_resized_grid_window_lays_the_tiles_out_again_and_clicks_land_on_stream_pixels(xvfb_display, tmp_path, checkpoint_path):
    """Two 320x240 streams in a 640x240 grid, the window resized (``xdotool windowsize``, as a window
    manager does) to 960x720: Qt shows the image 960x360 in it (the largest that fits, its shape
    kept), and the grid is laid out again at that size, as the single window does: two 480x360 tiles,
    the window 960x360 and its pixels the image's. Before, the 640x240 image stayed and Qt stretched
    it in the middle of the 960x720 window (discs at y 450, labels scaled with it). A click on the
    right stream's disc as shown prompts at its centre in that stream's pixels and gives that
    stream a track; 2 then shows that stream alone in the user's size (480x360 centred in 960x360),
    not at the screen-fitted 320x240."""
    from fixtures_app import app_command, frame_lines

    disc = (240, 180)
    clips = [disc_clip(tmp_path / f"{n}.mp4", (320, 240), disc, seconds=120) for n in ("left", "right")]
    err_path = tmp_path / "app.err"
    command = app_command(*(a for c in clips for a in ("--source", str(c))), "--realtime",
                          "--save-masks", str(tmp_path / "{name}.jsonl"), *model_args(checkpoint_path))
    with launch(command, xvfb_display, err_path, cwd=tmp_path) as app:
        app.find_window(180)
        app.wait_geometry("640x240", 60, "the grid")
        app.wait(lambda: frame_lines(tmp_path / "left.jsonl") and frame_lines(tmp_path / "right.jsonl"), 60, "frames")
        app.xdo("windowsize", "--sync", app.wid, "960", "720")
        # Each disc where the new layout puts it: stream pixel (x, y) at ((x + 0.5) * 1.5 - 0.5) in its tile.
        want = [((disc[0] + 0.5) * 1.5 - 0.5 + ox, (disc[1] + 0.5) * 1.5 - 0.5) for ox in (0, 480)]

        def laid_out() -> list[np.ndarray]:
            shot = app.screenshot(tmp_path / "resized.png")
            if shot.shape[:2] != (360, 960) or min(len(red_pixels(shot[:, :480])[0]), len(red_pixels(shot[:, 480:])[0])) < 100:
                return []
            centres = [red_centre(shot[:, :480]), red_centre(shot[:, 480:])]
            centres[1] = (centres[1][0] + 480, centres[1][1])
            return [shot] if all(abs(c[0] - w[0]) <= 2 and abs(c[1] - w[1]) <= 2 for c, w in zip(centres, want)) else []

        try:
            shot = app.wait(laid_out, 30, "each disc where a 960x720 grid of 480x360 tiles shows it")[0]
        except AssertionError:
            shot = app.screenshot(tmp_path / "resized.png")
            found = [red_centre(shot[:, :480]), red_centre(shot[:, 480:])] if len(red_pixels(shot)[0]) > 10 else []
            found = [(x + ox, y) for (x, y), ox in zip(found, (0, 480))]
            raise AssertionError(f"window {shot.shape[1]}x{shot.shape[0]}, discs at {found}, want {want}") from None
        # The disc is round: the tile keeps the stream's shape.
        ys, xs = red_pixels(shot[:, 480:])
        assert abs((xs.max() - xs.min()) / (ys.max() - ys.min()) - 1) < 0.1, (xs.max() - xs.min(), ys.max() - ys.min())
        cx, cy = red_centre(shot[:, 480:])
        app.click(cx + 480, cy)
        said = app.wait(lambda: re.findall(r"right: new object from point (\d+),(\d+)", err_path.read_text()), 60, "the prompt")
        px, py = int(said[0][0]), int(said[0][1])
        assert abs(px - disc[0]) <= 2 and abs(py - disc[1]) <= 2, (px, py)
        app.wait(lambda: any(f["tracks"] for f in frame_lines(tmp_path / "right.jsonl")), 90, "the new object's track")
        # 2: the right stream alone, fitted to the user's size and centred in it.
        app.key("c")
        app.wait(lambda: "cleared all objects" in err_path.read_text(), 30, "the objects cleared")
        app.key("2")
        # Waited for whole: a frame drawn before the clear reached the screen can still carry the
        # track's overlay (a random-weights mask of any shape), whose outline moves the red centre.
        def shown_alone() -> list[np.ndarray]:
            s = app.screenshot(tmp_path / "alone.png")
            if s.shape[:2] != (360, 960) or len(red_pixels(s)[0]) <= 100:
                return []
            cx, cy = red_centre(s)
            return [s] if abs(cx - (240 + want[0][0])) <= 2 and abs(cy - want[0][1]) <= 2 else []

        app.wait(shown_alone, 30, "stream 2 alone, its disc centred in 960x360")
        app.quit(60)
    assert all(not f["tracks"] for f in frame_lines(tmp_path / "left.jsonl"))  # the click went to the right stream only
    first = next(f for f in frame_lines(tmp_path / "right.jsonl") if f["tracks"])
    assert [t["id"] for t in first["tracks"]] == [1]
