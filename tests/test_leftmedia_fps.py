"""An image folder's frame rate (``source.image_fps``) that no video output takes is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from fixtures_app import run_app

from realtime_sam.errors import SinkError
from realtime_sam.output.sinks import make_sink


def _frames(folder: Path, n: int = 3) -> Path:
    folder.mkdir()
    for i in range(n):
        assert cv2.imwrite(str(folder / f"{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    return folder


def _run(tmp_path: Path, checkpoint_path: Path, fps: str):
    return run_app("--headless", "--quiet", "--source", "frames", "--set", f"source.image_fps={fps}", "--output", "out.mp4",
                   "--box", "4,4,20,20", "--weights", str(checkpoint_path), "--device", "cpu", cwd=tmp_path)


@pytest.mark.parametrize("fps, shown", [("1e-9", "1e-09"), ("1e-6", "1e-06"), ("2000", "2000")])
def test_the_cli_names_source_image_fps_and_the_range_when_the_video_cannot_take_it(
    tmp_path: Path, checkpoint_path: Path, fps: str, shown: str
) -> None:
    # It was "error: the video output needs a frame rate in (0, 1000] fps, got 1e-09": no key named, and
    # 1e-06, inside (0, 1000], refused all the same.
    _frames(tmp_path / "frames")
    proc = _run(tmp_path, checkpoint_path, fps)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: source.image_fps is {shown}, and the video output needs a frame rate from 0.001 to 1000 fps; "
        "set source.image_fps within that range"
    ]
    assert not (tmp_path / "out.mp4").exists()


def test_the_least_rate_in_the_range_is_written(tmp_path: Path, checkpoint_path: Path) -> None:
    _frames(tmp_path / "frames")
    proc = _run(tmp_path, checkpoint_path, "1e-3")
    assert proc.returncode == 0, proc.stderr
    with av.open(str(tmp_path / "out.mp4")) as container:
        times = [float(f.time) for f in container.decode(video=0)]
    assert times == [0.0, 1000.0, 2000.0]


def test_the_api_names_the_key_too_and_a_files_own_rate_keeps_the_plain_line(tmp_path: Path) -> None:
    from realtime_sam.app.api import track
    from realtime_sam.config import load_config
    from realtime_sam.testing.fakes import BoxRunner
    from realtime_sam.tracking.engine import Engine
    from realtime_sam.types import ObjectPrompt

    _frames(tmp_path / "frames")
    sink = make_sink("video", tmp_path / "v.mp4")
    with pytest.raises(SinkError) as caught:
        next(track(str(tmp_path / "frames"), prompts=[ObjectPrompt(box=(4, 4, 20, 20))],
                   engine=Engine.from_config(load_config("cpu"), runner=BoxRunner()),
                   overrides=["source.image_fps=1e-9"], sinks=[sink]))
    assert str(caught.value).startswith("source.image_fps is 1e-09, and the video output needs a frame rate from 0.001 to 1000")
    # A rate given to the sink itself (or a file's own) names no key.
    with pytest.raises(SinkError, match=r"^the video output needs a frame rate from 0\.001 to 1000 fps, got 2000$"):
        make_sink("video", tmp_path / "w.mp4", fps=2000)
