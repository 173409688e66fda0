"""Image files read and written through Python's file functions, not OpenCV's.

OpenCV's ``imread``/``imwrite`` open the file themselves with a narrow (``char``) path: on Windows a
name outside the ANSI code page (``C:\\Users\\Łukasz\\...``, ``写真\\a.jpg``) is not found, and
``imread`` returns ``None``, ``imwrite`` ``False``. Python opens any path; OpenCV only codes the bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from realtime_sam.file_bytes import read_file_bytes

__all__ = ["read_image", "write_image"]


def read_image(path: str | os.PathLike[str], flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """``cv2.imread(path, flags)`` for any path: the decoded image (EXIF orientation applied unless
    ``flags`` say otherwise, as ``imread``), or ``None`` when the file cannot be read or decoded."""
    data = read_file_bytes(path)
    return None if data is None else cv2.imdecode(data, flags)


def write_image(path: str | os.PathLike[str], image: np.ndarray) -> bool:
    """``cv2.imwrite(path, image)`` for any path: the format from the file's extension.

    Returns ``False`` where OpenCV cannot encode the image; raises :class:`OSError` where the file
    cannot be written and ``cv2.error`` for an extension OpenCV has no encoder for, as ``imwrite``.
    """
    ok, data = cv2.imencode(Path(path).suffix, image)
    if not ok:
        return False
    with open(path, "wb") as f:
        f.write(data.tobytes())
    return True
