"""Image folders and globs through the ``realtime-sam`` command: real image files written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import cv2
import pytest

from realtime_sam.app import cli
from realtime_sam.output.jsonl import load_jsonl
from realtime_sam.testing.synthetic import standard_scene


@pytest.fixture
def run(checkpoint_path, tmp_path, monkeypatch):
    """``main`` with the test checkpoint, CPU, a huge re-encode interval, in a temp folder."""
    monkeypatch.chdir(tmp_path)

    def go(*args: str) -> int:
        return cli.main(["--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "1000", *args])

    return go


def write_frames(folder: Path, n: int, *, width: int = 160, height: int = 120, start: int = 0, ext: str = "png") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    scene = standard_scene(width=width, height=height, num_frames=max(4, start + n), seed=3)
    for i in range(start, start + n):
        assert cv2.imwrite(str(folder / f"{i:05d}.{ext}"), scene.render(i)[0])


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------ files that are not images


def test_a_glob_takes_the_images_and_leaves_other_files_as_the_folder_does(run, capsys, tmp_path):
    # 'frames/*' took notes.txt, meta.json and Thumbs.db as frames that could not be decoded: a message
    # and exit status 1 for a folder of good frames (the folder itself left them out).
    write_frames(tmp_path / "frames", 4)
    (tmp_path / "frames" / "notes.txt").write_text("shot on the 3rd")
    (tmp_path / "frames" / "meta.json").write_text("{}")
    (tmp_path / "frames" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    for source, out in (("frames/*", "glob.jsonl"), ("frames", "folder.jsonl")):
        rc = run("--headless", "--quiet", "--source", source, "--box", "10,10,80,80", "--save-masks", out)
        assert rc == 0, capsys.readouterr().err
        assert capsys.readouterr().err == ""
    glob_frames = load_jsonl(tmp_path / "glob.jsonl")[1]
    assert [f["frame"] for f in glob_frames] == [0, 1, 2, 3]
    assert glob_frames == load_jsonl(tmp_path / "folder.jsonl")[1]


def test_an_image_that_cannot_be_decoded_is_still_reported_from_a_glob(run, capsys, tmp_path):
    write_frames(tmp_path / "frames", 4)
    (tmp_path / "frames" / "00002.png").write_bytes(b"\x89PNG damaged")
    (tmp_path / "frames" / "notes.txt").write_text("not counted")
    rc = run("--headless", "--quiet", "--source", "frames/*", "--save-masks", "m.jsonl")
    errors = error_lines(capsys)
    assert rc == 1 and len(errors) == 1, errors
    assert "1 of 4 files" in errors[0] and "00002.png" in errors[0], errors
    assert [f["frame"] for f in load_jsonl(tmp_path / "m.jsonl")[1]] == [0, 1, 2]


def test_a_glob_that_matches_no_images_says_so_in_one_line(run, capsys, tmp_path):
    write_frames(tmp_path / "frames", 2, ext="jpg")
    (tmp_path / "frames" / "notes.txt").write_text("x")
    rc = run("--headless", "--source", "frames/*.txt", "--save-masks", "m.jsonl")
    errors = error_lines(capsys)
    assert rc == 2 and len(errors) == 1, errors
    assert "frames/*.txt matches 1 file(s) but no images (first: notes.txt" in errors[0], errors
    assert "give a glob of the images (e.g. 'frames/*.jpg')" in errors[0], errors
    assert not (tmp_path / "m.jsonl").exists()
    # a glob that matches nothing at all keeps its own line
    assert run("--headless", "--source", "frames/*.gif") == 2
    assert "no files match frames/*.gif" in error_lines(capsys)[0]
