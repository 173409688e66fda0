"""Video files as users have them: variable frame rate, anamorphic pixels, rotation, files being written.

Each case writes a small real file with PyAV and runs it through the source
or the ``realtime-sam`` command, as a user would, and compares with what
FFmpeg's own tools show.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from realtime_sam.app import cli
from realtime_sam.capture.sources import open_source
from realtime_sam.errors import SourceError
from realtime_sam.output.jsonl import load_jsonl
from realtime_sam.output.video import VideoSink
from realtime_sam.types import Frame, FrameResult

W, H = 96, 64


def _image(i: int, width: int = W, height: int = H) -> np.ndarray:
    """A grey frame with a white bar that moves with ``i`` (BGR)."""
    image = np.full((height, width, 3), 60, np.uint8)
    x = (i * 5) % (width - 12)
    image[8 : height - 8, x : x + 12] = 255
    return image


def write_clip(
    path: Path,
    times_ms: list[int],
    *,
    width: int = W,
    height: int = H,
    sar: Fraction | None = None,
    rotation: int | None = None,
) -> Path:
    """An H.264 MP4 whose frames are shown at ``times_ms`` (a millisecond time base, so gaps are kept)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        stream.options = {"bf": "0", "crf": "18"}
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if rotation:
            stream.set_display_rotation(rotation)
        for i, t in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(_image(i, width, height), format="bgr24")
            frame.pts = t
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0)]


@pytest.fixture
def run(checkpoint_path, tmp_path, monkeypatch):
    """``main`` with the test checkpoint on the CPU, one encode for the whole run, in a temp folder."""
    monkeypatch.chdir(tmp_path)

    def go(*args: str) -> int:
        return cli.main(
            ["--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "1000", "--quiet", *args]
        )

    return go


# ------------------------------------------------------------------ variable frame rate


# 25 fps with a 1 s pause after the sixth frame, like a screen recording or a phone in low light.
VFR_TIMES_MS = [0, 40, 80, 120, 160, 200, 1200, 1240, 1280, 1320, 1360, 1400]


def test_variable_frame_rate_file_output_video_keeps_the_source_timing(run, tmp_path):
    src = write_clip(tmp_path / "vfr.mp4", VFR_TIMES_MS)
    source_times = frame_times(src)
    np.testing.assert_allclose(source_times, np.array(VFR_TIMES_MS) / 1000, atol=1e-6)  # what ffplay shows
    assert run("--source", str(src), "--headless", "--box", "10,8,40,56",
               "--output", "out.mp4", "--save-masks", "m.jsonl") == 0
    # Each output frame is shown when the source shows it (before: at index / the average rate,
    # 8.3 fps, a frame every 0.12 s: the pause was gone and the rest played 3x slower).
    out_times = frame_times(tmp_path / "out.mp4")
    np.testing.assert_allclose(out_times, source_times, atol=1e-3)
    _, records = load_jsonl(tmp_path / "m.jsonl")
    np.testing.assert_allclose([r["timestamp"] for r in records], source_times, atol=1e-6)


def test_video_sink_with_timestamps_places_frames_at_them(tmp_path):
    path = tmp_path / "t.mkv"
    stamps = [10.0, 10.04, 11.5, 11.5, 11.54]  # a repeat goes one frame (1/25 s) after the last
    with VideoSink(path, fps=25, timestamps=True) as sink:
        for i, t in enumerate(stamps):
            sink.write(FrameResult(Frame(i, _image(i), t, 0.0), ()))
    np.testing.assert_allclose(frame_times(path), [0.0, 0.04, 1.5, 1.54, 1.58], atol=1e-3)


# ------------------------------------------------------------------ anamorphic pixels


@pytest.mark.parametrize("rotation,expected", [(None, Fraction(64, 45)), (90, Fraction(45, 64))])
def test_anamorphic_file_source_reports_its_pixel_shape(tmp_path, rotation, expected):
    src = write_clip(tmp_path / "sar.mp4", [0, 40, 80], sar=Fraction(64, 45), rotation=rotation)
    with open_source(src) as source:
        assert source.size == ((W, H) if rotation is None else (H, W))  # stored pixels, as OpenCV gives
        assert source.sample_aspect_ratio == expected  # a quarter turn swaps the pixel's sides


def test_anamorphic_file_output_video_is_shown_at_the_source_shape(run, tmp_path):
    # 720x576 PAL widescreen is stored 64:45: players show it 1024x576 (16:9).
    src = write_clip(tmp_path / "pal.mp4", [0, 40, 80, 120], sar=Fraction(64, 45))
    assert run("--source", str(src), "--headless", "--box", "10,8,40,56", "--output", "out.mp4") == 0
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        # Before: 1:1, so the output played squeezed to 3:2 beside its 16:9 source.
        assert (stream.width, stream.height) == (W, H)  # masks and boxes stay in stored pixels
        assert stream.sample_aspect_ratio == Fraction(64, 45)


# ------------------------------------------------------------------ files that cannot be read (yet)


def test_empty_file_says_it_is_empty(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match=r"clip\.mp4 is empty \(0 bytes\)"):
        open_source(path)


def test_mp4_still_being_written_says_so(tmp_path):
    # A plain MP4 writes its index (moov) last: a recording in progress, or one cut short, has none yet.
    full = write_clip(tmp_path / "full.mp4", [i * 40 for i in range(25)])
    data = full.read_bytes()
    assert data.rfind(b"moov") > len(data) // 2
    partial = tmp_path / "recording.mp4"
    partial.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="without its index .*still being written, or was cut short") as info:
        open_source(partial)
    assert "\n" not in str(info.value)
    # Bytes that are no MP4 at all keep the general message.
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(SourceError, match="not a video FFmpeg can read"):
        open_source(junk)
