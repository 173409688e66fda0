"""The window for several streams: a grid of tiles, each click going to the stream under it.

::

    +-----------+-----------+
    | 1 door    | 2 yard    |     keys 1-9: show that stream alone (full size)
    |           |           |     0 or g:   back to the grid
    +-----------+-----------+     click / drag / right-click / d: as in the single-stream
    | 3 cam0    |           |     window, on the stream under the cursor
    +-----------+-----------+     space pause all, c clear all, a auto on/off (all), q / Esc quit

Each stream's frame is scaled to fit a cell (at most ``max_cell`` pixels,
never enlarged, and small enough that the grid fits 90% of the screen, as the
single-stream window does with :func:`~realtime_sam.app.ui.fit_view`); a
stream shown alone is fitted to the screen the same way. An anamorphic
stream (non-square pixels) is shown at its display shape. Once the user
resizes the window, the grid (or the stream shown alone) is laid out again at
the new size, as the single-stream window does. Clicks are mapped back to that
stream's pixels (:meth:`GridLayout.locate`). The mouse and key handling is
:class:`~realtime_sam.app.ui.Interaction`'s, shared with the single-stream
window; :class:`GridLayout` and :func:`route` are pure and tested without a
window. The window itself runs on the caller's thread and starts none.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import cv2
import numpy as np

from realtime_sam.app.ui import (
    AddObject,
    ClearAll,
    Hint,
    Interaction,
    Quit,
    RefineObject,
    RemoveAt,
    SaveSnapshot,
    snapshot_path,
    Selection,
    ToggleAuto,
    ToggleHelp,
    TogglePause,
    UserResize,
    window_error,
    SCREEN_FILL,
    fit_view,
    new_object_message,
    pixel_shape,
    require_display,
    screen_size,
)
from realtime_sam.errors import PromptError
from realtime_sam.output.image_file import write_image
from realtime_sam.output.render import Renderer
from realtime_sam.tracking.prompts import clamp_prompt, validate_prompt
from realtime_sam.types import ObjectPrompt

__all__ = ["GridLayout", "route", "GridWindow"]


@dataclass(frozen=True)
class GridLayout:
    """Where each stream's tile sits in the window.

    Attributes:
        sizes: each stream's frame ``(width, height)``, stored pixels.
        cell: ``(width, height)`` of a grid cell.
        cols: cells per row.
        aspects: each stream's sample aspect ratio (width over height of one pixel as
            shown; empty: all square).
        window: the size the user gave the window (``None``: not resized): the image is that
            size, tiles may be enlarged to fill their cells, and the grid is centred in it.
    """

    sizes: tuple[tuple[int, int], ...]
    cell: tuple[int, int]
    cols: int
    aspects: tuple[float, ...] = ()
    window: tuple[int, int] | None = None

    @classmethod
    def for_sizes(
        cls,
        sizes: Sequence[tuple[int, int]],
        max_cell: tuple[int, int] = (640, 480),
        *,
        aspects: Sequence[float] | None = None,
        window: tuple[int, int] | None = None,
    ) -> "GridLayout":
        """A near-square grid (``ceil(sqrt(K))`` columns) whose cells fit the largest scaled frame
        (each at its display shape, ``width * aspect`` by ``height``). With ``window`` (the size
        the user gave the window) each cell is its share of the window instead of ``max_cell``,
        and frames are scaled up or down to fill it."""
        sizes = tuple((int(w), int(h)) for w, h in sizes)
        if not sizes:
            raise ValueError("a grid needs at least one stream")
        aspects = tuple(float(a) for a in aspects) if aspects else ()
        if aspects and len(aspects) != len(sizes):
            raise ValueError(f"{len(aspects)} aspect ratios for {len(sizes)} streams")
        cols = math.ceil(math.sqrt(len(sizes)))
        if window is not None:
            window = (max(1, int(window[0])), max(1, int(window[1])))
            rows = math.ceil(len(sizes) / cols)
            max_cell = (max(1, window[0] // cols), max(1, window[1] // rows))
        layout = cls(sizes, tuple(max_cell), cols, aspects, window)  # type: ignore[arg-type]
        scaled = [layout.tile_size(i) for i in range(len(sizes))]
        return replace(layout, cell=(max(w for w, _ in scaled), max(h for _, h in scaled)))

    def aspect(self, i: int) -> float:
        """Stream ``i``'s sample aspect ratio (1: square pixels)."""
        return self.aspects[i] if self.aspects else 1.0

    def scales(self, i: int) -> tuple[float, float]:
        """Tile ``i``'s pixels per stream pixel, across and down: the display shape's fit in a cell, never
        enlarged unless the user resized the window."""
        w, h = self.sizes[i]
        a = self.aspect(i)
        s = min(math.inf if self.window else 1.0, self.cell[0] / max(w * a, 1), self.cell[1] / max(h, 1))
        return s * a, s

    def tile_size(self, i: int) -> tuple[int, int]:
        """Tile ``i``'s ``(width, height)`` in the window."""
        w, h = self.sizes[i]
        sx, sy = self.scales(i)
        return min(self.cell[0], max(1, round(w * sx))), min(self.cell[1], max(1, round(h * sy)))

    def origin(self, i: int) -> tuple[int, int]:
        """Top-left corner of tile ``i`` in the window."""
        left = top = 0
        if self.window is not None:
            grid = self._grid_size
            left, top = max(0, (self.window[0] - grid[0]) // 2), max(0, (self.window[1] - grid[1]) // 2)
        return left + (i % self.cols) * self.cell[0], top + (i // self.cols) * self.cell[1]

    @property
    def _grid_size(self) -> tuple[int, int]:
        rows = math.ceil(len(self.sizes) / self.cols)
        return self.cols * self.cell[0], rows * self.cell[1]

    @property
    def canvas_size(self) -> tuple[int, int]:
        """The window's ``(width, height)``: the user's size once resized, else the grid's."""
        return self.window if self.window is not None else self._grid_size

    def locate(self, x: float, y: float) -> tuple[int, float, float] | None:
        """Window pixel ``(x, y)`` -> ``(stream index, x, y in that stream's pixels)``; ``None`` off every tile."""
        for i in range(len(self.sizes)):
            ox, oy = self.origin(i)
            tw, th = self.tile_size(i)
            if ox <= x < ox + tw and oy <= y < oy + th:
                return (i, *self.to_stream(i, x, y))
        return None

    def to_stream(self, i: int, x: float, y: float) -> tuple[float, float]:
        """Window pixel ``(x, y)`` -> stream ``i``'s pixel under it (pixel centres map to pixel centres)."""
        ox, oy = self.origin(i)
        sx, sy = self.scales(i)
        return (x - ox + 0.5) / sx - 0.5, (y - oy + 0.5) / sy - 0.5

    def compose(self, tiles: Sequence[np.ndarray | None]) -> np.ndarray:
        """The window image (``HxWx3 uint8``) from one ``HxWx3`` image per stream (``None``: not shown yet)."""
        W, H = self.canvas_size
        canvas = np.zeros((H, W, 3), np.uint8)
        for i, tile in enumerate(tiles):
            if tile is None:
                continue
            tw, th = self.tile_size(i)
            if tile.shape[:2] != (th, tw):
                sx, sy = self.scales(i)
                shrink = sx <= 1 and sy <= 1
                tile = cv2.resize(tile, (tw, th), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
            ox, oy = self.origin(i)
            canvas[oy : oy + th, ox : ox + tw] = tile[: H - oy, : W - ox]
        return canvas


def route(command: object, layout: GridLayout, shown: Sequence[int]) -> tuple[int, object] | None:
    """A window command -> ``(stream position, command in that stream's pixels)``; ``None`` when it hits no tile.

    ``shown`` maps tile positions to stream positions (all streams in the
    grid, or the one stream shown alone). A box goes to the stream under
    its centre, clamped to that stream's frame later.
    """
    if isinstance(command, AddObject):
        p = command.prompt
        if p.box is not None:
            x0, y0, x1, y1 = p.box
            hit = layout.locate((x0 + x1) / 2, (y0 + y1) / 2)
        else:
            hit = layout.locate(*p.points[0])
        if hit is None:
            return None
        i = hit[0]

        def back(x: float, y: float) -> tuple[float, float]:
            return layout.to_stream(i, x, y)

        box = None if p.box is None else (*back(p.box[0], p.box[1]), *back(p.box[2], p.box[3]))
        points = tuple(back(x, y) for x, y in p.points)
        return shown[i], AddObject(replace(p, box=box, points=points))
    if isinstance(command, (RemoveAt, RefineObject)):
        hit = layout.locate(command.x, command.y)
        if hit is None:
            return None
        return shown[hit[0]], type(command)(hit[1], hit[2])
    return None


class GridWindow:
    """The OpenCV window over a :class:`~realtime_sam.app.multi.MultiPipeline`; it owns the window and nothing else."""

    def __init__(
        self,
        *,
        title: str = "realtime-sam",
        renderer: Renderer | None = None,
        max_cell: tuple[int, int] = (640, 480),
        on_message: Callable[[str], None] | None = None,
        snapshot_dir=".",
    ) -> None:
        self.title = title
        self.renderer = renderer if renderer is not None else Renderer()
        self.max_cell = max_cell
        self.on_message = on_message if on_message is not None else (lambda text: print(text, file=sys.stderr))
        self.snapshot_dir = snapshot_dir
        self.interaction = Interaction()
        self.focus: int | None = None  # a stream shown alone, or None for the grid
        self.show_help = False
        # Per stream, the object a right-click refines (its newest added), as in the single window.
        self.selections: dict[int, Selection] = {}
        self._pending: list[object] = []
        self._open = False
        self.screen: tuple[int, int] | None = None  # the screen's size, read when the window opens
        self._resize = UserResize()

    def open(self) -> None:
        if self._open:
            return
        require_display()
        self.screen = screen_size()
        try:
            cv2.namedWindow(self.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
            cv2.setMouseCallback(self.title, lambda e, x, y, f, _p=None: self._pending.extend(self.interaction.on_mouse(e, x, y, f)))
        except cv2.error as exc:
            raise window_error(exc) from None
        self._open = True

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                cv2.destroyWindow(self.title)
                cv2.waitKey(1)
            except cv2.error:
                pass

    def __enter__(self) -> "GridWindow":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def layout(
        self, sizes: Sequence[tuple[int, int]], aspects: Sequence[float] | None = None
    ) -> tuple[GridLayout, list[int]]:
        """The layout for the current view and which stream each tile shows.

        A stream shown alone takes the size :func:`~realtime_sam.app.ui.fit_view` gives it (its
        display shape, shrunk to fit the screen); in the grid each cell is at most ``max_cell``
        and the grid at most :data:`~realtime_sam.app.ui.SCREEN_FILL` of the screen. Once the
        user resized the window (:attr:`window_size`) both are laid out in that size instead, as
        large as fits, centred.
        """
        aspects = list(aspects) if aspects else [1.0] * len(sizes)
        if self.focus is not None and self.focus < len(sizes):
            (w, h), a = sizes[self.focus], aspects[self.focus]
            if self.window_size is not None:
                return GridLayout.for_sizes([(w, h)], aspects=[a], window=self.window_size), [self.focus]
            view = fit_view(w, h, sar=a, screen=self.screen)
            return GridLayout.for_sizes([(w, h)], max_cell=(view.width, view.height), aspects=[a]), [self.focus]
        if self.window_size is not None:
            return GridLayout.for_sizes(sizes, aspects=aspects, window=self.window_size), list(range(len(sizes)))
        cell = self.max_cell
        if self.screen is not None:
            cols = math.ceil(math.sqrt(len(sizes)))
            rows = math.ceil(len(sizes) / cols)
            share = (int(SCREEN_FILL * self.screen[0] / cols), int(SCREEN_FILL * self.screen[1] / rows))
            cell = (max(1, min(cell[0], share[0])), max(1, min(cell[1], share[1])))
        return GridLayout.for_sizes(sizes, cell, aspects=aspects), list(range(len(sizes)))

    def run(self, multi, *, on_result: Callable[[object], None] | None = None) -> str:
        """Show every stream until all end (``"ended"``), ``q``/``Esc`` (``"quit"``) or the window closes (``"closed"``)."""
        self.open()
        runs = multi.runs
        # Each stream's tile follows the frame it shows (a source's size is its first frame's: an
        # image folder of several sizes, a stream that changes resolution), so the picture keeps its
        # shape and a click maps back to that frame's pixels.
        sizes = [tuple(r.source.size) for r in runs]
        aspects = [pixel_shape(r.source) for r in runs]
        last: list = [None] * len(runs)
        index = {r.name: i for i, r in enumerate(runs)}
        try:
            while True:
                item = multi.poll(0.01)
                dirty = False
                if item is None and multi.ended:
                    return "ended"
                if item is not None:
                    i = index[item.stream]
                    last[i] = item
                    sizes[i] = (int(item.result.frame.width), int(item.result.frame.height))
                    self._selection(i).observe(item.result)
                    dirty = True
                    if on_result is not None:
                        on_result(item)
                key = cv2.waitKeyEx(1)
                if ord("1") <= key <= ord("9") and key - ord("1") < len(runs):
                    self.focus, dirty = key - ord("1"), True
                elif key in (ord("0"), ord("g")):
                    self.focus, dirty = None, True
                else:
                    self._pending.extend(self.interaction.on_key(key))
                if self._resize.check(self.title):  # the grid is laid out again at the user's size
                    dirty = True
                layout, shown = self.layout(sizes, aspects)
                commands, self._pending = self._pending, []
                for command in commands:
                    dirty = True
                    if isinstance(command, Quit):
                        multi.stop()
                        return "quit"
                    self._apply(command, layout, shown, runs, last)
                if dirty:
                    self._draw(layout, shown, runs, last)
                try:
                    if cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1:
                        multi.stop()
                        return "closed"
                except cv2.error:
                    multi.stop()
                    return "closed"
        finally:
            multi.stop()
            self.close()

    @property
    def window_size(self) -> tuple[int, int] | None:
        """The size the user gave the window, once resized (:class:`~realtime_sam.app.ui.UserResize`):
        as in the single window, the grid is laid out again at it (the window then takes the image's size)."""
        return self._resize.size

    def _selection(self, i: int) -> Selection:
        return self.selections.setdefault(i, Selection())

    def _apply(self, command, layout: GridLayout, shown: list[int], runs, last) -> None:
        try:
            if isinstance(command, TogglePause):
                paused = any(r.pipeline.paused for r in runs)
                for r in runs:
                    r.pipeline.resume() if paused else r.pipeline.pause()
                self.on_message("resumed" if paused else "paused")
                return
            if isinstance(command, ClearAll):
                for r in runs:
                    r.engine.clear()
                self.selections.clear()
                self.on_message("cleared all objects")
                return
            if isinstance(command, ToggleAuto):
                enabled = not any(r.engine.auto for r in runs)
                for r in runs:
                    r.engine.set_auto(enabled)
                self.on_message(f"auto-discovery {'on' if enabled else 'off'}")
                return
            if isinstance(command, ToggleHelp):
                self.show_help = not self.show_help
                return
            if isinstance(command, Hint):
                self.on_message(command.text)
                return
            if isinstance(command, SaveSnapshot):
                self._snapshot(layout, shown, runs, last)
                return
            routed = route(command, layout, shown)
            if routed is None:
                # Off every stream's picture (the grid's empty cell, the band beside a smaller frame).
                if isinstance(command, RemoveAt):
                    self.on_message("no object under the cursor to remove")
                elif isinstance(command, RefineObject):
                    self.on_message("no stream under the cursor: right-click inside a stream's picture")
                elif isinstance(command, AddObject):
                    self.on_message("no stream under the cursor: click inside a stream's picture")
                return
            i, cmd = routed
            run, result = runs[i], last[i]
            if result is None:
                self.on_message(f"{run.name}: no frame yet; wait for the video before clicking")
                return
            w, h = result.result.frame.width, result.result.frame.height
            selection = self._selection(i)
            if isinstance(cmd, AddObject):
                prompt = clamp_prompt(validate_prompt(cmd.prompt, "click"), w, h)
                selection.object_added(run.engine.add_object(prompt))
                self.on_message(f"{run.name}: {new_object_message(prompt)}")  # as the single window says it
            elif isinstance(cmd, RemoveAt):
                target = run.engine.track_at(cmd.x, cmd.y)
                if target is None:
                    self.on_message(f"{run.name}: no object under the cursor to remove")
                    return
                run.engine.remove_object(target)
                if selection.selected == target:
                    selection.selected = None
                self.on_message(f"{run.name}: removed object {target}")
            elif isinstance(cmd, RefineObject):
                # As in the single window: the stream's newest added object, else the one under the cursor.
                target = selection.selected
                if target is None:
                    target = run.engine.track_at(cmd.x, cmd.y)
                if target is None:
                    self.on_message(f"{run.name}: no object selected: click an object first, then right-click to exclude areas")
                    return
                prompt = clamp_prompt(ObjectPrompt(points=((cmd.x, cmd.y),), labels=(0,), track_id=target), w, h)
                run.engine.add_object(validate_prompt(prompt, "right-click"))
                self.on_message(f"{run.name}: excluded point {int(cmd.x)},{int(cmd.y)} from object {target}")
        except PromptError as exc:
            self.on_message(str(exc))

    def _image(self, layout: GridLayout, shown: list[int], runs, last) -> np.ndarray:
        tiles = []
        for i in shown:
            item = last[i]
            if item is None:
                tiles.append(None)
                continue
            tiles.append(self.renderer.annotate(item.result.frame.image, item.result))
        canvas = layout.compose(tiles)
        # Each tile's label drawn at the window's size (on a 1080p frame before it was shrunk it was unreadable).
        for pos, i in enumerate(shown):
            item = last[i]
            if item is None:
                continue
            age = "-" if item.encode_age_s is None else f"{item.encode_age_s:.1f}s"
            label = f"{i + 1} {runs[i].name}  tracks {len(item.tracks)}  encode age {age}"
            (ox, oy), (tw, th) = layout.origin(pos), layout.tile_size(pos)
            tile = canvas[oy : oy + th, ox : ox + tw]  # a view: the label is cut at the tile's edge
            cv2.putText(tile, label, (6, th - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
            cv2.putText(tile, label, (6, th - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        return canvas

    def _draw(self, layout: GridLayout, shown: list[int], runs, last) -> None:
        image = self._image(layout, shown, runs, last)
        box = self.interaction.preview_box
        if box is not None:
            image = self.renderer.draw_box_preview(image, box)
        if self.show_help:
            keys = (("1-9", "show one stream"), ("0 / g", "back to the grid"), ("click/drag", "new object in that stream"),
                    ("d", "remove object under cursor"), ("space", "pause all"), ("q / Esc", "quit"))
            image = self.renderer.draw_help(image, keys, title="Keys (h to hide)")
        cv2.imshow(self.title, image)
        self._resize.drawn(image.shape[1], image.shape[0])

    def _snapshot(self, layout, shown, runs, last) -> None:
        from pathlib import Path

        folder = Path(self.snapshot_dir)
        path = snapshot_path(folder, f"realtime-sam-grid-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ok = write_image(path, self._image(layout, shown, runs, last))
        except (OSError, cv2.error):
            ok = False
        self.on_message(f"snapshot saved: {path}" if ok else f"cannot save snapshot {path}")
