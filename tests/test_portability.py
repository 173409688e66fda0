"""Windows and macOS, simulated on Linux: what differs there is taken away or stood in for here.

* POSIX-only modules (``resource``, ``fcntl``, ...) made unimportable, as on Windows;
* ``sys.platform`` set to ``win32`` / ``darwin`` where the code asks it;
* Windows' own URL-to-path rules (``nturl2path``) where the code converts ``file://`` URLs;
* text files read with the locale's encoding found by ``-X warn_default_encoding``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
POSIX_ONLY = ("resource", "fcntl", "termios", "pwd", "grp")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def test_every_script_starts_without_posix_only_modules(tmp_path: Path) -> None:
    """Each documented script's ``--help`` with the modules Windows lacks unimportable: ``scripts/_common.py``
    imported ``resource`` at the top, so every script that uses it (benchmark, eval_vos, soak, ...) ended in
    ModuleNotFoundError on Windows before reading its arguments."""
    scripts = sorted(p.name for p in SCRIPTS.glob("*.py") if not p.name.startswith("_"))
    assert "eval_vos.py" in scripts and "benchmark.py" in scripts
    code = f"""
import json, runpy, sys
for name in {POSIX_ONLY!r}:
    sys.modules[name] = None  # import raises ImportError, as on Windows
sys.path.insert(0, {str(SCRIPTS)!r})
failed = {{}}
for script in {scripts!r}:
    sys.argv = [script, "--help"]
    try:
        runpy.run_path({str(SCRIPTS)!r} + "/" + script, run_name="__main__")
    except SystemExit as exc:
        if exc.code not in (0, None):
            failed[script] = f"exit {{exc.code}}"
    except BaseException as exc:
        failed[script] = f"{{type(exc).__name__}}: {{exc}}"
print("RESULT " + json.dumps(failed))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(), timeout=600, cwd=tmp_path)
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, res.stderr[-2000:]
    assert json.loads(line[-1][len("RESULT "):]) == {}


def test_memory_figures_without_resource(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripts' memory figures still come where ``resource`` is missing (Linux reads /proc)."""
    import importlib

    monkeypatch.setitem(sys.modules, "resource", None)
    monkeypatch.syspath_prepend(str(SCRIPTS))
    sys.modules.pop("_common", None)
    common = importlib.import_module("_common")
    try:
        assert common.rss_mb() > 1.0
        assert common.peak_rss_mb() >= common.rss_mb() * 0.5
    finally:
        sys.modules.pop("_common", None)


class _ClosedCapture:
    """A ``cv2.VideoCapture`` that did not open (no such camera, or the OS refused it)."""

    def isOpened(self) -> bool:
        return False

    def read(self):
        return False, None

    def get(self, prop: int) -> float:
        return 0.0

    def release(self) -> None:
        pass


@pytest.mark.parametrize(
    "platform, says, not_says",
    [
        ("darwin", "System Settings > Privacy & Security > Camera", "v4l2-ctl"),
        ("win32", "Settings > Privacy & security > Camera", "v4l2-ctl"),
        ("linux", "v4l2-ctl --list-devices", "Privacy"),
    ],
)
def test_missing_camera_says_what_to_check_on_each_system(monkeypatch: pytest.MonkeyPatch, platform, says, not_says) -> None:
    """macOS and Windows report a camera the user has not allowed as not there; the error told every user to
    run the Linux-only ``v4l2-ctl``."""
    from realtime_sam.capture.sources import open_source
    from realtime_sam.errors import SourceError

    monkeypatch.setattr(sys, "platform", platform)
    with pytest.raises(SourceError) as info:
        open_source("0", capture_factory=lambda index: _ClosedCapture())
    message = str(info.value)
    assert message.startswith("no camera at index 0; ") and "--source 1" in message and "\n" not in message
    assert says in message and not_says not in message
