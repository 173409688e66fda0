"""The ``realtime-sam`` command: flags, configuration, errors, exit codes, outputs, signals.

Most cases call ``main([...])`` in-process; a few run the real command in a
subprocess (``python -m realtime_sam``) where the process boundary matters:
exit codes, signals, the module entry point. End-to-end runs use the
``checkpoint_path`` fixture and tiny synthetic clips, with a large
``--reencode-every`` since every image encode costs seconds on a CPU.
"""

from __future__ import annotations

import importlib.util
import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fixtures_app import (  # noqa: F401
    HEIGHT,
    WIDTH,
    app_command,
    app_env,
    app_losing_its_stream,
    frame_lines,
    run_app,
    running_app,
    wait_for_frames,
)

from realtime_sam.app import cli
from realtime_sam.config import Config
from realtime_sam.output.jsonl import load_jsonl

LIVE = "lavfi:testsrc2=size=320x240:rate=25"


def err_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def single_error(capsys) -> str:
    lines = err_lines(capsys)
    assert len(lines) == 1, lines
    return lines[0]


def png_indices(path: Path) -> np.ndarray:
    """Palette indices (= track ids) of an indexed PNG, as FFmpeg decodes it."""
    with av.open(str(path)) as container:
        indices, _ = next(container.decode(video=0)).to_ndarray()
    return indices


def decoded_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


# ------------------------------------------------------------------ help, usage, sub-command


def test_help_has_examples(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "realtime-sam weights download" in out
    for flag in ("--source", "--output", "--save-masks", "--mask-format", "--box", "--point", "--prompts", "--auto",
                 "--reencode-every", "--device", "--weights", "--config", "--set", "--max-frames", "--realtime",
                 "--model-type", "--backend", "--quiet", "--headless"):
        assert flag in out


def test_module_entry_point_and_usage_error_exit_codes(tmp_path):
    ok = run_app("--help", cwd=tmp_path, timeout=60)
    assert ok.returncode == 0 and "examples:" in ok.stdout
    bad = run_app("--source", "x.mp4", "--frobnicate", cwd=tmp_path, timeout=60)
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "unrecognized arguments: --frobnicate" in lines[0]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        ([], "the following arguments are required: --source"),
        (["--source", "a.mp4", "--reencode-every", "0"], "--reencode-every: must be >= 1"),
        (["--source", "a.mp4", "--max-frames", "ten"], "--max-frames: expected an integer"),
        (["--source", "a.mp4", "--mask-format", "gif"], "invalid choice: 'gif'"),
        (["--source", "a.mp4", "--status-interval", "-1"], "must be a number > 0"),
        (["--source", "a.mp4", "--box"], "expected one argument"),
    ],
)
def test_usage_errors_are_one_line_exit_2(capsys, argv, fragment):
    assert cli.main(argv) == 2
    line = single_error(capsys)
    assert fragment in line and line.startswith("realtime-sam: error:")


def test_weights_subcommand_is_dispatched(capsys, monkeypatch, tmp_path, checkpoint_path):
    monkeypatch.setenv("REALTIME_SAM_CACHE", str(tmp_path))
    monkeypatch.delenv("REALTIME_SAM_WEIGHTS", raising=False)
    assert cli.main(["weights", "path"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "mobile_sam.pt")
    assert cli.main(["weights", "verify", str(checkpoint_path)]) == 0
    assert capsys.readouterr().out.startswith("ok: ")
    assert cli.main(["weights", "verify", str(tmp_path / "missing.pt")]) == 2
    assert single_error(capsys).startswith("error: ")


# ------------------------------------------------------------------ configuration


def parse(*argv: str):
    return cli.build_parser().parse_args(["--source", "0", *argv])


def test_defaults_leave_the_config_alone():
    assert cli.build_config(parse()) == Config()


def test_every_dedicated_flag_lands_in_the_config(tmp_path):
    ckpt = tmp_path / "w.pt"
    cfg = cli.build_config(
        parse(
            "--weights", str(ckpt), "--model-type", "vit_b", "--device", "cpu", "--backend", "eager",
            "--reencode-every", "7", "--auto", "--max-frames", "12", "--realtime",
        )
    )
    assert (cfg.model.weights, cfg.model.model_type, cfg.model.device, cfg.model.backend) == (str(ckpt), "vit_b", "cpu", "eager")
    assert (cfg.engine.reencode_every, cfg.engine.auto) == (7, True)
    assert (cfg.pipeline.max_frames, cfg.pipeline.realtime) == (12, True)


def test_config_file_then_set_then_flags(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("engine:\n  reencode_every: 3\n  decode_batch: 4\npipeline:\n  queue_size: 5\n")
    cfg = cli.build_config(parse("--config", str(path), "--set", "engine.decode_batch=9", "--set", "pipeline.queue_size=6"))
    assert (cfg.engine.reencode_every, cfg.engine.decode_batch, cfg.pipeline.queue_size) == (3, 9, 6)
    cfg = cli.build_config(parse("--config", str(path), "--set", "engine.reencode_every=4", "--reencode-every", "8"))
    assert cfg.engine.reencode_every == 8
    # Keys checked together are checked once every layer is in: the file's engage_duty with --set's lift_duty.
    path.write_text("streams:\n  engage_duty: 0.5\n")
    cfg = cli.build_config(parse("--config", str(path), "--set", "streams.lift_duty=0.3", "--device", "cpu"))
    assert (cfg.streams.engage_duty, cfg.streams.lift_duty, cfg.model.device) == (0.5, 0.3, "cpu")


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--set", "engine.bogus=1"], "unknown key engine.bogus; valid keys in engine: reencode_every"),
        (["--set", "nosection"], "--set expects section.key=value"),
        (["--set", "engine.reencode_every=fast"], "engine.reencode_every must be an integer"),
        (["--config", "missing.yaml"], "config file not found"),
        (["--device", "tpu"], "model.device must be one of"),
        (["--backend", "magic"], "model.backend must be one of"),
        (["--model-type", "vit_z"], "model.model_type must be one of vit_t, vit_b, vit_l, vit_h"),
        (["--device", "cuda:x"], "model.device must be one of auto, cpu, cuda, mps (or cuda:N), not 'cuda:x'"),
        (["--set", "engine.reencode_evry=3"], "unknown key engine.reencode_evry (did you mean reencode_every?)"),
        (["--set", "pipeline.join_timeout_s=nan"], "pipeline.join_timeout_s must be a finite number"),
        (["--config", "."], "cannot read config file .: Is a directory"),
        (["--config", "latin1.yaml"], "config file latin1.yaml is not UTF-8 text (line 1)"),
        (["--config", "tabs.yaml"], "config file tabs.yaml is not valid YAML: line 2, column 1:"),
    ],
)
def test_config_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"# caf\xe9\nengine: {}\n")
    (tmp_path / "tabs.yaml").write_bytes(b"engine:\n\treencode_every: 3\n")
    assert cli.main(["--source", "0", "--headless", *argv]) == 2
    line = single_error(capsys)
    assert line.startswith("error: ") and fragment in line


