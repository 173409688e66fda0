"""The ``realtime-sam`` program's entry point, kept free of heavy imports.

The console script and ``python -m realtime_sam`` start here, so that a Ctrl-C while the
command's modules still load (OpenCV and NumPy: a few tenths of a second) ends as a Ctrl-C
at any later moment does, with one line and exit status 130, not a Python traceback.
"""

from __future__ import annotations

import sys

__all__ = ["main"]


def main() -> None:
    """Load the command (:func:`realtime_sam.app.cli.entry`) and run it."""
    try:
        from realtime_sam.app.cli import entry
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    entry()
