"""The window for several streams: layout and click routing (pure), and a real grid window under Xvfb.

The window tests run ``python -m realtime_sam`` with two real video files,
press keys and click with xdotool, and read what the window shows from a
screenshot of it (ImageMagick's ``import``).
"""

from __future__ import annotations

import subprocess
import time
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
from test_ui import _screenshot, _wait, _xdo, xvfb_display  # noqa: F401  (fixture)

from realtime_sam.app.grid import GridLayout, GridWindow, route
from realtime_sam.app.ui import AddObject, ClearAll, Interaction, RefineObject, RemoveAt
from realtime_sam.types import Frame, FrameResult, ObjectPrompt, TrackResult, TrackState


def test_layout_places_tiles_in_a_near_square_grid_and_scales_big_frames_down():
    layout = GridLayout.for_sizes([(320, 240), (1280, 960), (160, 120)], max_cell=(640, 480))
    assert layout.cols == 2 and layout.cell == (640, 480) and layout.canvas_size == (1280, 960)
    assert layout.scale(0) == 1.0 and layout.scale(1) == 0.5 and layout.scale(2) == 1.0  # never enlarged
    assert [layout.origin(i) for i in range(3)] == [(0, 0), (640, 0), (0, 480)]
    assert layout.locate(10, 20) == (0, 10, 20)
    assert layout.locate(640 + 100, 50) == (1, 200, 100)  # back in the big stream's pixels
    assert layout.locate(400, 100) is None  # right of stream 0's 320-pixel tile
    assert layout.locate(700, 700) is None  # the empty fourth cell
    assert layout.locate(20, 500) == (2, 20, 20)


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
    assert route(click, layout, shown) == (1, AddObject(ObjectPrompt(points=((20.0, 40.0),), labels=(1,))))
    box = AddObject(ObjectPrompt(box=(10.0, 10.0, 110.0, 60.0)))
    assert route(box, layout, shown) == (0, box)
    assert route(RemoveAt(400.0, 100.0), layout, shown) == (1, RemoveAt(160.0, 200.0))
    assert route(ClearAll(), layout, shown) is None
    # One stream shown alone (key 2): the whole window is stream 1 at full size.
    alone = GridLayout.for_sizes([(640, 480)], max_cell=(640, 480))
    assert route(click, alone, [1]) == (1, click)


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


def test_a_click_in_a_real_grid_window_goes_to_that_stream(xvfb_display, tmp_path, checkpoint_path):  # noqa: F811
    from fixtures_app import app_command, app_env, frame_lines

    from realtime_sam.testing.synthetic import standard_scene, write_video

    clips = [write_video(standard_scene(320, 240, num_frames=300, seed=s), tmp_path / f"{n}.mp4", fps=5) for s, n in ((1, "left"), (2, "right"))]
    err_path = tmp_path / "app.err"
    with open(err_path, "w") as err:
        app = subprocess.Popen(
            app_command(
                "--source", str(clips[0]), "--source", str(clips[1]), "--realtime", "--save-masks", str(tmp_path / "{name}.jsonl"),
                "--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "100000",
            ),
            cwd=tmp_path, env=app_env(DISPLAY=xvfb_display), stdout=subprocess.DEVNULL, stderr=err,
        )
    display = xvfb_display
    try:
        wid = _wait(lambda: _xdo(display, "search", "--name", "^realtime-sam$").split()[:1], 180, "the window", app, err_path)[0]
        # Two 320x240 streams side by side.
        _wait(lambda: "Geometry: 640x240" in _xdo(display, "getwindowgeometry", wid), 60, "the grid", app, err_path)
        _wait(lambda: frame_lines(tmp_path / "right.jsonl") and frame_lines(tmp_path / "left.jsonl"), 60, "frames", app, err_path)
        _xdo(display, "mousemove", "--window", wid, "480", "120", "click", "1")  # the right tile's centre
        _wait(lambda: any(f["tracks"] for f in frame_lines(tmp_path / "right.jsonl")), 90, "the new object", app, err_path)
        _xdo(display, "key", "--window", wid, "q")
        assert app.wait(timeout=60) == 0, err_path.read_text()
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    right = frame_lines(tmp_path / "right.jsonl")
    left = frame_lines(tmp_path / "left.jsonl")
    assert all(not f["tracks"] for f in left)  # the click went to the right stream only
    first = next(f for f in right if f["tracks"])
    assert [t["id"] for t in first["tracks"]] == [1]
    assert "error" not in err_path.read_text().lower()


# Two flat colours far apart in every channel (BGR), each stream's whole picture.
LEFT_BGR, RIGHT_BGR = (40, 40, 200), (200, 160, 40)
LABEL_ROWS = 24  # each tile's bottom band, where its "1 left  tracks ..." label is drawn


def _flat_clip(path: Path, bgr: tuple[int, int, int], *, seconds: int = 200, fps: int = 5) -> Path:
    """A 320x240 H.264 file of one flat colour, long enough to outlast the test when played in real time."""
    import av

    image = np.empty((240, 320, 3), np.uint8)
    image[:] = bgr
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        for i in range(seconds * fps):
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def _share(image: np.ndarray, bgr: tuple[int, int, int]) -> float:
    """The fraction of ``image``'s pixels within 25 of ``bgr`` in every channel (H.264 shifts flat colours a little)."""
    return float(np.mean((np.abs(image.astype(int) - np.array(bgr)) <= 25).all(axis=2)))


