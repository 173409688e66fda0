"""Video sources against real files, image folders, lavfi graphs and a real RTSP server."""

from __future__ import annotations

import functools
import http.server
import threading
from fractions import Fraction
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from realtime_sam.capture.base import DeferredFrame, Source, SourceConfig, StatusEvent, redact_url
from realtime_sam.capture.camera import CameraSource
from realtime_sam.capture.images import ImageSequenceSource
from realtime_sam.capture.sources import open_source
from realtime_sam.capture.stream import StreamSource
from realtime_sam.capture.video_file import VideoFileSource
from realtime_sam.errors import ConfigError, SourceError, StreamInterrupted
from realtime_sam.testing.synthetic import standard_scene, write_video
from realtime_sam.types import Frame

W, H = 320, 240
N = 40
FAST = SourceConfig(open_timeout_s=3, read_timeout_s=1, backoff_initial_s=0.2, backoff_max_s=0.5)


def _mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _read_bounded(source: Source, seconds: float) -> Any:
    """``source.read()`` in a thread; fails the test (instead of hanging it) if it blocks too long."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["frame"] = source.read()
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        source.interrupt()
        t.join(30)
        pytest.fail(f"read() still blocked after {seconds} s")
    if "error" in box:
        raise box["error"]
    return box["frame"]


@pytest.fixture(scope="module")
def scene():
    return standard_scene(W, H, num_frames=N, seed=1)


@pytest.fixture(scope="module")
def clip(scene, tmp_path_factory) -> Path:
    """A clean H.264 MP4, index at the front, a keyframe every 10 frames."""
    return write_video(scene, tmp_path_factory.mktemp("clip") / "clip.mp4", gop=10, faststart=True)


# ---------------------------------------------------------------- configuration and redaction


def test_source_config_validates_ranges() -> None:
    SourceConfig()  # defaults are valid
    for bad in (
        {"open_timeout_s": 0},
        {"read_timeout_s": -1},
        {"reconnect_max_tries": -1},
        {"backoff_initial_s": 2.0, "backoff_max_s": 1.0},
        {"max_consecutive_decode_errors": 0},
        {"rtsp_transport": "quic"},
        {"image_fps": float("nan")},
    ):
        with pytest.raises(ConfigError) as info:
            SourceConfig(**bad)
        assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "url,expected",
    [
        ("rtsp://user:pass@host/x", "rtsp://***@host/x"),
        ("rtsp://admin:p@ss:w0rd@10.0.0.5:554/stream1", "rtsp://***@10.0.0.5:554/stream1"),
        ("rtmp://user@example.com/live", "rtmp://***@example.com/live"),
        ("https://cam.example/video.m3u8?token=abc123&x=1", "https://cam.example/video.m3u8?token=***&x=1"),
        ("rtsp://host:8554/live", "rtsp://host:8554/live"),
        ("clip.mp4", "clip.mp4"),
        (
            "cannot open 'rtsp://u:secret@h/a' or http://x:y@z/b",
            "cannot open 'rtsp://***@h/a' or http://***@z/b",
        ),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


# ---------------------------------------------------------------- video files


def test_file_delivers_every_frame_in_order(scene, clip: Path) -> None:
    with open_source(str(clip)) as src:
        assert isinstance(src, VideoFileSource)
        assert src.live is False
        assert src.size == (W, H)
        assert src.fps == pytest.approx(25.0)
        assert src.num_frames == N
        frames = list(src)
    assert [f.index for f in frames] == list(range(N))
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert stamps[1] - stamps[0] == pytest.approx(1 / 25, abs=1e-6)
    for i in (0, N // 2, N - 1):
        img = frames[i].image
        assert img.shape == (H, W, 3) and img.dtype == np.uint8 and img.flags["C_CONTIGUOUS"]
        assert _mean_abs(img, scene.render(i)[0]) < 8  # BGR, the right frame
    assert src.read() is None  # closed: stays ended


@pytest.mark.parametrize("suffix,codec", [(".mkv", "libx264"), (".avi", "mpeg4")])
def test_other_containers(scene, tmp_path: Path, suffix: str, codec: str) -> None:
    path = write_video(standard_scene(W, H, num_frames=12), tmp_path / f"c{suffix}", codec=codec)
    with open_source(path) as src:
        frames = list(src)
    assert len(frames) == 12 and frames[0].image.shape == (H, W, 3)


@pytest.mark.parametrize("rotation", [90, -90, 180])
def test_rotation_metadata_is_honoured(scene, tmp_path: Path, rotation: int) -> None:
    path = write_video(scene, tmp_path / "rot.mp4", display_rotation=rotation)
    with open_source(path) as src:
        frame = src.read()
        expected_size = (H, W) if rotation % 180 else (W, H)
        assert src.size == expected_size
    assert frame is not None
    # The display matrix's angle is counter-clockwise; np.rot90 turns counter-clockwise.
    upright = np.rot90(scene.render(0)[0], k=rotation // 90)
    wrong = np.rot90(scene.render(0)[0], k=(rotation // 90) + 2)
    assert frame.image.shape == upright.shape
    assert _mean_abs(frame.image, upright) < 8
    assert _mean_abs(frame.image, wrong) > 4 * _mean_abs(frame.image, upright)


def test_truncated_mp4_delivers_frames_up_to_the_cut(scene, clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    frames: list[Frame] = []
    src = open_source(cut)
    with pytest.raises(StreamInterrupted) as info:
        for frame in src:
            frames.append(frame)
    assert 0 < len(frames) < N
    message = str(info.value)
    assert "damaged" in message and f"read {len(frames)} of {N} frames" in message and "\n" not in message
    # Real frames, in order, up to the cut.
    assert [f.index for f in frames] == list(range(len(frames)))
    assert _mean_abs(frames[-1].image, scene.render(len(frames) - 1)[0]) < 8
    assert src.read() is None  # after the interruption it stays ended
    src.close()


def test_garbage_in_the_middle_is_skipped(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    at = len(data) // 3
    damaged = tmp_path / "garbage.mp4"
    damaged.write_bytes(data[:at] + bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)) + data[at + 4096 :])
    before = tmp_path / "before.mp4"
    before.write_bytes(data[:at])

    def count(path: Path) -> tuple[list[Frame], bool]:
        got: list[Frame] = []
        try:
            with open_source(path) as src:
                for f in src:
                    got.append(f)
        except StreamInterrupted:
            return got, True
        return got, False

    frames, interrupted = count(damaged)
    n_before, _ = count(before)
    assert interrupted, "a file with damaged packets ends with StreamInterrupted"
    assert len(frames) < N
    assert len(frames) - len(n_before) > len(n_before), "more frames recovered after the garbage than before it"
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert [f.index for f in frames] == list(range(len(frames)))


def _write_ts(scene, path: Path, start_s: float, fmt: str = "mpegts") -> bytes:
    """The scene as H.264 in MPEG-TS (MPEG-2 video in MPEG-PS for ``fmt="mpeg"``), its first frame at
    ``start_s`` seconds; the file's bytes."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        if fmt == "mpeg":
            stream = container.add_stream("mpeg2video", rate=25, options={"g": "5", "qscale": "2"})
        else:
            stream = container.add_stream("libx264", rate=25, options={"preset": "ultrafast", "g": "5"})
        stream.width, stream.height, stream.pix_fmt = scene.width, scene.height, "yuv420p"
        for i in range(scene.num_frames):
            frame = av.VideoFrame.from_ndarray(scene.render(i)[0], format="bgr24")
            frame.pts, frame.time_base = round(start_s * 25) + i, Fraction(1, 25)
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path.read_bytes()


