"""Video files as users have them: variable frame rate, anamorphic pixels, rotation, files being written.

Each case writes a small real file with PyAV and runs it through the source
or the ``realtime-sam`` command, as a user would, and compares with what
FFmpeg's own tools show.
"""

from __future__ import annotations

import enum
import shutil
import struct
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from realtime_sam.app import cli
from realtime_sam.capture.decoding import is_cover_art
from realtime_sam.capture.sources import open_source
from realtime_sam.errors import SinkError, SourceError
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


def _track_with(src: Path, sinks) -> list[float]:
    """``realtime_sam.track`` on ``src`` with ``sinks``, as an API user calls it (a box-mask model)."""
    from realtime_sam import track
    from realtime_sam.config import load_config
    from realtime_sam.testing.fakes import BoxRunner
    from realtime_sam.tracking.engine import Engine

    cfg = load_config("cpu")
    engine = Engine.from_config(cfg, runner=BoxRunner())
    return [r.timestamp for r in track(str(src), config=cfg, engine=engine, sinks=sinks)]


def test_variable_frame_rate_file_through_the_api_gives_the_commands_output(tmp_path):
    from realtime_sam.output.sinks import make_sink, open_sinks

    src = write_clip(tmp_path / "vfr.mp4", VFR_TIMES_MS)
    source_times = frame_times(src)
    # The sinks as the API documents them: built before the source is opened, knowing only a rate.
    video = make_sink("video", tmp_path / "api.mp4", fps=25)
    more = open_sinks([str(tmp_path / "api.mkv"), str(tmp_path / "api.jsonl")], fps=25)
    stamps = _track_with(src, [video, more])
    np.testing.assert_allclose(stamps, source_times, atol=1e-6)
    # Before: index / 25 fps (0.00 .. 0.44 s): the pause was gone.
    np.testing.assert_allclose(frame_times(tmp_path / "api.mp4"), source_times, atol=1e-3)
    np.testing.assert_allclose(frame_times(tmp_path / "api.mkv"), source_times, atol=1e-3)
    header, records = load_jsonl(tmp_path / "api.jsonl")
    np.testing.assert_allclose([r["timestamp"] for r in records], source_times, atol=1e-6)
    assert header["source"] is not None and header["source"].endswith("vfr.mp4")


def test_anamorphic_file_through_the_api_keeps_its_pixel_shape(tmp_path):
    from realtime_sam.output.sinks import make_sink

    src = write_clip(tmp_path / "pal.mp4", [0, 40, 80, 120], sar=Fraction(64, 45))
    _track_with(src, [make_sink("video", tmp_path / "api.mp4", fps=25)])
    with av.open(str(tmp_path / "api.mp4")) as container:
        assert container.streams.video[0].sample_aspect_ratio == Fraction(64, 45)  # before: 1:1


def test_a_live_source_keeps_index_timing_and_what_the_caller_says_wins(tmp_path):
    from realtime_sam.app.pipeline import Pipeline

    class Live:
        live, fps, name, sample_aspect_ratio = True, 25.0, "cam", Fraction(1)

        def __init__(self) -> None:
            self.i = 0

        def read(self):
            if self.i >= 4:
                return None
            time.sleep(0.05)
            self.i += 1  # arrival times, jittered: a camera's clock, not a file's
            return Frame(self.i - 1, _image(self.i), 100.0 + [0, 0.07, 0.09, 0.2][self.i - 1], 0.0)

    class Echo:
        has_pending = False

        def process(self, frame):
            return FrameResult(frame, ())

    live_out, told = tmp_path / "live.mkv", tmp_path / "told.mkv"
    sinks = [VideoSink(live_out, fps=25), VideoSink(told, fps=25, timestamps=True)]
    with Pipeline(Live(), Echo(), sinks=sinks) as pipe:
        got = [r.index for r in pipe]  # a live source may drop a frame on a busy machine
    assert got[0] == 0 and got[-1] == 3
    # Index / fps, as the command writes a live source; the caller's timestamps=True is kept.
    np.testing.assert_allclose(frame_times(live_out), [i / 25 for i in got], atol=1e-3)
    np.testing.assert_allclose(frame_times(told), [[0, 0.07, 0.09, 0.2][i] for i in got], atol=1e-3)


