"""The ``realtime-sam`` command: track objects in a webcam, file or stream.

Windowed by default (click objects to track them, see :mod:`realtime_sam.app.ui`);
``--headless`` runs without a window and writes the outputs. ``realtime-sam
weights ...`` manages the model weights (:func:`realtime_sam.model.weights.weights_main`);
``realtime-sam annotate DATA ...`` labels a dataset (:func:`realtime_sam.app.annotate.annotate_main`).

Settings are applied in this order, later winning: the built-in defaults,
``--config FILE``, ``--set section.key=value``, then the dedicated flags
(``--device``, ``--reencode-every``, ...).

Exit status: 0 when the source ended or the user quit; 1 when an input file
turned out damaged part-way or a stream gave up reconnecting (every frame
before is processed and saved first); 2 for a bad argument, input or setting (one ``error:`` line on
stderr); 130 after Ctrl-C and 143 after SIGTERM, with outputs finalised.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from dataclasses import replace as dataclass_replace
from pathlib import Path
from types import FrameType
from typing import Any, Callable, Mapping, Sequence, TextIO

# Before torch is imported (it cannot be changed afterwards): PyTorch's OpenMP
# workers otherwise spin while they wait, and the app's capture, inference and
# window threads share few cores; with spinning workers a small network ran
# 25x slower on a busy 2-core machine (see realtime_sam/model/device.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# OpenCV before PyAV, always: PyAV's Linux wheel bundles its own libxcb, and
# when it is loaded first, OpenCV's Qt backend hangs for good in the first
# namedWindow (measured under Xvfb with av 18 / opencv-python 5.0).
import cv2  # noqa: F401  (the import order is the point)

from realtime_sam.errors import ConfigError, RealtimeSamError, SinkError, SourceError
from realtime_sam.sigterm import RaiseOnTerm, Terminated

__all__ = ["build_parser", "build_config", "main", "entry", "EXIT_OK", "EXIT_DAMAGED", "EXIT_ERROR"]

EXIT_OK = 0
EXIT_DAMAGED = 1
EXIT_ERROR = 2
_EXIT_BY_SIGNAL = {signal.SIGINT: 130, signal.SIGTERM: 143}
_MASK_FORMATS = ("jsonl", "png", "mots")

_EPILOG = """\
examples:
  realtime-sam --source demo
      the built-in demo clip with three objects tracked (add --headless --output demo.mp4 without a display)
  realtime-sam --source 0
      webcam in a window: click an object to track it, drag a box, h for help
  realtime-sam --source clip.mp4 --headless --box 100,80,300,260 --output out.mp4
      track the object in the box, write the annotated video
  realtime-sam --source clip.mp4 --headless --prompts objects.yaml --save-masks tracks.jsonl
      objects from a file (YAML/JSON list of {points, labels, box, label, start_frame})
  realtime-sam --source rtsp://user:pass@camera/stream --auto --save-masks masks/ --mask-format png
      find objects by themselves; one indexed PNG per frame
  realtime-sam --source clip.mp4 --config cpu --set engine.reencode_every=10 --max-frames 300
  realtime-sam --headless --source a.mp4 --source rtsp://cam/live --save-masks 'out/{name}.jsonl'
      several streams, one model; {name} = file stem, camera index (cam0), URL slug
  realtime-sam --headless --sources streams.yaml --output 'out/{name}.mp4'
      streams with their own names, prompts and settings
  realtime-sam weights download
      fetch the MobileSAM weights (40 MB) before going offline
  realtime-sam --source clip.mp4 --headless --detect yolo11n.pt --classes person,car --save-masks tracks.jsonl
      track every person and car a YOLO detector finds; tracks carry the class name
  realtime-sam annotate images/ --det-model yolo11n.pt
      YOLO segmentation labels for a folder of images (see realtime-sam annotate --help)

prompts: each --box is one object; all --point flags together form one object
(x,y,1 on it, x,y,0 not on it). Points and boxes outside the frame are clamped;
a value starting with "-" needs the = form: --box=-5,0,100,80.

