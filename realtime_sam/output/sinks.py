"""Outputs that receive every :class:`~realtime_sam.types.FrameResult` as it is made.

Four kinds, all following the :class:`Sink` protocol (``write(result)``,
``close()``, context manager) and all written *as frames arrive*, so a run
that stops early -- Ctrl-C, a dead stream, an exception -- keeps everything
written before it:

``video``  :class:`VideoSink`, the annotated frames as H.264 in ``.mp4``,
           ``.mov`` or ``.mkv``;
``jsonl``  :class:`JsonlSink`, one JSON object per frame with every track's
           box, score, state and COCO RLE mask;
``png``    :class:`PngSink`, one DAVIS-style indexed PNG per frame
           (pixel value = track id);
``mots``   :class:`MotsSink`, the MOTS challenge text format.

:func:`make_sink` builds one sink and :func:`open_sinks` several (for the
CLI's ``--output video:out.mp4`` style arguments); both check that the output
can be written *when they are called*, so a bad path is a one-line
:class:`~realtime_sam.errors.SinkError` before any frame is processed, not
after the first.

Sinks are driven by one thread (the pipeline's sink thread) and are not
safe to share between threads.

Overlapping masks: the PNG and MOTS formats give each pixel one id (the MOTS
tools reject overlapping masks), so there every pixel claimed by several
tracks goes to the **smallest** of them (ties: the lower id): a small object
in front of a large one stays visible. JSONL keeps every mask as is.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from realtime_sam.errors import SinkError
from realtime_sam.output.jsonl import JsonlSink
from realtime_sam.output.mots import MotsSink
from realtime_sam.output.png import PngSink
from realtime_sam.output.render import Renderer
from realtime_sam.output.sink_base import (
    SINK_KINDS,
    Sink,
    SinkBase,
    SinkConfig,
    SinkKind,
    discard_sinks,
)
from realtime_sam.output.video import VIDEO_FORMATS, VideoSink
from realtime_sam.types import FrameResult

__all__ = ["MultiSink", "SinkSpec", "parse_sink_spec", "make_sink", "open_sinks"]

# Extensions that pick a sink kind when a spec names no kind.
_KIND_BY_SUFFIX = {**{s: "video" for s in VIDEO_FORMATS}, ".jsonl": "jsonl", ".txt": "mots"}


class MultiSink(SinkBase):
    """Fans each result out to several sinks; closes all of them.

    ``write`` stops at the first sink that raises (the pipeline then stops
    and calls ``close``); ``close`` closes every sink even when some fail,
    then raises the first failure.
    """

    kind = "outputs"

    def __init__(self, sinks: Sequence[Sink]) -> None:
        super().__init__(Path("."))
        self.sinks: list[Sink] = list(sinks)

    def write(self, result: FrameResult) -> None:
        self._check_open()
        for sink in self.sinks:
            sink.write(result)
        self.frames_written += 1

    def bind_source(self, source: object) -> None:
        for sink in self.sinks:
            bind = getattr(sink, "bind_source", None)
            if callable(bind):
                bind(source)

    def discard(self) -> None:
        """Close every sink, removing what each created where it received no frame (:meth:`SinkBase.discard`)."""
        if self._closed:
            return
        self._closed = True
        discard_sinks(self.sinks)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        for sink in self.sinks:
            try:
                sink.close()
            except BaseException as exc:  # noqa: BLE001 - every sink must get its close()
                first = first or exc
        if first is not None:
            raise first

    def __len__(self) -> int:
        return len(self.sinks)

    def __repr__(self) -> str:
        return f"MultiSink({self.sinks!r})"


@dataclass(frozen=True)
class SinkSpec:
    """One requested output: a kind and a path (a ``str`` path is converted)."""

    kind: SinkKind
    path: Path

    def __post_init__(self) -> None:
        if self.kind not in SINK_KINDS:
            raise SinkError(f"unknown output kind {self.kind!r}; use one of {', '.join(SINK_KINDS)}")
        object.__setattr__(self, "path", Path(self.path))


def parse_sink_spec(text: str) -> SinkSpec:
    """Parse ``KIND:PATH`` or a bare ``PATH`` whose form implies the kind.

    ``video:out.mp4``, ``jsonl:run.jsonl``, ``png:masks/``, ``mots:run.txt``;
    bare paths: ``.mp4``/``.m4v``/``.mov``/``.mkv`` -> video, ``.jsonl`` ->
    jsonl, ``.txt`` -> mots, a path ending in ``/`` or with no extension ->
    png.

    Raises:
        SinkError: an empty spec, an unknown kind, or a path whose kind
            cannot be inferred.
    """
    text = str(text).strip()
    kind, sep, rest = text.partition(":")
    if sep and kind.lower() in SINK_KINDS:
        if not rest:
            raise SinkError(f"the output {text!r} names no path; write it as {kind}:PATH")
        return SinkSpec(kind.lower(), Path(rest))  # type: ignore[arg-type]
    if sep and len(kind) > 1 and "/" not in kind and "\\" not in kind:
        raise SinkError(f"unknown output kind {kind!r} in {text!r}; use one of {', '.join(SINK_KINDS)}")
    if not text:
        raise SinkError(f"an output needs a path, such as out.mp4 or jsonl:tracks.jsonl ({', '.join(SINK_KINDS)})")
    path = Path(text)
    suffix = path.suffix.lower()
    if suffix in _KIND_BY_SUFFIX:
        return SinkSpec(_KIND_BY_SUFFIX[suffix], path)  # type: ignore[arg-type]
    if text.endswith(("/", os.sep)) or not suffix:
        return SinkSpec("png", path)
    raise SinkError(
        f"cannot tell which output {text!r} is from its extension; prefix a kind, as in "
        f"video:{text} ({', '.join(SINK_KINDS)})"
    )


def make_sink(
    kind: str,
    path: str | os.PathLike[str],
    *,
    fps: float | None = None,
    config: SinkConfig | None = None,
    renderer: Renderer | None = None,
    source_name: str | None = None,
    size: tuple[int, int] | None = None,
    class_ids: Mapping[str, int] | None = None,
    timestamps: bool | None = None,
    sample_aspect_ratio: Fraction | None = None,
    fps_setting: str | None = None,
) -> Sink:
    """Build one sink, checking now that its output can be written.

    A file of that name from an earlier run is not emptied here: ``jsonl`` and ``mots`` empty it
    at the run's first write (or at ``close``), ``video`` replaces it at its first frame, so a
    run that cannot start leaves it as it was.

    Args:
        kind: ``video``, ``jsonl``, ``png`` or ``mots``.
        path: file (folder for ``png``).
        fps: the source's frame rate; ``video`` places frames by it (at index / fps for a live source),
            ``jsonl`` records it. ``None``: the source's, when a pipeline runs the sink; a ``video``
            sink that gets no rate from either raises :class:`SinkError`.
        config: codec, ids and format settings.
        renderer: overlay drawing for ``video``.
        source_name: recorded in the ``jsonl`` header.
        size: ``(width, height)`` for ``video``; ``None`` = the frames' size.
        class_ids: for ``mots``: track label -> class id (a detector's classes, see :class:`MotsSink`).
        timestamps: ``video``: place frames at their timestamps (files), not at index / fps;
            ``None``: as the source a pipeline runs it on says (timestamps for a file, index for a
            live source), index when run without one.
        sample_aspect_ratio: ``video``: the source's pixel shape, stored so players show it as the
            source; ``jsonl``: recorded in the header. ``None``: the pipeline's source's.
        fps_setting: ``video``: the configuration key ``fps`` came from (the source's
            :attr:`~realtime_sam.capture.base.Source.fps_setting`), named if the rate is out of range.

    ``source_name`` and ``fps`` not given are also taken from the source a
    :class:`~realtime_sam.app.pipeline.Pipeline` (``track``, ``track_many``)
    runs the sink on, as the command gives them.

    Raises:
        SinkError: unknown kind, or an output that cannot be written.
    """
    cfg = config if config is not None else SinkConfig()
    kind = str(kind).lower()
    if kind == "video":
        return VideoSink(
            path,
            fps,
            size,
            codec=cfg.video_codec,
            crf=cfg.video_crf,
            preset=cfg.video_preset,
            renderer=renderer,
            fragmented=cfg.video_fragmented,
            keyframe_interval_s=cfg.video_keyframe_interval_s,
            timestamps=timestamps,
            sample_aspect_ratio=sample_aspect_ratio,
            fps_setting=fps_setting,
        )
    if kind == "jsonl":
        return JsonlSink(path, source=source_name, fps=fps, sample_aspect_ratio=sample_aspect_ratio)
    if kind == "png":
        return PngSink(path, id_overflow=cfg.id_overflow, compression=cfg.png_compression)
    if kind == "mots":
        return MotsSink(
            path, class_id=cfg.mots_class_id, frame_offset=cfg.mots_frame_offset, id_overflow=cfg.id_overflow,
            class_ids=class_ids,
        )
    raise SinkError(f"unknown output kind {kind!r}; use one of {', '.join(SINK_KINDS)}")


def open_sinks(
    outputs: Iterable[SinkSpec | str],
    *,
    fps: float | None = None,
    config: SinkConfig | None = None,
    renderer: Renderer | None = None,
    source_name: str | None = None,
    size: tuple[int, int] | None = None,
    class_ids: Mapping[str, int] | None = None,
    timestamps: bool | None = None,
    sample_aspect_ratio: Fraction | None = None,
    fps_setting: str | None = None,
) -> MultiSink:
    """Open several outputs at once (all or none).

    Args:
        outputs: :class:`SinkSpec` objects or ``KIND:PATH`` strings
            (:func:`parse_sink_spec`).
        fps, config, renderer, source_name, size, class_ids, timestamps, sample_aspect_ratio, fps_setting: as
            for :func:`make_sink`.

    Returns:
        A :class:`MultiSink` (possibly empty) that writes to and closes them all.

    Raises:
        SinkError: a spec is invalid, two outputs share a path, or one cannot
            be written; outputs opened before the failure are closed again, and the
            files and folders they created removed.
    """
    specs = [o if isinstance(o, SinkSpec) else parse_sink_spec(o) for o in outputs]
    seen: dict[Path, SinkSpec] = {}
    for spec in specs:
        key = Path(os.path.abspath(spec.path.expanduser()))
        if key in seen:
            raise SinkError(f"two outputs write to {spec.path}; give each output its own path")
        seen[key] = spec
    opened: list[Sink] = []
    try:
        for spec in specs:
            opened.append(
                make_sink(
                    spec.kind,
                    spec.path,
                    fps=fps,
                    config=config,
                    renderer=renderer,
                    source_name=source_name,
                    size=size,
                    class_ids=class_ids,
                    timestamps=timestamps,
                    sample_aspect_ratio=sample_aspect_ratio,
                    fps_setting=fps_setting,
                )
            )
    except BaseException:
        discard_sinks(opened)
        raise
    return MultiSink(opened)