class _Camera:
    """A live source of four frames at ``fps`` (``None``: a camera that reports no rate)."""

    live, name, sample_aspect_ratio = True, "cam", Fraction(1)

    def __init__(self, fps: float | None) -> None:
        self.fps, self.i, self.closed = fps, 0, False

    def read(self):
        if self.i >= 4:
            return None
        time.sleep(0.05)
        self.i += 1
        return Frame(self.i - 1, _image(self.i), 100.0 + 0.07 * self.i, 0.0)

    def close(self) -> None:
        self.closed = True


class _Echo:
    has_pending = False

    def process(self, frame):
        return FrameResult(frame, ())


def test_api_video_sink_without_fps_takes_the_sources_rate_and_timestamps(tmp_path):
    from realtime_sam.app.pipeline import Pipeline
    from realtime_sam.output.sinks import make_sink, open_sinks

    # A file: its own timestamps, as the command writes them (before: make_sink refused, "pass fps=").
    src = write_clip(tmp_path / "vfr.mp4", VFR_TIMES_MS)
    video = make_sink("video", tmp_path / "api.mp4")
    more = open_sinks([str(tmp_path / "api.mkv")])
    _track_with(src, [video, more])
    with open_source(src) as source:
        assert video.fps == Fraction(source.fps).limit_denominator(1001)
    for out in ("api.mp4", "api.mkv"):
        np.testing.assert_allclose(frame_times(tmp_path / out), frame_times(src), atol=1e-3)
    # A live source: index / its own rate (10 fps, not a default 25).
    out = tmp_path / "live.mkv"
    with Pipeline(_Camera(10.0), _Echo(), sinks=[make_sink("video", out)]) as pipe:
        got = [r.index for r in pipe]
    assert got[-1] == 3
    np.testing.assert_allclose(frame_times(out), [i / 10 for i in got], atol=1e-3)


def test_api_video_sink_with_no_rate_anywhere_says_so_before_any_frame(tmp_path):
    from realtime_sam.app.pipeline import Pipeline
    from realtime_sam.output.sinks import make_sink

    camera, out, masks = _Camera(None), tmp_path / "cam.mp4", tmp_path / "cam.jsonl"
    sinks = [make_sink("jsonl", masks), make_sink("video", out)]
    with pytest.raises(SinkError, match=r"cam\.mp4 needs a frame rate and the source cam has none; pass fps=") as info:
        Pipeline(camera, _Echo(), sinks=sinks)
    assert "\n" not in str(info.value)
    # Nothing ran: the source and every sink were closed, and no empty file was left (the
    # masks file was: a header and no frame).
    assert camera.closed and camera.i == 0
    assert not out.exists() and not masks.exists()
    # Given a rate, the same camera records (the caller's fps wins over the source's).
    camera = _Camera(None)
    with Pipeline(camera, _Echo(), sinks=[make_sink("video", out, fps=20)]) as pipe:
        got = [r.index for r in pipe]
    np.testing.assert_allclose(frame_times(out), [i / 20 for i in got], atol=1e-3)


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
    assert run("--source", str(src), "--headless", "--box", "10,8,40,56", "--output", "out.mp4",
               "--save-masks", "m.jsonl") == 0
    with av.open(str(tmp_path / "out.mp4")) as container:
        stream = container.streams.video[0]
        # Before: 1:1, so the output played squeezed to 3:2 beside its 16:9 source.
        assert (stream.width, stream.height) == (W, H)  # masks and boxes stay in stored pixels
        assert stream.sample_aspect_ratio == Fraction(64, 45)
    # The masks file's geometry says how its pixels are shown (before: width and height only).
    header, records = load_jsonl(tmp_path / "m.jsonl")
    assert (header["width"], header["height"], header["sample_aspect_ratio"]) == (W, H, "64:45")
    assert records[0]["tracks"][0]["mask"]["size"] == [H, W]


