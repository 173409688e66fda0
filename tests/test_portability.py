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


def _windows_url2pathname():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # nturl2path is deprecated as a public module in 3.14
        import nturl2path
    return nturl2path.url2pathname


@pytest.mark.parametrize(
    "url, windows_path",
    [
        ("file:///C:/videos/a%20b.mp4", "C:\\videos\\a b.mp4"),
        ("file://localhost/C:/videos/a.mp4", "C:\\videos\\a.mp4"),
        ("file://server/share/clips/a.mp4", "\\\\server\\share\\clips\\a.mp4"),
    ],
)
def test_file_url_is_a_windows_path_on_windows(monkeypatch: pytest.MonkeyPatch, url, windows_path) -> None:
    """On Windows ``file:///C:/videos/a.mp4`` was opened as ``\\C:\\videos\\a.mp4`` (the URL's path as it is),
    which names nothing, and a UNC URL lost its server. Here Windows' URL-to-path rules stand in for the real
    ones (``urllib.request.url2pathname`` is ``nturl2path``'s there), and the path handed on is recorded."""
    import urllib.request

    from realtime_sam.capture import sources

    monkeypatch.setattr(urllib.request, "url2pathname", _windows_url2pathname())
    monkeypatch.setattr(sources, "_WINDOWS", True, raising=False)
    opened: list[str] = []
    monkeypatch.setattr(sources, "_open_path", lambda path, text, config: opened.append(str(path)))
    sources.open_source(url)
    assert opened == [windows_path]


def test_file_url_naming_another_host_is_refused_here(tmp_path: Path) -> None:
    """Off Windows, ``file://server/...``'s host was dropped and the same path opened on this machine: the
    wrong file, with no word. Now it is a one-line error; ``localhost`` and no host still open the file."""
    from realtime_sam.capture.images import ImageSequenceSource
    from realtime_sam.capture.sources import open_source
    from realtime_sam.errors import SourceError

    import cv2
    import numpy as np

    image = tmp_path / "a b.png"
    assert cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    quoted = str(image).replace(" ", "%20")
    for url in (f"file://{quoted}", f"file://localhost{quoted}"):
        src = open_source(url)
        try:
            assert isinstance(src, ImageSequenceSource)
        finally:
            src.close()
    with pytest.raises(SourceError) as info:
        open_source(f"file://fileserver{quoted}")
    message = str(info.value)
    assert "fileserver" in message and "file:///" in message and "\n" not in message


def _opencv_as_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """``cv2.imread``/``cv2.imwrite`` as on Windows, where OpenCV opens files by a narrow path: a name
    outside the ANSI code page is not found (``None``; ``False``). Python's own file functions still work."""
    import cv2

    real_read, real_write = cv2.imread, cv2.imwrite

    def imread(path, *args):
        return None if not str(path).isascii() else real_read(path, *args)

    def imwrite(path, *args):
        return False if not str(path).isascii() else real_write(path, *args)

    monkeypatch.setattr(cv2, "imread", imread)
    monkeypatch.setattr(cv2, "imwrite", imwrite)


