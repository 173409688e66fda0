"""Output sinks: video (PyAV), JSON lines, DAVIS PNGs, MOTS text, the factory; read back with independent readers."""

from __future__ import annotations

import json
import os
import select
import signal
import struct
import subprocess
import sys
import textwrap
import zlib
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from realtime_sam.errors import ConfigError, SinkError
from realtime_sam.output.jsonl import JsonlSink, load_jsonl
from realtime_sam.output.mots import MotsSink
from realtime_sam.output.png import PngSink, davis_palette
from realtime_sam.output.render import Renderer
from realtime_sam.output.rle import decode_rle, mask_to_box
from realtime_sam.output.sink_base import Sink, SinkConfig, label_image
from realtime_sam.output.sinks import (
    MultiSink,
    SinkSpec,
    make_sink,
    open_sinks,
    parse_sink_spec,
)
from realtime_sam.output.video import VideoSink
from realtime_sam.types import Frame, FrameResult, TrackResult, TrackState

try:
    from pycocotools import mask as coco_mask
except ImportError:  # pragma: no cover - depends on the environment
    coco_mask = None

REPO = Path(__file__).resolve().parents[1]
H, W = 48, 64


# -- building results by hand --------------------------------------------------------


def circle(cx: float, cy: float, r: float, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2


def rect(x0: int, y0: int, x1: int, y1: int, h: int = H, w: int = W) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def track(tid, mask, state=TrackState.CONFIRMED, label=None, score=0.9, box=None) -> TrackResult:
    if box is None:
        box = mask_to_box(mask) or (0.0, 0.0, 0.0, 0.0)
    return TrackResult(track_id=tid, mask=mask, box=box, score=score, state=state, label=label)


def image(index: int, h: int = H, w: int = W) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    img = np.stack([(xx * 4 + index * 5) % 256, yy * 255 // max(1, h - 1), np.full_like(xx, 90)], axis=-1)
    return np.ascontiguousarray(img.astype(np.uint8))


def scene(index: int, h: int = H, w: int = W) -> FrameResult:
    """A moving ball (id 1, labelled), a box (id 2), a small patch inside the box (id 3), a lost track (id 4)."""
    ball = circle(12 + index, h / 2, 8, h, w)
    box = rect(w // 2, 4, w - 4, h - 4, h, w)
    patch = rect(w // 2 + 4, 8, w // 2 + 12, 16, h, w)
    lost = np.zeros((h, w), bool)
    tracks = (
        track(1, ball, label="ball"),
        track(2, box, score=0.75),
        track(3, patch, TrackState.TENTATIVE),
        track(4, lost, TrackState.LOST, score=0.0, box=(1.0, 1.0, 9.0, 9.0)),
    )
    return FrameResult(Frame(index, image(index, h, w), index / 25, 0.0), tracks)


def decode_video(path: Path) -> tuple[list[np.ndarray], list[float], object]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate
        frames, times = [], []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            times.append(float(frame.time))
    return frames, times, rate


# -- video -------------------------------------------------------------------------------


def test_video_has_every_frame_at_the_source_rate(tmp_path):
    path = tmp_path / "out.mp4"
    n = 12
    with VideoSink(path, fps=25) as sink:
        for i in range(n):
            sink.write(scene(i))
        assert sink.frames_in_file < n  # the encoder holds some back until close()
    assert sink.frames_in_file == sink.frames_written == n
    frames, times, rate = decode_video(path)
    assert len(frames) == n
    assert rate == 25
    np.testing.assert_allclose(times, [i / 25 for i in range(n)], atol=1e-3)
    assert frames[0].shape == (H, W, 3)
    # The frames are the renderer's drawings: inside the ball the decoded
    # colour is the tinted one, not the raw frame's (lossy codec: compare means).
    res = scene(5)
    drawn = Renderer().annotate(res.frame.image, res)
    inner = cv2.erode(res.tracks[0].mask.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
    got = frames[5][inner].mean(axis=0)
    assert np.abs(got - drawn[inner].mean(axis=0)).max() < 8
    assert np.abs(got - res.frame.image[inner].mean(axis=0)).max() > 30


def test_video_pads_odd_sizes_and_keeps_ntsc_rates_exact(tmp_path):
    path = tmp_path / "odd.mp4"
    white = np.full((49, 65, 3), 255, np.uint8)
    with VideoSink(path, fps=29.97) as sink:
        for i in range(6):
            sink.write(FrameResult(Frame(i, white, i / 29.97, 0.0), ()))
    frames, times, rate = decode_video(path)
    assert len(frames) == 6
    assert frames[0].shape == (50, 66, 3)
    assert rate == Fraction(30000, 1001)
    np.testing.assert_allclose(times, [i * 1001 / 30000 for i in range(6)], atol=1e-3)
    # The picture is kept whole and the added column and row are black
    # (4:2:0 chroma and compression blur the edge a little).
    gray = cv2.cvtColor(frames[2], cv2.COLOR_BGR2GRAY)
    assert gray[:49, :65].mean() > 240
    assert gray[:, 65].mean() < 40 and gray[49, :].mean() < 40


def test_video_timestamps_follow_frame_indices(tmp_path):
    path = tmp_path / "gaps.mkv"
    indices = [100, 101, 102, 105, 106, 106]
    with VideoSink(path, fps=10) as sink:
        for i in indices:
            res = scene(i % 30)
            sink.write(FrameResult(Frame(i, res.frame.image, i / 10, 0.0), res.tracks))
    assert sink.frames_written == 6
    # Gaps are kept; a repeated index is placed one frame after the previous one.
    _, times, _ = decode_video(path)
    np.testing.assert_allclose(times, [0.0, 0.1, 0.2, 0.5, 0.6, 0.7], atol=1e-3)


@pytest.mark.parametrize("suffix,fragmented", [(".mp4", False), (".mov", True), (".mkv", True)])
def test_video_other_containers_round_trip(tmp_path, suffix, fragmented):
    path = tmp_path / f"out{suffix}"
    with VideoSink(path, fps=30, fragmented=fragmented) as sink:
        for i in range(7):
            sink.write(scene(i))
    frames, times, _ = decode_video(path)
    assert len(frames) == 7
    np.testing.assert_allclose(times, [i / 30 for i in range(7)], atol=1e-3)


def test_video_resizes_frames_to_the_requested_size(tmp_path):
    path = tmp_path / "sized.mp4"
    with VideoSink(path, fps=25, size=(32, 24)) as sink:
        sink.write(scene(0))
        sink.write(scene(1, 60, 80))  # a source that changed resolution mid-run
    frames, _, _ = decode_video(path)
    assert [f.shape for f in frames] == [(24, 32, 3), (24, 32, 3)]


def test_video_interrupted_run_keeps_every_frame_written(tmp_path):
    path = tmp_path / "ctrl_c.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoSink(path, fps=25) as sink:
            for i in range(40):
                if i == 17:
                    raise KeyboardInterrupt
                sink.write(scene(i))
    frames, _, _ = decode_video(path)
    assert len(frames) == 17


_KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {repo!r})
    from tests_scene import scene
    from realtime_sam.output.video import VideoSink
    sink = VideoSink({path!r}, fps=30, fragmented={fragmented}, keyframe_interval_s=10.0)
    for i in range({frames}):
        sink.write(scene(i))
    print("written", sink.frames_in_file, flush=True)
    time.sleep(60)
    """
)


def _write_then_kill(tmp_path: Path, name: str, fragmented: bool, frames: int = 150) -> tuple[Path, int]:
    """Write ``frames`` frames (150: 5 s) in a child process, then SIGKILL it before close().

    Returns the file and how many frames the child's encoder had given out to it (``frames_in_file``).
    """
    # The child rebuilds the same scene from this file's helpers.
    helper = tmp_path / "tests_scene.py"
    helper.write_text(
        "import numpy as np\n"
        "from realtime_sam.types import Frame, FrameResult, TrackResult, TrackState\n"
        "def scene(i, h=48, w=64):\n"
        "    yy, xx = np.mgrid[:h, :w]\n"
        "    img = np.stack([(xx * 4 + i * 5) % 256, yy * 5, np.full_like(xx, 90)], -1).astype(np.uint8)\n"
        "    img[40:, :] = [[[255 * ((i >> (x // 8)) & 1)] * 3 for x in range(w)]]  # i in binary, 8 px a bit\n"
        "    m = (xx - 12 - i) ** 2 + (yy - 24) ** 2 <= 64\n"
        "    t = TrackResult(1, m, (0.0, 0.0, 1.0, 1.0), 0.9, TrackState.CONFIRMED)\n"
        "    return FrameResult(Frame(i, np.ascontiguousarray(img), i / 30, 0.0), (t,))\n"
    )
    path = tmp_path / name
    code = _KILLED_WRITER.format(repo=str(REPO), path=str(path), fragmented=fragmented, frames=frames)
    child = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([child.stdout], [], [], 60)
        assert ready, "writer child produced nothing within 60 s"
        line = child.stdout.readline().split()
        assert line[:1] == ["written"], f"writer child failed (rc={child.poll()})"
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=10)
        child.stdout.close()
    return path, int(line[1])


posix_only = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and select() on pipes need a POSIX system")


@posix_only
# A killed file's frames: all the encoder gave out but the last (its fragment or cluster is written
# when the next comes); Matroska keeps x264's B-frames (3 with veryfast), so a P-frame whose B-frames
# never came may be missing too.
@pytest.mark.parametrize("name,held_back", [("killed.mp4", 1), ("killed.mov", 1), ("killed.mkv", 1 + 3)])
def test_a_hard_kill_loses_only_what_the_encoder_still_held(tmp_path, name, held_back):
    path, in_file = _write_then_kill(tmp_path, name, fragmented=True)
    frames, times, _ = decode_video(path)
    # What is lost is what x264 still holds (its lookahead, 11 frames with veryfast), not the
    # last keyframe interval: here a keyframe at the start alone (a fragment or a cluster a
    # keyframe kept 92 and 45 of these 150 frames; with 1 s keyframes, 120).
    assert 0 < in_file < 150
    assert in_file - held_back <= len(frames) <= in_file
    np.testing.assert_allclose(times, [i / 30 for i in range(len(frames))], atol=1e-3)
    # The frames are the ones written, in order: each carries its index in binary along its bottom rows.
    bits = np.stack([f[44, 4::8].mean(-1) > 128 for f in frames])
    assert (bits @ (1 << np.arange(8))).tolist() == list(range(len(frames)))


@posix_only
@pytest.mark.parametrize("name", ["early.mp4", "early.mov"])
def test_a_hard_kill_before_the_encoder_gave_out_a_frame_leaves_a_valid_empty_video(tmp_path, name):
    """Killed while x264 still held every frame written (its lookahead), the file was 0 bytes, which
    no player opens ("moov atom not found"): the header is now written with the first frame."""
    path, in_file = _write_then_kill(tmp_path, name, fragmented=True, frames=5)
    assert in_file == 0 and path.stat().st_size > 0
    frames, _, _ = decode_video(path)
    assert frames == []


@posix_only
def test_plain_mp4_is_lost_on_a_hard_kill_which_is_why_fragmenting_is_default(tmp_path):
    path, _ = _write_then_kill(tmp_path, "killed_plain.mp4", fragmented=False)
    with pytest.raises(av.error.InvalidDataError):
        decode_video(path)


def test_video_with_no_frames_leaves_no_file(tmp_path):
    path = tmp_path / "sub" / "never.mp4"
    sink = VideoSink(path, fps=25)
    assert path.exists()  # created at open, proving the path is writable
    sink.close()
    sink.close()  # idempotent
    assert not path.exists()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"path": "out.avi", "fps": 25}, "must end in"),
        ({"path": "out.mp4", "fps": 0}, "frame rate"),
        ({"path": "out.mp4", "fps": float("nan")}, "frame rate"),
        ({"path": "out.mp4", "fps": 25, "codec": "no_such_codec"}, "not available"),
        ({"path": "out.mp4", "fps": 25, "preset": "warp"}, "preset"),
        ({"path": "out.mp4", "fps": 25, "crf": 52}, "crf"),
    ],
)
def test_video_rejects_bad_arguments_at_open(tmp_path, kwargs, match):
    kwargs = dict(kwargs, path=tmp_path / kwargs["path"])
    with pytest.raises(SinkError, match=match):
        VideoSink(**kwargs)
    assert list(tmp_path.iterdir()) == []


def test_write_after_close_is_an_error(tmp_path):
    sink = VideoSink(tmp_path / "a.mp4", fps=25)
    sink.write(scene(0))
    sink.close()
    with pytest.raises(SinkError, match="closed"):
        sink.write(scene(1))


# -- JSON lines ------------------------------------------------------------------------


def test_jsonl_header_then_one_complete_line_per_frame(tmp_path):
    path = tmp_path / "tracks.jsonl"
    sink = JsonlSink(path, source="clip.mp4", fps=25)
    results = [scene(i) for i in range(3)]
    for written, res in enumerate(results, start=1):
        sink.write(res)
        # Complete on disk before close(): header + one line per frame.
        text = path.read_text()
        assert text.endswith("\n") and text.count("\n") == written + 1
    sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    header, frames = lines[0], lines[1:]
    assert header["source"] == "clip.mp4" and header["fps"] == 25
    assert (header["width"], header["height"]) == (W, H)
    assert isinstance(header["realtime_sam"], str) and "frame" not in header
    assert [f["frame"] for f in frames] == [0, 1, 2]
    assert frames[1]["timestamp"] == pytest.approx(1 / 25)
    for record, res in zip(frames, results):
        assert [t["id"] for t in record["tracks"]] == [1, 2, 3, 4]
        for item, tr in zip(record["tracks"], res.tracks):
            assert item["box"] == pytest.approx(list(tr.box))
            assert item["score"] == pytest.approx(tr.score)
            assert item["state"] == tr.state.value
            assert item["area"] == int(tr.mask.sum())
            assert ("label" in item) == (tr.label is not None)
            np.testing.assert_array_equal(decode_rle(item["mask"]), tr.mask)
    assert frames[0]["tracks"][0]["label"] == "ball"
    assert frames[0]["tracks"][3]["area"] == 0  # the lost track is listed, with an empty mask


@pytest.mark.skipif(coco_mask is None, reason="pycocotools is not installed - reference decoding skipped")
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_jsonl_masks_decode_with_pycocotools(tmp_path):
    path = tmp_path / "t.jsonl"
    with JsonlSink(path) as sink:
        sink.write(scene(3))
    _, frames = load_jsonl(path)
    for item, tr in zip(frames[0]["tracks"], scene(3).tracks):
        rle = {"size": item["mask"]["size"], "counts": item["mask"]["counts"].encode()}
        np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), tr.mask)


def test_jsonl_reader_drops_a_line_cut_by_a_crash(tmp_path):
    path = tmp_path / "t.jsonl"
    with JsonlSink(path) as sink:
        for i in range(4):
            sink.write(scene(i))
    full = path.read_bytes()
    path.write_bytes(full[: len(full) - 25])  # as if killed mid-write of the last line
    header, frames = load_jsonl(path)
    assert header is not None and [f["frame"] for f in frames] == [0, 1, 2]


def test_jsonl_with_no_frames_still_has_its_header(tmp_path):
    path = tmp_path / "empty.jsonl"
    JsonlSink(path, source="cam", fps=30).close()
    header, frames = load_jsonl(path)
    assert frames == [] and header["source"] == "cam" and header["width"] is None


def test_jsonl_writes_null_for_non_finite_numbers(tmp_path):
    path = tmp_path / "nan.jsonl"
    res = FrameResult(Frame(0, image(0), 0.0, 0.0), (track(1, circle(10, 10, 5), score=float("nan")),))
    with JsonlSink(path) as sink:
        sink.write(res)
    line = path.read_text().splitlines()[1]
    assert "NaN" not in line and json.loads(line)["tracks"][0]["score"] is None


# -- indexed PNG -------------------------------------------------------------------------


def png_chunks(data: bytes) -> dict[bytes, bytes]:
    """A minimal PNG chunk reader (checks every CRC) for the palette and header."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    chunks: dict[bytes, bytes] = {}
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        pos += 12 + length
    return chunks


def read_indices(path: Path) -> np.ndarray:
    """Palette indices as FFmpeg's PNG decoder sees them."""
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        assert frame.format.name == "pal8"
        indices, _ = frame.to_ndarray()
    return indices


def expected_labels(res: FrameResult) -> np.ndarray:
    """Smallest mask on top: the patch (3) inside the box (2); the ball (1) elsewhere."""
    out = np.zeros((res.frame.height, res.frame.width), np.uint8)
    by_area = sorted((t for t in res.tracks if t.mask.any()), key=lambda t: -int(t.mask.sum()))
    for t in by_area:
        out[t.mask] = t.track_id
    return out


def test_png_frames_are_davis_indexed_pngs(tmp_path):
    out = tmp_path / "masks"
    with PngSink(out) as sink:
        for i in (0, 1, 7):
            sink.write(scene(i))
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00001.png", "00007.png"]
    data = (out / "00007.png").read_bytes()
    chunks = png_chunks(data)
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, colour_type) == (W, H, 8, 3)  # 8-bit palette ("P" mode)
    palette = np.frombuffer(chunks[b"PLTE"], np.uint8).reshape(-1, 3)
    # DAVIS / PASCAL VOC colour map, RGB.
    assert palette[:5].tolist() == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0], [0, 0, 128]]
    np.testing.assert_array_equal(palette, davis_palette())
    indices = read_indices(out / "00007.png")
    np.testing.assert_array_equal(indices, expected_labels(scene(7)))
    assert set(np.unique(indices)) == {0, 1, 2, 3}
    # OpenCV expands the palette: each pixel shows its id's DAVIS colour (BGR).
    colour = cv2.imread(str(out / "00007.png"), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(colour, davis_palette()[indices][..., ::-1])


def test_png_names_have_the_digits_the_sources_last_frame_needs(tmp_path):
    # Five digits up to 99999.png, six after: 100000.png sorted before 99999.png, and tools that
    # take a folder's PNGs in name order (TrackEval's DAVIS loader) read a long file out of order.
    from types import SimpleNamespace

    long_file, short_file, live = tmp_path / "long", tmp_path / "short", tmp_path / "live"
    for folder, count in ((long_file, 150_000), (short_file, 100), (live, None)):
        with PngSink(folder) as sink:
            sink.bind_source(SimpleNamespace(num_frames=count, name="clip", fps=30.0))
            sink.write(scene(7))
    assert [p.name for p in long_file.iterdir()] == ["000007.png"]
    assert [p.name for p in short_file.iterdir()] == ["00007.png"]  # DAVIS' names
    assert [p.name for p in live.iterdir()] == ["00007.png"]


def test_png_sink_replaces_files_whole_and_leaves_no_temporaries(tmp_path):
    out = tmp_path / "masks"
    out.mkdir()
    (out / "00002.png").write_bytes(b"stale")
    with PngSink(out) as sink:
        sink.write(scene(2))
    assert sorted(p.name for p in out.iterdir()) == ["00002.png"]
    np.testing.assert_array_equal(read_indices(out / "00002.png"), expected_labels(scene(2)))
    assert (out / "00002.png").stat().st_mode & 0o044  # readable by others, unlike mkstemp's 0600


def test_png_ids_over_254_error_or_wrap(tmp_path):
    # 255 is DAVIS' (and PASCAL VOC's) "void" label, so the PNG ids stop at 254.
    big = FrameResult(Frame(0, image(0), 0.0, 0.0), (track(255, circle(20, 20, 6)), track(2, rect(40, 5, 60, 20))))
    with PngSink(tmp_path / "strict") as sink:
        with pytest.raises(SinkError, match="255.*1-254"):
            sink.write(big)
    with PngSink(tmp_path / "wrapped", id_overflow="wrap") as sink:
        sink.write(big)
    indices = read_indices(tmp_path / "wrapped" / "00000.png")
    assert indices[20, 20] == 1 and indices[10, 50] == 2


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_png_frames_score_perfectly_against_themselves_in_trackeval_davis(tmp_path):
    # TrackEval's DAVIS loader reads the PNGs as ground truth and as results; every id the
    # sink writes, up to its largest, must be an object there (DAVIS reads 255 as void).
    trackeval = pytest.importorskip("trackeval", reason="TrackEval is not installed - DAVIS loader check skipped")
    pytest.importorskip("pycocotools", reason="pycocotools is not installed (TrackEval needs it)")
    top = PngSink.MAX_ID
    gt, results = tmp_path / "gt" / "seq", tmp_path / "trackers" / "ours" / "data" / "seq"
    for out in (gt, results):
        with PngSink(out) as sink:
            for i in range(3):
                tracks = (track(1, circle(12 + i, 20, 6)), track(top, rect(40, 5, 60, 40)))
                sink.write(FrameResult(Frame(i, image(i), i / 25, 0.0), tracks))
    dataset = trackeval.datasets.DAVIS(
        {"GT_FOLDER": str(gt.parent), "TRACKERS_FOLDER": str(results.parents[2]), "PRINT_CONFIG": False}
    )
    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
        "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "BREAK_ON_ERROR": True,
        "LOG_ON_ERROR": None, "DISPLAY_LESS_PROGRESS": True,
    })
    results_, _ = evaluator.evaluate([dataset], [trackeval.metrics.JAndF(), trackeval.metrics.HOTA()])
    scores = results_["DAVIS"]["ours"]["seq"]["general"]
    assert scores["JAndF"]["J-Mean"] == 1.0 and scores["JAndF"]["F-Mean"] == 1.0
    # Both objects found: a void top id would leave one of two unmatched (HOTA 0.71).
    np.testing.assert_allclose(scores["HOTA"]["HOTA"], 1.0)


def test_label_image_gives_overlaps_to_the_smaller_mask():
    big, small = rect(0, 0, 40, 40), rect(10, 10, 20, 20)
    tracks = [track(5, small), track(9, big)]
    labels = label_image(tracks, (H, W), max_id=255)
    assert labels[15, 15] == 5 and labels[5, 5] == 9 and labels[45, 60] == 0
    assert labels.dtype == np.uint16


# -- MOTS --------------------------------------------------------------------------------


def parse_mots(path: Path) -> list[list[str]]:
    return [line.split(" ") for line in path.read_text().splitlines()]


def test_mots_lines_follow_the_challenge_format(tmp_path):
    path = tmp_path / "seq.txt"
    sink = MotsSink(path, class_id=2)
    sink.write(scene(0))
    # Flushed per frame: readable before close.
    assert len(parse_mots(path)) == 3
    sink.write(scene(4))
    sink.close()
    rows = parse_mots(path)
    assert all(len(r) == 6 for r in rows)
    assert [(int(r[0]), int(r[1]), int(r[2])) for r in rows] == [
        (0, 2001, 2), (0, 2002, 2), (0, 2003, 2), (4, 2001, 2), (4, 2002, 2), (4, 2003, 2)
    ]
    assert all((int(r[3]), int(r[4])) == (H, W) for r in rows)
    labels = expected_labels(scene(4))
    masks = []
    for frame_no, obj_id, class_id, h, w, counts in rows[3:]:
        mask = decode_rle({"size": [int(h), int(w)], "counts": counts})
        instance = int(obj_id) % 1000
        assert int(obj_id) // 1000 == int(class_id)
        np.testing.assert_array_equal(mask, labels == instance)
        masks.append(mask)
    # The MOTS tools reject overlapping masks.
    assert (np.sum(masks, axis=0) <= 1).all()


@pytest.mark.skipif(coco_mask is None, reason="pycocotools is not installed - reference decoding skipped")
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_mots_rle_decodes_with_pycocotools_like_the_mots_tools(tmp_path):
    path = tmp_path / "seq.txt"
    with MotsSink(path) as sink:
        sink.write(scene(6))
    labels = expected_labels(scene(6))
    for _, obj_id, _, h, w, counts in parse_mots(path):
        rle = {"size": [int(h), int(w)], "counts": counts.encode("utf-8")}
        np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), labels == int(obj_id) % 1000)


