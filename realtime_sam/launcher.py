"""The ``realtime-sam`` program's entry point, kept free of heavy imports.

The console script and ``python -m realtime_sam`` start here, so that a Ctrl-C while the
command's modules still load (OpenCV and NumPy: a few tenths of a second) ends as a Ctrl-C
at any later moment does, with one line and exit status 130, not a Python traceback; and a
SIGTERM then (``timeout``, ``docker stop``) as one later does (:mod:`realtime_sam.sigterm`):
one line and exit status 143, where the default action ended the process silently (-15). The
SIGTERM handler is set first and held until the command returns, so there is no moment after
that in which SIGTERM ends the process silently.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Callable

# Light (signal, threading): SIGTERM is taken over before anything heavy loads.
from realtime_sam.sigterm import EXIT_SIGTERM, RaiseOnTerm, Terminated

__all__ = ["main"]


def main() -> None:
    """Load the command (:func:`realtime_sam.app.cli.entry`) and run it, SIGTERM taken over first."""
    # First of all: until a handler is set, SIGTERM's default action ends the process silently (-15).
    # What runs before this line (the interpreter's start, site's .pth files, this package's
    # __init__, a few tens of milliseconds) no code of the package can cover.
    try:
        # Held until the command returns, so that SIGTERM never meets the default action between this
        # and the command's own handlers (argument parsing) or after them (the wait for a lingering
        # encode in entry); the command's handlers nest inside it (realtime_sam.app.cli.main).
        with RaiseOnTerm() as term:
            _reconfigure_stdout()
            entry = _import_entry(term)
            entry()
    except Terminated:  # a KeyboardInterrupt too: caught first
        print("error: terminated by SIGTERM", file=sys.stderr)
        sys.exit(EXIT_SIGTERM)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def _import_entry(term: RaiseOnTerm) -> Callable[[], None]:
    """Import the command (OpenCV, NumPy: a few tenths of a second) and return its entry point.

    Ctrl-C or SIGTERM raised while a C extension imports a module (NumPy's C code imports
    ``datetime``) came out of it as an ImportError, its cause lost: a traceback advising to reinstall
    NumPy, exit status 1; and one raised where Python ignores it was lost. Such a signal is raised
    again, whatever the import raised or not.
    """
    interrupted: list[bool] = []

    def interrupt(signum: int, frame: FrameType | None) -> None:
        interrupted.append(True)
        signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt

    # A Ctrl-C the parent told the process to ignore stays ignored, and a handler set before is kept.
    previous = signal.getsignal(signal.SIGINT)
    noting = previous is signal.default_int_handler
    if noting:
        signal.signal(signal.SIGINT, interrupt)
    try:
        # NumPy first: where its import fails, OpenCV's import prints "OpenCV bindings requires
        # "numpy" package" on stdout before re-raising, and a signal is no missing NumPy.
        import numpy  # noqa: F401

        from realtime_sam.app.cli import entry
    except Exception as exc:
        if term.received:
            raise Terminated() from exc
        if interrupted:
            raise KeyboardInterrupt() from exc
        raise
    finally:
        if noting:
            signal.signal(signal.SIGINT, previous)
    # Raised where it is lost (importlib's module-lock weakref callback: "Exception ignored in"), it
    # let the run go on to its end, exit status 0.
    if term.received:
        raise Terminated()
    if interrupted:
        raise KeyboardInterrupt()
    return entry


def _reconfigure_stdout() -> None:
    """Output redirected on Windows is in the ANSI code page (cp1252), and a path outside it (a user
    folder named in Japanese) ended `realtime-sam weights path > f` in a UnicodeEncodeError traceback:
    written escaped instead, as Python writes stderr anyway."""
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if callable(reconfigure) and sys.stdout.errors == "strict":
        reconfigure(errors="backslashreplace")
