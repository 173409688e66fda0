"""The MOTS challenge text format (:class:`MotsSink`): one line per track per frame, RLE masks.
"""

from __future__ import annotations

import os
from typing import Mapping

from realtime_sam.errors import SinkError
from realtime_sam.output.rle import encode_rle
from realtime_sam.output.sink_base import (
    IdOverflow,
    LinesFile,
    SinkBase,
    label_image_and_ids,
    map_id,
    prepare_output,
)
from realtime_sam.types import FrameResult

__all__ = ["MotsSink"]


class MotsSink(SinkBase):
    """The MOTS challenge text format, one line per track per frame.

    Each line is ``time_frame obj_id class_id img_height img_width rle``
    with ``obj_id = class_id * 1000 + track_id`` (so ``obj_id // 1000`` is
    the class and ``obj_id % 1000`` the instance, as the MOTS tools decode
    it) and ``rle`` the COCO compressed counts string. ``time_frame`` is the
    0-based frame index plus ``frame_offset``. Only tracks with pixels are
    written, overlaps resolved as in the module docstring (the MOTS tools
    reject overlapping masks). Track ids above 999 follow ``id_overflow``.
    A frame's lines go to the file in one unbuffered write.

    Args:
        path: the ``.txt`` file; its folder is created.
        class_id: class of every track, 1-9 (1 car, 2 pedestrian; MOTSChallenge
            scores only 2).
        class_ids: track label -> class id, for tracks labelled with a
            detector's class name (``--detect``); other tracks get ``class_id``.
        frame_offset: added to the frame index: ``0`` for KITTI MOTS, ``1`` for
            MOTSChallenge (TrackEval refuses a frame 0 there).
        id_overflow: ``error`` or ``wrap`` (see :class:`SinkConfig`).
    """

    kind = "mots"
    MAX_ID = 999

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        class_id: int = 1,
        frame_offset: int = 0,
        id_overflow: IdOverflow = "error",
        class_ids: Mapping[str, int] | None = None,
    ) -> None:
        if class_ids and min(class_ids.values()) < 1:
            raise SinkError(f"MOTS class ids must be >= 1, got {dict(class_ids)}")
        if not 1 <= int(class_id) <= 9:
            raise SinkError(f"the MOTS class id must be in 1-9, got {class_id}")
        if int(frame_offset) < 0:
            raise SinkError(f"the MOTS frame offset must be >= 0, got {frame_offset}")
        super().__init__(*prepare_output(path, "mots", "tracks.txt"))
        self.class_id = int(class_id)
        self.frame_offset = int(frame_offset)
        self.id_overflow = id_overflow
        self.class_ids = dict(class_ids or {})
        # Emptied at the first write (or close), not here: see LinesFile.
        self._file = LinesFile(self.path, "mots")

    def frame_lines(self, result: FrameResult) -> list[str]:
        """The lines (without newlines) written for one frame."""
        h, w = result.frame.height, result.frame.width
        labels, ids = label_image_and_ids(result.tracks, (h, w), max_id=self.MAX_ID, overflow=self.id_overflow, what="MOTS")
        frame_no = int(result.index) + self.frame_offset
        classes = {}
        if self.class_ids:
            for t in result.tracks:
                if t.label is not None and t.label in self.class_ids:
                    classes[map_id(t.track_id, self.MAX_ID, self.id_overflow, "MOTS")] = self.class_ids[t.label]
        lines = []
        for tid in ids:
            mask = labels == tid
            if not mask.any():  # wholly covered by smaller masks
                continue
            counts = encode_rle(mask)["counts"]
            cid = classes.get(int(tid), self.class_id)
            lines.append(f"{frame_no} {cid * 1000 + int(tid)} {cid} {h} {w} {counts}")
        return lines

    def write(self, result: FrameResult) -> None:
        """Append this frame's lines."""
        self._check_open()
        lines = self.frame_lines(result)
        self._file.open()  # the run's file from its first frame on, even one with no track
        if lines:
            self._file.write(("\n".join(lines) + "\n").encode("ascii"))
        self.frames_written += 1

    def close(self) -> None:
        """Close the file (empty if no frame had a track); idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._file.open()
        finally:
            self._file.close()

    def _abandon(self) -> None:
        """The run never started: close, leaving an earlier run's file as it was."""
        self._closed = True
        self._file.close()