def test_mots_frame_offset_and_id_limit(tmp_path):
    path = tmp_path / "seq.txt"
    with MotsSink(path, frame_offset=1) as sink:
        sink.write(scene(0))
        with pytest.raises(SinkError, match="1000.*1-999"):
            sink.write(FrameResult(Frame(1, image(1), 0.0, 0.0), (track(1000, circle(20, 20, 5)),)))
    assert {r[0] for r in parse_mots(path)} == {"1"}


def trackeval_mots(path: Path, frames: int, benchmark: str, tmp_path: Path) -> dict:
    """Score ``path`` against itself with TrackEval's own MOTS loader (``kitti`` or ``challenge``).

    Returns the CLEAR results of the class TrackEval evaluates, or raises what the loader raised.
    """
    trackeval = pytest.importorskip("trackeval")
    pytest.importorskip("pycocotools")
    root = tmp_path / f"trackeval_{benchmark}"
    tracker = root / "trackers" / "ours" / "data"
    tracker.mkdir(parents=True)
    (tracker / "seq.txt").write_bytes(path.read_bytes())
    common = {"GT_FOLDER": str(root / "gt"), "TRACKERS_FOLDER": str(root / "trackers"), "SEQ_INFO": {"seq": frames},
              "PRINT_CONFIG": False}
    if benchmark == "kitti":
        (root / "gt" / "label_02").mkdir(parents=True)
        (root / "gt" / "label_02" / "seq.txt").write_bytes(path.read_bytes())
        dataset, cls = trackeval.datasets.KittiMOTS({**common, "CLASSES_TO_EVAL": ["pedestrian"]}), "pedestrian"
    else:
        (root / "gt" / "seq" / "gt").mkdir(parents=True)
        (root / "gt" / "seq" / "gt" / "gt.txt").write_bytes(path.read_bytes())
        dataset, cls = trackeval.datasets.MOTSChallenge({**common, "SKIP_SPLIT_FOL": True}), "pedestrian"
    evaluator = trackeval.Evaluator({
        "USE_PARALLEL": False, "PRINT_RESULTS": False, "PRINT_CONFIG": False, "TIME_PROGRESS": False,
        "OUTPUT_SUMMARY": False, "OUTPUT_DETAILED": False, "PLOT_CURVES": False, "BREAK_ON_ERROR": True,
        "LOG_ON_ERROR": None, "DISPLAY_LESS_PROGRESS": True,
    })
    results, _ = evaluator.evaluate([dataset], [trackeval.metrics.CLEAR()])
    return next(iter(results.values()))["ours"]["seq"][cls]["CLEAR"]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_mots_files_load_in_trackeval_kitti_by_default_and_mots_challenge_with_its_settings(tmp_path):
    # KITTI MOTS numbers frames from 0, MOTSChallenge from 1 and scores only
    # pedestrians (class 2): the defaults suit the first, the README's settings the second.
    frames = 5
    defaults, challenge = tmp_path / "kitti.txt", tmp_path / "challenge.txt"
    with MotsSink(defaults, class_id=2) as kitti, MotsSink(challenge, class_id=2, frame_offset=1) as motsc:
        for i in range(frames):
            kitti.write(scene(i))  # the patch (3) lies inside the box (2): overlaps TrackEval would reject
            motsc.write(scene(i))
    for path, benchmark in ((defaults, "kitti"), (challenge, "challenge")):
        clear = trackeval_mots(path, frames, benchmark, tmp_path)
        assert clear["CLR_TP"] == 3 * frames and clear["MOTA"] == 1.0 and clear["IDSW"] == 0
    with pytest.raises(Exception, match="invalid timesteps.*0"):
        trackeval_mots(defaults, frames, "challenge", tmp_path / "again")