# ------------------------------------------------------------------ input and output errors (no model needed)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--box", "1,2,3"], "--box expects x0,y0,x1,y1"),
        (["--box", "30,40,10,20"], "inverted"),
        (["--box=-1,2,-1,5"], "zero area"),
        (["--point", "1,2,5"], "--point label must be 1"),
        (["--point", "nan,2"], "finite"),
        (["--point", "1,2,0"], "needs a box or at least one point with label 1"),
        (["--prompts", "nope.yaml"], "prompts file not found"),
        (["--save-masks", "out.mp4"], "looks like a video"),
        (["--mask-format", "png"], "--mask-format needs --save-masks"),
    ],
)
def test_prompt_and_output_errors(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--source", "0", "--headless", *argv]) == 2
    line = single_error(capsys)
    assert line.startswith("error: ") and fragment in line


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--headless", "--workers", "3"], "--workers needs --ray"),
        (["--headless", "--snapshot-dir", "snaps"], "--headless opens no window"),
        (["--ray", "--workers", "1", "--snapshot-dir", "snaps", "--save-masks", "m.jsonl"], "--ray opens no window"),
        (["--headless", "--output="], "--output is empty; give one, such as --output out.mp4"),  # wrote nothing, exit 0
        (["--headless", "--save-masks= "], "--save-masks is empty; give one"),
        (["--headless", "--detect="], "--detect is empty"),  # ran without a detector
        (["--headless", "--detect", "y.pt", "--classes= , "], "--classes is empty"),  # every class
        (["--headless", "--config="], "--config is empty"),  # "cannot read config file ."
        (["--headless", "--prompts="], "--prompts is empty"),  # "prompts file is not a file: "
        (["--headless", "--weights="], "--weights is empty"),  # the cache's, without a word
        (["--headless", "--sources="], "--sources is empty"),  # "--source is required"
        (["--headless", "--source", "x.mp4", "--save-masks="], "--save-masks is empty"),  # "would be written by every stream"
    ],
)
def test_flags_that_would_do_nothing_are_refused_before_anything_opens(capsys, tmp_path, monkeypatch, small_clip, argv, fragment):
    """Given silently, these did nothing: ``--workers`` without ``--ray`` ran one process, and
    ``--snapshot-dir`` where no window opens saved no snapshot (both exit 0 before)."""
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--source", str(small_clip), *argv]) == 2
    line = single_error(capsys)
    assert line.startswith("error: ") and fragment in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing opened, nothing written


def test_no_display_suggests_headless(capsys, monkeypatch, small_clip):
    from fixtures_app import skip_unless_x11

    skip_unless_x11()
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli.main(["--source", str(small_clip)]) == 2
    line = single_error(capsys)
    assert "no display" in line and "--headless" in line


def test_a_display_with_no_x_server_is_one_line_before_any_output(tmp_path, small_clip, checkpoint_path):
    from fixtures_app import free_x_display_number

    n = free_x_display_number()
    # Run as a user would: OpenCV's Qt aborted the whole process here (signal 6, "could not
    # connect to display") once the outputs were open.
    out = run_app("--source", str(small_clip), "--output", "out.mp4", "--save-masks", "masks.jsonl",
                  "--weights", str(checkpoint_path), "--device", "cpu", cwd=tmp_path, timeout=120, DISPLAY=f":{n}")
    assert out.returncode == 2, out.stderr
    lines = [x for x in out.stderr.splitlines() if x.strip()]
    assert lines == [f"error: no display to show a window on (no X server answers at DISPLAY=:{n}); add --headless to run without one"]
    assert not (tmp_path / "out.mp4").exists() and not (tmp_path / "masks.jsonl").exists()


