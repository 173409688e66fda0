"""The live window: show the tracked video and turn clicks and keys into commands.

The frame is shown scaled to fit the screen (:func:`fit_view`): a frame larger
than 90% of the screen's width or height is shrunk to fit, one smaller than
320x240 enlarged to that, and once the user resizes the window the frame fills
it, letterboxed. An anamorphic frame (non-square pixels, the source's
``sample_aspect_ratio``) is shown at its display shape, as players show it
(720x576 at 64:45 as 1024x576). The heads-up line and the key help are drawn on the image as
shown, so they keep one size on screen. Mouse positions are mapped back to
frame pixels (:class:`View`), so a click prompts the pixel under the cursor
whatever the scale. The window is ``WINDOW_AUTOSIZE | WINDOW_GUI_NORMAL``
(no Qt toolbar): it takes the size of the image shown.

Mouse:

* **click** (left button, moved less than ``drag_threshold_px``): a new object
  from a positive point;
* **drag** (left button, moved further): a new object from the dragged box,
  previewed while dragging;
* **right-click** or **shift-click**: a negative point ("not this") added to
  the *selected* object -- the one most recently added (or, when none is
  selected, the one under the cursor).

Keys: ``space`` pause/resume, ``a`` auto-discovery on/off, ``d`` or
``Delete`` remove the object under the cursor (before the mouse was ever over
the window: a message saying to point at an object first), ``c`` clear all, ``s`` save a
snapshot PNG, ``h`` show/hide the key help, ``q`` or ``Esc`` quit. Closing
the window quits too.

The code is split so the event handling can be tested without a window:
:class:`Interaction` is a pure state machine from OpenCV mouse/key events to
:data:`Command` values, :class:`Selection` follows which object is selected,
and :class:`LiveWindow` owns the OpenCV window and applies the commands to
the pipeline and engine.

Import OpenCV before PyAV in any program that opens this window: PyAV's
Linux wheel bundles its own ``libxcb``, and when it is loaded first, OpenCV's
Qt backend blocks forever in the first ``namedWindow`` (measured under Xvfb
with av 18 and opencv-python 5.0). The ``realtime-sam`` command does so.
"""

from __future__ import annotations

import collections
import math
import os
import re
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, Union

import cv2
import numpy as np

from realtime_sam.errors import ConfigError, PromptError, RealtimeSamError
from realtime_sam.output.image_file import write_image
from realtime_sam.output.render import HudInfo, Renderer
from realtime_sam.tracking.prompts import clamp_prompt, validate_prompt
from realtime_sam.types import Box, FrameResult, ObjectPrompt

__all__ = [
    "WindowConfig",
    "HELP_KEYS",
    "AddObject",
    "RefineObject",
    "RemoveAt",
    "ClearAll",
    "TogglePause",
    "ToggleAuto",
    "SaveSnapshot",
    "ToggleHelp",
    "Quit",
    "Hint",
    "Command",
    "Interaction",
    "Selection",
    "LiveWindow",
    "DisplayRate",
    "View",
    "fit_view",
    "pixel_shape",
    "new_object_message",
    "screen_size",
    "UserResize",
    "WindowError",
    "display_available",
    "display_problem",
    "opencv_gui_problem",
    "require_display",
]

HELP_KEYS: tuple[tuple[str, str], ...] = (
    ("click", "track a new object (positive point)"),
    ("drag", "track a new object (box)"),
    ("shift/r-click", "exclude a point from the selected object"),
    ("space", "pause / resume"),
    ("a", "auto-discovery on / off"),
    ("d / Del", "remove the object under the cursor"),
    ("c", "clear all objects"),
    ("s", "save a snapshot PNG"),
    ("h", "show / hide this help"),
    ("q / Esc", "quit"),
)

# Key codes from cv2.waitKeyEx: Delete is 0xFFFF under Qt/GTK on X11 (measured
# under Xvfb), 0x2E0000 on Windows, 127 on macOS.
_DELETE_CODES = frozenset({0xFFFF, 0x2E0000, 127})
_ESC = 27


class WindowError(RealtimeSamError):
    """The live window cannot be opened (no display, or OpenCV without a GUI)."""


def display_available() -> bool:
    """Whether a window can be shown (:func:`display_problem` finds nothing in the way)."""
    return display_problem() is None


def require_display(hint: str = "run with --headless") -> None:
    """Raise :class:`WindowError` with why no window can be shown here (:func:`display_problem`) and
    ``hint``, what to do instead; nothing when one can."""
    problem = display_problem()
    if problem is None:
        return
    if problem == _no_gui():  # display_problem's first check: no display helps, installing the GUI build does
        raise WindowError(_no_gui_message(hint))
    raise WindowError(f"no display to show a window on ({problem}); {hint}")


# Both wheels install the same cv2 folder: removing one of two installed breaks the other's.
_GUI_INSTALL = "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python"


def _no_gui_message(hint: str) -> str:
    return f"{_no_gui()}; {hint}, or install the GUI build: {_GUI_INSTALL}"


def _no_gui() -> str:
    return f"OpenCV {cv2.__version__} here has no window support (opencv-python-headless, or another build without a GUI)"


