"""What every sink shares: the :class:`Sink` protocol, its settings
(:class:`SinkConfig`), :class:`SinkBase` (idempotent close, context manager,
write-after-close errors), safe file creation and :func:`label_image`, which
gives each pixel one track id (the PNG and MOTS formats need one).

The guarantees of all sinks are described in :mod:`realtime_sam.output.sinks`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from realtime_sam.config_types import check_numbers
from realtime_sam.errors import ConfigError, SinkError, describe_error
from realtime_sam.output.rle import mask_to_box
from realtime_sam.types import FrameResult, TrackResult

__all__ = ["SinkKind", "SINK_KINDS", "IdOverflow", "Sink", "SinkConfig", "prepare_file", "prepare_output", "missing_paths", "discard_sinks", "refuse_shared_outputs", "open_for_lines", "LinesFile", "write_all", "map_id", "label_image", "label_image_and_ids", "SinkBase"]

SinkKind = Literal["video", "jsonl", "png", "mots"]


SINK_KINDS: tuple[str, ...] = ("video", "jsonl", "png", "mots")


IdOverflow = Literal["error", "wrap"]


X264_PRESETS = (
    "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo"
)


@runtime_checkable
class Sink(Protocol):
    """What the pipeline feeds: ``write`` per frame, ``close`` once at the end.

    ``close()`` is called on every exit path (normal end, Ctrl-C, error) and
    must leave a valid output; calling it twice is harmless. Sinks are also
    context managers that close on exit.

    A sink may also have ``bind_source(source)``: a
    :class:`~realtime_sam.app.pipeline.Pipeline` calls it once, before the
    first ``write``, with the source it reads, so that what the caller did
    not say (a file's timestamps, its pixel shape, its name) comes from it.
    And ``discard()``: called instead of ``close()`` when the run cannot
    start (one sink's ``bind_source`` raised), to remove what it created.
    """

    def write(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> "Sink": ...

    def __exit__(self, *exc_info: object) -> None: ...


@dataclass(frozen=True)
class SinkConfig:
    """Settings shared by the sinks :func:`make_sink` builds.

    Attributes:
        video_codec: PyAV/FFmpeg encoder name (``libx264`` writes H.264).
        video_crf: x264/x265 constant rate factor, ``0`` (lossless) to ``51``;
            23 is x264's default, lower is better and bigger.
        video_preset: x264/x265 speed preset; with ``veryfast`` a 720p frame
            costs 10-13 ms (drawing included) on this project's 2-core test
            machine; ``medium`` (x264's default) is about 1.5-2x slower.
        video_fragmented: write ``.mp4``/``.mov`` as fragmented MP4 so that
            even a hard kill leaves a playable file (see :class:`VideoSink`).
        video_keyframe_interval_s: seconds between keyframes, where a player
            can start and seek.
        png_compression: zlib level ``0`` to ``9`` for :class:`PngSink`.
        id_overflow: what the PNG (ids 1-254) and MOTS (ids 1-999) sinks do
            with a larger track id: ``error`` stops with a :class:`SinkError`;
            ``wrap`` reuses ids (``(id - 1) % max + 1``), which may merge two
            objects into one id.
        mots_class_id: MOTS class written for every track (1 car,
            2 pedestrian in KITTI MOTS; MOTSChallenge scores only 2; the
            MOTS tools read 1, 2 and 10; 1-9 allowed); tracks of a
            detector's class get their class's number instead.
        mots_frame_offset: added to the 0-based frame index in MOTS files
            (``0`` for KITTI MOTS, as TrackEval's ``KittiMOTS`` reads them;
            ``1`` for MOTSChallenge, whose frames TrackEval counts from 1).
    """

    video_codec: str = "libx264"
    video_crf: int = 23
    video_preset: str = "veryfast"
    video_fragmented: bool = True
    video_keyframe_interval_s: float = 2.0
    png_compression: int = 1
    id_overflow: IdOverflow = "error"
    mots_class_id: int = 1
    mots_frame_offset: int = 0

    def __post_init__(self) -> None:
        check_numbers(self, "output")  # by type first: "5" < 1 is a TypeError naming no key
        if not self.video_codec:
            raise ConfigError("output.video_codec must name an encoder, such as libx264")
        if self.video_preset not in X264_PRESETS:
            raise ConfigError(
                f"output.video_preset must be one of {', '.join(X264_PRESETS)}, not {self.video_preset!r}"
            )
        if not 0 <= self.video_crf <= 51:
            raise ConfigError(f"output.video_crf must be in [0, 51], got {self.video_crf}")
        if not (math.isfinite(self.video_keyframe_interval_s) and 0.1 <= self.video_keyframe_interval_s <= 60):
            raise ConfigError(
                f"output.video_keyframe_interval_s must be in [0.1, 60] seconds, got {self.video_keyframe_interval_s}"
            )
        if not 0 <= self.png_compression <= 9:
            raise ConfigError(f"output.png_compression must be in [0, 9], got {self.png_compression}")
        if self.id_overflow not in ("error", "wrap"):
            raise ConfigError(f"output.id_overflow must be 'error' or 'wrap', not {self.id_overflow!r}")
        if not 1 <= self.mots_class_id <= 9:
            raise ConfigError(f"output.mots_class_id must be in [1, 9], got {self.mots_class_id}")
        if self.mots_frame_offset < 0:
            raise ConfigError(f"output.mots_frame_offset must be >= 0, got {self.mots_frame_offset}")


def prepare_file(path: str | os.PathLike[str], what: str, example: str) -> Path:
    """Check that ``path`` can be a file we write, creating its folder.

    Raises:
        SinkError: the path is a folder, its folder cannot be created, or the
            file cannot be opened for writing.
    """
    return prepare_output(path, what, example)[0]


def missing_paths(p: Path) -> list[Path]:
    """``p`` and its folders that do not exist yet, outermost first."""
    missing = []
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    return missing[::-1]


def prepare_output(path: str | os.PathLike[str], what: str, example: str) -> tuple[Path, list[Path]]:
    """:func:`prepare_file`, and what it created: the file and folders that were not there before,
    outermost first (what :meth:`SinkBase.discard` may remove)."""
    if str(path) == "":
        raise SinkError(f"the {what} output needs a file name, such as {example}")
    p = Path(path).expanduser()
    if p.is_dir():
        raise SinkError(f"the {what} output {p} is a folder; give a file name such as {p / example}")
    created = missing_paths(p)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the folder {p.parent} for the {what} output: {describe_error(exc)}") from None
    try:
        # Opening for append creates the file without destroying anything yet;
        # each sink truncates when it really starts.
        with open(p, "ab"):
            pass
    except OSError as exc:
        raise SinkError(f"cannot write the {what} output {p}: {describe_error(exc)}") from None
    return p, created


def discard_sinks(sinks: Sequence[Any]) -> None:
    """Close sinks whose run never started (a source or a sink that cannot work, a bad prompt),
    last first, removing what each created (:meth:`SinkBase.discard`); errors are swallowed, as
    the error that stopped the run is the one to report."""
    for sink in reversed(list(sinks)):
        try:
            discard = getattr(sink, "discard", None)
            if callable(discard):
                discard()
            else:
                sink.close()
        except Exception:
            pass


def refuse_shared_outputs(places: Iterable[tuple[str, Any]], *, one_sink_advice: str) -> None:
    """Refuse one sink, or one output path, given twice.

    Args:
        places: ``(where, sink)`` pairs, ``where`` naming the argument it was given in
            (``sinks[1]``, ``sinks['a'][0]``). A sink holding several (``open_sinks``'s, with a
            ``sinks`` list) is looked into: its parts are named ``where.sinks[k]``.
        one_sink_advice: what the error about one sink given twice tells the user to do.

    Raises:
        ConfigError: one line naming both places (and the path, for two sinks of one path).
    """
    seen_sink: dict[int, str] = {}
    seen_path: dict[Path, str] = {}

    def visit(sink: Any, where: str) -> None:
        inner = getattr(sink, "sinks", None)  # open_sinks(...) gives one sink over several
        if isinstance(inner, list):
            for k, part in enumerate(inner):
                visit(part, f"{where}.sinks[{k}]")
        if id(sink) in seen_sink:
            raise ConfigError(f"{seen_sink[id(sink)]} and {where} are one sink; {one_sink_advice}")
        seen_sink[id(sink)] = where
        path = getattr(sink, "path", None)
        if isinstance(path, (str, os.PathLike)) and not isinstance(inner, list):
            key = Path(path).expanduser().resolve()
            if key in seen_path:
                raise ConfigError(f"{seen_path[key]} and {where} both write {path}; give each its own path")
            seen_path[key] = where

    for where, sink in places:
        visit(sink, where)


def open_for_lines(path: Path, what: str) -> Any:
    """``path`` opened for writing from its start (emptied), unbuffered.

    Raises:
        SinkError: it cannot be opened.
    """
    try:
        # Unbuffered: each frame's bytes go to the OS in one write() call, so
        # a crash can leave at most the line being written incomplete.
        return open(path, "wb", buffering=0)
    except OSError as exc:
        raise SinkError(f"cannot write the {what} output {path}: {describe_error(exc)}") from None


class LinesFile:
    """A sink's file of lines, opened (emptied) when the run first writes or closes it, not when
    the sink is made: a run that never starts (a source that does not open, weights that do
    not load) leaves a file of that name from an earlier run as it was.

    ``path`` must already have been checked writable (:func:`prepare_output`).
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path, self.what = path, what
        self._file: Any = None

    @property
    def opened(self) -> bool:
        return self._file is not None

    def open(self) -> None:
        """Open and empty the file, once; later calls do nothing.

        Raises:
            SinkError: it cannot be opened (any more).
        """
        if self._file is None:
            self._file = open_for_lines(self.path, self.what)

    def write(self, data: bytes) -> None:
        """Append ``data`` (opening the file first) in unbuffered writes (:func:`write_all`)."""
        self.open()
        write_all(self._file, data, self.path, self.what)

    def close(self) -> None:
        """Close the file if it was opened (one never opened is left untouched); idempotent."""
        if self._file is not None:
            self._file.close()


def write_all(file: Any, data: bytes, path: Path, what: str) -> None:
    view = memoryview(data)
    try:
        while view:
            n = file.write(view)
            view = view[n:]
    except OSError as exc:
        raise SinkError(f"writing the {what} output {path} failed: {describe_error(exc)}") from None


def map_id(track_id: int, max_id: int, overflow: IdOverflow, what: str) -> int:
    if 1 <= track_id <= max_id:
        return track_id
    if overflow == "wrap" and track_id > max_id:
        return (track_id - 1) % max_id + 1
    raise SinkError(
        f"track id {track_id} does not fit the {what} format (ids 1-{max_id}); "
        f"use the jsonl output, or set output.id_overflow: wrap to reuse ids"
    )


def label_image(
    tracks: Sequence[TrackResult],
    shape: tuple[int, int],
    *,
    max_id: int,
    overflow: IdOverflow = "error",
    what: str = "label",
) -> np.ndarray:
    """One id per pixel from possibly overlapping track masks.

    Args:
        tracks: tracks with ``HxW`` bool masks (empty masks are skipped).
        shape: ``(H, W)`` of the frame.
        max_id: largest id the format holds.
        overflow: see :attr:`SinkConfig.id_overflow`.
        what: format name for error messages.

    Returns:
        ``HxW uint16``: 0 for background, else the (mapped) track id. A pixel
        claimed by several masks gets the smallest mask's id (ties: lower id).

    Raises:
        SinkError: an id exceeds ``max_id`` and ``overflow`` is ``error``.
        ValueError: a mask's shape differs from ``shape``.
    """
    return label_image_and_ids(tracks, shape, max_id=max_id, overflow=overflow, what=what)[0]


def label_image_and_ids(
    tracks: Sequence[TrackResult], shape: tuple[int, int], *, max_id: int, overflow: IdOverflow, what: str
) -> tuple[np.ndarray, list[int]]:
    """:func:`label_image` plus the sorted ids painted (some may end fully covered)."""
    labels = np.zeros(shape, dtype=np.uint16)
    painted: list[tuple[int, int, np.ndarray, tuple[int, int, int, int]]] = []
    for track in tracks:
        mask = np.asarray(track.mask, dtype=bool)
        if mask.shape != tuple(shape):
            raise ValueError(f"track {track.track_id}: mask shape {mask.shape} differs from the frame's {tuple(shape)}")
        box = mask_to_box(mask)
        if box is None:
            continue
        mapped = map_id(int(track.track_id), max_id, overflow, what)
        x0, y0, x1, y1 = (int(v) for v in box)
        area = int(np.count_nonzero(mask[y0:y1, x0:x1]))
        painted.append((area, mapped, mask, (x0, y0, x1, y1)))
    # Largest first, so smaller masks end up on top.
    painted.sort(key=lambda item: (-item[0], -item[1]))
    for _, mapped, mask, (x0, y0, x1, y1) in painted:
        labels[y0:y1, x0:x1][mask[y0:y1, x0:x1]] = mapped
    return labels, sorted({item[1] for item in painted})


class SinkBase:
    """Context-manager plumbing and the closed-state check."""

    kind: str = "sink"

    def __init__(self, path: Path, created: Sequence[Path] = ()) -> None:
        self.path = path
        self.frames_written = 0
        self._closed = False
        self._created = list(created)  # the file and folders opening it made (prepare_output), outermost first

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError(f"the {self.kind} output {self.path} is already closed")

    def __enter__(self) -> "SinkBase":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"{type(self).__name__}({str(self.path)!r}, {self.frames_written} frames, {state})"

    def bind_source(self, source: Any) -> None:
        """Take from ``source`` what was not given at construction (see :class:`Sink`); here nothing."""

    def close(self) -> None:  # pragma: no cover - overridden
        self._closed = True

    def _abandon(self) -> None:
        """Close a sink whose run never started (:meth:`discard`), finishing no output: here :meth:`close`.

        A sink that opens its file at the first write overrides this, so that a file of that
        name from an earlier run is neither emptied nor given a header.
        """
        self.close()

    def discard(self) -> None:
        """Close a sink that received no frame, removing the file and folders that opening it
        created (a file or folder that was there before is left); with frames, just :meth:`close`.

        A :class:`~realtime_sam.app.pipeline.Pipeline` that cannot start (a sink that cannot
        work with its source) calls this: the files ``make_sink`` made to prove the paths
        writable would be left empty, or with a header and no frame.
        """
        written = self.frames_written
        if written:
            self.close()
            return
        self._abandon()
        for p in reversed(self._created):  # innermost first: a folder goes once empty
            try:
                if p.is_dir():
                    p.rmdir()
                else:
                    p.unlink()
            except OSError:
                pass  # a folder another output wrote into, or one gone already