@pytest.mark.parametrize(
    "second_size,second_start_s",
    [((W, H), 1.4), ((2 * W, 2 * H), 1.4), ((W, H), 3600.0)],
    ids=["restart", "restart-at-another-size", "jump-ahead"],
)
def test_ts_parts_joined_end_to_end_are_read_whole(tmp_path: Path, second_size, second_start_s: float) -> None:
    # `cat part1.ts part2.ts > all.ts` (a recorder's parts, an HLS download's segments): each part's
    # timestamps start over. Every frame after the first part was dropped as out of order, without a
    # word (10 of 20 frames, exit status 0) where ffprobe and OpenCV read 20; a part an hour later left
    # an hour's gap in the timestamps, as ffmpeg does not.
    one = standard_scene(W, H, num_frames=10, seed=1)
    two = standard_scene(*second_size, num_frames=10, seed=2)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(_write_ts(one, tmp_path / "a.ts", 1.4) + _write_ts(two, tmp_path / "b.ts", second_start_s))
    with open_source(joined) as src:
        frames = list(src)
    assert len(frames) == 20
    assert [f.index for f in frames] == list(range(20))
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert stamps[10] - stamps[9] == pytest.approx(0.04, abs=1e-6)  # the second part follows on
    for i in range(10):
        assert _mean_abs(frames[i].image, one.render(i)[0]) < 8
        assert frames[10 + i].image.shape == (second_size[1], second_size[0], 3)
        assert _mean_abs(frames[10 + i].image, two.render(i)[0]) < 8


def test_mpeg_ps_parts_joined_end_to_end_are_read_whole(tmp_path: Path) -> None:
    # README names MPEG-PS (.mpg, .vob) beside MPEG-TS (FFmpeg marks both as formats whose timestamps
    # may restart); a joined .mpg read 10 of 20 frames before. FLV is not such a format: ffmpeg too
    # reads only the first part of FLV files joined with cat.
    one = standard_scene(W, H, num_frames=10, seed=1)
    two = standard_scene(W, H, num_frames=10, seed=2)
    joined = tmp_path / "joined.mpg"
    joined.write_bytes(_write_ts(one, tmp_path / "a.mpg", 1.4, "mpeg") + _write_ts(two, tmp_path / "b.mpg", 1.4, "mpeg"))
    with open_source(joined) as src:
        frames = list(src)
    assert len(frames) == 20
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert _mean_abs(frames[15].image, two.render(5)[0]) < 8