def test_a_headless_opencv_is_one_line_before_any_output(capsys, tmp_path, monkeypatch, small_clip, checkpoint_path):
    # opencv-python-headless as measured (5.1.0.95): "GUI: NONE" in its build information, and
    # namedWindow raising. Before, with a display at hand, the run opened its outputs (an earlier
    # run's masks file cut to its header), loaded the model, and then stopped with OpenCV's advice
    # to rebuild it from source with GTK.
    from fixtures_app import free_x_display_number, headless_named_window

    import cv2

    from realtime_sam.app import ui

    build = re.sub(r"(?m)^(\s*GUI:\s*).*$", r"\1NONE", cv2.getBuildInformation())
    assert "NONE" in build
    monkeypatch.setattr(cv2, "getBuildInformation", lambda: build)
    monkeypatch.setattr(cv2, "namedWindow", headless_named_window)
    monkeypatch.setenv("DISPLAY", f":{free_x_display_number()}")
    monkeypatch.setattr(ui, "_x_server_answers", lambda display: True)  # a display at hand
    monkeypatch.chdir(tmp_path)
    earlier = '{"earlier": "run"}\n' * 3
    (tmp_path / "masks.jsonl").write_text(earlier)
    argv = ["--source", str(small_clip), "--box", "10,10,60,60", "--output", "out.mp4", "--save-masks", "masks.jsonl",
            "--weights", str(checkpoint_path), "--device", "cpu"]
    assert cli.main(argv) == 2
    assert single_error(capsys) == (
        f"error: OpenCV {cv2.__version__} here has no window support (opencv-python-headless, or another build "
        "without a GUI); add --headless to run without one, or install the GUI build: "
        "pip uninstall -y opencv-python-headless opencv-python && pip install opencv-python")
    assert (tmp_path / "masks.jsonl").read_text() == earlier and not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--source", "missing.mp4"], "source not found: missing.mp4"),
        (["--source", "rtsp://user:secret@127.0.0.1:1/x", "--set", "source.open_timeout_s=2",
          "--set", "source.reconnect=false"], "rtsp://***@127.0.0.1:1/x"),
        (["--box", "400,10,500,100"], "outside the 320x240 frame"),
        (["--output", "out.txt"], "must end in .mp4"),
        (["--output", "a.mp4", "--save-masks", "a.mp4", "--mask-format", "jsonl"], "two outputs write to a.mp4"),
        (["--weights", "does-not-exist.pt"], "does-not-exist.pt"),
    ],
)
def test_source_output_and_weights_errors(capsys, tmp_path, monkeypatch, small_clip, extra, fragment):
    monkeypatch.chdir(tmp_path)
    # A --source in extra replaces the clip (a repeated --source would be a second stream).
    base = [] if "--source" in extra else ["--source", str(small_clip)]
    argv = ["--headless", "--device", "cpu", *base, *extra]
    assert cli.main(argv) == 2
    line = single_error(capsys)
    assert line.startswith("error: ") and fragment in line
    assert "secret" not in line


_LOAD_FAILURES = {
    # problem: (what the error line says, [CLI flags]; files and variables set in the test)
    "weights_flag_missing": ("not found", ["--weights", "mobile-sam.pt"]),
    "weights_env_missing": ("not found", []),
    "weights_truncated": ("truncated", ["--weights", "cut.pt"]),
    "weights_env_not_a_checkpoint": ("not a PyTorch checkpoint", []),
    "cache_file_damaged": ("truncated", []),
    "weights_of_another_model": ("--model-type vit_t", ["--model-type", "vit_b", "--weights", "{checkpoint}"]),
    "device_not_here": ("not available", ["--device", "cuda:7", "--weights", "{checkpoint}"]),
    "fp16_on_the_cpu": ("fp16", ["--set", "model.precision=fp16", "--weights", "{checkpoint}"]),
}


@pytest.mark.parametrize("streams", [1, 2])
@pytest.mark.parametrize("problem", list(_LOAD_FAILURES))
def test_what_would_fail_the_model_load_leaves_an_earlier_runs_outputs_as_they_were(
    capsys, tmp_path, monkeypatch, small_clip, checkpoint_path, streams, problem
):
    # The outputs open before the model (a bad output path fails before a download), and opening
    # one truncates last run's file: weights that are missing, damaged (a cut-short download, an
    # HTML error page saved as .pt) or of another model, or a device or precision the load refuses,
    # must fail before that, each as one line.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REALTIME_SAM_WEIGHTS", raising=False)
    monkeypatch.setenv("REALTIME_SAM_CACHE", str(tmp_path / "cache"))
    Path("cut.pt").write_bytes(checkpoint_path.read_bytes()[:200_000])
    Path("page.pt").write_text("<html>404 Not Found</html>\n")
    fragment, flags = _LOAD_FAILURES[problem]
    if problem == "weights_env_missing":
        monkeypatch.setenv("REALTIME_SAM_WEIGHTS", str(tmp_path / "gone" / "mobile_sam.pt"))
    elif problem == "weights_env_not_a_checkpoint":
        monkeypatch.setenv("REALTIME_SAM_WEIGHTS", "page.pt")
    elif problem == "cache_file_damaged":
        Path("cache").mkdir()
        Path("cache/mobile_sam.pt").write_bytes(checkpoint_path.read_bytes()[:200_000])
    elif problem == "device_not_here":
        import torch

        if torch.cuda.device_count() > 7:
            pytest.skip("this machine has a GPU number 7")
    flags = [flag.format(checkpoint=checkpoint_path) for flag in flags]
    previous = [Path("small.jsonl"), Path("small.mp4")] if streams == 1 else [Path("out/small.jsonl"), Path("out/small-2.jsonl")]
    for i, path in enumerate(previous):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"last run's results %d\n" % i)
    sources = ["--source", str(small_clip)] * streams
    outputs = ["--save-masks", "small.jsonl", "--output", "small.mp4"] if streams == 1 else ["--save-masks", "out/{name}.jsonl"]
    device = [] if "--device" in flags else ["--device", "cpu"]
    assert cli.main(["--headless", *device, *sources, "--box", "10,10,60,60", *outputs, *flags]) == 2
    assert fragment in single_error(capsys)
    assert [path.read_bytes() for path in previous] == [b"last run's results %d\n" % i for i in range(len(previous))]


needs_onnxruntime = pytest.mark.skipif(
    importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("onnx") is None,
    reason="onnxruntime/onnx not installed: pip install -e '.[onnxruntime]'",
)


