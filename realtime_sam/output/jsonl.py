"""Per-frame JSON lines with COCO RLE masks (:class:`JsonlSink`) and their reader (:func:`load_jsonl`).
"""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from realtime_sam.capture.base import redact_source
from realtime_sam.output.rle import encode_rle
from realtime_sam.output.sink_base import LinesFile, SinkBase, prepare_output
from realtime_sam.types import FrameResult

__all__ = ["JsonlSink", "header_record", "load_jsonl"]


def _ratio(value: Any) -> Fraction | None:
    """A pixel shape as a fraction > 0, or ``None`` (not given, or nothing a ratio can be made of)."""
    if value is None:
        return None
    try:
        ratio = Fraction(value).limit_denominator(65535)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return ratio if ratio > 0 else None


def _finite(value: float, digits: int) -> float | None:
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def header_record(
    *, source: str | None, width: int | None, height: int | None, sample_aspect_ratio: Any, fps: float | None
) -> dict[str, Any]:
    """The header line's object (see :class:`JsonlSink`); ``sample_aspect_ratio`` as ``"N:D"`` or ``None``.

    ``source`` is written with its credentials hidden (``rtsp://***@host/x``,
    :func:`~realtime_sam.capture.base.redact_source`): the command passes the
    source's already hidden name, but a sink made by hand may be given the URL itself.
    """
    from realtime_sam import __version__

    sar = _ratio(sample_aspect_ratio)
    return {
        "realtime_sam": __version__, "source": None if source is None else redact_source(str(source)), "width": width, "height": height,
        "sample_aspect_ratio": None if sar is None else f"{sar.numerator}:{sar.denominator}",
        "fps": None if fps is None else _finite(fps, 6),
    }


class JsonlSink(SinkBase):
    """One JSON object per line: a header, then one line per frame.

    The first line is a header describing the run, identified by its
    ``"realtime_sam"`` key (and having no ``"frame"`` key)::

        {"realtime_sam": "0.1.0", "source": "cam.mp4", "width": 1280, "height": 720,
         "sample_aspect_ratio": "1:1", "fps": 30.0}

    ``width``/``height`` come from the first frame (``null`` if the run had
    none), in stored pixels, as boxes and masks are; ``sample_aspect_ratio``
    is the width over the height of one of those pixels as players show it
    (``"64:45"`` for a 16:9 PAL file stored 720x576; ffprobe's form), so the
    picture is shown ``width * 64/45`` wide. ``source``, ``fps`` and
    ``sample_aspect_ratio`` are what the caller passed or, left ``None``,
    the source's when a pipeline runs the sink (:meth:`bind_source`), else
    ``null``; ``source`` with its credentials hidden (``rtsp://***@host/x``)
    whoever gave it. ``fps`` is the source's nominal rate: for a variable-frame-rate
    file its average, so a frame's time is its line's ``timestamp`` (seconds
    on the source's clock: a file's own timestamps), never ``frame / fps``.
    Files written before the key was added have no ``sample_aspect_ratio``
    (their pixels are to be taken as square); :func:`load_jsonl` reads both. Every
    further line is a frame::

        {"frame": 12, "timestamp": 0.4, "tracks": [
            {"id": 1, "box": [x0, y0, x1, y1], "score": 0.93, "state": "confirmed",
             "area": 5120, "label": "cup", "mask": {"size": [720, 1280], "counts": "..."}}]}

    A frame whose size differs from the header's (a stream that changed
    resolution, an image folder of several sizes) says its own on its line,
    after ``timestamp``: ``"width": 640, "height": 480``; a reader takes the
    header's where a line has none.
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
        sample_aspect_ratio: Fraction | float | None = None,
    ) -> None:
        super().__init__(*prepare_output(path, "jsonl", "tracks.jsonl"))
        # Hidden here as well as in the header: the attribute is as visible as the file.
        self.source = None if source is None else redact_source(str(source))
        self.fps = None if fps is None else _finite(fps, 6)
        self.sample_aspect_ratio = _ratio(sample_aspect_ratio)
        # Emptied at the first write (or close), not here: see LinesFile.
        self._file = LinesFile(self.path, "jsonl")
        self._header_written = False
        self._size: tuple[int, int] | None = None  # the header's (width, height)

    def bind_source(self, source: Any) -> None:
        """What was left ``None`` (name, frame rate, pixel shape) comes from ``source``, before the header."""
        if self._header_written:
            return
        if self.source is None and getattr(source, "name", None) is not None:
            self.source = str(source.name)
        if self.fps is None and getattr(source, "fps", None):
            self.fps = _finite(source.fps, 6)
        if self.sample_aspect_ratio is None:
            self.sample_aspect_ratio = _ratio(getattr(source, "sample_aspect_ratio", None))

    def _header(self, width: int | None, height: int | None) -> bytes:
        record = header_record(
            source=self.source, width=width, height=height, sample_aspect_ratio=self.sample_aspect_ratio, fps=self.fps
        )
        return (json.dumps(record) + "\n").encode("utf-8")

    @staticmethod
    def frame_record(result: FrameResult, header_size: tuple[int, int] | None = None) -> dict[str, Any]:
        """The JSON-ready object written for one frame; its ``width``/``height`` when they differ from ``header_size``."""
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
        record: dict[str, Any] = {"frame": int(result.index), "timestamp": _finite(result.timestamp, 6)}
        size = (int(result.frame.width), int(result.frame.height))
        if header_size is not None and size != tuple(header_size):
            record["width"], record["height"] = size
        record["tracks"] = tracks
        return record

    def write(self, result: FrameResult) -> None:
        """Append the frame's line (and the header before the first frame)."""
        self._check_open()
        header = b""
        if not self._header_written:
            self._size = (int(result.frame.width), int(result.frame.height))
            header = self._header(*self._size)
            self._header_written = True
        data = header + (json.dumps(self.frame_record(result, self._size), separators=(",", ":")) + "\n").encode("utf-8")
        self._file.write(data)
        self.frames_written += 1

    def close(self) -> None:
        """Write the header if no frame came, then close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._header_written:
                self._header_written = True
                self._file.write(self._header(None, None))
        finally:
            self._file.close()

    def _abandon(self) -> None:
        """The run never started: close without a header, leaving an earlier run's file as it was."""
        self._closed = True
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
