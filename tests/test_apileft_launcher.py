"""SIGTERM while the ``realtime-sam`` command's modules still load: one line and exit status 143.

The command is run as ``python -m realtime_sam`` runs it (the console script's
:func:`realtime_sam.launcher.main`), in a child process. To meet the import deterministically, a
finder on ``sys.meta_path`` holds the import of ``realtime_sam.app.cli`` (the command's heavy
modules: OpenCV, NumPy) after saying so on stdout; the test then sends a real SIGTERM.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

_HELD_IMPORT = textwrap.dedent(
    """
    import runpy, sys, time

    class HoldTheImport:
        def find_spec(self, name, path=None, target=None):
            if name == "realtime_sam.app.cli":
                print("importing", name, flush=True)
                time.sleep(60)  # the SIGTERM comes meanwhile
            return None

    sys.meta_path.insert(0, HoldTheImport())
    sys.argv = ["realtime-sam", "--help"]
    runpy.run_module("realtime_sam", run_name="__main__")
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_sigterm_while_the_command_loads_is_one_line_and_exit_143(tmp_path):
    """It ended the process at once by the default action: nothing said, exit status -15 (a
    Ctrl-C there already gave one line and 130)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _HELD_IMPORT], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
    )
    try:
        assert proc.stdout.readline() == "importing realtime_sam.app.cli\n"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 143, err
    assert err == "error: terminated by SIGTERM\n" and out == ""