@needs_onnxruntime
@pytest.mark.parametrize("streams", [1, 2])
def test_a_failing_encoder_export_leaves_an_earlier_runs_outputs_as_they_were(
    capsys, tmp_path, monkeypatch, small_clip, checkpoint_path, streams
):
    """With onnxruntime/openvino the first run exports the encoder; when that fails, last run's files stay.

    Before: the export ran in the model load, after the outputs had opened (truncating last
    run's files): the run ended with the exporter's error and an empty ``small.jsonl``.
    """
    import torch

    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "mobile_sam.pt"  # its export cache goes beside it, in tmp_path
    weights.write_bytes(checkpoint_path.read_bytes())

    def fail(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::example")

    monkeypatch.setattr(torch.onnx, "export", fail)
    previous = [Path("small.jsonl")] if streams == 1 else [Path("out/small.jsonl"), Path("out/small-2.jsonl")]
    for i, path in enumerate(previous):
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"last run's results %d\n" % i)
    outputs = ["--save-masks", "small.jsonl"] if streams == 1 else ["--save-masks", "out/{name}.jsonl"]
    argv = ["--headless", "--device", "cpu", "--backend", "onnxruntime", "--weights", str(weights),
            *["--source", str(small_clip)] * streams, "--box", "10,10,60,60", *outputs]
    assert cli.main(argv) == 2
    lines = err_lines(capsys)
    cache = tmp_path / ".realtime_sam_cache"
    assert lines[0] == f"exporting the encoder for onnxruntime (once; cached in {cache})"
    assert len(lines) == 2 and lines[1].startswith("error: could not export the image encoder") and "aten::example" in lines[1]
    assert [path.read_bytes() for path in previous] == [b"last run's results %d\n" % i for i in range(len(previous))]