def test_keys_show_one_stream_alone_and_back_to_the_grid_in_a_real_window(xvfb_display, tmp_path, checkpoint_path):  # noqa: F811
    from fixtures_app import app_command, app_env, frame_lines

    left = _flat_clip(tmp_path / "left.mp4", LEFT_BGR)
    right = _flat_clip(tmp_path / "right.mp4", RIGHT_BGR)
    err_path = tmp_path / "app.err"
    with open(err_path, "w") as err:
        app = subprocess.Popen(
            app_command(
                "--source", str(left), "--source", str(right), "--realtime", "--save-masks", str(tmp_path / "{name}.jsonl"),
                "--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "100000",
            ),
            cwd=tmp_path, env=app_env(DISPLAY=xvfb_display), stdout=subprocess.DEVNULL, stderr=err,
        )
    display = xvfb_display

    def geometry(size: str, what: str) -> None:
        _wait(lambda: f"Geometry: {size}" in _xdo(display, "getwindowgeometry", wid), 30, what, app, err_path)

    def press(key: str) -> None:
        _xdo(display, "key", "--window", wid, key)

    try:
        wid = _wait(lambda: _xdo(display, "search", "--name", "^realtime-sam$").split()[:1], 180, "the window", app, err_path)[0]
        geometry("640x240", "the grid")
        _wait(lambda: frame_lines(tmp_path / "left.jsonl") and frame_lines(tmp_path / "right.jsonl"), 60, "frames", app, err_path)
        body = np.s_[: 240 - LABEL_ROWS]

        def shows(name: str, width: int, want, what: str) -> np.ndarray:
            """The window's screenshot once it is ``width`` x 240 and ``want(shot)`` holds (the next paint may lag a key)."""

            def check() -> list[np.ndarray]:
                shot = _screenshot(display, wid, tmp_path / name)
                return [shot] if shot.shape == (240, width, 3) and want(shot) else []

            return _wait(check, 30, what, app, err_path)[0]

        def grid_shows_both(name: str) -> None:
            shows(name, 640, lambda s: _share(s[body][:, :320], LEFT_BGR) > 0.95 and _share(s[body][:, 320:], RIGHT_BGR) > 0.95,
                  f"each stream's colour in its own cell ({name})")

        grid_shows_both("grid.png")

        # 2: stream 2 alone, at its own size, over the whole window.
        press("2")
        geometry("320x240", "stream 2 alone")
        alone = shows("alone.png", 320, lambda s: _share(s[body], RIGHT_BGR) > 0.95, "stream 2's colour over the window")
        assert _share(alone[body], LEFT_BGR) == 0.0
        assert _share(alone, RIGHT_BGR) > 0.85  # the label band too, but for its text

        # g: the grid again, each stream in its cell.
        press("g")
        geometry("640x240", "the grid after g")
        grid_shows_both("grid_again.png")

        # A click at the window's centre while stream 2 is shown alone is a click on stream 2
        # (in the grid the same window pixel is in stream 1's tile).
        press("2")
        geometry("320x240", "stream 2 alone again")
        _xdo(display, "mousemove", "--window", wid, "160", "120", "click", "1")
        _wait(lambda: any(f["tracks"] for f in frame_lines(tmp_path / "right.jsonl")), 90, "the new object in stream 2", app, err_path)
        # 0: back to the grid as well.
        press("0")
        geometry("640x240", "the grid after 0")
        press("q")
        assert app.wait(timeout=60) == 0, err_path.read_text()[-2000:]
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert frame_lines(tmp_path / "left.jsonl") and all(not f["tracks"] for f in frame_lines(tmp_path / "left.jsonl"))
    first = next(f for f in frame_lines(tmp_path / "right.jsonl") if f["tracks"])
    assert [t["id"] for t in first["tracks"]] == [1]
    assert "right: new object" in err_path.read_text()


def test_d_and_right_click_on_no_object_say_so_in_a_real_grid_window(xvfb_display, tmp_path, checkpoint_path):  # noqa: F811
    """With xdotool over the real grid: d and a right-click on a stream where nothing is tracked
    answered nothing (stderr stayed empty of them); now they say what happened, with the stream's name."""
    from fixtures_app import app_command, app_env, frame_lines

    left = _flat_clip(tmp_path / "left.mp4", LEFT_BGR)
    right = _flat_clip(tmp_path / "right.mp4", RIGHT_BGR)
    err_path = tmp_path / "app.err"
    with open(err_path, "w") as err:
        app = subprocess.Popen(
            app_command(
                "--source", str(left), "--source", str(right), "--realtime", "--save-masks", str(tmp_path / "{name}.jsonl"),
                "--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "100000",
            ),
            cwd=tmp_path, env=app_env(DISPLAY=xvfb_display), stdout=subprocess.DEVNULL, stderr=err,
        )
    display = xvfb_display
    try:
        wid = _wait(lambda: _xdo(display, "search", "--name", "^realtime-sam$").split()[:1], 180, "the window", app, err_path)[0]
        _wait(lambda: "Geometry: 640x240" in _xdo(display, "getwindowgeometry", wid), 60, "the grid", app, err_path)
        _wait(lambda: frame_lines(tmp_path / "left.jsonl") and frame_lines(tmp_path / "right.jsonl"), 60, "frames", app, err_path)
        _xdo(display, "mousemove", "--window", wid, "480", "120")  # the right stream's tile, nothing tracked
        time.sleep(0.5)  # the motion event reaches the window's loop
        _xdo(display, "key", "--window", wid, "d")
        _wait(lambda: "right: no object under the cursor to remove" in err_path.read_text(), 30, "d's answer", app, err_path)
        _xdo(display, "click", "3")
        _wait(lambda: "right: no object selected: click an object first" in err_path.read_text(), 30, "the right-click's answer", app, err_path)
        _xdo(display, "key", "--window", wid, "q")
        assert app.wait(timeout=60) == 0, err_path.read_text()[-2000:]
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert all(not f["tracks"] for name in ("left", "right") for f in frame_lines(tmp_path / f"{name}.jsonl"))
