"""``--max-frames N`` on a file ends it as a file of N frames ends: two-way up to its last frame.

Two-way (``pipeline.two_way``, a file's default headless) holds the results
since the last encode and, at the file's end, encodes the last frame once more
to carry masks back over them. A run cut short by ``max_frames`` is a planned
end, not a stop: its held frames must get the same anchor, so that
``--max-frames 6`` on a longer file writes the masks a 6-frame file gets. (It
flushed them one-way, as after Ctrl-C.)

The two clips are encoded losslessly (x264 at ``crf`` 0) from the same
rendered frames, so both decode to the same pixels and the runs may be
compared record for record. It needs the golden checkpoint: with plain random
weights the periodic re-encodes decode empty masks, and two-way and one-way
would write the same thing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fixtures_app import HEIGHT, WIDTH, frame_lines

from realtime_sam.app import cli

# Encodes at frames 0 and 4; frame 5 is after the last periodic encode, which only the
# end-of-file encode (or a run's end at max_frames) makes two-way.
KEPT, LONGER = 6, 10
SETTINGS = (
    "--box", "20,20,120,100", "--device", "cpu", "--reencode-every", "4", "--headless",
    "--set", "tracker.min_score=0.0", "--set", "tracker.max_area_frac=1.0", "--quiet",
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[int, Path]:
    """``{frames: clip}``: the same 320x240 scene, ``KEPT`` and ``LONGER`` frames long, lossless H.264."""
    from realtime_sam.testing.synthetic import standard_scene, write_video

    scene = standard_scene(width=WIDTH, height=HEIGHT, num_frames=LONGER)
    folder = tmp_path_factory.mktemp("maxframes")
    return {
        n: write_video(dataclasses.replace(scene, num_frames=n), folder / f"clip{n}.mp4", crf=0)
        for n in (KEPT, LONGER)
    }


def _run(clip: Path, checkpoint: Path, masks: Path, *extra: str) -> list[dict]:
    code = cli.main(["--source", str(clip), "--weights", str(checkpoint), *SETTINGS, "--save-masks", str(masks), *extra])
    assert code == 0
    return frame_lines(masks)


def test_max_frames_on_a_file_writes_what_a_file_of_that_length_gets(clips, golden_dir, tmp_path):
    checkpoint = golden_dir / "mobile_sam_random_seed0.pt"
    whole = _run(clips[KEPT], checkpoint, tmp_path / "whole.jsonl")
    cut = _run(clips[LONGER], checkpoint, tmp_path / "cut.jsonl", "--max-frames", str(KEPT))
    one_way = _run(clips[KEPT], checkpoint, tmp_path / "one_way.jsonl", "--set", "pipeline.two_way=false")

    assert [f["frame"] for f in whole] == [f["frame"] for f in cut] == list(range(KEPT))
    assert all(f["tracks"] and f["tracks"][0]["area"] > 0 for f in whole)
    # The comparison can tell an end-of-file anchor from none: without it the last frame is one-way's.
    assert whole[-1]["tracks"] != one_way[-1]["tracks"]
    assert [f["tracks"] for f in cut] == [f["tracks"] for f in whole]
