"""``realtime-sam`` with several sources: ``--source A --source B ...`` or ``--sources streams.yaml``.

One model serves every stream (see :mod:`realtime_sam.app.multi`). Outputs
are per stream through ``{name}`` in ``--output`` / ``--save-masks``. Each
stream prints its own status line every ``--status-interval`` seconds, and
its events (disconnected, reconnecting ...) prefixed with its name.

Exit status: 0 when every stream finished cleanly (its source ended, or
``--max-frames``, or the user stopped the run with nothing failed); 1 when
at least one stream failed part-way (a damaged file, a stream that gave up
reconnecting; each failure is one ``error: NAME: ...`` line, its outputs
are complete up to the failure, and the other streams ran on); 2 for a
bad argument, input or setting before the run started; 130/143 after
Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import sys
from pathlib import Path
from typing import Any

from realtime_sam.app.streams import StreamSpec, expand_path, load_streams_file, refuse_writing_sources, specs_from_sources
from realtime_sam.errors import ConfigError

__all__ = ["stream_specs", "run_streams"]


def stream_specs(args: argparse.Namespace) -> list[StreamSpec]:
    """The run's streams: the ``--sources`` file's, then one per ``--source`` (names unique).

    The file's per-stream settings are checked over the run's configuration (``--config``, ``--set``,
    flags), which they are applied over, not over the defaults.
    """
    from realtime_sam.app import cli

    specs = load_streams_file(args.sources, cli.build_config(args)) if args.sources else []
    specs += specs_from_sources(args.source or [])
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"stream name(s) {', '.join(dup)} used twice; name the streams in the --sources file")
    if args.sources:  # build_config leaves the detect.* check to the streams, which may name their own detector
        from realtime_sam.app.multi import require_detectors

        require_detectors(specs, cli.build_config(args))
    return specs


def run_streams(args: argparse.Namespace, specs: list[StreamSpec]) -> int:
    """Run several streams (in a grid window unless ``--headless``); returns the exit status (see the module docstring)."""
    from realtime_sam.app import cli
    from realtime_sam.app.multi import load_detectors, open_streams, stream_config
    from realtime_sam.output.render import Renderer
    from realtime_sam.output.sinks import SinkSpec, open_sinks
    from realtime_sam.tracking.prompts import prompts_from_args

    if getattr(args, "ray", None) is not None:
        return _run_on_ray(args, specs)
    windowed = not args.headless
    if windowed:
        from realtime_sam.app.ui import require_display

        require_display("add --headless to run without one")
    config = cli.build_config(args)
    if windowed:
        # The grid shows each frame as it is processed: results cannot wait for the next encode.
        config = dataclasses.replace(config, pipeline=dataclasses.replace(config.pipeline, two_way=False))
    prompts = prompts_from_args(args.box, args.point, args.prompts)
    several = len(specs) > 1
    # Check every path before opening anything: a missing {name} is a usage error, not a half-run.
    plans: dict[str, list[SinkSpec]] = {}
    flags: list[tuple[str, Path]] = []  # (the flag or key that gave it, path) of every output
    for spec in specs:
        video = expand_path(spec.output or args.output, spec.name, several=several and spec.output is None, flag="--output")
        out = [SinkSpec("video", Path(video))] if video else []
        masks = spec.save_masks or args.save_masks
        if masks is not None:
            sub = argparse.Namespace(**{**vars(args), "save_masks": expand_path(masks, spec.name, several=several and spec.save_masks is None, flag="--save-masks")})
            out.append(cli._mask_spec(sub))
        plans[spec.name] = out
        flags += [(_flag(spec, s.kind == "video"), s.path) for s in out]
    refuse_writing_sources(flags, {spec.name: spec.source for spec in specs})
    writers: dict[str, str] = {}  # resolved output path -> the stream writing it
    for name, plan in plans.items():
        for out in plan:
            key = str(Path(out.path).resolve())
            if key in writers:
                raise ConfigError(
                    f"streams {writers[key]} and {name} both write {out.path}; "
                    "give each stream its own path ({name} in it, or its own output:/save_masks: in the --sources file)"
                )
            writers[key] = name

    renderer = Renderer(config.render)
    quiet = args.quiet

    def say(text: str, important: bool = False) -> None:
        if important or not quiet:
            print(text, file=sys.stderr, flush=True)

    def events(spec: StreamSpec):
        def on(event: Any) -> None:
            say(f"{spec.name}: source: {event.message}", event.important)

        return on

    # Every stream's detector, loaded at the first stream's outputs (after the sources opened and
    # the weights were checked), before any output is made: one that cannot start (a class it
    # lacks) leaves no file and empties no earlier run's, and MOTS files number each stream's
    # detector classes (without them every track had output.mots_class_id). The engines take them.
    detecting: dict[str, Any] | None = None  # stream name -> DetectorPrompts, once loaded
    detectors: dict[str, Any] = {}

    def sinks_for(spec: StreamSpec, source: Any, cfg: Any):
        nonlocal detecting
        if detecting is None:
            detecting = load_detectors(specs, config, verbose=not quiet)
            detectors.update({name: d.detector for name, d in detecting.items()})
        det = detecting.get(spec.name)
        return [open_sinks(
            plans[spec.name], fps=source.fps or 25.0, fps_setting=getattr(source, "fps_setting", None) if source.fps else None,
            config=cfg.output, renderer=renderer, source_name=source.name, class_ids=det.class_numbers() if det else None,
            timestamps=not source.live, sample_aspect_ratio=getattr(source, "sample_aspect_ratio", None),
        )]

    multi = open_streams(
        specs, config, detectors=detectors, prompts=prompts, sinks_for=sinks_for, on_status=events, progress=not quiet,
        on_export=lambda path: say(cli._export_line(config.model.backend, path)),
    )
    if not any(plans.values()):
        say("note: nothing is saved; add --output 'out/{name}.mp4' and/or --save-masks 'out/{name}.jsonl'")
    say(f"streams: {', '.join(s.name for s in specs)} (one model, {multi.scheduler.max_batch if multi.scheduler else 1} image(s) per encode)")
    for spec, r in zip(specs, multi.runs):  # as one stream is told (cli._run_on)
        if getattr(r.source, "live", False) and cli.made_for_files(stream_config(config, spec)):
            say(f"note: {spec.name}: {cli.FILE_CONFIG_NOTE}")
    frames = 0
    with cli._StopOnSignal(multi.stop) as signals:
        try:
            with multi:
                beat = cli.StatusBeat(args.status_interval)
                told_ended: set[str] = set()

                def tick() -> None:  # each stream's status line, every --status-interval
                    if beat.due():
                        for st in multi.status():
                            # A stream that ended (done or failed) is told once, not on every beat
                            # for as long as the others run: a camera that gave up at 9 a.m. repeated
                            # its failed line and error every interval all day. All again at the end.
                            if st.state in ("done", "failed"):
                                if st.name in told_ended:
                                    continue
                                told_ended.add(st.name)
                            say(st.line())

                def took(_item: Any) -> None:
                    nonlocal frames
                    frames += 1
                    tick()

                if windowed:
                    from realtime_sam.app.grid import GridWindow

                    with GridWindow(renderer=renderer, on_message=say, snapshot_dir=args.snapshot_dir) as window:
                        window.run(multi, on_result=took)
                else:
                    while not multi.ended:
                        if multi.poll(0.05) is not None:
                            frames += 1
                        tick()
        finally:
            multi.close()
    for st in multi.status():
        say(st.line())
    errors = multi.errors
    for name, exc in errors.items():
        print(f"error: {name}: {exc}", file=sys.stderr)
    if signals.received is not None:
        say(f"stopped by {signal.Signals(signals.received).name}: {frames} frames processed, outputs saved")
        return cli._EXIT_BY_SIGNAL[signal.Signals(signals.received)]
    if errors:
        return cli.EXIT_DAMAGED
    for spec, r in zip(specs, multi.runs):
        for line in cli.never_started(r.engine, stream=spec.name):
            say(line, True)
    say(f"done: {frames} frames over {len(specs)} streams")
    return cli.EXIT_OK


def _flag(spec: StreamSpec, video: bool) -> str:
    """What gave a stream's output path: its own ``output:`` / ``save_masks:`` or the run's flag."""
    if video:
        return f"stream {spec.name}: output:" if spec.output else "--output"
    return f"stream {spec.name}: save_masks:" if spec.save_masks else "--save-masks"


def _run_on_ray(args: argparse.Namespace, specs: list[StreamSpec]) -> int:
    """``--ray``: the streams on a pool of Ray actors, JSONL outputs appended across restarts (see :mod:`realtime_sam.app.cluster`)."""
    from realtime_sam.app import cli
    from realtime_sam.app.cluster import StreamJob, run_on_ray
    from realtime_sam.tracking.prompts import prompts_from_args

    if args.output:
        raise ConfigError("--output is not available with --ray (a video cannot be appended to after a worker dies); use --save-masks 'out/{name}.jsonl'")
    if not args.save_masks and not all(s.save_masks for s in specs):
        raise ConfigError("--ray needs --save-masks 'out/{name}.jsonl': the workers' results go to files")
    config = cli.build_config(args)
    prompts = tuple(prompts_from_args(args.box, args.point, args.prompts))
    several = len(specs) > 1
    jobs = []
    for spec in specs:
        path = spec.save_masks or expand_path(args.save_masks, spec.name, several=several, flag="--save-masks")
        if not str(path).endswith(".jsonl") or (args.mask_format not in (None, "jsonl")):
            raise ConfigError(f"--ray writes JSONL masks (appended after a restart); give a .jsonl path, not {path}")
        jobs.append(StreamJob(spec=spec, masks_path=str(Path(path).resolve()), prompts=prompts, config=config))
    refuse_writing_sources([(_flag(j.spec, False), j.masks_path) for j in jobs], {spec.name: spec.source for spec in specs})
    if len({j.masks_path for j in jobs}) != len(jobs):
        raise ConfigError("two streams write the same output file; give each stream its own path ({name} in it)")

    def tell(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def say(text: str) -> None:
        if not args.quiet:
            tell(text)

    # Each actor: one CPU, and one GPU when the model runs on CUDA.
    gpus = 1.0 if str(config.model.device).startswith("cuda") else 0.0
    outcomes = run_on_ray(
        jobs, model_config=config.model, workers=args.workers, address=args.ray or None, on_event=say, num_gpus=gpus,
        status_interval_s=args.status_interval, on_warning=tell,  # a stream dropped or back: shown with --quiet, as without --ray
    )
    failed = [o for o in outcomes if o.state == "failed"]
    for o in failed:
        print(f"error: {o.name}: {o.error}", file=sys.stderr)
    say("done: " + ", ".join(f"{o.name} {o.state} ({o.frames} frames)" for o in outcomes))
    return cli.EXIT_DAMAGED if failed else cli.EXIT_OK