# -- factory and errors ----------------------------------------------------------------


@pytest.mark.parametrize(
    "text,kind,path",
    [
        ("video:out/run.mp4", "video", "out/run.mp4"),
        ("run.mkv", "video", "run.mkv"),
        ("JSONL:t.jsonl", "jsonl", "t.jsonl"),
        ("t.jsonl", "jsonl", "t.jsonl"),
        ("masks/", "png", "masks"),
        ("png:masks", "png", "masks"),
        ("seq.txt", "mots", "seq.txt"),
        ("mots:seq.dat", "mots", "seq.dat"),
    ],
)
def test_parse_sink_spec(text, kind, path):
    assert parse_sink_spec(text) == SinkSpec(kind, Path(path))


@pytest.mark.parametrize("text,match", [("gif:x.gif", "unknown output kind"), ("x.gif", "extension"), ("", "path"),
                                        ("video:", "no path")])
def test_parse_sink_spec_rejects_unclear_outputs(text, match):
    with pytest.raises(SinkError, match=match):
        parse_sink_spec(text)


def test_open_sinks_writes_all_outputs(tmp_path):
    specs = [f"{tmp_path}/v.mp4", f"jsonl:{tmp_path}/t.jsonl", f"png:{tmp_path}/m", f"{tmp_path}/s.txt"]
    with open_sinks(specs, fps=25, source_name="clip") as sinks:
        assert isinstance(sinks, MultiSink) and len(sinks) == 4
        assert all(isinstance(s, Sink) for s in sinks.sinks)
        for i in range(3):
            sinks.write(scene(i))
    assert len(decode_video(tmp_path / "v.mp4")[0]) == 3
    assert len(load_jsonl(tmp_path / "t.jsonl")[1]) == 3
    assert len(list((tmp_path / "m").glob("*.png"))) == 3
    assert {r[0] for r in parse_mots(tmp_path / "s.txt")} == {"0", "1", "2"}


