"""A box on a frame one pixel wide or tall: cut to that pixel's span, through the real CLI on a real image."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime_sam.errors import PromptError
from realtime_sam.output.jsonl import load_jsonl
from realtime_sam.tracking.prompts import clamp_prompt
from realtime_sam.types import ObjectPrompt


def test_a_box_on_a_one_pixel_side_spans_that_pixel() -> None:
    # Cut to 0..0, every box on a 1-px-wide frame had zero width: refused with "give coordinates within 0..0".
    assert clamp_prompt(ObjectPrompt(box=(0, 0, 5, 40)), 1, 40).box == (0, 0, 1, 39)
    assert clamp_prompt(ObjectPrompt(box=(-2, 0, 50, 4)), 40, 1).box == (0, 0, 39, 1)
    with pytest.raises(PromptError, match=r"^box \(1,0,5,40\) lies outside the 1x40 frame; give coordinates within 0\.\.1 x 0\.\.39$"):
        clamp_prompt(ObjectPrompt(box=(1, 0, 5, 40)), 1, 40)
    # Other frames are cut as before.
    assert clamp_prompt(ObjectPrompt(box=(0, 0, 500, 400)), 160, 120).box == (0, 0, 159, 119)


@pytest.mark.parametrize("size, box", [((1, 40), "0,0,1,40"), ((40, 1), "0,0,40,1")])
def test_the_cli_tracks_a_box_on_a_one_pixel_wide_or_tall_image(run, capsys, tmp_path: Path, size, box) -> None:
    w, h = size
    image = np.full((h, w, 3), 40, np.uint8)
    image[h // 4 : max(1, 3 * h // 4), w // 4 : max(1, 3 * w // 4)] = 220
    assert cv2.imwrite(str(tmp_path / "line.png"), image)
    rc = run("--headless", "--quiet", "--source", "line.png", "--box", box, "--save-masks", "m.jsonl")
    assert rc == 0, capsys.readouterr().err
    header, lines = load_jsonl(tmp_path / "m.jsonl")
    assert (header["width"], header["height"]) == (w, h)
    assert [t["id"] for t in lines[0]["tracks"]] == [1]
