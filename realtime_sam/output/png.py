"""DAVIS-style indexed PNGs, one per frame, pixel value = track id (:class:`PngSink`).
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from realtime_sam.errors import SinkError, describe_error
from realtime_sam.output.sink_base import IdOverflow, SinkBase, label_image, missing_paths
from realtime_sam.types import FrameResult

__all__ = ["davis_palette", "encode_indexed_png", "PngSink"]


def davis_palette() -> np.ndarray:
    """The DAVIS / PASCAL VOC colour map: ``(256, 3) uint8`` **RGB**.

    Index 0 is black, 1 ``(128, 0, 0)``, 2 ``(0, 128, 0)``, 3 ``(128, 128, 0)``,
    ...: bit ``k`` of the index's three lowest bits goes to bit ``7 - j`` of
    R, G, B for successive bit triples ``j``.
    """
    idx = np.arange(256, dtype=np.int64)
    rgb = np.zeros((256, 3), dtype=np.int64)
    for j in range(8):
        for channel in range(3):
            bit = (idx >> (3 * j + channel)) & 1
            rgb[:, channel] |= bit << (7 - j)
    return rgb.astype(np.uint8)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_indexed_png(indices: np.ndarray, palette: np.ndarray, *, level: int = 1) -> bytes:
    """Encode an ``HxW uint8`` index image as an 8-bit palette PNG.

    Args:
        indices: ``HxW uint8`` palette indices.
        palette: ``(N, 3) uint8`` RGB, ``1 <= N <= 256``.
        level: zlib compression level ``0``-``9``.

    Returns:
        The PNG file's bytes (colour type 3, no filtering, no interlace).
    """
    indices = np.asarray(indices)
    if indices.ndim != 2 or indices.dtype != np.uint8 or 0 in indices.shape:
        raise ValueError(f"indices must be a non-empty HxW uint8 array, got {indices.shape} {indices.dtype}")
    palette = np.asarray(palette, dtype=np.uint8)
    if palette.ndim != 2 or palette.shape[1] != 3 or not 1 <= palette.shape[0] <= 256:
        raise ValueError(f"palette must be (N, 3) uint8 with 1 <= N <= 256, got {palette.shape}")
    h, w = indices.shape
    # Each scanline starts with its filter type; 0 (none) suits flat label maps.
    raw = np.zeros((h, w + 1), dtype=np.uint8)
    raw[:, 1:] = indices
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0)
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            _png_chunk(b"IHDR", ihdr),
            _png_chunk(b"PLTE", palette.tobytes()),
            _png_chunk(b"IDAT", zlib.compress(raw.tobytes(), level)),
            _png_chunk(b"IEND", b""),
        )
    )


class PngSink(SinkBase):
    """DAVIS-style annotations: ``<dir>/00000.png``, one indexed PNG per frame.

    Each PNG is 8-bit palette ("P" mode) with the DAVIS palette
    (:func:`davis_palette`); pixel value = track id, 0 = background, so
    DAVIS tools read it directly. The name is the input image's name for an
    image sequence (``Frame.name``), else the frame index, zero-padded to
    five digits (longer past 99999). Overlaps go to the smallest mask (module docstring);
    lost tracks have no pixels. Ids run 1-254, as 255 is DAVIS' (and PASCAL
    VOC's) void label that the tools ignore; larger ids follow ``id_overflow``.
    Each file is written under a temporary name in the same folder and
    renamed into place, so a ``.png`` is never half written.

    Args:
        directory: output folder, created if missing.
        id_overflow: ``error`` or ``wrap`` (see :class:`SinkConfig`).
        compression: zlib level ``0``-``9``.
    """

    kind = "png"
    MAX_ID = 254  # 255 is the void label

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        id_overflow: IdOverflow = "error",
        compression: int = 1,
    ) -> None:
        if str(directory) == "":
            raise SinkError("the png output needs a folder name, such as out/masks")
        p = Path(directory).expanduser()
        if p.exists() and not p.is_dir():
            raise SinkError(f"the png output {p} is a file; give a folder, such as {p.with_suffix('')}_masks/")
        created = missing_paths(p)
        try:
            p.mkdir(parents=True, exist_ok=True)
            # Prove we can create files there now, not at the first frame.
            fd, probe = tempfile.mkstemp(dir=p, prefix=".probe-", suffix=".tmp")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            raise SinkError(f"cannot write the png output folder {p}: {describe_error(exc)}") from None
        super().__init__(p, created)
        self.id_overflow = id_overflow
        self.compression = int(compression)
        self._palette = davis_palette()
        self._digits = 5  # DAVIS' names (00000.png); more for a file longer than 100 000 frames

    def bind_source(self, source: Any) -> None:
        """Names as long as the source's last frame number needs, at least five digits (DAVIS').

        A file of 150 000 frames gets ``000000.png`` ... ``149999.png``: with five digits up to
        ``99999.png`` and six after, ``100000.png`` sorted before ``99999.png``, and tools that
        take a folder's files in name order (TrackEval's DAVIS loader) read them out of order.
        A live source's length is unknown: five digits, six past frame 99 999.
        """
        count = getattr(source, "num_frames", None)
        if isinstance(count, int) and count > 0:
            self._digits = max(5, len(str(count - 1)))

    def write(self, result: FrameResult) -> None:
        """Write ``<name>.png`` for this frame: the frame's name (an input image's), else its index with
        at least five digits (:meth:`bind_source`)."""
        self._check_open()
        shape = (result.frame.height, result.frame.width)
        labels = label_image(result.tracks, shape, max_id=self.MAX_ID, overflow=self.id_overflow, what="png")
        data = encode_indexed_png(labels.astype(np.uint8), self._palette, level=self.compression)
        name = result.frame.name if result.frame.name is not None else f"{int(result.index):0{self._digits}d}"
        final = self.path / f"{name}.png"
        # A plain open() (not mkstemp, which makes 0600 files) so the PNGs get
        # the user's usual permissions; one writer per folder keeps the name unique.
        tmp = self.path / f".{final.name}.{os.getpid()}.tmp"
        try:
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, final)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except OSError as exc:
            raise SinkError(f"writing {final} failed: {describe_error(exc)}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Nothing is held open; marks the sink closed."""
        self._closed = True
