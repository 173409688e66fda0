"""The ``realtime-sam`` program's entry point, kept free of heavy imports.

The console script and ``python -m realtime_sam`` start here, so that a Ctrl-C while the
command's modules still load (OpenCV and NumPy: a few tenths of a second) ends as a Ctrl-C
at any later moment does, with one line and exit status 130, not a Python traceback; and a
SIGTERM then (``timeout``, ``docker stop``) as one later does (:mod:`realtime_sam.sigterm`):
one line and exit status 143, where the default action ended the process silently (-15).
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Load the command (:func:`realtime_sam.app.cli.entry`) and run it."""
    # Output redirected on Windows is in the ANSI code page (cp1252), and a path outside it (a
    # user folder named in Japanese) ended `realtime-sam weights path > f` in a UnicodeEncodeError
    # traceback. Written escaped instead, as Python writes stderr anyway.
    reconfigure = getattr(sys.stdout, "reconfigure", None)
    if callable(reconfigure) and sys.stdout.errors == "strict":
        reconfigure(errors="backslashreplace")
    from realtime_sam.sigterm import EXIT_SIGTERM, RaiseOnTerm, Terminated  # light: signal, threading

    try:
        # The command's own handlers take SIGTERM over from here on (realtime_sam.app.cli.main).
        with RaiseOnTerm():
            from realtime_sam.app.cli import entry
    except Terminated:  # a KeyboardInterrupt too: caught first
        print("error: terminated by SIGTERM", file=sys.stderr)
        sys.exit(EXIT_SIGTERM)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    entry()