@needs_onnxruntime
def test_an_export_onto_a_full_disk_leaves_an_earlier_runs_outputs_as_they_were(tmp_path, small_clip, checkpoint_path):
    """The disk fills during the export (a file size limit here): an error, last run's file as it was.

    Before: ``prev.jsonl`` was opened (emptied) before the export failed.
    """
    weights = tmp_path / "mobile_sam.pt"
    weights.write_bytes(checkpoint_path.read_bytes())
    temp = tmp_path / "tmp"
    temp.mkdir()
    Path(tmp_path / "prev.jsonl").write_bytes(b"last run's results\n")
    argv = ["--headless", "--quiet", "--device", "cpu", "--backend", "onnxruntime", "--weights", str(weights),
            "--source", str(small_clip), "--box", "10,10,60,60", "--save-masks", "prev.jsonl"]
    script = (
        "import resource, signal, sys, tempfile\n"
        "from realtime_sam.app import cli\n"
        f"tempfile.tempdir = {str(temp)!r}\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))\n"
        f"sys.exit(cli.main({argv!r}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=app_env())
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert out.returncode == 2, out.stderr
    # The cache folder's warning (then a temporary folder is tried) and the error; --quiet: no word of the export.
    assert len(lines) == 2 and "File too large" in lines[0] and "temporary folder" in lines[0]
    assert lines[1].startswith("error: cannot write the exported image encoder") and "File too large" in lines[1]
    assert (tmp_path / "prev.jsonl").read_bytes() == b"last run's results\n"
    assert list(temp.iterdir()) == [] and list((tmp_path / ".realtime_sam_cache").iterdir()) == []


@needs_onnxruntime
def test_the_first_run_with_onnxruntime_says_it_exports_the_encoder(capsys, tmp_path, monkeypatch, small_clip, checkpoint_path):
    """The export takes seconds (more on a slow machine): one line says what the wait is, on the first run only.

    Before: nothing was printed (the export's message is logged at INFO, which the app does not show).
    """
    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "mobile_sam.pt"
    weights.write_bytes(checkpoint_path.read_bytes())
    argv = ["--headless", "--device", "cpu", "--backend", "onnxruntime", "--weights", str(weights),
            "--source", str(small_clip), "--box", "10,10,60,60", "--max-frames", "1", "--reencode-every", "1000",
            "--save-masks", "masks.jsonl"]
    assert cli.main(argv) == 0
    said = [line for line in err_lines(capsys) if "export" in line]
    cache = tmp_path / ".realtime_sam_cache"
    assert said == [f"exporting the encoder for onnxruntime (once; cached in {cache})"]
    assert [p.suffix for p in cache.iterdir()] == [".onnx"]
    assert len(frame_lines(Path("masks.jsonl"))) == 1
    assert cli.main(argv) == 0  # cached now: loaded, not exported, and nothing said of it
    assert [line for line in err_lines(capsys) if "export" in line] == []


@needs_onnxruntime
def test_an_export_the_cache_cannot_take_says_exporting_once(capsys, caplog, tmp_path, monkeypatch, small_clip, checkpoint_path):
    """The cache's disk fills mid-export: the export starts over in a temporary folder, said once.

    Before: "exporting the encoder ..." was printed again for the temporary folder, after the
    warning that already said the export goes to a temporary folder for this run only.
    """
    import errno

    import torch

    monkeypatch.chdir(tmp_path)
    weights = tmp_path / "mobile_sam.pt"
    weights.write_bytes(checkpoint_path.read_bytes())
    cache = tmp_path / ".realtime_sam_cache"
    real_export = torch.onnx.export

    def full_cache_disk(model, args, f, *rest, **kwargs):  # the cache's disk is full, the temporary folder's is not
        if Path(f).parent == cache:
            Path(f).write_bytes(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_export(model, args, f, *rest, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", full_cache_disk)
    argv = ["--headless", "--device", "cpu", "--backend", "onnxruntime", "--weights", str(weights),
            "--source", str(small_clip), "--box", "10,10,60,60", "--max-frames", "1", "--reencode-every", "1000",
            "--save-masks", "masks.jsonl"]
    assert cli.main(argv) == 0
    said = [line for line in err_lines(capsys) if "export" in line]
    assert said == [f"exporting the encoder for onnxruntime (once; cached in {cache})"]
    # The app shows warnings on stderr (logging's last resort; pytest takes them here): this one says where it goes now.
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING" and "export" in r.getMessage()]
    assert len(warned) == 1 and "No space left on device" in warned[0] and "temporary folder for this run only" in warned[0]
    assert list(cache.iterdir()) == []
    assert len(frame_lines(Path("masks.jsonl"))) == 1


def test_unavailable_device_is_a_clear_error(capsys, run, small_clip):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert run("--headless", "--source", str(small_clip), "--device", "cuda") == 2
    line = single_error(capsys)
    assert line.startswith("error: ") and "cuda" in line and "not available" in line


# ------------------------------------------------------------------ end to end, headless


def test_headless_box_and_points_write_video_and_masks(run, capsys, small_clip, tmp_path):
    rc = run(
        "--headless", "--source", str(small_clip), "--max-frames", "6",
        "--box", "10,60,70,120", "--point", "283,98", "--point", "200,200,0",
        "--output", "out.mp4", "--save-masks", "masks.jsonl",
    )
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "done: 6 frames; saved out.mp4, masks.jsonl" in err
    assert "6/6" in err  # the progress bar reached the end
    header, frames = load_jsonl(tmp_path / "masks.jsonl")
    assert header["source"] == str(small_clip) and (header["width"], header["height"]) == (WIDTH, HEIGHT)
    assert [f["frame"] for f in frames] == list(range(6))
    # two objects, from the first frame on: one for the box, one for all the points
    assert all(sorted(t["id"] for t in f["tracks"]) == [1, 2] for f in frames)
    assert decoded_frames(tmp_path / "out.mp4") == 6


def test_prompts_file_labels_and_start_frame_with_png_masks(run, capsys, small_clip, tmp_path):
    (tmp_path / "p.yaml").write_text("- box: [10, 60, 70, 120]\n  label: ball\n  start_frame: 3\n")
    rc = run("--headless", "--quiet", "--source", str(small_clip), "--max-frames", "5",
             "--prompts", "p.yaml", "--save-masks", "pngs", "--mask-format", "png")
    assert rc == 0, capsys.readouterr().err
    assert capsys.readouterr().err == ""  # --quiet: nothing but errors
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert len(pngs) == 5
    ids = [set(np.unique(png_indices(p)).tolist()) - {0} for p in pngs]
    assert ids[:3] == [set(), set(), set()]  # nothing before start_frame
    assert ids[3] == {1} and ids[4] <= {1}


def test_a_start_frame_past_the_files_end_is_refused_before_the_run(run, capsys, small_clip, tmp_path):
    # The run went to its end (exit 0, "done: 10 frames") without ever tracking the object, saying nothing.
    (tmp_path / "p.yaml").write_text("- box: [10, 60, 70, 120]\n- box: [20, 20, 80, 80]\n  label: car\n  start_frame: 10\n")
    rc = run("--headless", "--quiet", "--source", str(small_clip), "--prompts", "p.yaml", "--save-masks", "m.jsonl")
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.splitlines() == [
        f"error: p.yaml: object 2 (label 'car', box 20,20,80,80): start_frame 10 is past the end of {small_clip}, "
        "which has 10 frames (0..9); give a start_frame below 10"
    ]
    assert not (tmp_path / "m.jsonl").exists()  # refused before any output was opened
    # The last frame is still a start frame.
    (tmp_path / "p.yaml").write_text("- box: [20, 20, 80, 80]\n  start_frame: 9\n")
    rc = run("--headless", "--quiet", "--source", str(small_clip), "--prompts", "p.yaml", "--save-masks", "m.jsonl")
    assert rc == 0, capsys.readouterr().err
    frames = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()[1:]]
    assert [len(f["tracks"]) for f in frames] == [0] * 9 + [1]


def test_an_object_whose_start_frame_the_run_never_reached_is_named_at_the_end(run, capsys, small_clip, tmp_path):
    """A file without a frame count up front (MKV) cannot be checked before the run, nor can a run cut
    short by --max-frames: the objects whose start_frame never came are named at the end, even with
    --quiet. Both runs ended "done" before without a word about the object."""
    from realtime_sam.testing.synthetic import standard_scene, write_video

    mkv = write_video(standard_scene(width=160, height=120, num_frames=10, seed=0), tmp_path / "clip.mkv")
    (tmp_path / "p.yaml").write_text("- box: [10, 60, 70, 120]\n- box: [20, 20, 80, 80]\n  label: car\n  start_frame: 50\n")
    rc = run("--headless", "--quiet", "--source", str(mkv), "--prompts", "p.yaml", "--save-masks", "m.jsonl")
    err = capsys.readouterr().err
    assert rc == 0, err
    assert err.splitlines() == [
        "warning: p.yaml: object 2 (label 'car', box 20,20,80,80): never tracked: the run ended before its start_frame 50"
    ]
    frames = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()[1:]]
    assert len(frames) == 10 and all(len(f["tracks"]) == 1 for f in frames)  # the first object ran
    (tmp_path / "p.yaml").write_text("- box: [20, 20, 80, 80]\n  start_frame: 8\n")
    rc = run("--headless", "--source", str(small_clip), "--prompts", "p.yaml", "--max-frames", "5")
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "warning: p.yaml: object 1 (box 20,20,80,80): never tracked: the run ended before its start_frame 8" in err.splitlines()
    # Reached on the last frame: no warning.
    (tmp_path / "p.yaml").write_text("- box: [20, 20, 80, 80]\n  start_frame: 4\n")
    rc = run("--headless", "--source", str(small_clip), "--prompts", "p.yaml", "--max-frames", "5")
    assert rc == 0 and "never tracked" not in capsys.readouterr().err


def test_png_masks_of_an_image_folder_take_the_images_names(run, capsys, tmp_path):
    # YouTube-VOS keeps every 5th frame (00000.jpg, 00005.jpg, ...) and pairs each with a mask of its name; the
    # masks were named by count (00000, 00001, ...), and after a damaged image every later mask named the wrong one.
    import cv2

    from realtime_sam.testing.synthetic import standard_scene

    scene = standard_scene(width=160, height=120, num_frames=5, seed=3)
    (tmp_path / "frames").mkdir()
    for i in range(5):
        cv2.imwrite(str(tmp_path / "frames" / f"{5 * i:05d}.png"), scene.render(i)[0])
    (tmp_path / "frames" / "00010.png").write_bytes(b"\x89PNG damaged")
    rc = run("--headless", "--quiet", "--source", "frames", "--box", "10,10,80,80",
             "--save-masks", "pngs", "--mask-format", "png")
    err = capsys.readouterr().err
    assert rc == 1 and "1 of 5 files" in err, err
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == ["00000.png", "00005.png", "00015.png", "00020.png"]
    # --realtime paces the frames (dropping what the model cannot keep up with) and keeps their names
    assert run("--headless", "--quiet", "--source", "frames", "--box", "10,10,80,80", "--realtime",
               "--save-masks", "paced", "--mask-format", "png") == 1
    paced = {p.name for p in (tmp_path / "paced").iterdir()}
    assert "00020.png" in paced and paced <= {"00000.png", "00005.png", "00015.png", "00020.png"}


def test_mots_masks_from_suffix_and_no_prompts(run, capsys, small_clip, tmp_path):
    assert run("--headless", "--source", str(small_clip), "--save-masks", "run.txt") == 0
    err = capsys.readouterr().err
    assert "done: 10 frames; saved run.txt" in err
    assert (tmp_path / "run.txt").exists() and (tmp_path / "run.txt").read_text() == ""  # no objects, no lines


def test_headless_without_outputs_says_nothing_is_saved(run, capsys, small_clip):
    assert run("--headless", "--source", str(small_clip), "--max-frames", "2") == 0
    err = capsys.readouterr().err
    assert "nothing is saved" in err
    assert "made for files" not in err  # a file with the default configuration: as meant


@pytest.mark.parametrize("preset, noted", [(None, True), ("cpu", False), ("gpu", False)])
def test_a_live_source_with_the_file_configuration_is_pointed_to_the_presets(run, capsys, preset, noted):
    extra = ["--config", preset, "--device", "cpu"] if preset else []
    assert run("--headless", "--source", LIVE, "--max-frames", "2", *extra) == 0
    err = capsys.readouterr().err
    assert ("made for files" in err and "--config cpu" in err) == noted, err


def test_live_source_prints_periodic_status(run, capsys, tmp_path):
    rc = run("--headless", "--source", LIVE, "--max-frames", "20", "--status-interval", "0.2", "--save-masks", "live.jsonl")
    err = capsys.readouterr().err
    assert rc == 0, err
    status = [line for line in err.splitlines() if "processed" in line and "model" in line]
    assert status, err
    assert all(" read, " in s and " dropped | model " in s and s.rstrip().endswith("tracks 0") for s in status)
    assert len(load_jsonl(tmp_path / "live.jsonl")[1]) == 20


def test_cpu_preset_status_lines_say_how_often_the_encodes_land(checkpoint_path, tmp_path):
    """The cpu preset encodes on a worker while frames go on: 'model 108-200 fps' (the frames' own
    work) was all the line said. Now it says how often the model refreshes the masks too.

    The app runs on the live source until its line gives that rate (two encodes landed), then
    Ctrl-C: a fixed run of 6 s, then 12 s, was too short for two encodes on a loaded machine."""
    pattern = re.compile(r"\| model (\d+\.\d) fps, encode every (\d+\.\d+) s \| tracks")
    with running_app(
        tmp_path, "--weights", str(checkpoint_path), "--device", "cpu", "--headless", "--source", LIVE,
        "--config", "cpu", "--box", "40,40,200,200", "--status-interval", "0.5",
    ) as (proc, err_path):
        deadline = time.monotonic() + 150  # a hang guard only
        while not pattern.search(err_path.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, err_path.read_text()[-3000:]
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, err_path.read_text()[-3000:]
    err = err_path.read_text()
    fps, every = map(float, pattern.findall(err)[-1])
    # A frame's own work takes a fraction of an encode: more than one frame between two encodes.
    assert every > 1 / fps, err


def test_demo_source_plays_the_bundled_clip_with_its_preset_objects(run, capsys, tmp_path):
    from realtime_sam.app.demo import demo_clip, demo_prompts

    rc = run("--headless", "--source", "demo", "--max-frames", "4", "--output", "demo.mp4", "--save-masks", "demo.jsonl")
    err = capsys.readouterr().err
    assert rc == 0, err
    header, frames = load_jsonl(tmp_path / "demo.jsonl")
    with demo_clip() as clip:
        assert header["source"] == str(clip)
    assert (header["width"], header["height"]) == (640, 480)
    presets = demo_prompts()
    assert [p.label for p in presets] == ["cat", "astronaut", "cup"] and all(p.box for p in presets)
    assert [f["frame"] for f in frames] == list(range(4))
    # every preset object is tracked from the first frame on, under its label, inside its box
    for f in frames:
        assert [(t["id"], t["label"]) for t in f["tracks"]] == [(1, "cat"), (2, "astronaut"), (3, "cup")]
    assert decoded_frames(tmp_path / "demo.mp4") == 4


def test_demo_prompts_on_the_command_line_replace_the_presets(run, capsys, tmp_path):
    rc = run("--headless", "--quiet", "--source", "demo", "--max-frames", "2", "--box", "100,100,200,200",
             "--save-masks", "mine.jsonl")
    assert rc == 0, capsys.readouterr().err
    _, frames = load_jsonl(tmp_path / "mine.jsonl")
    assert [[(t["id"], t.get("label")) for t in f["tracks"]] for f in frames] == [[(1, None)], [(1, None)]]


def test_a_sink_failing_mid_run_is_one_error_line_exit_2_with_earlier_frames_kept(run, capsys, small_clip, tmp_path, monkeypatch):
    from realtime_sam.errors import SinkError
    from realtime_sam.output.jsonl import JsonlSink

    real_write = JsonlSink.write

    def disk_fills_at_frame_3(self, result):
        if result.index == 3:
            raise SinkError(f"cannot write {self.path.name}: No space left on device (free some space)")
        real_write(self, result)

    monkeypatch.setattr(JsonlSink, "write", disk_fills_at_frame_3)
    rc = run("--headless", "--quiet", "--source", str(small_clip), "--box", "10,60,70,120", "--save-masks", "m.jsonl")
    assert rc == 2
    assert single_error(capsys) == "error: cannot write m.jsonl: No space left on device (free some space)"
    _, frames = load_jsonl(tmp_path / "m.jsonl")
    assert [f["frame"] for f in frames] == [0, 1, 2]


def test_damaged_file_keeps_frames_then_exits_1(tmp_path, checkpoint_path):
    from realtime_sam.testing.synthetic import standard_scene, write_video

    clip = write_video(standard_scene(width=WIDTH, height=HEIGHT, num_frames=40), tmp_path / "c.mp4", faststart=True)
    data = clip.read_bytes()
    clip.write_bytes(data[: len(data) // 2])
    proc = run_app(
        "--headless", "--quiet", "--source", str(clip), "--weights", str(checkpoint_path), "--device", "cpu",
        "--save-masks", "m.jsonl", cwd=tmp_path,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    frames = frame_lines(tmp_path / "m.jsonl")
    assert 0 < len(frames) < 40
    assert [f["frame"] for f in frames] == list(range(len(frames)))
    assert str(len(frames)) in lines[0]  # the message says how many frames were read


# ------------------------------------------------------------------ the render: section


# Every render key set away from its default; each changes the pixels of RENDER_SCENE.
RENDER_SETTINGS = {
    "alpha": 0.9,
    "contour_thickness": 6,
    "show_labels": False,
    "show_lost": False,
    "font_scale": 0.6,
    "hud_alpha": 0.1,
}


@pytest.fixture(scope="module")
def app_renderers(checkpoint_path, small_clip, tmp_path_factory):
    """``{"video": ..., "window": ...}``: the renderers one windowed run with ``--set render.*`` builds.

    The video sink is opened for real; the window stops the run as it is built, before it opens.
    """
    from realtime_sam.app import ui
    from realtime_sam.errors import SinkError
    from realtime_sam.output import sinks

    found = {}
    real_open_sinks = sinks.open_sinks

    def open_sinks(*args, **kwargs):
        opened = real_open_sinks(*args, **kwargs)
        found["video"] = next(s for s in opened.sinks if isinstance(s, sinks.VideoSink)).renderer
        return opened

    class Window(ui.LiveWindow):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            found["window"] = self.renderer
            raise SinkError("stop before the window opens")

    settings = [f"render.{key}={str(value).lower()}" for key, value in RENDER_SETTINGS.items()]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path_factory.mktemp("render"))
        mp.setattr(sinks, "open_sinks", open_sinks)
        mp.setattr(ui, "LiveWindow", Window)
        mp.setattr(ui, "display_problem", lambda: None)
        argv = ["--source", str(small_clip), "--weights", str(checkpoint_path), "--device", "cpu", "--quiet",
                "--output", "out.mp4"]
        for item in settings:
            argv += ["--set", item]
        assert cli.main(argv) == 2  # the window's stop
    return found


def _render_scene():
    from test_render import circle, gradient, rect, result, track

    from realtime_sam.output.render import HudInfo
    from realtime_sam.types import TrackState

    h, w = 360, 960  # wide enough for the HUD line at either font scale
    img = gradient(h, w)
    lost = track(9, np.zeros((h, w), bool), TrackState.LOST, box=(300.0, 100.0, 400.0, 200.0))
    scene = result(img, track(1, circle(100, 200, 50, h, w), label="cup"), lost, track(2, rect(500, 150, 600, 250, h, w)))
    return img, scene, HudInfo(12.0, 8.0, 40.0, 3, False, True, 2)


@pytest.mark.parametrize("where", ["video", "window"])
@pytest.mark.parametrize("key", list(RENDER_SETTINGS))
def test_every_render_key_reaches_the_app_renderers(app_renderers, where, key):
    import dataclasses

    from realtime_sam.output.render import RenderConfig, Renderer

    renderer = app_renderers[where]
    img, scene, hud = _render_scene()
    drawn = renderer.annotate(img, scene, hud)
    # The same renderer with only this key back at its default draws something else.
    reset = dataclasses.replace(renderer.config, **{key: getattr(RenderConfig(), key)})
    assert reset != renderer.config, f"render.{key} did not reach the {where} renderer"
    assert not np.array_equal(drawn, Renderer(reset).annotate(img, scene, hud)), f"render.{key} changes no pixel"


# ------------------------------------------------------------------ signals


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_stops_fast_and_finalises_outputs(tmp_path, checkpoint_path, sig, code, record_property):
    args = ["--headless", "--source", LIVE, "--weights", str(checkpoint_path), "--device", "cpu",
            "--reencode-every", "1000", "--output", "out.mp4", "--save-masks", "out.jsonl"]
    if sig == signal.SIGINT:
        args += ["--box", "100,60,220,180"]  # an object being tracked when Ctrl-C comes
    proc = subprocess.Popen(app_command(*args), cwd=tmp_path, env=app_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_frames(tmp_path / "out.jsonl", 5, proc, timeout=120)
        sent = time.monotonic()
        proc.send_signal(sig)
        proc.wait(timeout=30)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    err = proc.stderr.read()
    record_property("exit_seconds", round(took, 2))
    print(f"{signal.Signals(sig).name}: exited {took:.2f}s after the signal")
    assert proc.returncode == code, err
    assert took < 5.0, f"took {took:.1f}s to stop"
    assert f"stopped by {signal.Signals(sig).name}" in err
    text = (tmp_path / "out.jsonl").read_text()
    assert text.endswith("\n")
    frames = [json.loads(line) for line in text.splitlines()[1:]]
    assert len(frames) >= 5
    if sig == signal.SIGINT:
        assert all([t["id"] for t in f["tracks"]] == [1] for f in frames)
    assert decoded_frames(tmp_path / "out.mp4") == len(frames)


def test_stream_drop_and_reconnect_are_reported_without_credentials(tmp_path, checkpoint_path, rtsp_server):
    server = rtsp_server()
    url = server.url("live", userinfo="user:secret-pass")
    with app_losing_its_stream(
        tmp_path, "--headless", "--source", url, "--weights", str(checkpoint_path), "--device", "cpu",
        "--save-masks", "live.jsonl", "--status-interval", "1", "--set", "source.backoff_max_s=1",
        server=server, jsonl=tmp_path / "live.jsonl", frames=5, timeout=120,
    ) as (proc, err_path):
        deadline = time.monotonic() + 60
        while "disconnected" not in err_path.read_text():
            assert time.monotonic() < deadline, "no 'disconnected' within 60 s:\n" + err_path.read_text()[-2000:]
            time.sleep(0.1)
        # While the server is away the periodic status line says the stream is reconnecting, and on
        # which attempt (it said nothing of it: frames read stood still, as on a stalled model).
        deadline = time.monotonic() + 30
        while not re.search(r"\] reconnecting \(attempt \d+\): frames \d+ read", err_path.read_text()):
            assert time.monotonic() < deadline, err_path.read_text()[-2000:]
            time.sleep(0.1)
        before = len(frame_lines(tmp_path / "live.jsonl"))
        server.start()
        deadline = time.monotonic() + 60
        while "reconnected" not in err_path.read_text():
            assert time.monotonic() < deadline, "no 'reconnected' within 60 s:\n" + err_path.read_text()[-2000:]
            time.sleep(0.1)
        wait_for_frames(tmp_path / "live.jsonl", before + 5, proc, timeout=60)
        # Back: the next status lines no longer say so.
        back = err_path.read_text().rindex("reconnected")
        deadline = time.monotonic() + 30
        while not re.search(r"\] frames \d+ read", err_path.read_text()[back:]):
            assert time.monotonic() < deadline, err_path.read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    text = err_path.read_text()
    events = [line for line in text.splitlines() if line.startswith("source: ")]
    assert any("disconnected" in line for line in events), text
    assert any("reconnected" in line for line in events), text
    assert any("processed" in line and "dropped" in line for line in text.splitlines())  # periodic status
    assert "secret-pass" not in text
    frames = [f["frame"] for f in frame_lines(tmp_path / "live.jsonl")]
    # indices keep increasing across the reconnect (a live source may skip frames the model missed)
    assert frames == sorted(set(frames)) and len(frames) >= before + 5


def test_a_stream_that_gives_up_reconnecting_is_exit_1_with_its_outputs_saved(tmp_path, checkpoint_path, rtsp_server):
    # A camera lost for good part-way failed as a damaged file does (everything read was processed
    # and saved first), and as one of several streams does (exit 1): not a bad argument (2).
    server = rtsp_server()
    url = server.url("live", userinfo="user:secret-pass")
    with app_losing_its_stream(
        tmp_path, "--headless", "--source", url, "--weights", str(checkpoint_path), "--device", "cpu",
        "--save-masks", "live.jsonl", "--box", "20,20,120,100",
        "--set", "source.reconnect_max_tries=2", "--set", "source.backoff_initial_s=0.2",
        server=server, jsonl=tmp_path / "live.jsonl", frames=5, timeout=120,
    ) as (proc, err_path):
        code = proc.wait(timeout=120)
    text = err_path.read_text()
    assert code == 1, text
    errors = [line for line in text.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "could not reconnect after 2 attempts" in errors[0], text
    assert "secret-pass" not in text
    assert (tmp_path / "live.jsonl").read_text().endswith("\n")
    frames = [f["frame"] for f in frame_lines(tmp_path / "live.jsonl")]
    assert len(frames) >= 5 and frames == sorted(set(frames))


def test_status_lines_keep_their_beat_when_frames_come_late():
    # A live source's status line waits for a processed frame. With frames 0.7 s apart and
    # lines due every 5 s, each line is up to 0.7 s late; the next must still be due on the
    # 5 s beat, not 5 s after the late one (which made 5 s lines come every 5.6 s on average).
    import io
    from types import SimpleNamespace

    clock = [1000.0]
    out = io.StringIO()
    reporter = cli._Reporter(quiet=False, status_interval_s=5.0, stream=out, clock=lambda: clock[0])
    stats = SimpleNamespace(frames_read=0, frames_processed=0, frames_dropped=0, model_fps=0.0)
    result = SimpleNamespace(tracks=[], index=0)
    for _ in range(143):  # 100.1 s of frames, 0.7 s apart
        clock[0] += 0.7
        reporter.result(result, stats)
    assert len(out.getvalue().splitlines()) == 20  # 100 s / 5 s
    # A loop busy for 12 s (no result): headless, the wait for one ticks, and the lines keep coming.
    for _ in range(120):
        clock[0] += 0.1
        reporter.tick(stats)
    assert len(out.getvalue().splitlines()) == 22  # at 105 and 110 s
    # Where nothing ticks meanwhile (a window's loop), the beat starts again after the gap: one line, not three.
    clock[0] += 12.0
    reporter.result(result, stats)
    clock[0] += 0.7
    reporter.result(result, stats)
    assert len(out.getvalue().splitlines()) == 23


def test_status_lines_come_on_time_while_the_model_is_busy(run, capsys, monkeypatch):
    # Headless, the lines do not wait for results: a step that takes 1.5 s (auto discovery's
    # point grid with the file preset took 7 s on a stream) still gets a line every interval,
    # showing frames read while none were processed.
    import re

    from realtime_sam.tracking.engine import Engine

    real = Engine.process
    calls = [0]

    def slow_third(self, *args, **kwargs):
        calls[0] += 1
        if calls[0] == 3:
            time.sleep(1.5)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Engine, "process", slow_third)
    assert run("--headless", "--source", LIVE, "--max-frames", "5", "--status-interval", "0.25") == 0
    lines = [re.match(r"\[\s*([\d.]+)s\] frames (\d+) read, (\d+) processed", s) for s in capsys.readouterr().err.splitlines()]
    status = [(float(m[1]), int(m[2]), int(m[3])) for m in lines if m]
    stalled = [a for a, b in zip(status, status[1:]) if a[2] == b[2]]
    assert len(stalled) >= 3, status  # 1.5 s with nothing processed: lines kept coming
    assert all(b[0] - a[0] < 1.3 for a, b in zip(status, status[1:])), status  # not the 1.5 s stall
