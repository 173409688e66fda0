"""Image folders and globs through the ``realtime-sam`` command: real image files written with OpenCV."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np

from realtime_sam.output.jsonl import load_jsonl
from realtime_sam.testing.synthetic import standard_scene


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


# ------------------------------------------------------------------ images of several sizes


def png_size(path: Path) -> tuple[int, int]:
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    return image.shape[1], image.shape[0]


def test_images_of_several_sizes_are_each_tracked_and_saved_at_their_own_size(run, capsys, caplog, tmp_path):
    # An image of another size stopped the run ('all images must have the same size', exit 1): the frames
    # after it were never read, whatever the outputs.
    write_frames(tmp_path / "frames", 3)  # 160x120
    write_frames(tmp_path / "frames", 2, width=120, height=160, start=3)  # portrait
    write_frames(tmp_path / "frames", 1, width=200, height=100, start=5)
    sizes = [(160, 120)] * 3 + [(120, 160)] * 2 + [(200, 100)]

    assert run("--headless", "--source", "frames", "--box", "10,10,80,80") == 0
    assert "done: 6 frames" in capsys.readouterr().err
    # the engine starts over at each new size, with a warning
    changes = [m for m in caplog.messages if m.startswith("frame size changed")]
    assert [m.split(";")[0] for m in changes] == [
        "frame size changed from 160x120 to 120x160 at frame 3", "frame size changed from 120x160 to 200x100 at frame 5"
    ]

    rc = run("--headless", "--quiet", "--source", "frames/*.png", "--box", "10,10,80,80",
             "--output", "out.mp4", "--save-masks", "m.jsonl")
    assert rc == 0, capsys.readouterr().err
    header, frames = load_jsonl(tmp_path / "m.jsonl")
    assert (header["width"], header["height"]) == (160, 120)
    assert [f["frame"] for f in frames] == list(range(6))
    # a line whose frame size differs from the header's says its own; the others are as they were
    assert [(f.get("width", header["width"]), f.get("height", header["height"])) for f in frames] == sizes
    assert ["width" in f for f in frames] == [False] * 3 + [True] * 3
    assert all(t["mask"]["size"] == [h, w] for f, (w, h) in zip(frames, sizes) for t in f["tracks"])
    assert [t["id"] for t in frames[0]["tracks"]] == [1]

    # The video keeps the first image's size; the others are fitted in whole, their shape kept, on black.
    with av.open(str(tmp_path / "out.mp4")) as container:
        video = [f.to_ndarray(format="gray") for f in container.decode(video=0)]
    assert len(video) == 6 and all(v.shape == (120, 160) for v in video)
    portrait, wide = video[3], video[5]
    # 120x160 -> 90x120: 35 black columns each side; 200x100 -> 160x80: 20 black rows above and below
    assert portrait[:, :32].max() < 24 and portrait[:, -32:].max() < 24 and portrait[:, 40:120].mean() > 40
    assert wide[:17].max() < 24 and wide[-17:].max() < 24 and wide[24:96].mean() > 40
    assert video[0][:, :32].mean() > 40  # the first image fills its frame

    rc = run("--headless", "--quiet", "--source", "frames", "--box", "10,10,80,80",
             "--save-masks", "pngs", "--mask-format", "png")
    assert rc == 0, capsys.readouterr().err
    pngs = sorted((tmp_path / "pngs").iterdir())
    assert [p.name for p in pngs] == [f"{i:05d}.png" for i in range(6)]
    assert [png_size(p) for p in pngs] == sizes
    assert np.count_nonzero(cv2.imread(str(pngs[0]), cv2.IMREAD_UNCHANGED)) > 0


def test_a_prompt_for_a_later_larger_image_is_not_checked_against_the_first_one(run, capsys, tmp_path):
    # README: a prompts file's entry with its start_frame starts an object on an image of a new size.
    # The command checked every prompt against the first image's size: a box on image 3 (320x240)
    # was refused, 'box (200,150,300,220) lies outside the 160x120 frame', exit 2 (and one reaching
    # past 160x120 would have been cut to it).
    write_frames(tmp_path / "frames", 3)  # 160x120
    write_frames(tmp_path / "frames", 3, width=320, height=240, start=3)
    (tmp_path / "prompts.yaml").write_text("- box: [200, 150, 300, 220]\n  start_frame: 3\n")
    rc = run("--headless", "--quiet", "--source", "frames", "--prompts", "prompts.yaml", "--save-masks", "m.jsonl")
    assert rc == 0, capsys.readouterr().err
    _header, frames = load_jsonl(tmp_path / "m.jsonl")
    assert [bool(f["tracks"]) for f in frames[:4]] == [False, False, False, True]
    assert [t["id"] for t in frames[3]["tracks"]] == [1] and frames[3]["tracks"][0]["mask"]["size"] == [240, 320]

    # A video's frames keep one size: a later prompt wholly outside it is still refused before the model loads.
    from realtime_sam.testing.synthetic import write_video

    write_video(standard_scene(width=160, height=120, num_frames=6, seed=3), tmp_path / "clip.mp4")
    assert run("--headless", "--quiet", "--source", "clip.mp4", "--prompts", "prompts.yaml") == 2
    assert error_lines(capsys) == [
        "error: box (200,150,300,220) lies outside the 160x120 frame; give coordinates within 0..159 x 0..119"
    ]
    # One that starts on the first image is still checked against it before the model loads.
    (tmp_path / "prompts.yaml").write_text("- box: [200, 150, 300, 220]\n")
    assert run("--headless", "--quiet", "--source", "frames", "--prompts", "prompts.yaml") == 2
    assert error_lines(capsys) == [
        "error: box (200,150,300,220) lies outside the 160x120 frame; give coordinates within 0..159 x 0..119"
    ]


def test_a_start_frame_past_the_last_image_is_refused(run, capsys, tmp_path):
    write_frames(tmp_path / "frames", 4)
    (tmp_path / "prompts.yaml").write_text("- box: [10, 10, 80, 80]\n  start_frame: 4\n")
    rc = run("--headless", "--quiet", "--source", "frames", "--prompts", "prompts.yaml")
    assert rc == 2
    assert error_lines(capsys) == [
        "error: prompts.yaml: object 1 (box 10,10,80,80): start_frame 4 is past the end of frames, "
        "which has 4 frames (0..3); give a start_frame below 4"
    ]


def test_mots_lines_take_each_images_size(run, capsys, tmp_path):
    write_frames(tmp_path / "frames", 4)
    write_frames(tmp_path / "frames", 1, width=200, height=100, start=4)
    (tmp_path / "prompts.yaml").write_text("- box: [10, 10, 80, 80]\n- box: [20, 10, 90, 60]\n  start_frame: 4\n")
    rc = run("--headless", "--quiet", "--source", "frames", "--prompts", "prompts.yaml", "--save-masks", "m.txt")
    assert rc == 0, capsys.readouterr().err
    lines = [line.split() for line in (tmp_path / "m.txt").read_text().splitlines()]
    assert {(int(f), int(h), int(w)) for f, _id, _cls, h, w, _rle in lines} >= {(0, 120, 160), (4, 100, 200)}
