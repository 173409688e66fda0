"""A window over a file turns two-way propagation off: its masks are the one-way run's, frame by frame.

Two-way (``pipeline.two_way``) holds each result until the next encode and
blends masks carried back from it; a window must show each frame as it is
processed (a click lands on what is on screen), so ``realtime-sam`` with a
window runs one-way (``app/cli.py`` for one source, ``app/multi_cli.py`` for
the grid). Here the real command runs with a window under Xvfb and its
``--save-masks`` output is compared with two headless runs of the same file:
``--set pipeline.two_way=false`` (must be equal) and two-way on (must differ).

It needs the golden checkpoint: with plain random weights the periodic
re-encodes decode empty masks, so two-way and one-way write the same thing
and nothing would be shown.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fixtures_app import HEIGHT, WIDTH, app_command, app_env, frame_lines

from realtime_sam.app import cli

# A 6-frame clip re-encoded every 4th frame: frames 1-3 are between encodes, and frame 5 after
# the last periodic one (two-way encodes the file's last frame once more for it). Each frame more
# is seconds of a 2-core CPU in each of the four runs (a 10-frame clip had one encode more each).
# Accept every mask (random weights predict low scores) so the object is tracked on every frame.
FRAMES = 6
SETTINGS = (
    "--box", "20,20,120,100", "--device", "cpu", "--reencode-every", "4",
    "--set", "tracker.min_score=0.0", "--set", "tracker.max_area_frac=1.0", "--quiet",
)


@pytest.fixture(scope="module")
def golden_checkpoint(golden_dir) -> Path:
    return golden_dir / "mobile_sam_random_seed0.pt"


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    """A ``FRAMES``-frame 320x240 synthetic clip (3 objects) at 25 fps."""
    from realtime_sam.testing.synthetic import standard_scene, write_video

    return write_video(standard_scene(width=WIDTH, height=HEIGHT, num_frames=FRAMES), tmp_path_factory.mktemp("clip") / "small.mp4")


@pytest.fixture(scope="module")
def headless(golden_checkpoint, small_clip, tmp_path_factory):
    """``{two_way: frame records}`` of headless runs over ``small_clip``, two-way on and off."""
    out = {}
    folder = tmp_path_factory.mktemp("headless")
    for two_way in (True, False):
        masks = folder / f"two_way_{two_way}.jsonl"
        code = cli.main([
            "--source", str(small_clip), "--headless", "--weights", str(golden_checkpoint), *SETTINGS,
            "--set", f"pipeline.two_way={str(two_way).lower()}", "--save-masks", str(masks),
        ])
        assert code == 0
        out[two_way] = frame_lines(masks)
    return out


def _tracks(frames: list[dict]) -> list[list[dict]]:
    return [f["tracks"] for f in frames]


def test_headless_two_way_changes_the_masks_between_encodes(headless):
    """The comparison below can tell the two apart: two-way rewrites the frames between encodes."""
    on, off = headless[True], headless[False]
    assert [f["frame"] for f in on] == [f["frame"] for f in off] == list(range(FRAMES))
    assert all([t["id"] for t in f["tracks"]] == [1] and f["tracks"][0]["area"] > 0 for f in on + off)
    same = [a == b for a, b in zip(_tracks(on), _tracks(off))]
    assert same == [i % 4 == 0 for i in range(FRAMES)], same  # encoded frames equal, the others blended


@pytest.mark.parametrize("kind", ["single", "grid"])
def test_a_window_over_a_file_writes_the_one_way_masks(kind, xvfb_display, headless, golden_checkpoint, small_clip, tmp_path):
    if kind == "single":
        source = ["--source", str(small_clip)]  # app/cli.py's LiveWindow
    else:
        (tmp_path / "one.yaml").write_text(f"- {{source: '{small_clip}'}}\n")
        source = ["--sources", "one.yaml"]  # app/multi_cli.py's GridWindow, with one stream
    masks = tmp_path / "window.jsonl"
    err_path = tmp_path / "app.err"
    with open(err_path, "w") as err:
        # No --headless and a display: the window opens (or the run fails with exit 2),
        # shows the frames and closes at the end of the file.
        code = subprocess.run(
            app_command(*source, "--weights", str(golden_checkpoint), *SETTINGS, "--save-masks", str(masks)),
            check=False, cwd=tmp_path, env=app_env(DISPLAY=xvfb_display), stdout=subprocess.DEVNULL, stderr=err, timeout=180,
        ).returncode
    assert code == 0, err_path.read_text()[-2000:]
    window = frame_lines(masks)
    assert [f["frame"] for f in window] == list(range(FRAMES))
    differ = [f["frame"] for f, ref in zip(window, headless[False]) if f["tracks"] != ref["tracks"]]
    assert not differ, f"frames whose masks are not the one-way run's: {differ}"
    assert _tracks(window) != _tracks(headless[True])
