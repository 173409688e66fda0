"""SIGTERM at the ``realtime-sam`` command's early and late moments: one line and exit status 143, no files.

The command runs as ``python -m realtime_sam`` runs it (:func:`realtime_sam.launcher.main`) in a child
process, on a real clip with a video and a JSONL output and a real checkpoint. To meet a moment
deterministically (no sleeps timed against the machine), the child holds one step, after printing
``held`` on stdout: the import of the command's modules, the parsing of its arguments, the opening of
the source, the loading of the model, or (after the run) the wait for a lingering encode. The test then
sends a real SIGTERM.

Not covered, because nothing in the package can cover it: a SIGTERM before the launcher's first line
(the interpreter starting, site's ``.pth`` files) still meets the default action (-15).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import av
import pytest
from fixtures_app import app_env, frame_lines

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

_DRIVER = textwrap.dedent(
    """
    import importlib, runpy, sys, time

    where, args = sys.argv[1], sys.argv[2:]

    def hold(*_args, **_kwargs):
        if where.endswith(":swallowed"):
            try:  # as Python does in importlib's module-lock callback ("Exception ignored in")
                print("held", flush=True)
                time.sleep(60)
            except BaseException:
                pass
        else:
            print("held", flush=True)
            time.sleep(60)  # the SIGTERM comes meanwhile

    class HoldTheImport:
        def __init__(self, module):
            self.module = module

        def find_spec(self, name, path=None, target=None):
            if name == self.module:
                hold()
            return None

    if where.startswith("import:"):
        module = where.split(":")[1]
        assert module not in sys.modules, where
        sys.meta_path.insert(0, HoldTheImport(module))
    else:
        module, name = where.rsplit(".", 1)
        setattr(importlib.import_module(module), name, hold)
    sys.argv = ["realtime-sam", *args]
    runpy.run_module("realtime_sam", run_name="__main__")
    """
)


def _run_until_held(cwd: Path, where: str, clip: Path, weights: Path) -> subprocess.Popen:
    args = ["--headless", "--quiet", "--config", "cpu", "--source", str(clip), "--box", "10,60,70,120",
            "--weights", str(weights), "--output", "out.mp4", "--save-masks", "masks.jsonl"]
    return subprocess.Popen(
        [sys.executable, "-c", _DRIVER, where, *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, env=app_env(),
    )


def _terminate_when_held(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> tuple[str, str]:
    """Wait for the child's ``held`` line, send ``sig``, and return its stdout after that and its stderr."""
    try:
        line = proc.stdout.readline()
        if line != "held\n":
            out, err = proc.communicate(timeout=120)
            raise AssertionError(f"the child never held ({proc.returncode}): {line + out!r} {err}")
        proc.send_signal(sig)
        return proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize(
    "where",
    [
        "import:realtime_sam.app.cli",  # the command's modules loading (OpenCV, NumPy)
        "realtime_sam.app.cli.build_parser",  # between the launcher and the command: the default action here (-15)
        "realtime_sam.capture.sources.open_source",  # the source opening
        "realtime_sam.model.loader.prepare_model",  # the model loading
        # After the outputs opened, before the pipeline took them: they were closed, an empty video
        # and a masks file with a header only left behind.
        "realtime_sam.model.runners.InferenceRunner",
        "realtime_sam.app.pipeline.Pipeline",
    ],
)
def test_sigterm_during_start_up_is_one_line_143_and_no_files(tmp_path, where, small_clip, checkpoint_path):
    proc = _run_until_held(tmp_path, where, small_clip, checkpoint_path)
    out, err = _terminate_when_held(proc)
    assert proc.returncode == 143, err
    assert err.splitlines()[-1:] == ["error: terminated by SIGTERM"] and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing opened, nothing left behind


@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 143, "error: terminated by SIGTERM"),
                                             (signal.SIGINT, 130, "error: interrupted")])
@pytest.mark.parametrize(
    "where",
    [
        # NumPy's C code imports datetime; the signal's exception raised there came out as an
        # ImportError: a traceback "Importing the numpy C-extensions failed ... bad install", exit 1.
        "import:datetime",
        # Its exception swallowed (importlib's lock callback prints "Exception ignored in" and goes
        # on), the run went on to its end: exit status 0, outputs written.
        "import:realtime_sam.app.cli:swallowed",
    ],
    ids=["inside-numpys-c-import", "lost-in-the-import"],
)
def test_a_signal_in_the_import_is_that_signal(tmp_path, where, sig, code, line, small_clip, checkpoint_path):
    proc = _run_until_held(tmp_path, where, small_clip, checkpoint_path)
    out, err = _terminate_when_held(proc, sig)
    assert proc.returncode == code, err
    assert err == line + "\n" and out == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_sigterm_while_waiting_for_a_lingering_encode_after_the_run_is_143_outputs_whole(tmp_path, small_clip, checkpoint_path):
    # After the command's own handlers were gone, the default action ended it silently (-15); the outputs
    # were already closed and stay whole.
    proc = _run_until_held(tmp_path, "realtime_sam.app.pipeline.wait_for_lingering", small_clip, checkpoint_path)
    _out, err = _terminate_when_held(proc)
    assert proc.returncode == 143, err
    assert len(frame_lines(tmp_path / "masks.jsonl")) == 10
    with av.open(str(tmp_path / "out.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