exit status: 0 done, 1 input file damaged or stream lost part-way (what was read is saved),
2 bad argument or input, 130 Ctrl-C, 143 SIGTERM (outputs are finalised).
"""


# ---------------------------------------------------------------- arguments


def _int_at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def _float_where(ok: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type: a number for which ``ok`` holds, else ``must be <rule>``."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = f"number {rule}"
    return parse


_positive_float = _float_where(lambda v: 0 < v < float("inf"), "a number > 0")


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``error: ...``) and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message} (see --help)\n")


class _Once(argparse.Action):
    """Store a flag's value, refusing it given a second time: argparse kept the last silently, so
    ``--config cpu --config mine.yaml`` ran without the cpu preset, as if it had not been given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[override]
        before = getattr(namespace, self.dest, None)
        if before is not None:
            parser.error(
                f"{option_string} is given twice ({before} and {values}); give one "
                "(a config file needs only the keys it changes; --set overrides single keys)"
            )
        setattr(namespace, self.dest, values)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``realtime-sam`` (without the ``weights`` and ``annotate`` sub-commands)."""
    p = _Parser(
        prog="realtime-sam",
        description="Segment and track objects in live video with MobileSAM.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_argument_group("input")
    src.add_argument(
        "--source",
        action="append",
        metavar="SRC",
        help="webcam index (0), video file, image folder or glob, rtsp://, rtmp://, http(s):// URL, lavfi:GRAPH, "
        "or demo (a short clip that ships with the package, three objects preset); "
        "repeat for several streams in one process, one model: then {name} goes in --output/--save-masks",
    )
    src.add_argument("--sources", metavar="FILE", help="YAML list of streams: name, source, prompts, settings (see README, Several cameras)")
    src.add_argument("--ray", nargs="?", const="", metavar="ADDRESS", help="run the streams on Ray actors (pip install 'realtime-sam[ray]'); no ADDRESS = a local cluster")
    src.add_argument("--workers", type=_int_at_least(1), default=None, metavar="K", help="with --ray: Ray actors, each holding one model (default: 2)")
    src.add_argument("--realtime", action="store_true", help="play files at their frame rate, dropping frames the model cannot keep up with")
    src.add_argument("--max-frames", type=_int_at_least(1), metavar="N", help="stop after N processed frames")

    pr = p.add_argument_group("what to track")
    pr.add_argument("--box", action="append", default=[], metavar="X0,Y0,X1,Y1", help="an object's box in pixels (repeatable: one object each)")
    pr.add_argument("--point", action="append", default=[], metavar="X,Y[,L]", help="a point on (L=1, default) or off (L=0) the object; all points form one object")
    pr.add_argument("--prompts", metavar="FILE", help="YAML/JSON list of objects: {points, labels, box, label, start_frame}")
    pr.add_argument("--auto", action="store_true", help="discover objects automatically (a point grid every few frames)")
    pr.add_argument("--detect", metavar="MODEL", help="track what a YOLO detector finds (e.g. yolo11n.pt; needs realtime-sam[detect]); tracks carry the class name")
    pr.add_argument("--classes", metavar="LIST", help="with --detect: class names or ids to track, comma-separated, e.g. person,car (default: all)")
    pr.add_argument("--detect-every", type=_int_at_least(1), metavar="K", help="with --detect: run the detector every K frames (default: 15)")

    out = p.add_argument_group("output")
    out.add_argument("--headless", action="store_true", help="no window (required where there is no display)")
    out.add_argument("--output", metavar="VIDEO", help="write the annotated video (.mp4, .mov or .mkv)")
    out.add_argument("--save-masks", metavar="PATH", help="write every frame's masks: a .jsonl file, a .txt (MOTS) file or a folder of PNGs")
    out.add_argument("--mask-format", choices=_MASK_FORMATS, help="format of --save-masks (default: from the path: .jsonl, .txt = mots, folder = png)")
    out.add_argument("--snapshot-dir", type=Path, default=None, metavar="DIR", help="where the window's s key saves PNG snapshots (default: .)")
    out.add_argument("--quiet", action="store_true", help="no progress or status output: only errors and a live source dropping or coming back")
    out.add_argument("--status-interval", type=_positive_float, default=5.0, metavar="S", help="seconds between status lines for live sources (default: 5)")

    m = p.add_argument_group("model")
    m.add_argument("--weights", metavar="FILE", help="checkpoint file (default: $REALTIME_SAM_WEIGHTS or the cache, downloaded on first use)")
    # Checked with the rest of the configuration (listing the choices here would import torch for --help).
    m.add_argument("--model-type", metavar="TYPE", help="vit_t = MobileSAM (default); vit_b, vit_l, vit_h = original SAM")
    m.add_argument("--device", metavar="DEV", help="auto (default), cpu, cuda, cuda:N or mps")
    m.add_argument("--backend", metavar="NAME", help="inference backend: auto (default), eager, torch, onnxruntime, openvino")
    m.add_argument("--reencode-every", type=_int_at_least(1), metavar="N", help="run the image encoder every N frames; masks follow motion in between")

    c = p.add_argument_group("configuration")
    c.add_argument("--config", action=_Once, metavar="FILE", help="YAML config file, or a preset: default, cpu, gpu")
    c.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one setting, e.g. engine.reencode_every=5 (repeatable)")
    return p


def build_config(args: argparse.Namespace):
    """The run's :class:`~realtime_sam.config.Config`: defaults, ``--config``, ``--set``, then dedicated flags.

    Raises:
        ConfigError: an unknown key or a bad value, naming the valid ones.
    """
    from realtime_sam.config import load_config

    flags: dict[str, dict[str, Any]] = {}

    def put(section: str, key: str, value: Any) -> None:
        if value is not None:
            flags.setdefault(section, {})[key] = value

    put("model", "weights", args.weights)
    put("model", "model_type", args.model_type)
    put("model", "device", args.device)
    put("model", "backend", args.backend)
    put("engine", "reencode_every", args.reencode_every)
    put("engine", "auto", True if args.auto else None)
    put("detect", "model", args.detect)
    if args.classes is not None:
        put("detect", "classes", [c.strip() for c in args.classes.split(",") if c.strip()])
    put("detect", "every_k_frames", args.detect_every)
    put("pipeline", "max_frames", args.max_frames)
    put("pipeline", "realtime", True if args.realtime else None)
    # One merge of all layers, so that keys checked together are checked as the run uses them.
    config = load_config(args.config, args.set, flags)
    # Here, not in load_config: in Python a detector object may be given beside the settings.
    # With a --sources file a stream may name its own detector (settings: detect: model:): the
    # streams are checked one by one then (multi.require_detectors), not the run's settings alone.
    if not getattr(args, "sources", None):
        if (args.classes is not None or args.detect_every is not None) and not config.detect.model:
            raise ConfigError("--classes and --detect-every need --detect MODEL (e.g. --detect yolo11n.pt)")
        config.detect.require_detector()  # detect.* from --set or a config file
    return config


def _mask_spec(args: argparse.Namespace):
    from realtime_sam.output.sinks import SinkSpec, parse_sink_spec

    if args.save_masks is None:
        if args.mask_format is not None:
            raise SinkError("--mask-format needs --save-masks PATH")
        return None
    if args.mask_format is not None:
        return SinkSpec(args.mask_format, Path(args.save_masks))
    spec = parse_sink_spec(args.save_masks)
    if spec.kind not in _MASK_FORMATS:
        raise SinkError(
            f"--save-masks {args.save_masks} looks like a video; give a .jsonl or .txt file or a folder, "
            "or set --mask-format (use --output for the annotated video)"
        )
    return spec


# ---------------------------------------------------------------- progress and status


class StatusBeat:
    """When a status line is due: every ``interval_s`` seconds of ``clock``, on the same beat.

    A line checked for late (it waits for a processed frame, or for the next tick) does not
    move the next one: that is due an interval after the last was due, so lines come every
    ``interval_s`` on average. After a gap of more than an interval the beat starts anew.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._next = clock() + interval_s

    def due(self) -> bool:
        """Whether a line is due now; if so, the next one is scheduled."""
        now = self._clock()
        if now < self._next:
            return False
        self._next += self.interval_s
        if self._next <= now:
            self._next = now + self.interval_s
        return True


