"""The streaming tracking API: one call from a source to per-frame results.

::

    from realtime_sam import track
    for result in track("video.mp4", prompts=[ObjectPrompt(box=(10, 20, 200, 220))]):
        for t in result.tracks:
            print(result.index, t.track_id, t.box, t.score, t.mask.sum())
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from realtime_sam.app.pipeline import Pipeline, check_engine_free
from realtime_sam.app.runs import primed_run
from realtime_sam.config import Config, load_config
from realtime_sam.errors import ConfigError
from realtime_sam.output.sink_base import discard_sinks, refuse_shared_outputs
from realtime_sam.tracking.engine import Engine
from realtime_sam.tracking.prompts import check_start_frame, described, validate_prompts
from realtime_sam.types import FrameResult, ObjectPrompt

_log = logging.getLogger(__name__)

__all__ = ["track"]

def track(
    source: str | int,
    *,
    prompts: Iterable[ObjectPrompt] = (),
    config: Config | Mapping[str, Any] | str | Path | None = None,
    overrides: Sequence[str] = (),
    engine: Engine | None = None,
    sinks: Sequence = (),
) -> Iterator[FrameResult]:
    """Yield one :class:`FrameResult` per processed frame of ``source``.

    Args:
        source: a webcam index, a video file, an ``rtsp://``/``http(s)://`` URL, an image folder or glob.
        prompts: objects to track (each applied at its ``start_frame``).
        config: a :class:`Config`, a YAML path, a preset name (``cpu``, ``gpu``) or what a YAML file
            holds as a mapping (``{"engine": {"reencode_every": 3}}``); ``None`` = defaults.
        overrides: ``section.key=value`` strings applied on top.
        engine: reuse an existing engine (and its loaded model) instead of building one. It
            starts over on this source (:meth:`Engine.reset`): the tracks of an earlier run
            are not carried in; objects added to it since are kept, and ids keep counting up.
        sinks: objects with ``write(result)`` / ``close()`` fed every result (see :mod:`realtime_sam.output.sinks`).
            A run that cannot start (the errors below, at the call or at the first ``next()``, or
            a sink that cannot work with the source) closes them and removes the files they created.

    Raises:
        ConfigError: at the call, for a bad ``config`` or ``overrides`` (``detect`` settings
            without ``detect.model`` among them, unless ``engine`` is given), and for ``sinks``
            that would write one file twice: one sink given twice (each frame was written to it
            twice), two sinks of one path, or one sink not in a list.
        PromptError: at the call, for a prompt that is not an :class:`ObjectPrompt` or breaks
            its rules (:func:`~realtime_sam.tracking.prompts.validate_prompt`; also a ``ValueError``).
        SourceError: at the first ``next()``, before the model is loaded, for a source
            that cannot be opened.
        PromptError: at the first ``next()`` too, for a prompt whose ``start_frame`` is past
            the end of a file or image folder (:func:`~realtime_sam.tracking.prompts.check_start_frame`).

    Breaking out of the loop stops the workers and finalises the sinks (a generator
    kept in a variable does so when it is closed: ``gen.close()`` or ``del``, or at the
    latest when the process exits: :func:`~realtime_sam.app.pipeline.close_open_pipelines`).
    A generator closed or dropped before its first result is a run that never started: the
    sinks are discarded, as for the errors above.
    """
    try:
        cfg = load_config(config, overrides)  # a Config, a mapping, a path or a preset
        if engine is None:  # an engine given was built with its own detector settings
            cfg.detect.require_detector()
        # Checked here, as the config is: not after the source opened and the model loaded.
        checked = validate_prompts(prompts)
        given = _check_sinks(sinks)
    except BaseException:
        # The run never starts: the sinks are closed and what making them created is removed,
        # as for the errors at the first next() (and as track_many does at its call).
        discard_sinks([sinks] if callable(getattr(sinks, "write", None)) else _sinks_in(sinks))
        raise
    # Closed or dropped before its first result, the run discards the sinks (its body never ran).
    return primed_run(_run(source, cfg, checked, engine, given), given)


def _sinks_in(sinks: object) -> list:
    """The sink objects in ``sinks`` however malformed (to discard); each once."""
    try:
        items = list(sinks)  # type: ignore[call-overload]
    except TypeError:
        return []
    unique = {id(s): s for s in items if callable(getattr(s, "write", None))}
    return list(unique.values())


def _check_sinks(sinks: Sequence) -> list:
    """``sinks`` as a list, each output given once (as ``track_many`` checks them across streams).

    Raises:
        ConfigError: one sink rather than a list, one sink twice (``sinks=[s, s]`` wrote every
            frame into it twice), or two sinks of one path (the second emptied the first's file).
    """
    if callable(getattr(sinks, "write", None)):
        raise ConfigError("sinks is one sink; give a list: sinks=[sink]")
    given = list(sinks)
    refuse_shared_outputs(((f"sinks[{k}]", sink) for k, sink in enumerate(given)), one_sink_advice="give each sink once")
    return given


def _run(
    source: str | int, cfg: Config, prompts: list[ObjectPrompt], engine: Engine | None, sinks: Sequence
) -> Iterator[FrameResult]:
    from realtime_sam.capture.sources import open_source

    # The source first: a wrong path is its one-line error at once, not after the model
    # has loaded (seconds; a download where the weights are missing).
    try:
        src = open_source(source, cfg.source)
    except BaseException:
        discard_sinks(sinks)  # the run never started: no empty outputs left (as a Pipeline does)
        raise
    try:
        for i, p in enumerate(prompts):
            check_start_frame(p, src, f"prompts[{i}]")
        if engine is not None:
            check_engine_free(engine)  # before reset(): it would empty the tracks of the run using it
            # A new source numbers its frames from 0 and its first frame follows nothing:
            # the tracks (and last frame) of the engine's earlier run would be carried into it.
            engine.reset()
        eng = engine or Engine.from_config(cfg)
        for p in prompts:
            eng.add_object(p)
    except BaseException:
        src.close()
        discard_sinks(sinks)
        raise
    with Pipeline(src, eng, sinks=sinks, config=cfg.pipeline) as pipe:
        yield from pipe
    # A file without a frame count up front (MKV, TS), or max_frames, ended the run first.
    for tid, p in sorted(eng.not_started().items()):
        _log.warning("object %d%s was never tracked: the run ended before its start_frame %d", tid, described(p), p.start_frame)