def test_annotate_reads_and_writes_images_under_a_non_ascii_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``realtime-sam annotate`` read the images with ``cv2.imread`` and saved a video's frames with
    ``cv2.imwrite``: on Windows, in a folder such as ``写真`` every image was "not a readable image" and a
    video's frames "cannot write the frame image"."""
    import cv2
    import numpy as np
    from test_annotate import NAMES, BoxModel

    from realtime_sam.app.annotate import annotate
    from realtime_sam.testing.fakes import FixedBoxDetector
    from realtime_sam.testing.synthetic import standard_scene, write_video

    shots = tmp_path / "写真"
    shots.mkdir()
    for i in range(2):
        image = np.full((120, 160, 3), 60 + 40 * i, np.uint8)
        assert cv2.imwrite(str(shots / f"img{i}.png"), image)
    video = write_video(standard_scene(160, 120, num_frames=4, num_objects=1), tmp_path / "vidéo_ł.mp4")
    _opencv_as_on_windows(monkeypatch)

    detector = FixedBoxDetector([[10, 20, 61, 81]], [2], NAMES)
    summary = annotate(shots, detector=detector, model=BoxModel(), progress=False)
    assert summary.images == summary.annotated == 2 and summary.skipped == 0
    assert summary.objects == {"car": 2}

    summary = annotate(video, detector=detector, model=BoxModel(), every=2, progress=False)
    images = sorted((tmp_path / "vidéo_ł_auto_annotate_labels" / "images").iterdir())
    assert [p.name for p in images] == ["vidéo_ł_000000.jpg", "vidéo_ł_000002.jpg"]
    assert cv2.imdecode(np.fromfile(str(images[1]), np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
    assert summary.images == 2 and summary.objects == {"car": 2}


def test_image_files_round_trip_through_any_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The helpers the window's snapshots and ``annotate`` use: PNG and JPEG under a non-ASCII name,
    with OpenCV's own file functions failing there as on Windows."""
    import numpy as np

    from realtime_sam.output.image_file import read_image, write_image

    _opencv_as_on_windows(monkeypatch)
    image = np.zeros((32, 48, 3), np.uint8)
    image[:, 16:] = (10, 200, 30)
    for name in ("snap-ł.png", "снимок.jpg"):
        assert write_image(tmp_path / name, image)
        back = read_image(tmp_path / name)
        assert back is not None and back.shape == image.shape
        diff = np.abs(back.astype(int) - image.astype(int))
        assert diff.max() == 0 if name.endswith(".png") else diff.mean() < 3  # JPEG: lossy at the colour edge
    assert read_image(tmp_path / "missing.png") is None


def test_text_files_are_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """Windows opens text in its ANSI code page (cp1252) unless told: every ``open``/``read_text`` of text
    must name its encoding. Run with ``-X warn_default_encoding``, the checkpoint manifest and
    ``eval_vos``'s image-set file were read without one (an ``EncodingWarning`` each), and a sequence name
    outside ASCII in an image-set file was a UnicodeDecodeError under a locale that is not UTF-8."""
    (tmp_path / "ImageSets" / "2017").mkdir(parents=True)
    (tmp_path / "ImageSets" / "2017" / "val.txt").write_text("bear\ncafé-scène\n", encoding="utf-8")
    code = f"""
import json, sys, warnings
sys.path.insert(0, {str(SCRIPTS)!r})
import eval_vos  # imports torch, cv2 and the package first: their own warnings are not ours
from realtime_sam.model import checkpoint
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    checkpoint.manifest.cache_clear()
    assert len(checkpoint.manifest("vit_t")) > 100
    names = eval_vos.imageset_names({str(tmp_path)!r}, "2017/val")
ours = [str(w.message) for w in caught if issubclass(w.category, EncodingWarning)]
print("RESULT " + json.dumps([names, ours]))  # ASCII: this child prints nothing else
"""
    env = _env()
    # The C locale without coercion or UTF-8 mode: the default encoding is ASCII here, as it is cp1252 there.
    env.update(PYTHONUTF8="0", LC_ALL="C", PYTHONCOERCECLOCALE="0")
    res = subprocess.run(
        [sys.executable, "-X", "warn_default_encoding", "-c", code], capture_output=True, text=True, encoding="utf-8",
        env=env, timeout=300, cwd=tmp_path,
    )
    line = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, res.stderr[-2000:]
    assert json.loads(line[-1][len("RESULT "):]) == [["bear", "café-scène"], []]


def test_a_path_outside_the_output_encoding_is_printed_escaped_not_a_traceback(tmp_path: Path) -> None:
    """Windows writes redirected output in the ANSI code page (cp1252): ``realtime-sam weights path > f``
    under a cache folder named ``写真`` ended in a UnicodeEncodeError traceback (simulated here with
    ``PYTHONIOENCODING=cp1252``)."""
    cache = tmp_path / "写真"
    env = {**os.environ, "PYTHONIOENCODING": "cp1252", "REALTIME_SAM_CACHE": str(cache)}
    env.pop("REALTIME_SAM_WEIGHTS", None)
    proc = subprocess.run([sys.executable, "-m", "realtime_sam", "weights", "path"], capture_output=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert proc.stdout.decode("cp1252").splitlines()[0] == str(tmp_path / "\\u5199\\u771f" / "mobile_sam.pt")