def test_masks_file_header_through_the_api_and_an_older_file(tmp_path):
    from realtime_sam.output.sinks import make_sink

    src = write_clip(tmp_path / "pal.mp4", [0, 40, 80, 120], sar=Fraction(64, 45))
    _track_with(src, [make_sink("jsonl", tmp_path / "api.jsonl")])
    header, records = load_jsonl(tmp_path / "api.jsonl")
    # Left None by the caller: the source's name, rate and pixel shape (before: all null).
    assert header["sample_aspect_ratio"] == "64:45" and header["fps"] == 25.0
    assert header["source"].endswith("pal.mp4") and len(records) == 4
    # A file written before the key existed still reads, header and frames.
    old = tmp_path / "old.jsonl"
    old.write_text(
        '{"realtime_sam": "0.1.0", "source": "a.mp4", "width": 96, "height": 64, "fps": 25.0}\n'
        '{"frame": 0, "timestamp": 0.0, "tracks": []}\n'
    )
    header, records = load_jsonl(old)
    assert header["width"] == 96 and "sample_aspect_ratio" not in header and records[0]["frame"] == 0


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


def _concealed_after_a_clean_frame(path: Path) -> int:
    """Frames PyAV's decoder flags as decoded with errors after the first clean one, read directly."""
    clean, flagged = False, 0
    with av.open(str(path)) as container:
        for packet in container.demux(container.streams.video[0]):
            try:
                for frame in packet.decode():
                    flagged += bool(frame.is_corrupt and clean)
                    clean = clean or not frame.is_corrupt
            except av.FFmpegError:
                pass
    return flagged


def test_an_mkv_whose_damage_the_decoder_concealed_ends_as_damaged(tmp_path, capsys, checkpoint_path):
    """Zeroed bytes in the middle of an MKV (x264's defaults, B-frames): the demuxer resyncs and the
    decoder conceals what a frame lost (it flags the frame), without an error. The run read it as a
    whole file, exit 0 without a word; now it is 'damaged' (exit 1), its outputs complete."""
    whole = tmp_path / "whole.mkv"
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "3", "-c:v", "libx264", "-g", "10",
            "-pix_fmt", "yuv420p", str(whole))
    data = whole.read_bytes()
    damaged = tmp_path / "zeroed.mkv"
    for a in (0.3, 0.34, 0.22, 0.5):  # a zeroed tenth that leaves a concealed frame (most do)
        cut = bytearray(data)
        lo, hi = int(len(data) * a), int(len(data) * (a + 0.05))
        cut[lo:hi] = bytes(hi - lo)
        damaged.write_bytes(bytes(cut))
        if _concealed_after_a_clean_frame(damaged):
            break
    concealed = _concealed_after_a_clean_frame(damaged)
    assert concealed, "no zeroed range made the decoder conceal a frame"
    code = cli.main(["--source", str(damaged), "--headless", "--quiet", "--box", "10,10,100,100", "--save-masks",
                     str(tmp_path / "m.jsonl"), "--weights", str(checkpoint_path), "--device", "cpu", "--config", "cpu", "--reencode-every", "100000"])
    err = capsys.readouterr().err
    _, frames = load_jsonl(tmp_path / "m.jsonl")
    assert code == cli.EXIT_DAMAGED, err
    said = f"{concealed} frame{'s' if concealed != 1 else ''} decoded with errors, concealed by the decoder"
    assert f"is damaged: read {len(frames)} frames ({said})" in err, err
    assert 0 < len(frames) < 75
    # The whole file: every frame, no such flag, exit 0.
    code = cli.main(["--source", str(whole), "--headless", "--quiet", "--box", "10,10,100,100", "--save-masks",
                     str(tmp_path / "w.jsonl"), "--weights", str(checkpoint_path), "--device", "cpu", "--config", "cpu", "--reencode-every", "100000"])
    assert code == 0, capsys.readouterr().err
    assert len(load_jsonl(tmp_path / "w.jsonl")[1]) == 75


# ------------------------------------------------------------------ cover art (attached pictures)


def _ffmpeg(*args: str) -> None:
    if shutil.which("ffmpeg") is None:
        pytest.skip("the ffmpeg command is not installed (it makes the files with cover art)")
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


def _attached_pic(stream) -> bool:
    """Whether FFmpeg marked ``stream`` as an attached picture, read straight from PyAV (an int-like
    flag from PyAV 18, a plain Flag before)."""
    disposition = stream.disposition
    return bool(int(getattr(disposition, "value", disposition)) & 0x400)