def opencv_gui_problem() -> str | None:
    """Why the installed OpenCV cannot open a window at all, whatever the display; ``None`` when it
    has a GUI backend or that cannot be told.

    opencv-python-headless (which servers, Docker images and other packages bring in, beside or in
    place of opencv-python) has none: its ``namedWindow`` raises "The function is not implemented.
    Rebuild the library with ... GTK+", advice meant for a source build, and only once the outputs
    are open. Told by the ``GUI:`` line of OpenCV's build information: ``NONE`` in
    opencv-python-headless (4.8 and 5.1 measured), the backend in opencv-python (``QT5``).
    """
    try:
        info = cv2.getBuildInformation()
    except cv2.error:
        return None
    for line in info.splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            return _no_gui() if value.strip().upper() == "NONE" else None
    return None


def window_error(exc: "cv2.error", hint: str = "run with --headless") -> WindowError:
    """The one-line :class:`WindowError` for ``namedWindow``'s ``exc``."""
    text = str(exc).strip()
    if "not implemented" in text.lower():  # a build without a GUI that opencv_gui_problem missed
        return WindowError(_no_gui_message(hint))
    reason = text.splitlines()[-1] if text else "unknown error"
    return WindowError(f"cannot open a window ({reason}); {hint}")


def display_problem() -> str | None:
    """Why no window can be shown here, in a few words; ``None`` when one can, as far as can be told.

    First, OpenCV must have a GUI (:func:`opencv_gui_problem`). Then: always ``None`` on Windows and
    macOS. Elsewhere ``DISPLAY`` or
    ``WAYLAND_DISPLAY`` must be set, and an X ``DISPLAY`` must have a server
    that takes connections: with a stale one (an SSH session's forwarding
    gone, an Xvfb that was stopped) OpenCV's Qt aborts the whole process at
    the first window ("could not connect to display", signal 6) after the
    outputs were opened. A server that takes the connection but then refuses
    it (no authorisation) is not detected here.
    """
    gui = opencv_gui_problem()
    if gui is not None:
        return gui
    if sys.platform in ("win32", "darwin"):
        return None
    display = os.environ.get("DISPLAY", "")
    if not display:
        return None if os.environ.get("WAYLAND_DISPLAY") else "DISPLAY is not set"
    if _x_server_answers(display) is False:
        return f"no X server answers at DISPLAY={display}"
    return None


_X_TCP_PORT = 6000  # an X server's TCP port is this plus its display number
_X_CONNECT_TIMEOUT_S = 3.0


def _x_server_answers(display: str) -> bool | None:
    """Whether the X server that ``display`` (``[protocol/][host]:number[.screen]``) names takes a connection.

    Tried as libxcb does: a local display (no host, or ``unix``) on the
    abstract socket ``@/tmp/.X11-unix/X<number>`` (Linux), then that file,
    then (no host only) TCP on localhost; a host on TCP port
    ``6000 + number``. Only the connection is made, no X handshake. ``None``
    for a ``DISPLAY`` this cannot read (left to the GUI toolkit to judge).
    """
    m = re.fullmatch(r"(?:(?P<protocol>[A-Za-z]+)/)?(?P<host>[^:/]*):(?P<number>\d+)(?:\.\d+)?", display)
    if m is None:
        return None
    protocol, host, number = (m["protocol"] or "").lower(), m["host"], int(m["number"])
    tries: list[tuple[str, object]] = []
    if protocol in ("", "unix", "local") and host in ("", "unix"):
        path = f"/tmp/.X11-unix/X{number}"
        if sys.platform.startswith("linux"):
            tries.append(("unix", "\0" + path))
        tries.append(("unix", path))
    if protocol in ("", "tcp", "inet", "inet6") and host != "unix":
        tries.append(("tcp", (host or "localhost", _X_TCP_PORT + number)))
    if not tries:
        return None
    for kind, address in tries:
        try:
            if kind == "tcp":
                socket.create_connection(address, timeout=_X_CONNECT_TIMEOUT_S).close()  # type: ignore[arg-type]
            else:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                    conn.settimeout(_X_CONNECT_TIMEOUT_S)
                    conn.connect(address)
        except OSError:
            continue
        return True
    return False


