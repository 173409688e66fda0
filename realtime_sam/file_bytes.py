"""A file's bytes for OpenCV to decode, read by Python so that any name works.

OpenCV's own readers (``cv2.imread``, ``cv2.imcount``) open the file with a narrow (``char``) path:
on Windows a name outside the ANSI code page (``C:\\Users\\Łukasz\\...``, ``写真.png``) is not found.
Both the capture side (:mod:`realtime_sam.capture.images`) and the output side
(:mod:`realtime_sam.output.image_file`) read images through this one helper; it imports nothing of the
package, so neither depends on the other.
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["read_file_bytes"]


def read_file_bytes(path: str | os.PathLike[str]) -> np.ndarray | None:
    """The file's bytes as a 1-D ``uint8`` array (what ``cv2.imdecode`` takes), or ``None`` when the file
    cannot be read or is empty (``cv2.imdecode`` asserts on an empty buffer)."""
    try:
        data = np.fromfile(os.fspath(path), dtype=np.uint8)
    except OSError:
        return None
    return data if data.size else None