def test_max_consecutive_decode_errors_is_how_much_damage_a_file_may_have_in_a_row(clip: Path, tmp_path: Path) -> None:
    data = clip.read_bytes()
    at = len(data) // 3
    damaged = tmp_path / "garbage.mp4"
    damaged.write_bytes(data[:at] + bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)) + data[at + 4096 :])

    def frames_read(limit: int) -> int:
        got = 0
        with pytest.raises(StreamInterrupted):
            with open_source(damaged, SourceConfig(max_consecutive_decode_errors=limit)) as src:
                for _ in src:
                    got += 1
        return got

    # One bad packet ends a strict read at the garbage; the default reads on past it.
    assert frames_read(1) < frames_read(50)


@pytest.mark.parametrize("transport", ["tcp", "udp"])
def test_rtsp_transport_is_what_ffmpeg_is_asked_for(monkeypatch, transport: str) -> None:
    import av

    asked: list[dict] = []

    def refuse(url, *args, **kwargs):
        asked.append(dict(kwargs.get("options") or {}))
        raise av.error.ConnectionRefusedError(111, "Connection refused", url)

    monkeypatch.setattr("realtime_sam.capture.stream.av.open", refuse)
    cfg = SourceConfig(rtsp_transport=transport, reconnect=False, open_timeout_s=1)
    with pytest.raises(SourceError):
        open_source("rtsp://127.0.0.1:9/cam", cfg)
    assert asked and all(o.get("rtsp_transport") == transport for o in asked)