def screen_size() -> tuple[int, int] | None:
    """The screen's ``(width, height)`` in pixels, where it can be told: on X (``DISPLAY``, through
    libX11), the monitor under the mouse pointer where Xinerama (or RandR's emulation of it) lists
    monitors, else the whole display; on Windows, the primary monitor's; ``None`` elsewhere (macOS,
    Wayland without XWayland) or when it cannot be read."""
    import ctypes
    import ctypes.util

    try:
        if sys.platform == "win32":
            user32 = ctypes.windll.user32  # type: ignore[attr-defined]
            width, height = int(user32.GetSystemMetrics(0)), int(user32.GetSystemMetrics(1))
        elif sys.platform != "darwin" and os.environ.get("DISPLAY"):
            name = ctypes.util.find_library("X11")
            if name is None:
                return None
            x11 = ctypes.cdll.LoadLibrary(name)
            x11.XOpenDisplay.restype = ctypes.c_void_p
            x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
            x11.XDefaultScreen.argtypes = [ctypes.c_void_p]
            x11.XDisplayWidth.argtypes = [ctypes.c_void_p, ctypes.c_int]
            x11.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
            x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
            conn = x11.XOpenDisplay(None)
            if not conn:
                return None
            try:
                monitor = _x_monitor_at_pointer(x11, conn)
                if monitor is not None:
                    width, height = monitor
                else:
                    number = x11.XDefaultScreen(conn)
                    width, height = int(x11.XDisplayWidth(conn, number)), int(x11.XDisplayHeight(conn, number))
            finally:
                x11.XCloseDisplay(conn)
        else:
            return None
    except (OSError, AttributeError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def _x_monitor_at_pointer(x11: object, conn: int) -> tuple[int, int] | None:
    """With several monitors (Xinerama, or RandR's Xinerama emulation, which lists ``xrandr
    --listmonitors``), the ``(width, height)`` of the one under the mouse pointer (the first
    listed when the pointer is on none): a window is opened where the user looks, and the whole
    desktop's size would let it span monitors. ``None`` without libXinerama or when it is off."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("Xinerama")
    if name is None:
        return None

    class ScreenInfo(ctypes.Structure):  # XineramaScreenInfo
        _fields_ = [
            ("screen_number", ctypes.c_int),
            ("x_org", ctypes.c_short),
            ("y_org", ctypes.c_short),
            ("width", ctypes.c_short),
            ("height", ctypes.c_short),
        ]

    xinerama = ctypes.cdll.LoadLibrary(name)
    xinerama.XineramaIsActive.argtypes = [ctypes.c_void_p]
    xinerama.XineramaQueryScreens.restype = ctypes.POINTER(ScreenInfo)
    xinerama.XineramaQueryScreens.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_int)]
    if not xinerama.XineramaIsActive(conn):
        return None
    count = ctypes.c_int(0)
    screens = xinerama.XineramaQueryScreens(conn, ctypes.byref(count))
    if not screens:
        return None
    try:
        monitors = [(s.x_org, s.y_org, s.width, s.height) for s in screens[: count.value]]
    finally:
        x11.XFree.argtypes = [ctypes.c_void_p]  # type: ignore[attr-defined]
        x11.XFree(screens)  # type: ignore[attr-defined]
    if not monitors:
        return None
    x11.XDefaultRootWindow.restype = ctypes.c_ulong  # type: ignore[attr-defined]
    x11.XDefaultRootWindow.argtypes = [ctypes.c_void_p]  # type: ignore[attr-defined]
    x11.XQueryPointer.argtypes = [ctypes.c_void_p, ctypes.c_ulong] + [ctypes.c_void_p] * 7  # type: ignore[attr-defined]
    root, child = ctypes.c_ulong(), ctypes.c_ulong()
    px, py, wx, wy, mask = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_uint()
    on_screen = x11.XQueryPointer(  # type: ignore[attr-defined]
        conn, x11.XDefaultRootWindow(conn), ctypes.byref(root), ctypes.byref(child),  # type: ignore[attr-defined]
        ctypes.byref(px), ctypes.byref(py), ctypes.byref(wx), ctypes.byref(wy), ctypes.byref(mask),
    )
    if on_screen:
        for x, y, w, h in monitors:
            if x <= px.value < x + w and y <= py.value < y + h:
                return int(w), int(h)
    x, y, w, h = monitors[0]
    return int(w), int(h)


SCREEN_FILL = 0.9
"""The largest share of the screen's width and height the window takes by itself (room for its title bar and a task bar)."""
MIN_VIEW = (320, 240)
"""A frame smaller than this (both sides) is shown enlarged to it: the heads-up line and help need the room."""


@dataclass(frozen=True)
class View:
    """How a frame is shown: stretched by ``scale_x`` across and ``scale_y`` down (they differ for
    an anamorphic frame, whose pixels are shown wider or narrower than tall), its top-left corner
    at ``(left, top)`` of an image ``width x height`` (black around it where the window's shape
    differs from the frame's)."""

    scale_x: float
    scale_y: float
    left: int
    top: int
    width: int
    height: int

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """The frame pixel under pixel ``(x, y)`` of the image shown (pixel centres map to pixel centres)."""
        return (x - self.left + 0.5) / self.scale_x - 0.5, (y - self.top + 0.5) / self.scale_y - 0.5

    def to_view(self, x: float, y: float) -> tuple[float, float]:
        """The pixel of the image shown where frame pixel ``(x, y)`` is."""
        return (x + 0.5) * self.scale_x - 0.5 + self.left, (y + 0.5) * self.scale_y - 0.5 + self.top

    def show(self, image: np.ndarray) -> np.ndarray:
        """``image`` (the frame, ``HxWx3``) as shown: scaled and placed in a ``height x width`` image."""
        h, w = image.shape[:2]
        inner = (max(1, int(round(w * self.scale_x))), max(1, int(round(h * self.scale_y))))
        if inner != (w, h):
            shrink = self.scale_x <= 1 and self.scale_y <= 1
            image = cv2.resize(image, inner, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        if (self.left, self.top, self.width, self.height) == (0, 0, *inner):
            return image
        out = np.zeros((self.height, self.width, 3), np.uint8)
        y1, x1 = min(self.height, self.top + inner[1]), min(self.width, self.left + inner[0])
        out[self.top : y1, self.left : x1] = image[: y1 - self.top, : x1 - self.left]
        return out


def fit_view(
    width: int,
    height: int,
    *,
    sar: float = 1.0,
    screen: tuple[int, int] | None = None,
    window: tuple[int, int] | None = None,
) -> View:
    """How to show a ``width x height`` frame whose pixels are ``sar`` (width over height) as wide as tall.

    The frame is shown at its display shape, ``width * sar`` by ``height`` (an anamorphic
    720x576 frame at 64:45 as 1024x576), as players show it. With ``window`` (the size the user
    gave the window): as large as fits in it, centred. Otherwise at that size, enlarged to
    :data:`MIN_VIEW` when smaller and shrunk to :data:`SCREEN_FILL` of ``screen`` when larger,
    its shape kept.
    """
    sar = float(sar) if sar and math.isfinite(float(sar)) and float(sar) > 0 else 1.0
    shown_w = width * sar  # the display width at one screen pixel per frame row
    if window is not None and window[0] > 0 and window[1] > 0:
        scale = min(window[0] / shown_w, window[1] / height)
        inner_w, inner_h = max(1, int(round(shown_w * scale))), max(1, int(round(height * scale)))
        return View(scale * sar, scale, (window[0] - inner_w) // 2, (window[1] - inner_h) // 2, window[0], window[1])
    scale = max(1.0, min(MIN_VIEW[0] / shown_w, MIN_VIEW[1] / height))
    if screen is not None:
        scale = min(scale, SCREEN_FILL * screen[0] / shown_w, SCREEN_FILL * screen[1] / height)
    return View(scale * sar, scale, 0, 0, max(1, int(round(shown_w * scale))), max(1, int(round(height * scale))))


class UserResize:
    """Tells a resize of a ``WINDOW_AUTOSIZE`` window by the user (a window manager, ``xdotool
    windowsize``) from the sizes drawn in it; :attr:`size` is the size the user gave it, once resized.

    Qt shows the image stretched to the largest size that fits the window, its shape kept, and
    ``cv2.getWindowImageRect`` reports that size. Right after an ``imshow`` of a new size the window
    still reports the one before until Qt has handled it (measured under Xvfb), which is no resize
    by the user: a size that is neither of the last two drawn (:meth:`drawn`) is the user's. Used by
    the single window (:class:`LiveWindow`) and the grid (:class:`~realtime_sam.app.grid.GridWindow`).
    """

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None
        self._drawn: tuple[tuple[int, int], ...] = ()  # the sizes of the last two images drawn

    def drawn(self, width: int, height: int) -> None:
        """Note an ``imshow`` of a ``width x height`` image."""
        size = (int(width), int(height))
        if not self._drawn or size != self._drawn[-1]:
            self._drawn = (*self._drawn[-1:], size)

    def check(self, title: str) -> bool:
        """Whether the window ``title``'s image area was resized by the user since the last check
        (then :attr:`size` is the new size); false before anything was drawn."""
        if not self._drawn:
            return False
        try:
            _, _, w, h = cv2.getWindowImageRect(title)
        except cv2.error:
            return False
        size = (int(w), int(h))
        if w <= 0 or h <= 0 or size in self._drawn or size == self.size:
            return False
        self.size = size
        return True


@dataclass(frozen=True)
class WindowConfig:
    """How the live window looks and reacts.

    Attributes:
        title: window title (also how tests and window managers find it).
        snapshot_dir: folder where ``s`` saves PNG snapshots.
        drag_threshold_px: a left-button press that moves further than this (screen pixels)
            before release is a box, else a click.
        message_s: how long a status message stays on the HUD line.
        show_help: start with the key help shown.
    """

    title: str = "realtime-sam"
    snapshot_dir: Path = Path(".")
    drag_threshold_px: float = 5.0
    message_s: float = 3.0
    show_help: bool = False

    def __post_init__(self) -> None:
        if not self.title:
            raise ConfigError("the window title must not be empty")
        if not (math.isfinite(self.drag_threshold_px) and self.drag_threshold_px >= 0):
            raise ConfigError(f"window.drag_threshold_px must be >= 0, got {self.drag_threshold_px}")
        if not (math.isfinite(self.message_s) and self.message_s >= 0):
            raise ConfigError(f"window.message_s must be >= 0, got {self.message_s}")


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class AddObject:
    """Track a new object from ``prompt`` (a point or a box, image pixels)."""

    prompt: ObjectPrompt


@dataclass(frozen=True)
class RefineObject:
    """Add a negative point at ``(x, y)`` to the selected object."""

    x: float
    y: float


@dataclass(frozen=True)
class RemoveAt:
    """Remove the object under ``(x, y)``."""

    x: float
    y: float


@dataclass(frozen=True)
class ClearAll:
    """Remove every object."""


@dataclass(frozen=True)
class TogglePause:
    """Pause or resume the video."""


@dataclass(frozen=True)
class ToggleAuto:
    """Switch auto-discovery on or off."""


@dataclass(frozen=True)
class SaveSnapshot:
    """Save the frame as shown to a PNG."""


@dataclass(frozen=True)
class ToggleHelp:
    """Show or hide the key help."""


@dataclass(frozen=True)
class Quit:
    """Stop and close the window."""


@dataclass(frozen=True)
class Hint:
    """Nothing to do but tell the user ``text`` (``d`` pressed before the mouse was ever over the window)."""

    text: str


Command = Union[AddObject, RefineObject, RemoveAt, ClearAll, TogglePause, ToggleAuto, SaveSnapshot, ToggleHelp, Quit, Hint]

POINT_FIRST = "point at an object with the mouse first, then press d (or Delete) to remove it"
"""What ``d`` says while there is no cursor position: the mouse never entered the window."""


# ---------------------------------------------------------------- event handling


class Interaction:
    """Turns OpenCV mouse and key events into :data:`Command` values.

    Holds only the left-button drag in progress and the last cursor
    position; knows nothing of windows, engines or threads, so it can be
    driven by synthetic events in tests.
    """

    def __init__(self, drag_threshold_px: float = 5.0) -> None:
        self.drag_threshold_px = float(drag_threshold_px)
        self.cursor: tuple[int, int] | None = None
        self._press: tuple[int, int] | None = None
        self._press_negative = False
        self._dragging = False

    @property
    def preview_box(self) -> Box | None:
        """The box being dragged, ``XYXY`` with ordered corners, or ``None``."""
        if not self._dragging or self._press is None or self.cursor is None:
            return None
        (x0, y0), (x1, y1) = self._press, self.cursor
        return (float(min(x0, x1)), float(min(y0, y1)), float(max(x0, x1)), float(max(y0, y1)))

    def _moved_far(self, x: int, y: int) -> bool:
        assert self._press is not None
        return math.hypot(x - self._press[0], y - self._press[1]) > self.drag_threshold_px

    def on_mouse(self, event: int, x: int, y: int, flags: int) -> list[Command]:
        """Handle one ``cv2.setMouseCallback`` event; returns the commands it completes."""
        self.cursor = (int(x), int(y))
        if event == cv2.EVENT_LBUTTONDOWN:
            self._press = (int(x), int(y))
            self._press_negative = bool(flags & cv2.EVENT_FLAG_SHIFTKEY)
            self._dragging = False
            return []
        if event == cv2.EVENT_MOUSEMOVE:
            if self._press is not None and not self._press_negative and not self._dragging and self._moved_far(x, y):
                self._dragging = True
            return []
        if event == cv2.EVENT_LBUTTONUP:
            if self._press is None:  # a release whose press we never saw (e.g. pressed outside)
                return []
            press, negative, self._press = self._press, self._press_negative, None
            dragging, self._dragging = self._dragging, False
            if negative:
                return [RefineObject(float(press[0]), float(press[1]))]
            if dragging or math.hypot(x - press[0], y - press[1]) > self.drag_threshold_px:
                box = (
                    float(min(press[0], x)),
                    float(min(press[1], y)),
                    float(max(press[0], x)),
                    float(max(press[1], y)),
                )
                return [AddObject(ObjectPrompt(box=box))]
            return [AddObject(ObjectPrompt(points=((float(press[0]), float(press[1])),), labels=(1,)))]
        if event == cv2.EVENT_RBUTTONDOWN:
            return [RefineObject(float(x), float(y))]
        return []

    def on_key(self, code: int) -> list[Command]:
        """Handle one ``cv2.waitKeyEx`` code (``-1``: no key)."""
        if code == -1 or code is None:
            return []
        if code in _DELETE_CODES:
            return self._remove()
        if code == _ESC:
            return [Quit()]
        if not 0 < code < 256:
            return []  # modifiers, arrows, function keys
        key = chr(code).lower()
        if key == "q":
            return [Quit()]
        if key == " ":
            return [TogglePause()]
        if key == "a":
            return [ToggleAuto()]
        if key == "d":
            return self._remove()
        if key == "c":
            return [ClearAll()]
        if key == "s":
            return [SaveSnapshot()]
        if key == "h":
            return [ToggleHelp()]
        return []

    def _remove(self) -> list[Command]:
        # Before the mouse was ever over the window there is no position to act on (and removing
        # some other object instead would surprise): say what to do.
        if self.cursor is None:
            return [Hint(POINT_FIRST)]
        return [RemoveAt(*map(float, self.cursor))]


class Selection:
    """Which object a negative point refines: the most recently added one.

    :meth:`Engine.add_object <realtime_sam.tracking.engine.Engine.add_object>`
    returns the new object's track id at once, so an add selects that id even
    before its track appears (a discovered object never steals the
    selection). A selected object that leaves the results after it appeared
    (removed, cleared) is deselected.
    """

    def __init__(self) -> None:
        self.selected: int | None = None
        self._seen: set[int] = set()

    def object_added(self, track_id: int) -> None:
        """Call with the id :meth:`add_object` returned for an :class:`AddObject`."""
        self.selected = track_id

    def observe(self, result: FrameResult) -> None:
        """Update from a new result."""
        ids = {t.track_id for t in result.tracks}
        self._seen |= ids
        if self.selected is not None and self.selected in self._seen and self.selected not in ids:
            self.selected = None


class DisplayRate:
    """Frames shown per second, over the last ``window`` frames shown while playing.

    A pause ends the measurement and a resume starts a new one: the time paused
    never counts (with it, the rate after a 10 s pause read 3 fps for the next
    30 frames of a 25 fps video), nor do frames shown while paused (the paused
    frame redone for a new prompt).
    """

    def __init__(self, window: int = 30) -> None:
        self._stamps: collections.deque[float] = collections.deque(maxlen=max(2, int(window)))
        self.paused = False

    def shown(self, now: float) -> None:
        """A frame was shown at ``now`` (``time.monotonic()``)."""
        if not self.paused:
            self._stamps.append(now)

    def pause(self) -> None:
        self.paused = True
        self._stamps.clear()

    def resume(self) -> None:
        self.paused = False
        self._stamps.clear()

    def restart(self) -> None:
        """Start a new measurement: no frame came for a while (the source is reconnecting), and the gap is no rate."""
        self._stamps.clear()

    def fps(self) -> float | None:
        """The rate, or ``None`` while paused and until two frames were shown since the last resume."""
        stamps = self._stamps
        if self.paused or len(stamps) < 2 or stamps[-1] <= stamps[0]:
            return None
        return (len(stamps) - 1) / (stamps[-1] - stamps[0])


# ---------------------------------------------------------------- the window


class _Pipeline(Protocol):
    def poll(self, timeout: float = 0.0) -> FrameResult | None: ...

    @property
    def ended(self) -> bool: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    @property
    def paused(self) -> bool: ...


class _Engine(Protocol):
    def add_object(self, prompt: ObjectPrompt) -> int: ...

    def remove_object(self, track_id: int) -> None: ...

    def clear(self) -> None: ...

    def set_auto(self, enabled: bool) -> None: ...

    @property
    def auto(self) -> bool: ...

    def track_at(self, x: float, y: float) -> int | None: ...


ExitReason = Literal["quit", "closed", "ended"]


def new_object_message(prompt: ObjectPrompt) -> str:
    """What a window says for an object added by a click or a drag: where, in the frame's pixels
    (``new object from box 10,20,110,90`` or ``new object from point 60,55``)."""
    if prompt.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in prompt.box)
        return f"new object from box {x0},{y0},{x1},{y1}"
    x, y = (int(round(v)) for v in prompt.points[0])
    return f"new object from point {x},{y}"


def pixel_shape(source: object) -> float:
    """``source``'s :attr:`~realtime_sam.capture.base.Source.sample_aspect_ratio` as a float; 1 when it has none."""
    try:
        sar = float(getattr(source, "sample_aspect_ratio", 1) or 1)
    except (TypeError, ValueError):
        return 1.0
    return sar if math.isfinite(sar) and 0.01 <= sar <= 100 else 1.0


def _reconnect_attempt(pipeline: object) -> int | None:
    """The reconnect attempt under way while the pipeline's live source is down, else ``None``."""
    return getattr(getattr(pipeline, "source", None), "reconnect_attempt", None) or None


def snapshot_path(folder: Path, base: str) -> Path:
    """``folder/base.png``, or ``base-2.png``, ``base-3.png``... where that is taken: two snapshots
    within one second (the name's time stamp) are numbered instead of the later overwriting the first."""
    path, n = folder / f"{base}.png", 1
    while path.exists():
        n += 1
        path = folder / f"{base}-{n}.png"
    return path


class LiveWindow:
    """The interactive OpenCV window; it owns the window and nothing else.

    Typical use (the CLI's windowed mode)::

        with LiveWindow(WindowConfig()) as window:
            reason = window.run(pipeline, engine)

    :meth:`run` shows every result of the pipeline, applies the user's
    commands to the engine (prompts, removal, auto mode) and the pipeline
    (pause, quit), and returns why it stopped.
    """

    def __init__(
        self,
        config: WindowConfig = WindowConfig(),
        *,
        renderer: Renderer | None = None,
        on_message: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.renderer = renderer if renderer is not None else Renderer()
        self.on_message = on_message if on_message is not None else (lambda text: print(text, file=sys.stderr))
        self.interaction = Interaction(config.drag_threshold_px)
        self.selection = Selection()
        self.show_help = config.show_help
        self.snapshots: list[Path] = []
        self._pending: list[Command] = []
        self._open = False
        self._message: str | None = None
        self._message_until = 0.0
        self._display = DisplayRate()
        self._last: FrameResult | None = None
        self._last_encoded: int | None = None
        # The frame as drawn, at its own size, and its heads-up numbers: what a snapshot saves (at its display shape).
        self._shown: tuple[np.ndarray, HudInfo] | None = None
        self._view: View | None = None  # how the frame is shown now; mouse positions map back through it
        self._screen: tuple[int, int] | None = None
        self._sar = 1.0  # the source's pixel shape (width over height): the frame is shown at its display shape
        self._resize = UserResize()  # the size the user gave the window (.size), once resized
        self._latency_ms: float | None = None
        self._reconnect_shown: int | None = None

    # -- window lifecycle ------------------------------------------------------------------

    def open(self) -> None:
        """Create the window.

        Raises:
            WindowError: no display, or OpenCV built without GUI support.
        """
        if self._open:
            return
        require_display()
        self._screen = screen_size()
        try:
            cv2.namedWindow(self.config.title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
            cv2.setMouseCallback(self.config.title, self._on_mouse)
        except cv2.error as exc:
            raise window_error(exc) from None
        self._open = True

    def close(self) -> None:
        """Destroy the window; idempotent."""
        if not self._open:
            return
        self._open = False
        try:
            cv2.destroyWindow(self.config.title)
            cv2.waitKey(1)  # lets the GUI backend process the destroy
        except cv2.error:
            pass

    def __enter__(self) -> "LiveWindow":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_mouse(self, event: int, x: int, y: int, flags: int, _param: object = None) -> None:
        # Called by OpenCV inside waitKey, on the GUI thread: just queue the commands. The
        # position is in pixels of the image shown (Qt maps a resized window's back to them).
        if self._view is not None:
            x, y = (int(round(v)) for v in self._view.to_frame(x, y))
        self._pending.extend(self.interaction.on_mouse(event, x, y, flags))

    def _closed_by_user(self) -> bool:
        try:
            return cv2.getWindowProperty(self.config.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    # -- the loop --------------------------------------------------------------------------

    def run(
        self,
        pipeline: _Pipeline,
        engine: _Engine,
        *,
        on_result: Callable[[FrameResult], None] | None = None,
        poll_s: float = 0.01,
    ) -> ExitReason:
        """Show results until the pipeline ends or the user quits.

        Args:
            pipeline: iterated for results; paused, resumed and stopped by the user. Its
                ``source``'s ``sample_aspect_ratio`` (where it has one) sets the shape frames
                are shown at: an anamorphic file as wide as players show it.
            engine: receives the user's prompts and removals.
            on_result: called with every new result (progress reporting).
            poll_s: longest wait for a result before serving the GUI again.

        Returns:
            ``"quit"`` (``q``/``Esc``), ``"closed"`` (window closed), or
            ``"ended"`` (the pipeline ended by itself: end of the source,
            ``max_frames``, or ``stop()`` called elsewhere, e.g. on Ctrl-C).

        Raises:
            Whatever the pipeline raises (e.g. :class:`SourceError`), after
            showing every result before it.
        """
        self.open()
        self._sar = pixel_shape(getattr(pipeline, "source", None))
        try:
            while True:
                # Never block on the model: the window must keep serving
                # events while an encode takes seconds on a CPU.
                item = pipeline.poll(poll_s)
                dirty = False
                if item is None and pipeline.ended:
                    break
                if item is not None:
                    self._take(item)
                    if on_result is not None:
                        on_result(item)
                    dirty = True
                key = cv2.waitKeyEx(1)
                # Closed by the window manager during waitKeyEx: the window is gone, and an imshow
                # now would open a new one (Qt), so look before anything is drawn.
                if self._closed_by_user():
                    pipeline.stop()
                    return "closed"
                self._pending.extend(self.interaction.on_key(key))
                commands, self._pending = self._pending, []
                for command in commands:
                    dirty = True
                    if isinstance(command, Quit):
                        pipeline.stop()
                        return "quit"
                    self._apply(command, pipeline, engine)
                if self.interaction.preview_box is not None:
                    dirty = True  # follow the cursor while dragging
                if self._message is not None and time.monotonic() > self._message_until:
                    self._message = None
                    dirty = True
                attempt = _reconnect_attempt(pipeline)
                if attempt != self._reconnect_shown:
                    dirty = True  # no frame comes while the source is down: say so on the frame shown
                    if attempt:
                        self._display.restart()  # the rate once it is back leaves the gap out
                if dirty:
                    self._draw(pipeline, engine)
        finally:
            pipeline.stop()
            self.close()  # the window goes at once; Pipeline.close() waits for the outputs
        return "ended"

    def _take(self, result: FrameResult) -> None:
        if self._last is None or result.index != self._last.index:
            # Capture to screen, measured when the frame first comes; the same frame again
            # (redone while paused, for a new prompt) keeps it.
            self._latency_ms = (time.monotonic() - result.frame.capture_time) * 1e3
        self._last = result
        self._display.shown(time.monotonic())
        if result.encoded:
            self._last_encoded = result.index
        self.selection.observe(result)

    def _say(self, text: str) -> None:
        self._message = text
        self._message_until = time.monotonic() + self.config.message_s
        self.on_message(text)

    def _frame_size(self) -> tuple[int, int] | None:
        if self._last is None:
            return None
        return self._last.frame.width, self._last.frame.height

    def _apply(self, command: Command, pipeline: _Pipeline, engine: _Engine) -> None:
        try:
            if isinstance(command, AddObject):
                size = self._frame_size()
                if size is None:
                    self._say("no frame yet; wait for the video before clicking")
                    return
                prompt = clamp_prompt(validate_prompt(command.prompt, "click"), *size)
                self.selection.object_added(engine.add_object(prompt))
                self._say(new_object_message(prompt))
            elif isinstance(command, RefineObject):
                target = self.selection.selected
                if target is None:
                    target = engine.track_at(command.x, command.y)
                if target is None:
                    self._say("no object selected: click an object first, then right-click to exclude areas")
                    return
                size = self._frame_size()
                prompt = ObjectPrompt(points=((command.x, command.y),), labels=(0,), track_id=target)
                if size is not None:
                    prompt = clamp_prompt(prompt, *size)
                engine.add_object(validate_prompt(prompt, "right-click"))
                self._say(f"excluded point {int(command.x)},{int(command.y)} from object {target}")
            elif isinstance(command, RemoveAt):
                target = engine.track_at(command.x, command.y)
                if target is None:
                    self._say("no object under the cursor to remove")
                    return
                engine.remove_object(target)
                if self.selection.selected == target:
                    self.selection.selected = None
                self._say(f"removed object {target}")
            elif isinstance(command, ClearAll):
                engine.clear()
                self.selection.selected = None
                self._say("cleared all objects")
            elif isinstance(command, TogglePause):
                if pipeline.paused:
                    pipeline.resume()
                    self._display.resume()
                    self._say("resumed")
                else:
                    pipeline.pause()
                    self._display.pause()
                    self._say("paused: click to add objects, space to resume")
            elif isinstance(command, ToggleAuto):
                enabled = not engine.auto
                engine.set_auto(enabled)
                self._say(f"auto-discovery {'on' if enabled else 'off'}")
            elif isinstance(command, SaveSnapshot):
                self._snapshot()
            elif isinstance(command, ToggleHelp):
                self.show_help = not self.show_help
            elif isinstance(command, Hint):
                self._say(command.text)
        except PromptError as exc:
            self._say(str(exc))

    def _snapshot(self) -> None:
        if self._shown is None or self._last is None:
            self._say("nothing to save yet")
            return
        folder = Path(self.config.snapshot_dir)
        path = snapshot_path(folder, f"realtime-sam-{time.strftime('%Y%m%d-%H%M%S')}-f{self._last.index:06d}")
        overlay, hud = self._shown
        # At the frame's own height and its display shape, as the window shows it: an anamorphic
        # 720x576 frame at 64:45 is saved 1024x576 (image viewers show a PNG's pixels square).
        h, w = overlay.shape[:2]
        width = max(1, int(round(w * self._sar)))
        overlay = View(self._sar, 1.0, 0, 0, width, h).show(overlay)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            ok = write_image(path, self.renderer.draw_hud(overlay, hud))
        except (OSError, cv2.error) as exc:
            ok, reason = False, str(exc).strip().splitlines()[-1]
        else:
            reason = "the image could not be encoded"
        if ok:
            self.snapshots.append(path)
            self._say(f"snapshot saved: {path}")
        else:
            self._say(f"cannot save snapshot {path}: {reason}")

    def _hud(self, pipeline: _Pipeline, engine: _Engine, now: float) -> HudInfo:
        paused = bool(pipeline.paused)
        display_fps = None if paused else self._display.fps()
        stats = getattr(pipeline, "stats", None)
        model_fps = getattr(stats, "model_fps", None) or None
        # 0 after frames were processed: none of the recent ones gave the engine work (no objects).
        model_idle = model_fps is None and bool(getattr(stats, "frames_processed", 0))
        assert self._last is not None
        # While paused the frame shown stays, and its capture-to-screen time is the one it had
        # when it came, not one that grows for as long as the pause lasts.
        latency_ms = self._latency_ms if pipeline.paused else (now - self._last.frame.capture_time) * 1e3
        age = self._last.index - self._last_encoded if self._last_encoded is not None else 0
        message = self._message
        attempt = self._reconnect_shown = _reconnect_attempt(pipeline)
        if attempt:
            # No frame comes while the source is down: the last rate would stand and the last
            # frame's age grow for as long as it lasts, as if frames were shown that late.
            display_fps = latency_ms = None
        if message is None and attempt:
            message = f"source lost: reconnecting (attempt {attempt})"
        if message is None and getattr(engine, "has_pending", False):
            # With a background encode a new object's mask comes 1-3 s after the click (CPU).
            message = "segmenting..."
        if message is None and self.selection.selected is not None:
            message = f"selected {self.selection.selected}"
        return HudInfo(
            display_fps=display_fps,
            model_fps=model_fps,
            model_idle=model_idle,
            encode_interval_s=getattr(stats, "encode_interval_s", None),
            latency_ms=latency_ms,
            encode_age_frames=max(0, age),
            paused=paused,
            auto_mode=bool(engine.auto),
            num_tracks=len(self._last.tracks),
            message=message,
        )

    def _draw(self, pipeline: _Pipeline, engine: _Engine) -> None:
        if self._last is None:
            return
        now = time.monotonic()
        frame = self._last.frame.image
        overlay = self.renderer.annotate(frame, self._last)
        hud = self._hud(pipeline, engine, now)
        self._shown = (overlay, hud)
        view = self._fit(frame.shape[1], frame.shape[0])
        # The heads-up line, the drag preview and the help on the image as shown: one size on
        # screen whatever the frame's size.
        image = self.renderer.draw_hud(view.show(overlay), hud)
        box = self.interaction.preview_box
        if box is not None:
            image = self.renderer.draw_box_preview(image, (*view.to_view(*box[:2]), *view.to_view(*box[2:])))
        if self.show_help:
            image = self.renderer.draw_help(image, HELP_KEYS, title="Keys (h to hide)")
        cv2.imshow(self.config.title, image)
        self._resize.drawn(image.shape[1], image.shape[0])

    def _fit(self, width: int, height: int) -> View:
        """The view for a ``width x height`` frame; follows the window's size once the user changed it."""
        self._resize.check(self.config.title)
        view = fit_view(width, height, sar=self._sar, screen=self._screen, window=self._resize.size)
        if view != self._view:
            self._view = view
            # A drag is told from a click by how far the hand moved: in screen pixels (along the
            # less stretched axis, for an anamorphic frame).
            self.interaction.drag_threshold_px = self.config.drag_threshold_px / min(view.scale_x, view.scale_y)
        return view
