"""SIGTERM as an exception, so what is under way unwinds as after Ctrl-C (a download cleans up).

The default SIGTERM action (``timeout``, ``docker stop``, systemd) ends the process at once,
running no cleanup and printing nothing; the exit status is -15 instead of the shell's 143.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

__all__ = ["EXIT_SIGTERM", "RaiseOnTerm", "Terminated"]

#: The exit status a shell gives a process ended by SIGTERM (128 + 15).
EXIT_SIGTERM = 128 + int(signal.SIGTERM)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread as Ctrl-C raises :class:`KeyboardInterrupt`: what is being
    done unwinds (a download removes its temporary file or keeps it to be resumed; opened outputs
    and the source are closed)."""


class RaiseOnTerm:
    """While active, SIGTERM raises :class:`Terminated` in the main thread; a second SIGTERM ends the process.

    A SIGTERM the parent told the process to ignore stays ignored, and outside the main thread
    (where no handler may be set) this does nothing.
    """

    def __init__(self) -> None:
        self._previous: Any = None
        self._active = False
        #: Whether a SIGTERM came while active: what it raised may come out as another exception (an
        #: ImportError, where it was raised inside a C extension's import).
        self.received = False

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.received = True
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM while unwinding: end now
        raise Terminated()

    def __enter__(self) -> "RaiseOnTerm":
        if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGTERM, self._previous if self._previous is not None else signal.SIG_DFL)
            self._active = False