@pytest.mark.parametrize("codec, name", [("libx264", "h264"), ("mpeg4", "mpeg4")])
def test_output_video_codec_is_the_encoder_used(tmp_path, codec, name):
    path = tmp_path / f"{codec}.mp4"
    with make_sink("video", path, fps=25, config=SinkConfig(video_codec=codec)) as sink:
        for i in range(3):
            sink.write(scene(i))
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name == name
    assert len(decode_video(path)[0]) == 3


@pytest.mark.parametrize("fragmented", [True, False])
def test_output_video_fragmented_writes_movie_fragments_or_one_index(tmp_path, fragmented):
    path = tmp_path / "v.mp4"
    with make_sink("video", path, fps=25, config=SinkConfig(video_fragmented=fragmented)) as sink:
        for i in range(3):
            sink.write(scene(i))
    data = path.read_bytes()
    assert (b"moof" in data) == fragmented  # movie fragments: playable however the run ends
    assert len(decode_video(path)[0]) == 3


def _written(tmp_path, kind: str, name: str, frames: int, **settings) -> Path:
    path = tmp_path / name
    with make_sink(kind, path, fps=25, config=SinkConfig(**settings)) as sink:
        for i in range(frames):
            sink.write(scene(i))
    return path


def test_output_video_crf_preset_and_keyframe_interval_reach_the_encoder(tmp_path):
    fine = _written(tmp_path, "video", "fine.mp4", 10, video_crf=5)
    coarse = _written(tmp_path, "video", "coarse.mp4", 10, video_crf=45)
    assert coarse.stat().st_size < fine.stat().st_size
    fast = _written(tmp_path, "video", "fast.mp4", 10, video_preset="ultrafast")
    assert fast.read_bytes() != _written(tmp_path, "video", "slow.mp4", 10, video_preset="veryslow").read_bytes()

    def keyframes(path: Path) -> int:
        with av.open(str(path)) as container:
            return sum(p.is_keyframe for p in container.demux(video=0) if p.size)

    assert keyframes(_written(tmp_path, "video", "k02.mp4", 20, video_keyframe_interval_s=0.2)) == 4  # every 5 frames
    assert keyframes(_written(tmp_path, "video", "k10.mp4", 20, video_keyframe_interval_s=10.0)) == 1


