"""Per-frame JSON lines with COCO RLE masks (:class:`JsonlSink`) and their reader (:func:`load_jsonl`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from realtime_sam.output.rle import encode_rle
from realtime_sam.output.sink_base import (
    SinkBase,
    open_for_lines,
    prepare_file,
    write_all,
)
from realtime_sam.types import FrameResult

__all__ = ["JsonlSink", "load_jsonl"]


def _finite(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


class JsonlSink(SinkBase):
    """One JSON object per line: a header, then one line per frame.

    The first line is a header describing the run, identified by its
    ``"realtime_sam"`` key (and having no ``"frame"`` key)::

        {"realtime_sam": "0.1.0", "source": "cam.mp4", "width": 1280, "height": 720, "fps": 30.0}

    ``width``/``height`` come from the first frame (``null`` if the run had
    none); ``source``/``fps`` are what the caller passed (or ``null``). Every
    further line is a frame::

        {"frame": 12, "timestamp": 0.4, "tracks": [
            {"id": 1, "box": [x0, y0, x1, y1], "score": 0.93, "state": "confirmed",
             "area": 5120, "label": "cup", "mask": {"size": [720, 1280], "counts": "..."}}]}

    ``box`` is ``XYXY`` pixels with exclusive far edges, ``mask`` a COCO
    compressed RLE (``pycocotools.mask.decode`` reads it; so does
    :func:`realtime_sam.output.rle.decode_rle`), ``label`` appears only when set.
    All tracks alive after the frame are listed, lost ones with an empty
    mask. Each line is written with one unbuffered ``write`` and is complete
    on disk as soon as :meth:`write` returns, so a crash can leave only the
    line being written cut short; :func:`load_jsonl` skips such a line.
    """

    kind = "jsonl"

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        source: str | None = None,
        fps: float | None = None,
    ) -> None:
        super().__init__(prepare_file(path, "jsonl", "tracks.jsonl"))
        self.source = source
        self.fps = None if fps is None else _finite(fps, 6)
        self._file = open_for_lines(self.path, "jsonl")
        self._header_written = False

    def _header(self, width: int | None, height: int | None) -> bytes:
        from realtime_sam import __version__

        header = {"realtime_sam": __version__, "source": self.source, "width": width, "height": height, "fps": self.fps}
        return (json.dumps(header) + "\n").encode("utf-8")

    @staticmethod
    def frame_record(result: FrameResult) -> dict[str, Any]:
        """The JSON-ready object written for one frame."""
        tracks = []
        for t in result.tracks:
            rle = encode_rle(t.mask)
            item: dict[str, Any] = {
                "id": int(t.track_id),
                "box": [_finite(v, 2) for v in t.box],
                "score": _finite(t.score, 4),
                "state": t.state.value,
                "area": int(np.count_nonzero(t.mask)),
            }
            if t.label is not None:
                item["label"] = t.label
            item["mask"] = rle
            tracks.append(item)
        return {"frame": int(result.index), "timestamp": _finite(result.timestamp, 6), "tracks": tracks}

    def write(self, result: FrameResult) -> None:
        """Append the frame's line (and the header before the first frame)."""
        self._check_open()
        data = (json.dumps(self.frame_record(result), separators=(",", ":")) + "\n").encode("utf-8")
        if not self._header_written:
            data = self._header(result.frame.width, result.frame.height) + data
            self._header_written = True
        write_all(self._file, data, self.path, "jsonl")
        self.frames_written += 1

    def close(self) -> None:
        """Write the header if no frame came, then close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._header_written:
                self._header_written = True
                write_all(self._file, self._header(None, None), self.path, "jsonl")
        finally:
            self._file.close()


def load_jsonl(path: str | os.PathLike[str]) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """Read a :class:`JsonlSink` file.

    Returns:
        ``(header, frames)``: the header object (``None`` if absent) and the
        frame objects in file order. A last line cut short by a crash (it has
        no newline) is skipped.

    Raises:
        ValueError: a complete line is not valid JSON.
    """
    text = Path(path).read_text(encoding="utf-8")
    # Every complete line ends with "\n" (one write each), so whatever follows
    # the last newline is a line a crash cut short: drop it.
    complete = text.split("\n")[:-1]
    header: dict[str, Any] | None = None
    frames: list[dict[str, Any]] = []
    for number, line in enumerate(complete, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: line {number} is not valid JSON: {exc.msg}") from None
        if "frame" in obj:
            frames.append(obj)
        elif "realtime_sam" in obj and header is None:
            header = obj
    return header, frames