def test_not_a_video_fails_at_open_with_one_line(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("these are not frames\n" * 50)
    noise = tmp_path / "noise.mkv"
    noise.write_bytes(np.random.default_rng(1).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    for path, says in ((text, "is not a video FFmpeg can read"), (noise, "is not a video FFmpeg can read"),
                       (empty, "is empty (0 bytes)")):
        with pytest.raises(SourceError) as info:
            open_source(path)
        assert says in str(info.value)
        assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_missing_file_fails_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as info:
        open_source(str(tmp_path / "nope.mp4"))
    assert "not found" in str(info.value) and "nope.mp4" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(tmp_path / "nope.mp4")


def test_interrupt_ends_a_file_source(clip: Path) -> None:
    src = open_source(clip)
    assert src.read() is not None
    src.interrupt()
    assert src.read() is None
    src.close()
    src.close()  # idempotent


# ---------------------------------------------------------------- image sequences


def _write_images(folder: Path, scene, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        cv2.imwrite(str(folder / name), scene.render(i)[0])


def test_image_folder_in_natural_order(scene, tmp_path: Path) -> None:
    names = [f"frame{i}.png" for i in range(12)]  # frame10 must come after frame9
    _write_images(tmp_path / "seq", scene, names)
    (tmp_path / "seq" / "README.txt").write_text("not an image")
    with open_source(tmp_path / "seq", SourceConfig(image_fps=10)) as src:
        assert isinstance(src, ImageSequenceSource) and not src.live
        assert src.num_frames == 12 and src.size == (W, H)
        frames = list(src)
    assert len(frames) == 12
    for i, f in enumerate(frames):
        assert f.index == i and f.timestamp == pytest.approx(i / 10)
        assert np.array_equal(f.image, scene.render(i)[0])  # PNG is lossless


def test_image_glob_selects_matching_files(scene, tmp_path: Path) -> None:
    _write_images(tmp_path, scene, ["a_000.png", "a_001.png", "a_002.png", "b_000.png"])
    cv2.imwrite(str(tmp_path / "a_003.jpg"), scene.render(3)[0])
    with open_source(str(tmp_path / "a_*.png")) as src:
        frames = list(src)
    assert len(frames) == 3
    assert np.array_equal(frames[2].image, scene.render(2)[0])


def test_image_sequence_skips_unreadable_files_then_reports(scene, tmp_path: Path) -> None:
    _write_images(tmp_path, scene, ["f0.png", "f1.png", "f3.png"])
    (tmp_path / "f2.png").write_bytes(b"\x89PNG broken")
    got: list[Frame] = []
    with pytest.raises(StreamInterrupted, match="1 of 4 files"):
        for f in open_source(tmp_path):
            got.append(f)
    assert len(got) == 3
    # Timestamps keep each image's place in the sequence.
    assert [f.timestamp for f in got] == pytest.approx([0, 1 / 25, 3 / 25])


def test_hidden_files_in_an_image_folder_are_left_out(scene, tmp_path: Path) -> None:
    # A folder copied from a Mac to a USB disk holds "._NAME.jpg" companions (AppleDouble, not images) and
    # .DS_Store; they used to be read as frames that could not be decoded, and the run ended with exit status 1.
    _write_images(tmp_path, scene, ["00000.jpg", "00001.jpg", "00002.jpg"])
    (tmp_path / "._00001.jpg").write_bytes(b"\x00\x05\x16\x07" + bytes(4000))
    (tmp_path / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    with open_source(tmp_path) as src:
        assert src.num_frames == 3
        frames = list(src)  # no StreamInterrupted
    assert len(frames) == 3


def test_images_none_of_which_can_be_read_are_named_with_what_to_do(tmp_path: Path) -> None:
    # The line was "none of the 1 files in photo.tif is a readable image": no file named in a
    # folder, nothing said about why or what to give instead.
    image = np.full((24, 32), 70000, np.int32)  # a float TIFF is read now (test_medialeft_images)
    if not cv2.imwrite(str(tmp_path / "float.tif"), image):
        pytest.skip("this OpenCV cannot write a 32-bit integer TIFF")
    (tmp_path / "frames").mkdir()
    (tmp_path / "frames" / "0.png").write_bytes(b"\x89PNG damaged")
    (tmp_path / "frames" / "1.png").write_bytes(b"")
    with pytest.raises(SourceError) as info:
        open_source(tmp_path / "float.tif")
    assert str(info.value) == (
        f"{tmp_path / 'float.tif'} is not a readable image (damaged, empty, or of a kind OpenCV cannot decode, "
        "such as a 32-bit integer TIFF); give 8- or 16-bit PNG, JPEG or TIFF"
    )
    with pytest.raises(SourceError) as info:
        open_source(tmp_path / "frames")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"none of the 2 files in {tmp_path / 'frames'} is a readable image (first: ")
    assert f"first: {tmp_path / 'frames' / '0.png'}: damaged" in message
    assert message.endswith("; give 8- or 16-bit PNG, JPEG or TIFF images")


def test_a_jpeg_cut_short_is_skipped_not_delivered_half_grey(scene, tmp_path: Path) -> None:
    # libjpeg decodes a truncated JPEG anyway, the missing rows grey; it was delivered as a frame like the others.
    _write_images(tmp_path, scene, [f"{i:05d}.jpg" for i in range(5)])
    whole = (tmp_path / "00002.jpg").read_bytes()
    (tmp_path / "00002.jpg").write_bytes(whole[: len(whole) // 2])
    got: list[Frame] = []
    with pytest.raises(StreamInterrupted, match=r"1 of 5 files .*00002\.jpg"):
        for f in open_source(tmp_path):
            got.append(f)
    assert [f.timestamp for f in got] == pytest.approx([0, 1 / 25, 3 / 25, 4 / 25])
    for f, i in zip(got, (0, 1, 3, 4)):
        assert _mean_abs(f.image, scene.render(i)[0]) < 3


def test_a_phone_photo_comes_upright_as_imread_shows_it(scene, tmp_path: Path) -> None:
    Image = pytest.importorskip("PIL.Image")
    for i in range(2):
        im = Image.fromarray(cv2.cvtColor(scene.render(i)[0], cv2.COLOR_BGR2RGB))
        exif = im.getexif()
        exif[0x0112] = 6  # stored landscape, shown turned 90 degrees clockwise
        im.save(tmp_path / f"IMG_{i}.JPG", exif=exif.tobytes())
    with open_source(tmp_path) as src:
        assert src.size == (H, W)
        frames = list(src)
    for i, f in enumerate(frames):
        assert np.array_equal(f.image, cv2.imread(str(tmp_path / f"IMG_{i}.JPG")))


def _write_animation(path: Path, scene, durations_ms: list[int], params: tuple[int, ...] = ()) -> list[np.ndarray]:
    """An animated image (APNG for .png, WebP for .webp) of the scene's first frames, written with OpenCV."""
    if not hasattr(cv2, "imwriteanimation"):
        pytest.skip("this OpenCV cannot write animated images (cv2.imwriteanimation is OpenCV 4.11 on)")
    frames = [scene.render(i)[0] for i in range(len(durations_ms))]
    animation = cv2.Animation()
    animation.frames, animation.durations = frames, durations_ms
    if not cv2.imwriteanimation(str(path), animation, list(params)):
        pytest.skip(f"this OpenCV cannot write an animated {path.suffix}")
    return frames


@pytest.mark.parametrize("name", ["anim.png", "anim.webp"])
def test_an_animated_image_is_a_video_not_its_first_frame(scene, tmp_path: Path, name: str) -> None:
    # An APNG or an animated WebP given as the source was read as one image: its first frame, the rest
    # dropped without a word (an animated GIF is read as a video).
    durations = [40, 80, 40, 120, 40, 40]
    params = (cv2.IMWRITE_WEBP_QUALITY, 101) if name.endswith(".webp") else ()  # 101: lossless
    written = _write_animation(tmp_path / name, scene, durations, params)
    with open_source(tmp_path / name) as src:
        assert src.live is False and src.size == (W, H)
        assert src.num_frames == len(durations) and src.fps == pytest.approx(25.0)
        frames = list(src)
    assert [f.index for f in frames] == list(range(len(durations)))
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.04, 0.12, 0.16, 0.28, 0.32])
    for f, image in zip(frames, written):
        assert f.image.shape == (H, W, 3) and f.image.flags["C_CONTIGUOUS"]
        assert np.array_equal(f.image, image)
    # A still WebP (one frame) stays an image.
    assert cv2.imwrite(str(tmp_path / "still.webp"), written[0], [cv2.IMWRITE_WEBP_QUALITY, 101])
    with open_source(tmp_path / "still.webp") as src:
        assert isinstance(src, ImageSequenceSource) and len(list(src)) == 1


def test_an_animation_under_a_name_opencv_cannot_open_is_still_a_video(scene, tmp_path: Path, monkeypatch) -> None:
    """On Windows OpenCV opens files by a narrow path: ``cv2.imcount``/``cv2.imreadanimation`` do not find
    ``写真.png``, which was then read as one image. The frames are decoded from the file's bytes."""
    written = _write_animation(tmp_path / "写真.png", scene, [40] * 4)
    real_count, real_read = cv2.imcount, getattr(cv2, "imreadanimation", None)
    monkeypatch.setattr(cv2, "imcount", lambda path, *a: real_count(path, *a) if str(path).isascii() else 0)
    if real_read is not None:
        monkeypatch.setattr(cv2, "imreadanimation", lambda path, *a: real_read(path, *a) if str(path).isascii() else (False, None))
    with open_source(tmp_path / "写真.png") as src:
        frames = list(src)
    assert len(frames) == 4 and all(np.array_equal(f.image, image) for f, image in zip(frames, written))


def test_an_animation_cut_short_delivers_what_decodes_and_says_it_is_damaged(tmp_path: Path) -> None:
    """A truncated APNG decoded its first chunk (32 frames) and then ended, without a word, as if whole."""
    n = 70
    scene = standard_scene(64, 48, num_frames=n, seed=5)
    written = _write_animation(tmp_path / "long.png", scene, [40] * n)
    data = (tmp_path / "long.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) * 3 // 4])
    frames = []
    with pytest.raises(StreamInterrupted, match=r"cut.png: 32 of its 70 frames could be decoded \(the file is damaged or cut short\)"):
        with open_source(tmp_path / "cut.png") as src:
            for f in src:
                frames.append(f)
    assert len(frames) == 32 and all(np.array_equal(f.image, image) for f, image in zip(frames, written))


def test_an_animation_longer_than_a_chunk_keeps_every_frame_in_order(tmp_path: Path) -> None:
    n = 70  # more than two chunks of 32
    scene = standard_scene(64, 48, num_frames=n, seed=5)
    written = _write_animation(tmp_path / "long.png", scene, [40] * n)
    with open_source(tmp_path / "long.png") as src:
        frames = list(src)
    assert len(frames) == n
    assert all(np.array_equal(f.image, image) for f, image in zip(frames, written))
    assert frames[-1].timestamp == pytest.approx((n - 1) * 0.04)


def test_image_frames_carry_the_file_names_unless_two_share_one(scene, tmp_path: Path) -> None:
    _write_images(tmp_path / "a", scene, ["IMG_0009.png", "IMG_0010.png"])
    with open_source(tmp_path / "a") as src:
        assert [f.name for f in src] == ["IMG_0009", "IMG_0010"]
    _write_images(tmp_path / "b", scene, ["IMG_0009.png"])
    with open_source(str(tmp_path / "**" / "*.png")) as src:  # a/IMG_0009 and b/IMG_0009: frame numbers
        assert [f.name for f in src] == [None, None, None]


def test_image_sequence_errors(scene, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no images") as info:
        open_source(tmp_path / "empty")
    assert "subfolders" not in str(info.value)
    # DAVIS's JPEGImages/480p/<seq>/: the error says to give a sequence's folder or a glob.
    _write_images(tmp_path / "JPEGImages" / "480p" / "bear", scene, ["00000.jpg"])
    with pytest.raises(SourceError, match="no images") as info:
        open_source(tmp_path / "JPEGImages")
    assert "its images are in subfolders" in str(info.value) and f"e.g. {tmp_path / 'JPEGImages' / '480p' / 'bear'})" in str(info.value)
    assert "'" + str(tmp_path / "JPEGImages") + "/**/*.jpg'" in str(info.value)
    with pytest.raises(SourceError, match="no files match"):
        open_source(str(tmp_path / "*.png"))
    _write_images(tmp_path / "mixed", scene, ["0.png"])
    cv2.imwrite(str(tmp_path / "mixed" / "1.png"), np.zeros((10, 10, 3), np.uint8))
    # Images of another size come at their own size (the engine starts over on them); the source's is the first's.
    with open_source(tmp_path / "mixed") as src:
        assert src.size == (W, H)
        assert [f.image.shape for f in src] == [(H, W, 3), (10, 10, 3)]


# ---------------------------------------------------------------- spec parsing, webcams, lavfi


def test_unknown_scheme_names_the_supported_ones() -> None:
    with pytest.raises(SourceError) as info:
        open_source("ftp://bob:hunter22@files.example/x.mp4")
    message = str(info.value)
    assert "ftp://" in message and "rtsp://" in message and "http" in message
    assert "hunter22" not in message and "bob" not in message


@pytest.mark.parametrize("spec", [37, "37", "/dev/video37"])
def test_missing_webcam_fails_fast_with_one_line(spec) -> None:
    with pytest.raises(SourceError) as info:
        open_source(spec)
    message = str(info.value)
    assert "no camera at index 37" in message and "--source" in message and "\n" not in message


class FakeCapture:
    """A ``cv2.VideoCapture`` stand-in: delivers ``frames`` images, then fails reads."""

    def __init__(self, frames: int, opened: bool = True, start: int = 0) -> None:
        self.left = frames
        self.opened = opened
        self.value = start
        self.released = False

    def isOpened(self) -> bool:
        return self.opened

    def read(self) -> tuple[bool, np.ndarray | None]:
        if self.left <= 0 or self.released:
            return False, None
        self.left -= 1
        self.value += 1
        return True, np.full((H, W), self.value % 256, np.uint8)  # gray: must come out BGR

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def release(self) -> None:
        self.released = True


def test_camera_reconnects_after_it_stops_delivering() -> None:
    captures = [FakeCapture(5, start=0), FakeCapture(0, opened=False), FakeCapture(5, start=100)]
    made: list[FakeCapture] = []

    def factory(index: int) -> FakeCapture:
        assert index == 2
        made.append(captures[len(made)])
        return made[-1]

    events: list[StatusEvent] = []
    cfg = SourceConfig(backoff_initial_s=0.01, backoff_max_s=0.02)
    src = open_source(2, cfg, on_status=events.append, capture_factory=factory)
    assert isinstance(src, CameraSource) and src.live and src.fps == 30.0 and src.size == (W, H)
    frames = [src.read() for _ in range(10)]
    assert all(f is not None for f in frames)
    assert [f.index for f in frames] == list(range(10))
    values = [int(f.image[0, 0, 0]) for f in frames]
    assert values == [1, 2, 3, 4, 5, 101, 102, 103, 104, 105]  # nothing invented, nothing lost
    assert frames[0].image.shape == (H, W, 3)
    kinds = [e.kind for e in events]
    assert kinds == ["disconnected", "reconnecting", "reconnecting", "reconnected"]
    assert made[0].released and made[1].released
    stamps = [f.timestamp for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    src.close()
    assert made[2].released


def test_camera_that_opens_but_gives_no_frame() -> None:
    with pytest.raises(SourceError, match="delivered no frame"):
        open_source(0, capture_factory=lambda i: FakeCapture(0))


def test_camera_silences_opencv_through_the_older_log_functions(monkeypatch) -> None:
    # opencv-python 4.10.0.84 (the lowest pyproject.toml allows) and 4.8 have cv2.getLogLevel/setLogLevel
    # but no cv2.utils.logging (5.x: the other way round); opening a camera there raised AttributeError.
    levels = [3]
    seen_while_opening: list[int] = []
    monkeypatch.delattr(cv2.utils, "logging", raising=False)
    monkeypatch.setattr(cv2, "getLogLevel", lambda: levels[-1], raising=False)
    monkeypatch.setattr(cv2, "setLogLevel", levels.append, raising=False)

    def factory(index: int) -> FakeCapture:
        seen_while_opening.append(levels[-1])
        return FakeCapture(3)

    src = open_source(0, capture_factory=factory)
    assert src.read() is not None
    src.close()
    assert seen_while_opening == [0]  # silent while the backend probes the device
    assert levels == [3, 0, 3]  # and the level it had afterwards


def test_camera_gives_up_after_max_tries() -> None:
    made: list[FakeCapture] = []

    def factory(index: int) -> FakeCapture:
        made.append(FakeCapture(2 if not made else 0, opened=not made))
        return made[-1]

    events: list[StatusEvent] = []
    cfg = SourceConfig(reconnect_max_tries=3, backoff_initial_s=0.01, backoff_max_s=0.01)
    src = open_source(0, cfg, on_status=events.append, capture_factory=factory)
    assert src.read() is not None and src.read() is not None
    with pytest.raises(SourceError, match="after 3 attempts"):
        src.read()
    assert events[-1].kind == "gave_up" and len(made) == 4


def test_lavfi_is_a_paced_live_source() -> None:
    with open_source("lavfi:testsrc2=size=160x120:rate=25") as src:
        assert isinstance(src, StreamSource)
        assert src.live and src.fps == pytest.approx(25.0) and src.size == (160, 120)
        assert src.name == "lavfi:testsrc2=size=160x120:rate=25"
        frames = [src.read() for _ in range(10)]
    assert [f.index for f in frames] == list(range(10))
    assert frames[0].image.shape == (120, 160, 3)
    assert not np.array_equal(frames[0].image, frames[9].image)  # the pattern moves
    # Paced by the realtime filter: 9 frame intervals at 25 fps cannot arrive faster than 0.36 s.
    assert frames[9].capture_time - frames[0].capture_time >= 0.3
    assert frames[9].timestamp - frames[0].timestamp == pytest.approx(9 / 25, abs=1e-3)


def test_a_stream_leaves_the_conversion_to_whoever_takes_the_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """``read_deferred``: the same frames as ``read``, converted only when taken (the pipeline drops most unconverted)."""
    import realtime_sam.capture.stream as stream_module

    graph = "lavfi:testsrc2=size=160x120:rate=50"
    with open_source(graph) as src:
        eager = [src.read() for _ in range(6)]
    converted: list[int] = []
    real = stream_module.to_bgr

    def counting(av_frame):
        converted.append(1)
        return real(av_frame)

    monkeypatch.setattr(stream_module, "to_bgr", counting)
    with open_source(graph) as src:
        got = [src.read_deferred() for _ in range(6)]
        # The frame read at open (to learn the size) is converted already; the others wait.
        assert isinstance(got[0], Frame) and all(isinstance(d, DeferredFrame) for d in got[1:])
        assert len(converted) == 1
        frames = [got[0]] + [d.frame() for d in got[1:]]  # type: ignore[union-attr]
        assert len(converted) == 6
    assert [f.index for f in frames] == list(range(6))
    for a, b in zip(eager, frames):
        assert b.image.shape == (120, 160, 3) and np.array_equal(a.image, b.image)
        assert b.timestamp == pytest.approx(a.timestamp - eager[0].timestamp + frames[0].timestamp, abs=1e-6)

    # A decoded frame that cannot be converted is a decode error: no frame, and no exception.
    def broken(av_frame):
        raise ValueError("unsupported pixel format")

    with open_source(graph) as src:
        deferred = [src.read_deferred() for _ in range(3)][1:]
        monkeypatch.setattr(stream_module, "to_bgr", broken)
        assert [d.frame() for d in deferred] == [None, None]  # type: ignore[union-attr]
        assert src._decoder is not None and src._decoder.decode_errors == 2


def test_finite_lavfi_graph_ends() -> None:
    events: list[StatusEvent] = []
    with open_source("lavfi:testsrc2=size=64x48:rate=25:d=0.2", on_status=events.append) as src:
        frames = list(src)  # ends with None: a graph with a duration is not reconnected
    assert len(frames) == 5 and events == []


def test_bad_lavfi_graph_is_one_line() -> None:
    with pytest.raises(SourceError) as info:
        open_source("lavfi:nosuchfilter=1")
    assert "cannot open lavfi:nosuchfilter=1" in str(info.value) and "\n" not in str(info.value)


@pytest.fixture
def http_server(tmp_path: Path):
    """A real HTTP server on 127.0.0.1 serving ``tmp_path``; yields its base URL."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))

    class Quiet(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address) -> None:  # a client hanging up is fine
            pass

    server = Quiet(("127.0.0.1", 0), handler)
    server.RequestHandlerClass.log_message = lambda *a, **k: None  # type: ignore[method-assign]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_http_file_is_finite_not_live(clip: Path, tmp_path: Path, http_server: str, scene) -> None:
    (tmp_path / "clip.mp4").write_bytes(clip.read_bytes())
    events: list[StatusEvent] = []
    with open_source(f"{http_server}/clip.mp4", FAST, on_status=events.append) as src:
        assert isinstance(src, StreamSource) and src.live is False
        frames = list(src)  # ends with None instead of reconnecting and replaying
    assert [f.index for f in frames] == list(range(N))
    assert [f.timestamp for f in frames] == pytest.approx([i / 25 for i in range(N)])
    assert _mean_abs(frames[7].image, scene.render(7)[0]) < 8
    assert events == []
    with pytest.raises(SourceError, match="cannot open"):
        open_source(f"{http_server}/missing.mp4", FAST)


# ---------------------------------------------------------------- RTSP (a real server on 127.0.0.1)

def test_rtsp_file_and_live_mounts(rtsp_server, clip: Path, scene) -> None:
    server = rtsp_server(file=clip)
    with open_source(server.url("file"), FAST) as src:
        assert isinstance(src, StreamSource) and src.live and src.size == (W, H)
        file_frames = [_read_bounded(src, 10) for _ in range(15)]
    assert [f.index for f in file_frames] == list(range(15))
    # The mount replays the clip from its start.
    assert _mean_abs(file_frames[3].image, scene.render(3)[0]) < 10
    with open_source(server.url("live"), FAST) as src:
        live_frames = [_read_bounded(src, 10) for _ in range(15)]
    assert [f.index for f in live_frames] == list(range(15))
    stamps = [f.timestamp for f in live_frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))


def test_rtsp_reconnects_after_server_restart(rtsp_server) -> None:
    server = rtsp_server()
    events: list[StatusEvent] = []
    opened: list = []
    states: list[tuple[str, int | None]] = []  # (event, the source's reconnect_attempt as it was told)

    def on_status(event: StatusEvent) -> None:
        events.append(event)
        states.append((event.kind, opened[0].reconnect_attempt))

    src = open_source(server.url("live", userinfo="viewer:s3cretpw"), FAST, on_status=on_status)
    opened.append(src)
    assert src.reconnect_attempt is None  # connected
    assert "s3cretpw" not in src.name and "viewer" not in src.name
    before = [_read_bounded(src, 10) for _ in range(5)]
    server.kill()
    restarter = threading.Timer(1.0, server.start)  # back on the same port a second later
    restarter.start()
    after: list[Frame] = []
    try:
        for _ in range(1000):  # buffered frames, the drop, then frames from the new server
            frame = _read_bounded(src, 30)
            assert frame is not None
            if any(e.kind == "reconnected" for e in events):
                after.append(frame)
            else:
                before.append(frame)
            if len(after) == 5:
                break
    finally:
        restarter.join()
    src.close()
    kinds = [e.kind for e in events]
    assert kinds[0] == "disconnected" and "reconnected" in kinds and "reconnecting" in kinds
    # While it is down the source says which attempt is under way (the status lines show it);
    # once back, that it is connected.
    assert [a for k, a in states if k == "reconnecting"] == [e.attempt for e in events if e.kind == "reconnecting"]
    assert states[0] == ("disconnected", None)
    assert src.reconnect_attempt is None
    assert len(after) == 5
    assert [f.index for f in before + after] == list(range(len(before) + len(after)))
    stamps = [f.timestamp for f in before + after]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    for e in events:
        assert "s3cretpw" not in e.message and "viewer" not in e.message and "***@" in e.message


def test_rtsp_gives_up_after_max_tries(rtsp_server) -> None:
    server = rtsp_server()
    events: list[StatusEvent] = []
    cfg = SourceConfig(open_timeout_s=2, read_timeout_s=1, reconnect_max_tries=2, backoff_initial_s=0.1, backoff_max_s=0.2)
    src = open_source(server.url("live", userinfo="viewer:s3cretpw"), cfg, on_status=events.append)
    assert _read_bounded(src, 10) is not None
    server.kill()
    with pytest.raises(SourceError) as info:
        for _ in range(1000):  # buffered frames first, then the give-up
            assert _read_bounded(src, 20) is not None
    message = str(info.value)
    assert "after 2 attempts" in message and "s3cretpw" not in message and "\n" not in message
    assert [e.kind for e in events] == ["disconnected", "reconnecting", "reconnecting", "gave_up"]
    src.close()


def test_rtsp_dead_port_fails_at_open(rtsp_server) -> None:
    server = rtsp_server()
    url = server.url("live", userinfo="viewer:s3cretpw")
    server.kill()
    with pytest.raises(SourceError) as info:
        open_source(url, FAST)
    assert "cannot open rtsp://***@127.0.0.1" in str(info.value) and "s3cretpw" not in str(info.value)


def test_rtsp_frozen_server_does_not_hang(rtsp_server) -> None:
    server = rtsp_server()
    cfg = SourceConfig(open_timeout_s=2, read_timeout_s=1, reconnect=False)
    src = open_source(server.url("live"), cfg)
    assert _read_bounded(src, 10) is not None
    server.freeze()
    try:
        with pytest.raises(SourceError, match="no data for 1 s"):
            for _ in range(1000):  # buffered frames, then the read deadline fires
                assert _read_bounded(src, 15) is not None
    finally:
        server.thaw()
    src.close()


def test_rtsp_interrupt_ends_a_reconnecting_source(rtsp_server) -> None:
    server = rtsp_server()
    src_box: list[Source] = []

    def on_status(event: StatusEvent) -> None:
        if event.kind == "disconnected":
            src_box[0].interrupt()  # e.g. the user pressed q while the stream was down

    src = open_source(server.url("live"), SourceConfig(open_timeout_s=2, read_timeout_s=1), on_status=on_status)
    src_box.append(src)
    assert _read_bounded(src, 10) is not None
    server.freeze()
    try:
        result = None
        for _ in range(1000):
            result = _read_bounded(src, 15)
            if result is None:
                break
        assert result is None, "an interrupted source ends with None"
        assert src.read() is None
    finally:
        server.thaw()
    src.close()
