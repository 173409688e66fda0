"""The built wheel is complete: an installed (not editable) copy finds its presets and data.

Builds the wheel offline from a copy of the sources (the checkout gets no
``build/`` folder), installs it into a temporary folder with ``pip install
--target`` and runs that copy from outside the repository. About 20 s.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.wheel


def _pip(*args: str, cwd: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", *args],
        cwd=cwd, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, Path]:
    """``(wheel, target)``: the wheel built offline and the folder it is installed in."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "realtime_sam", src / "realtime_sam", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = root / "dist"
    _pip("wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist), str(src), cwd=root)
    (wheel,) = dist.glob("realtime_sam-*.whl")
    target = root / "site"
    _pip("install", "--no-deps", "--no-index", "--target", str(target), str(wheel), cwd=root)
    return wheel, target


def _run_installed(target: Path, *args: str) -> subprocess.CompletedProcess:
    """Python with the installed copy first on the path, in a folder outside the repository."""
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run(
        [sys.executable, *args], cwd=target.parent, env=env, capture_output=True, text=True, timeout=120
    )


def test_wheel_ships_the_presets_and_data(installed):
    wheel, _ = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    for preset in ("default", "cpu", "gpu"):
        assert f"realtime_sam/configs/{preset}.yaml" in names
    assert "realtime_sam/model/data/state_dict_manifest_vit_t.json" in names
    assert {"realtime_sam/demo/clip.mp4", "realtime_sam/demo/prompts.yaml"} <= names  # --source demo
    for package in ("capture", "model", "model/modeling", "model/runtime", "tracking", "output", "app", "testing"):
        assert f"realtime_sam/{package}/__init__.py" in names, package


def test_installed_copy_loads_the_presets(installed):
    _, target = installed
    script = """
import json
from importlib import resources

import realtime_sam
from realtime_sam.config import load_config, preset_text
from realtime_sam.model.checkpoint import manifest

cpu = load_config("cpu")
print(json.dumps({
    "file": realtime_sam.__file__,
    "presets": sorted(p.name for p in resources.files("realtime_sam").joinpath("configs").iterdir()),
    "cpu_device": cpu.model.device,
    "cpu_background_encode": cpu.engine.background_encode,
    "default_text": preset_text("default").splitlines()[0],
    "gpu_device": load_config("gpu").model.device,
    "manifest_keys": len(manifest("vit_t")),
}))
"""
    proc = _run_installed(target, "-c", script)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    module = Path(got["file"]).resolve()
    assert module.is_relative_to(target.resolve()), module
    assert not module.is_relative_to(REPO), f"the test ran the checkout, not the wheel: {module}"
    assert got["presets"] == ["cpu.yaml", "default.yaml", "gpu.yaml"]
    assert (got["cpu_device"], got["cpu_background_encode"], got["gpu_device"]) == ("cpu", True, "cuda")
    assert got["default_text"] == "# realtime-sam default configuration."
    assert got["manifest_keys"] > 100  # the state-dict manifests ship too


def test_installed_command_accepts_a_preset(installed):
    _, target = installed
    # The preset loads; the run then stops at the missing source, before any model is built.
    proc = _run_installed(target, "-m", "realtime_sam", "--config", "cpu", "--headless", "--source", "no_such_clip.mp4")
    assert proc.returncode == 2, proc.stderr
    assert "config file not found" not in proc.stderr
    assert "no_such_clip.mp4" in proc.stderr, proc.stderr


def test_installed_command_plays_the_demo(installed, checkpoint_path):
    _, target = installed
    masks = target.parent / "demo.jsonl"
    proc = _run_installed(
        target, "-m", "realtime_sam", "--source", "demo", "--headless", "--quiet", "--max-frames", "2",
        "--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "1000", "--save-masks", str(masks),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    header, *frames = (json.loads(line) for line in masks.read_text().splitlines())
    clip = Path(header["source"]).resolve()
    assert clip == (target / "realtime_sam" / "demo" / "clip.mp4").resolve(), clip  # the installed copy's clip
    assert [[t["label"] for t in f["tracks"]] for f in frames] == [["cat", "astronaut", "cup"]] * 2
