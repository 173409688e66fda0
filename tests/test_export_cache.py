"""Old encoder exports are removed when a new export supersedes them.

Each export is about 23 MB (MobileSAM's encoder) and its name holds a hash of the weights
and the exporter's version: a replaced weights file or a new version left the old file in
the cache for good. A tiny stand-in network makes the real export take well under a second.
"""

from __future__ import annotations

import importlib.util
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from test_accel import _TinyNet  # the tiny stand-in network test_accel exports

from realtime_sam.model.runtime import export as export_mod

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None,
    reason="onnx/onnxscript not installed: pip install -e '.[onnxruntime]'",
)


def _export(weights: Path, cache_dir: Path | None = None, model_type: str = "vit_t") -> Path:
    return export_mod.ensure_encoder_onnx(_TinyNet().eval(), img_size=16, weights=weights, model_type=model_type, cache_dir=cache_dir)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_replacing_the_weights_removes_the_old_export_beside_them(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    weights = tmp_path / "mobile_sam.pt"
    weights.write_bytes(b"checkpoint A")
    other = tmp_path / "finetuned.pt"  # another weights file in the same folder: its export stays
    other.write_bytes(b"checkpoint C")
    first = _export(weights)
    kept = _export(other)
    sam_b = _export(weights, model_type="vit_b")  # the same file read as another model: stays
    assert first.parent == tmp_path / ".realtime_sam_cache"
    weights.write_bytes(b"checkpoint B")  # replaced in place (a new download, a retrained model)
    with caplog.at_level(logging.INFO, logger=export_mod.__name__):
        second = _export(weights)
    assert second != first
    assert _names(first.parent) == sorted([second.name, kept.name, sam_b.name])
    assert f"removed the superseded encoder export {first}" in caplog.text


def test_a_new_export_version_removes_the_same_weights_older_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weights = tmp_path / "mobile_sam.pt"
    weights.write_bytes(b"checkpoint A")
    shared = tmp_path / "encoders"  # a shared folder (as $REALTIME_SAM_CACHE/encoders is)
    old = _export(weights, shared)
    same_name_elsewhere = tmp_path / "elsewhere" / "mobile_sam.pt"
    same_name_elsewhere.parent.mkdir()
    same_name_elsewhere.write_bytes(b"checkpoint of another folder")
    theirs = _export(same_name_elsewhere, shared)
    monkeypatch.setattr(export_mod, "EXPORT_VERSION", export_mod.EXPORT_VERSION + 1)
    new = _export(weights, shared)
    assert new.name.endswith(f"-encoder-v{export_mod.EXPORT_VERSION}.onnx") and new != old
    # The old version of the same weights goes; the same-named file of another folder may still
    # be in use from there (a shared folder cannot tell), so its export stays.
    assert _names(shared) == sorted([new.name, theirs.name])


def test_weights_files_differing_only_in_suffix_keep_both_exports(tmp_path: Path) -> None:
    # mobile_sam.pt and mobile_sam.pth beside each other are two checkpoints: named by their
    # stem alone, each new export removed the other's as "superseded", so runs alternating
    # between them exported the encoder again every time.
    pt, pth = tmp_path / "mobile_sam.pt", tmp_path / "mobile_sam.pth"
    pt.write_bytes(b"checkpoint A")
    pth.write_bytes(b"checkpoint B")
    first, second = _export(pt), _export(pth)
    assert first != second
    assert _names(first.parent) == sorted([first.name, second.name])
    assert _export(pt) == first and first.exists()  # still cached: reused, not exported again


def test_a_cached_export_removes_nothing(tmp_path: Path) -> None:
    weights = tmp_path / "mobile_sam.pt"
    weights.write_bytes(b"checkpoint A")
    folder = tmp_path / ".realtime_sam_cache"
    folder.mkdir()
    stale = folder / f"mobile_sam.pt-vit_t-{'0' * 16}-encoder-v{export_mod.EXPORT_VERSION}.onnx"
    stale.write_bytes(b"old")
    current = export_mod.encoder_onnx_path(weights, "vit_t", None)
    current.write_bytes(b"already exported")
    assert _export(weights) == current  # reused: no export, no clean-up (that comes with an export)
    assert _names(folder) == sorted([stale.name, current.name])


@pytest.mark.skipif(sys.platform == "win32", reason="a running download's lock is POSIX flock")
def test_weights_clean_lists_and_removes_exports_and_partial_downloads_but_not_the_weights(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from realtime_sam.model.weights import ENV_CACHE, ENV_WEIGHTS, weights_main

    cache = tmp_path / "cache"
    monkeypatch.setenv(ENV_CACHE, str(cache))
    monkeypatch.delenv(ENV_WEIGHTS, raising=False)
    cache.mkdir()
    weights = cache / "mobile_sam.pt"
    weights.write_bytes(b"checkpoint A")
    beside = _export(weights)  # <cache>/.realtime_sam_cache/
    shared = _export(weights, cache / "encoders")
    partial = cache / ".mobile_sam.pt.0123456789abcdef.part"  # a download kept for resuming
    partial.write_bytes(b"x" * 1000)
    record = cache / ".mobile_sam.pt.0123456789abcdef.part.json"
    record.write_text("{}")
    dead_export = beside.parent / f".{beside.name}.dead0001.part"  # an export killed part-way
    dead_export.write_bytes(b"y")
    live = cache / ".mobile_sam.pt.live0001.part"  # a download running now: not touched
    live.write_bytes(b"z")
    unrelated = cache / "notes.txt"
    unrelated.write_text("mine")

    assert weights_main(["clean", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    listed = sorted(line.split(" MB  ", 1)[1] for line in lines if line.startswith("would remove"))
    assert listed == sorted(str(p) for p in (beside, shared, partial, dead_export, live)) and len(lines) == 5
    assert beside.is_file() and shared.is_file() and partial.is_file()

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import fcntl, sys; f = open(sys.argv[1], 'ab'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('locked', flush=True); sys.stdin.read()", str(live)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert weights_main(["clean"]) == 0
    finally:
        holder.communicate("", timeout=30)
    captured = capsys.readouterr()
    assert f"in use, kept  {live}" in captured.err
    assert captured.err.splitlines()[-1].startswith("freed ")
    assert sorted(p.name for p in cache.iterdir()) == sorted(
        [".realtime_sam_cache", "encoders", "mobile_sam.pt", live.name, "notes.txt"]
    )
    assert list((cache / ".realtime_sam_cache").iterdir()) == [] and list((cache / "encoders").iterdir()) == []
    assert weights.read_bytes() == b"checkpoint A"

    live.unlink()
    assert weights_main(["clean"]) == 0
    assert capsys.readouterr().err.startswith("nothing to clean in ")



def test_an_export_named_as_before_the_whole_file_name_is_removed_by_the_next_export(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Exports were named by the weights file's name without its suffix (mobile_sam-vit_t-...)
    # until the whole-name change, which left that file, read by nothing any more, beside the
    # new one (mobile_sam.pt-vit_t-...): 23 MB for MobileSAM, for good.
    def named_before(export: Path, digest: str | None = None) -> Path:
        name = export.name.replace("mobile_sam.pt-", "mobile_sam-", 1)
        if digest is not None:
            name = re.sub(r"-[0-9a-f]{16}-", f"-{digest}-", name)
        return export.parent / name

    weights = tmp_path / "mobile_sam.pt"
    weights.write_bytes(b"checkpoint A")
    current = export_mod.encoder_onnx_path(weights, "vit_t", None)
    current.parent.mkdir(exist_ok=True)
    before = named_before(current)
    before.write_bytes(b"exported by an earlier release")
    replaced = named_before(current, "0" * 16)  # from what the file held before it was replaced
    replaced.write_bytes(b"older still")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared_before = named_before(shared / current.name)
    shared_before.write_bytes(b"the same weights, named as before")
    shared_other = named_before(shared / current.name, "0" * 16)  # maybe another folder's mobile_sam.pt: stays
    shared_other.write_bytes(b"another")
    with caplog.at_level(logging.INFO, logger=export_mod.__name__):
        assert _export(weights) == current
        _export(weights, shared)
    assert _names(current.parent) == [current.name]
    assert f"removed the superseded encoder export {before}" in caplog.text
    assert _names(shared) == sorted([current.name, shared_other.name])

    # Beside a weights file that really is named mobile_sam, that name is its export's: it stays.
    folder = tmp_path / "both"
    folder.mkdir()
    (folder / "mobile_sam").write_bytes(b"checkpoint C")
    theirs = _export(folder / "mobile_sam")
    (folder / "mobile_sam.pt").write_bytes(b"checkpoint A")
    ours = _export(folder / "mobile_sam.pt")
    assert _names(ours.parent) == sorted([theirs.name, ours.name])