def _cover(tmp_path: Path) -> Path:
    path = tmp_path / "cover.png"
    _ffmpeg("-f", "lavfi", "-i", "color=red:s=32x32:d=1", "-frames:v", "1", str(path))
    return path


def _boxes(data: bytes | bytearray, start: int, end: int) -> list[tuple[int, int, bytes]]:
    out, pos = [], start
    while pos + 8 <= end:
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        out.append((pos, size, bytes(kind)))
        pos += size
    return out


def _tags_before_tracks(path: Path) -> None:
    """Move the MP4's tags (``udta``, which holds the cover) before its tracks, as some tagging tools write them.

    FFmpeg then lists the cover as stream 0. The index sits after the media
    data, so reordering inside it moves no sample.
    """
    data = bytearray(path.read_bytes())
    ((moov, size, _),) = [b for b in _boxes(data, 0, len(data)) if b[2] == b"moov"]
    kids = _boxes(data, moov + 8, moov + size)
    order = sorted(kids, key=lambda b: {b"mvhd": 0, b"udta": 1}.get(b[2], 2))
    data[moov + 8 : moov + size] = b"".join(bytes(data[p : p + n]) for p, n, _ in order)
    path.write_bytes(bytes(data))


def test_cover_art_beside_the_video_is_skipped(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", [i * 40 for i in range(12)])
    cover = _cover(tmp_path)
    tagged = tmp_path / "tagged.mp4"
    _ffmpeg("-i", str(clip), "-i", str(cover), "-map", "0", "-map", "1", "-c:v:0", "copy", "-c:v:1", "mjpeg",
            "-disposition:v:1", "attached_pic", str(tagged))
    _tags_before_tracks(tagged)
    with av.open(str(tagged)) as container:
        kinds = [(s.width, s.height, _attached_pic(s)) for s in container.streams.video]
    assert kinds == [(32, 32, True), (W, H, False)]  # the cover comes first
    mkv = tmp_path / "attached.mkv"  # Matroska keeps a cover as an attachment, listed after the tracks
    _ffmpeg("-i", str(clip), "-c", "copy", "-attach", str(cover), "-metadata:s:t", "mimetype=image/png", str(mkv))
    for path in (tagged, mkv):
        source = open_source(path)
        frames = list(source)
        assert source.size == (W, H) and len(frames) == 12, path.name
        assert source.fps == pytest.approx(25.0)
        assert [f.timestamp for f in frames] == pytest.approx([i * 0.04 for i in range(12)])


def test_cover_art_is_told_from_a_flag_disposition_as_pyav_15_to_17_give_it():
    # PyAV 15-17's av.stream.Disposition is an enum.Flag, which int() refuses (every file open
    # raised TypeError there); PyAV 18's is an IntFlag, older ones gave an int.
    class Disposition(enum.Flag):
        default = 0x1
        attached_pic = 0x400

    class Stream:
        def __init__(self, disposition):
            self.disposition = disposition

    assert is_cover_art(Stream(Disposition.attached_pic | Disposition.default))
    assert not is_cover_art(Stream(Disposition.default))
    assert not is_cover_art(Stream(Disposition(0)))
    assert is_cover_art(Stream(0x401)) and not is_cover_art(Stream(0x1))


@pytest.mark.parametrize("name", ["song.mp3", "song.m4a"])
def test_audio_with_only_cover_art_is_not_a_video(tmp_path, name):
    cover = _cover(tmp_path)
    path = tmp_path / name
    codec = "png" if name.endswith(".mp3") else "mjpeg"
    _ffmpeg("-f", "lavfi", "-i", "sine=d=1", "-i", str(cover), "-map", "0", "-map", "1", "-c:v", codec,
            "-disposition:v", "attached_pic", str(path))
    with av.open(str(path)) as container:
        assert [_attached_pic(s) for s in container.streams.video] == [True]
    with pytest.raises(SourceError, match=rf"{name} has no video stream, only cover art .*give a video file") as info:
        open_source(path)
    assert "\n" not in str(info.value)