def test_output_png_compression_reaches_the_png_writer(tmp_path):
    stored = _written(tmp_path, "png", "stored", 1, png_compression=0) / "00000.png"
    packed = _written(tmp_path, "png", "packed", 1, png_compression=9) / "00000.png"
    assert packed.stat().st_size < stored.stat().st_size
    assert np.array_equal(cv2.imread(str(stored), cv2.IMREAD_UNCHANGED), cv2.imread(str(packed), cv2.IMREAD_UNCHANGED))


def test_output_mots_and_id_settings_reach_their_sinks(tmp_path):
    mots = _written(tmp_path, "mots", "m.txt", 2, mots_class_id=1, mots_frame_offset=1)
    rows = parse_mots(mots)
    assert {r[0] for r in rows} == {"1", "2"}  # frames counted from 1
    assert {int(r[1]) // 1000 for r in rows} == {1}  # class 1 (car): ids 1001, 1002...
    with pytest.raises(SinkError):
        with make_sink("png", tmp_path / "err", fps=25, config=SinkConfig(id_overflow="error")) as sink:
            sink.write(FrameResult(scene(0).frame, (track(300, rect(1, 1, 10, 10, H, W)),)))
    with make_sink("png", tmp_path / "wrap", fps=25, config=SinkConfig(id_overflow="wrap")) as sink:
        sink.write(FrameResult(scene(0).frame, (track(300, rect(1, 1, 10, 10, H, W)),)))
    assert (tmp_path / "wrap" / "00000.png").exists()


def test_unwritable_outputs_fail_at_open_with_one_line(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    folder = tmp_path / "a_folder"
    folder.mkdir()
    video_folder = tmp_path / "looks_like.mp4"
    video_folder.mkdir()
    cases = [
        ("jsonl", blocker / "t.jsonl", "cannot create the folder"),  # parent is a file
        ("mots", folder, "is a folder"),
        ("video", video_folder, "is a folder"),
        ("video", folder, "must end in"),
        ("png", blocker, "is a file"),
    ]
    if Path("/proc/self").exists():  # Linux: nobody, not even root, can make folders in /proc
        cases.append(("jsonl", "/proc/no_such_dir/t.jsonl", "cannot create the folder"))
    for kind, path, match in cases:
        with pytest.raises(SinkError, match=match) as info:
            make_sink(kind, path, fps=25)
        assert "\n" not in str(info.value)


def test_open_sinks_closes_what_it_opened_when_a_later_output_fails(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(SinkError, match="cannot create the folder"):
        open_sinks([tmp_path / "ok.jsonl", SinkSpec("mots", blocker / "x.txt")])
    # The first sink was closed and the file it created removed (it was left with a header and no frame).
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]
    # A file that was there before is left as it was (making the sink emptied it and wrote a header).
    (tmp_path / "ok.jsonl").write_text("earlier run\n")
    with pytest.raises(SinkError, match="cannot create the folder"):
        open_sinks([tmp_path / "ok.jsonl", SinkSpec("mots", blocker / "x.txt")])
    assert (tmp_path / "ok.jsonl").read_text() == "earlier run\n"


def test_open_sinks_rejects_two_outputs_on_one_path(tmp_path):
    with pytest.raises(SinkError, match="two outputs"):
        open_sinks([f"jsonl:{tmp_path}/x.txt", f"mots:{tmp_path}/x.txt"])


def test_video_needs_a_frame_rate(tmp_path):
    # Without fps the rate comes from the source a pipeline binds; written to with neither, it says so.
    sink = make_sink("video", tmp_path / "never.mp4")
    with pytest.raises(SinkError, match="frame rate") as caught:
        sink.write(FrameResult(Frame(0, np.zeros((16, 16, 3), np.uint8), 0.0, 0.0), ()))
    # The advice names the argument this call lacks, not a command-line flag that does not exist.
    assert "fps=" in str(caught.value) and "--fps" not in str(caught.value)
    sink.close()
    assert not (tmp_path / "never.mp4").exists()


def test_multisink_closes_every_sink_even_when_one_fails():
    closed: list[str] = []

    class Failing:
        def write(self, result):
            pass

        def close(self):
            closed.append("failing")
            raise SinkError("disk full")

    class Recording(Failing):
        def close(self):
            closed.append("recording")

    multi = MultiSink([Failing(), Recording()])
    with pytest.raises(SinkError, match="disk full"):
        multi.close()
    assert closed == ["failing", "recording"]


@pytest.mark.parametrize(
    "kwargs",
    [{"video_crf": 60}, {"video_preset": "warp"}, {"png_compression": 10}, {"id_overflow": "ignore"},
     {"mots_class_id": 10},
     {"video_keyframe_interval_s": 0.0}, {"mots_frame_offset": -1}],
)
def test_sink_config_is_validated(kwargs):
    with pytest.raises(ConfigError):
        SinkConfig(**kwargs)