class _Reporter:
    """Everything the run prints to stderr: progress bar (files), status lines (live), events."""

    def __init__(
        self, *, quiet: bool, status_interval_s: float, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self._bar: Any = None
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._beat = StatusBeat(status_interval_s, clock)
        self.frames = 0
        self.tracks = 0
        self.source: Any = None  # the live source whose connection the status line reports

    def line(self, text: str, *, important: bool = False) -> None:
        """Print one line (kept clear of the progress bar); ``important`` lines show even with --quiet."""
        if self.quiet and not important:
            return
        with self._lock:
            if self._bar is not None:
                self._bar.write(text, file=self.stream)
            else:
                print(text, file=self.stream, flush=True)

    def source_event(self, event: Any) -> None:
        """``on_status`` callback of live sources (called on the capture thread)."""
        self.line(f"source: {event.message}", important=event.important)

    def start(self, source: Any, max_frames: int | None, realtime: bool = False) -> None:
        self.source = source
        if self.quiet or source.live:
            return
        from tqdm import tqdm

        total = source.num_frames
        if max_frames and not realtime:  # with --realtime, frames are skipped: max_frames is no position
            total = min(total, max_frames) if total else max_frames
        self._bar = tqdm(total=total, unit="frame", file=self.stream, dynamic_ncols=True, desc=Path(source.name).name[:30], leave=True)

    def result(self, result: Any, stats: Any) -> None:
        self.frames += 1
        self.tracks = len(result.tracks)
        if self.quiet:
            return
        if self._bar is not None:
            # The frame's position, not a count: with --realtime, frames the
            # model could not keep up with are skipped.
            self._bar.update(max(0, result.index + 1 - self._bar.n))
            self._bar.set_postfix(tracks=self.tracks, refresh=False)
            return
        self.tick(stats)

    def tick(self, stats: Any) -> None:
        """A live source's status line, when one is due (every ``status_interval_s`` seconds, :class:`StatusBeat`).

        Called with each result and, headless, while waiting for one: a loop busy for seconds
        (auto discovery's point grid with the file preset on a stream: 7 s) still gets its
        lines on time, showing frames read while none were processed.
        """
        if self.quiet or self._bar is not None:
            return
        if self._beat.due():
            self.line(self.status_text(stats))

    def status_text(self, stats: Any) -> str:
        """``[elapsed] frames ... | model ... | tracks N``; while the source is down,
        ``[elapsed] reconnecting (attempt N): frames ...`` (its read count stands still meanwhile)."""
        from realtime_sam.app.pipeline import model_rate

        elapsed = self._clock() - self._started
        attempt = getattr(self.source, "reconnect_attempt", None)
        state = f"reconnecting (attempt {attempt}): " if attempt else ""
        return (
            f"[{elapsed:7.1f}s] {state}frames {stats.frames_read} read, {stats.frames_processed} processed, "
            f"{stats.frames_dropped} dropped | model {model_rate(stats)} | tracks {self.tracks}"
        )

    def close(self) -> None:
        with self._lock:
            bar, self._bar = self._bar, None
        if bar is not None:
            bar.close()


# ---------------------------------------------------------------- signals


class _StopOnSignal:
    """While active, SIGINT/SIGTERM stop the pipeline gracefully; a second signal exits at once."""

    insisted = False  # a second signal came: the exit does not wait for busy threads either (see entry)

    def __init__(self, stop: Callable[[], None]) -> None:
        self._stop = stop
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            # The user insists: give up on finalising.
            _StopOnSignal.insisted = True
            raise SystemExit(_EXIT_BY_SIGNAL.get(signal.Signals(signum), 128 + signum))
        self.received = signum
        self._stop()

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():
            for sig in _EXIT_BY_SIGNAL:
                # A signal the parent told us to ignore (nohup, `cmd &` in a script) stays ignored.
                if signal.getsignal(sig) is not signal.SIG_IGN:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()


# ---------------------------------------------------------------- the run


def _run(args: argparse.Namespace) -> int:
    from realtime_sam.app.demo import demo_clip, demo_prompts, is_demo

    if not is_demo(args.source):
        return _run_on(args, args.source)
    # The demo: its clip, and its preset objects unless the command line gives objects of its own.
    with demo_clip() as clip:
        return _run_on(args, str(clip), default_prompts=demo_prompts())


FILE_CONFIG_NOTE = (
    "this configuration is made for files (dense optical flow, 45-100 ms a frame on a CPU, "
    "and frames wait for each encode); for a camera add --config cpu (no GPU) or --config gpu"
)
"""What a live source run with a configuration :func:`made_for_files` accepts is told (after ``note: ``)."""


def made_for_files(config) -> bool:
    """Whether ``config`` carries masks by dense optical flow between encodes on the calling
    thread (the default): on a live source the flow alone holds it to a few frames a second."""
    engine = config.engine
    return config.propagation.method == "dense" and engine.reencode_every > 1 and not engine.background_encode


def never_started(engine: Any, names: Mapping[int, str] | None = None, stream: str | None = None) -> list[str]:
    """``warning:`` lines for the objects added that the run ended before: their ``start_frame`` never came.

    A file whose length is known is checked before the run (``check_start_frame``); one
    without a count up front (MKV, WebM, TS) or a run cut short by ``--max-frames`` is
    told here. ``names``: reserved id -> what to call that prompt (default ``prompt``);
    ``stream``: the stream's name, before it, for one of several.
    """
    from realtime_sam.tracking.prompts import described

    names = names or {}
    where = f"{stream}: " if stream else ""
    return [
        f"warning: {where}{names.get(tid, 'prompt')}{described(p)}: never tracked: the run ended before its start_frame {p.start_frame}"
        for tid, p in sorted(engine.not_started().items())
    ]


def _run_on(args: argparse.Namespace, source_spec: str, default_prompts: Sequence[Any] = ()) -> int:
    from realtime_sam.app.ui import require_display
    from realtime_sam.capture.sources import open_source
    from realtime_sam.output.render import Renderer
    from realtime_sam.output.sinks import SinkSpec, open_sinks
    from realtime_sam.tracking.prompts import clamp_initial_prompt, prompts_from_args

    config = build_config(args)
    prompts = prompts_from_args(args.box, args.point, args.prompts) or list(default_prompts)
    mask_spec = _mask_spec(args)
    from realtime_sam.app.streams import refuse_writing_sources

    outputs = [("--output", args.output)] if args.output else []
    refuse_writing_sources(outputs + ([("--save-masks", mask_spec.path)] if mask_spec else []), {"": source_spec})
    windowed = not args.headless
    if windowed:
        require_display("add --headless to run without one")

    # One renderer for the window and the video output: what is saved looks like what was shown.
    renderer = Renderer(config.render)
    reporter = _Reporter(quiet=args.quiet, status_interval_s=args.status_interval)
    source = open_source(source_spec, config.source, on_status=reporter.source_event)
    pipeline = None
    sinks = None
    try:
        # The file's objects come first (then --box, then --point): an error names the file's entry.
        from_file = len(prompts) - len(args.box or ()) - (1 if args.point else 0) if args.prompts else 0
        names = [f"{args.prompts}: object {i + 1}" if i < from_file else "prompt" for i in range(len(prompts))]
        prompts = [clamp_initial_prompt(p, source, what) for p, what in zip(prompts, names)]
        detector = None
        class_ids = None
        if config.detect.model:
            # Before the outputs: MOTS files number the detector's classes.
            from realtime_sam.model.detector import load_detector
            from realtime_sam.tracking.detection import DetectorPrompts

            detector = load_detector(config.detect, config.model.device, verbose=not args.quiet)
            class_ids = DetectorPrompts(detector, config.detect).class_numbers()
        # Outputs before the model: a bad path fails in a second, not after a download. But what
        # would fail the load (weights missing, damaged or foreign, no such device...) fails first,
        # before an output truncates an earlier run's; with onnxruntime or openvino that is the
        # load itself (the encoder export can fail, e.g. on a full disk).
        from realtime_sam.model.loader import prepare_model

        model = prepare_model(
            config.model, progress=not args.quiet, on_export=lambda path: reporter.line(_export_line(config.model.backend, path))
        )
        specs = [SinkSpec("video", Path(args.output))] if args.output else []
        if mask_spec is not None:
            specs.append(mask_spec)
        sinks = open_sinks(
            specs,
            fps=source.fps or 25.0,
            fps_setting=getattr(source, "fps_setting", None) if source.fps else None,
            config=config.output,
            renderer=renderer,
            source_name=source.name,
            class_ids=class_ids,
            # A file's own timestamps: a variable-frame-rate file keeps its timing.
            timestamps=not source.live,
            sample_aspect_ratio=source.sample_aspect_ratio,
        )

        from realtime_sam.tracking.engine import Engine

        runner = None
        if model is not None:
            from realtime_sam.model.runners import InferenceRunner

            runner = InferenceRunner(model)
        engine = Engine.from_config(config, runner=runner, progress=not args.quiet, detector=detector)
        named = {engine.add_object(prompt): what for prompt, what in zip(prompts, names)}
        if not specs and args.headless:
            reporter.line("note: nothing is saved; add --output VIDEO and/or --save-masks PATH")
        if getattr(source, "live", False) and made_for_files(config):
            reporter.line(f"note: {FILE_CONFIG_NOTE}")

        from realtime_sam.app.pipeline import Pipeline

        # A window shows each frame as it is processed (a click lands on what is on screen):
        # results cannot wait for the next encode there.
        pipe_cfg = dataclass_replace(config.pipeline, two_way=False) if windowed else config.pipeline
        pipeline = Pipeline(source, engine, sinks=[sinks], config=pipe_cfg)
        sinks = None  # the pipeline closes it from now on
        with _StopOnSignal(pipeline.stop) as signals:
            error = _drive(args, pipeline, engine, source, reporter, windowed, renderer)
            pipeline.close()
        reporter.close()
        if signals.received is not None:
            reporter.line(f"stopped by {signal.Signals(signals.received).name}: {reporter.frames} frames processed, outputs saved")
            return _EXIT_BY_SIGNAL[signal.Signals(signals.received)]
        if error is not None:
            print(f"error: {error}", file=sys.stderr)
            # A source that fails once running (a damaged file, a stream that gave up reconnecting)
            # failed part-way, its outputs complete up to there: 1, as for one of several streams.
            # A source that does not open at all failed before _drive, with 2.
            return EXIT_DAMAGED if isinstance(error, SourceError) else EXIT_ERROR
        for line in never_started(engine, named):
            reporter.line(line, important=True)
        outputs = ", ".join(str(s.path) for s in specs)
        reporter.line(f"done: {reporter.frames} frames" + (f"; saved {outputs}" if outputs else ""))
        return EXIT_OK
    finally:
        reporter.close()
        if pipeline is not None:
            pipeline.close()
        if sinks is not None:
            # The run never started (Ctrl-C, SIGTERM or an error after the outputs opened, before the
            # pipeline took them): what was made for it goes, as track() does; closed, it was left
            # as an empty video and a masks file with a header and no frame.
            from realtime_sam.output.sink_base import discard_sinks

            discard_sinks([sinks])
        source.close()


def _export_line(backend: str, path: Path) -> str:
    """What the CLI says as the encoder's export starts (it takes seconds, more on a slow machine)."""
    from realtime_sam.model.runtime.export import is_temporary_export

    if is_temporary_export(path):
        return f"exporting the encoder for {backend} (for this run only: no writable cache folder)"
    return f"exporting the encoder for {backend} (once; cached in {path.parent})"


def _drive(args, pipeline, engine, source, reporter: _Reporter, windowed: bool, renderer: Any) -> RealtimeSamError | None:
    """Run the pipeline to its end (headless or in a window drawn by ``renderer``); returns the error that ended it, if any."""
    reporter.start(source, pipeline.config.max_frames, pipeline.config.realtime)
    try:
        if windowed:
            from realtime_sam.app.ui import LiveWindow, WindowConfig

            window_config = WindowConfig(snapshot_dir=args.snapshot_dir)
            with LiveWindow(window_config, renderer=renderer, on_message=reporter.line) as window:
                window.run(pipeline, engine, on_result=lambda r: reporter.result(r, pipeline.stats))
        else:
            with pipeline:
                while not pipeline.ended:
                    result = pipeline.poll(0.1)
                    if result is not None:
                        reporter.result(result, pipeline.stats)
                    else:
                        reporter.tick(pipeline.stats)
    except RealtimeSamError as exc:
        return exc
    finally:
        reporter.close()
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``realtime-sam`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "weights":
        from realtime_sam.model.weights import weights_main

        return weights_main(argv[1:])
    if argv and argv[0] == "annotate":
        from realtime_sam.app.annotate import annotate_main

        return annotate_main(argv[1:])
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2); argparse printed it
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    try:
        # SIGTERM outside the pipeline (opening the source, downloading or loading the model) unwinds
        # as Ctrl-C does; inside, the pipeline's _StopOnSignal takes it over (a graceful stop).
        with RaiseOnTerm():
            return _dispatch(parser, args)
    except SystemExit as exc:  # parser.error in _dispatch
        return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    # Each says what a weights download it cut short kept for the next run to resume
    # (realtime_sam.model.weights.kept_note), as `realtime-sam weights download` does.
    except Terminated as exc:  # SIGTERM before the pipeline started (e.g. while the weights download)
        print(f"error: terminated by SIGTERM{getattr(exc, 'kept_note', '')}", file=sys.stderr)
        return _EXIT_BY_SIGNAL[signal.SIGTERM]
    except KeyboardInterrupt as exc:  # Ctrl-C before the pipeline started (e.g. while the model loads)
        print(f"error: interrupted{getattr(exc, 'kept_note', '')}", file=sys.stderr)
        return _EXIT_BY_SIGNAL[signal.SIGINT]


# Flags that take a path or a name, and an example of each. An empty one (an unset variable in a
# script) was taken for no flag (--output, --detect, --classes: nothing written, no detector, every
# class) or for the current folder (--config ., --prompts: "is not a file: ").
_VALUE_FLAGS = (
    ("--output", "out.mp4"), ("--save-masks", "tracks.jsonl"), ("--prompts", "objects.yaml"),
    ("--sources", "streams.yaml"), ("--config", "cpu"), ("--detect", "yolo11n.pt"),
    ("--classes", "person,car"), ("--weights", "mobile_sam.pt"),
)


def check_flags(args: argparse.Namespace) -> None:
    """Refuse a flag that the rest of the command line leaves with nothing to do, then fill in
    the defaults of ``--workers`` and ``--snapshot-dir`` (left ``None`` by the parser so that
    giving them can be told from not giving them).

    Given silently, it did nothing: ``--workers 4`` without ``--ray`` ran one process,
    ``--snapshot-dir`` with ``--headless`` (or ``--ray``, which opens no window) saved nothing,
    and ``--output ''`` (an unset variable in a script) wrote nothing (:data:`_VALUE_FLAGS`).
    """
    for flag, example in _VALUE_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is not None and not value.replace(",", " ").strip():
            raise ConfigError(f"{flag} is empty; give one, such as {flag} {example}, or leave the flag out")
    if args.workers is not None and args.ray is None:
        raise ConfigError("--workers needs --ray (it is how many Ray actors run the streams); add --ray or drop --workers")
    if args.snapshot_dir is not None and (args.headless or args.ray is not None):
        why = "--headless" if args.headless else "--ray"
        raise ConfigError(f"--snapshot-dir is where the window's s key saves snapshots, and {why} opens no window; drop --snapshot-dir")
    args.workers = 2 if args.workers is None else args.workers
    args.snapshot_dir = Path(".") if args.snapshot_dir is None else args.snapshot_dir


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The run that ``args`` asks for: several streams, or one."""
    check_flags(args)
    if args.sources or len(args.source or []) > 1 or args.ray is not None:
        from realtime_sam.app.multi_cli import run_streams, stream_specs

        return run_streams(args, stream_specs(args))
    if not args.source:
        parser.error("the following arguments are required: --source (or --sources FILE)")
    args.source = args.source[0]
    if "{name}" in f"{args.output or ''}{args.save_masks or ''}":
        from realtime_sam.app.streams import expand_path, stream_name

        name = stream_name(args.source)
        args.output = expand_path(args.output, name, several=False, flag="--output")
        args.save_masks = expand_path(args.save_masks, name, several=False, flag="--save-masks")
    return _run(args)


def entry() -> None:
    """The ``realtime-sam`` program (and ``python -m realtime_sam``): :func:`main`, then a safe exit.

    A worker thread still busy when the run closed (an encode that outlasted
    ``pipeline.join_timeout_s``) is waited for once more (as long again), so
    that no torch or FFmpeg call is running when the interpreter finalizes:
    one coming back then aborts the process on Python <= 3.13 ("terminate
    called without an active exception", exit status 134; see
    :mod:`realtime_sam.app.pipeline`). If one is still running after that (a
    hung call), or the user insisted (a second Ctrl-C, before or during the
    wait), the process ends without finalizing the interpreter, with the
    run's exit status; the outputs were closed by then, unless the hung call
    is the inference thread's.
    """
    code = main()
    try:
        from realtime_sam.app.pipeline import wait_for_lingering

        # The user insisted: no wait, and no finalizing (a thread may still be in torch).
        clean = not _StopOnSignal.insisted and wait_for_lingering()
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (the launcher's handler), while waiting: leave at once
        clean = False
        code = code or _EXIT_BY_SIGNAL[signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT]
    if not clean:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
