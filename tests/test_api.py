"""The streaming API, ``realtime_sam.track``, as a user calls it: errors, engine reuse.

The model is :class:`~realtime_sam.testing.fakes.BoxRunner` (the mask is the
prompt's box): no checkpoint, no network.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from realtime_sam import track, track_many
from realtime_sam.config import load_config
from realtime_sam.errors import ConfigError, PromptError, SinkError, SourceError
from realtime_sam.testing.fakes import BoxRunner
from realtime_sam.testing.synthetic import standard_scene, write_video
from realtime_sam.tracking.engine import Engine
from realtime_sam.types import ObjectPrompt


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> tuple[Path, Path]:
    """Two different 10-frame 320x240 clips (the same size: an engine reused across them keeps its frame size)."""
    folder = tmp_path_factory.mktemp("api")
    return tuple(  # type: ignore[return-value]
        write_video(standard_scene(320, 240, num_frames=10, num_objects=2, seed=seed), folder / f"clip{seed}.mp4")
        for seed in (0, 5)
    )


def test_a_reused_engine_starts_over_on_the_next_source(clips):
    first, second = clips
    cfg = load_config(None)  # dense flow, two-way on files
    engine = Engine.from_config(cfg, runner=BoxRunner())
    run1 = list(track(str(first), prompts=[ObjectPrompt(box=(100, 80, 200, 160), label="a")], config=cfg, engine=engine))
    (a,) = {t.track_id for r in run1 for t in r.tracks}
    assert run1[-1].tracks and run1[-1].tracks[0].label == "a"

    # An object added between the runs is kept (it starts on the new source), as are the prompts given.
    c = engine.add_object(ObjectPrompt(box=(200, 120, 260, 200), label="c"))
    run2 = list(track(str(second), prompts=[ObjectPrompt(box=(10, 10, 60, 60), label="b")], config=cfg, engine=engine))
    assert [r.index for r in run2] == list(range(10))
    # The first clip's track is not carried into the second (it was, moved by flow from
    # the first clip's last frame to the second's first); ids go on counting up.
    labels = {t.track_id: t.label for r in run2 for t in r.tracks}
    assert a not in labels
    assert sorted(labels.values()) == ["b", "c"] and c in labels and min(labels) > a
    assert [t.box for t in run2[0].tracks if t.label == "b"] == [(10.0, 10.0, 60.0, 60.0)]


def test_a_reused_engine_takes_prompts_in_the_new_sources_frame(clips, tmp_path):
    # A box inside a bigger second source but outside the first one's frame.
    big = write_video(standard_scene(640, 480, num_frames=4, num_objects=1), tmp_path / "big.mp4")
    cfg = load_config("cpu")
    engine = Engine.from_config(cfg, runner=BoxRunner())
    assert len(list(track(str(clips[0]), prompts=[ObjectPrompt(box=(10, 10, 60, 60))], config=cfg, engine=engine))) == 10
    results = list(track(str(big), prompts=[ObjectPrompt(box=(400, 300, 500, 400))], config=cfg, engine=engine))
    assert [t.box for t in results[0].tracks] == [(400.0, 300.0, 500.0, 400.0)]


def test_a_start_frame_past_the_files_end_is_refused_before_the_first_result(clips):
    # The generator ran the clip to its end and the object never appeared, without a word.
    engine = Engine.from_config(load_config("cpu"), runner=BoxRunner())
    prompts = [ObjectPrompt(box=(10, 10, 60, 60)), ObjectPrompt(box=(100, 80, 200, 160), start_frame=12)]
    with pytest.raises(PromptError) as caught:
        next(track(str(clips[0]), prompts=prompts, engine=engine))
    assert str(caught.value) == (
        f"prompts[1] (box 100,80,200,160): start_frame 12 is past the end of {clips[0]}, "
        "which has 10 frames (0..9); give a start_frame below 10"
    )


def test_an_object_the_run_ended_before_is_named_in_a_warning(tmp_path, caplog):
    """An MKV has no frame count up front, so a start_frame past its end cannot be refused before the
    run: when the generator ends, a warning names the object never tracked (it said nothing)."""
    mkv = write_video(standard_scene(width=160, height=120, num_frames=10, seed=1), tmp_path / "clip.mkv")
    engine = Engine.from_config(load_config("cpu"), runner=BoxRunner())
    prompts = [ObjectPrompt(box=(10, 10, 60, 60)), ObjectPrompt(box=(100, 80, 200, 160), label="car", start_frame=12)]
    with caplog.at_level("WARNING", logger="realtime_sam.app.api"):
        results = list(track(str(mkv), prompts=prompts, engine=engine))
    assert len(results) == 10 and all([t.track_id for t in r.tracks] == [1] for r in results)
    assert [r.getMessage() for r in caplog.records if r.name == "realtime_sam.app.api"] == [
        "object 2 (label 'car', box 100,80,200,160) was never tracked: the run ended before its start_frame 12"
    ]


def test_a_run_that_cannot_start_leaves_no_files_its_sinks_created(tmp_path):
    # A high-speed camera's frames as an image folder at 2000 fps: the video output cannot take that rate,
    # which it learns when the Pipeline tells it the source. The run stopped there with a one-line error and
    # left what make_sink had created to prove the paths writable: out/m.jsonl (a header and no frame),
    # out/m.txt (0 bytes), out/pngs/ (empty), out/ itself.
    import cv2

    from realtime_sam.output.sinks import make_sink

    scene = standard_scene(160, 120, num_frames=4, num_objects=1)
    (tmp_path / "frames").mkdir()
    for i in range(4):
        assert cv2.imwrite(str(tmp_path / "frames" / f"{i:03d}.png"), scene.render(i)[0])
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text("an earlier run\n")
    out = tmp_path / "out"
    sinks = [make_sink("jsonl", out / "m.jsonl"), make_sink("mots", out / "m.txt"), make_sink("png", out / "pngs"),
             make_sink("video", out / "v.mp4"), make_sink("jsonl", earlier)]
    assert sorted(p.name for p in out.iterdir()) == ["m.jsonl", "m.txt", "pngs", "v.mp4"]
    engine = Engine.from_config(load_config("cpu"), runner=BoxRunner())
    with pytest.raises(SinkError) as caught:
        next(track(str(tmp_path / "frames"), prompts=[ObjectPrompt(box=(10, 10, 60, 60))], engine=engine,
                   overrides=["source.image_fps=2000"], sinks=sinks))
    assert str(caught.value) == (
        "source.image_fps is 2000, and the video output needs a frame rate from 0.001 to 1000 fps; "
        "set source.image_fps within that range"
    )
    assert not out.exists()
    assert earlier.exists()  # a file that was there before the run stays
    assert all(s.closed for s in sinks)

    # A source that does not open, or a prompt that cannot be applied: the same.
    for source, prompt, error in [
        (tmp_path / "missing.mp4", ObjectPrompt(box=(10, 10, 60, 60)), SourceError),
        (tmp_path / "frames", ObjectPrompt(box=(10, 10, 60, 60), start_frame=4), PromptError),
    ]:
        sinks = [make_sink("jsonl", out / "m.jsonl"), make_sink("png", out / "pngs")]
        with pytest.raises(error):
            next(track(str(source), prompts=[prompt], engine=engine, sinks=sinks))
        assert not out.exists() and all(s.closed for s in sinks)


@pytest.mark.parametrize("overrides", [["foo.bar=1"], ["engine.reencode_every"], ["engine.reencode_every=abc"]])
def test_a_bad_override_is_a_config_error_at_the_call(overrides):
    with pytest.raises(ConfigError):
        track("never-opened.mp4", overrides=overrides)  # not iterated
    with pytest.raises(ConfigError):
        track_many(["never-opened.mp4"], overrides=overrides)
    with pytest.raises(ConfigError):
        track("never-opened.mp4", config="no-such-preset")


def test_a_bad_source_fails_before_the_model_is_loaded(monkeypatch):
    def load(*args, **kwargs):
        raise AssertionError("the model was loaded for a source that cannot be opened")

    monkeypatch.setattr(Engine, "from_config", load)
    with pytest.raises(SourceError, match="no-such-clip.mp4"):
        next(track("no-such-clip.mp4", prompts=[ObjectPrompt(box=(1, 1, 9, 9))], config="cpu"))


def test_track_many_refuses_sinks_under_a_name_no_stream_has(clips):
    class Sink:
        closed = False

        def write(self, result):
            raise AssertionError("nothing is written")

        def close(self):
            self.closed = True

    # The stream of "clip0.mp4" is named "clip0": sinks keyed by the file name were never fed nor
    # closed. Now refused at the call, and the sink given is closed (the run never starts).
    sink = Sink()
    with pytest.raises(ConfigError, match=r"'clip0\.mp4'.*'clip0'"):
        track_many([str(clips[0])], config="cpu", sinks={str(clips[0].name): [sink]})
    assert sink.closed


def test_a_reused_engine_runs_its_detector_on_the_new_sources_first_frame(clips):
    # Detector-prompted tracks start on a source's first frame; the detector's count of frames
    # since its last run belongs to the old source (runs at 0, 4, 8 of ten frames: 1 since).
    from realtime_sam.testing.fakes import FixedBoxDetector

    first, second = clips
    cfg = load_config(None, ["detect.every_k_frames=4"])
    detector = FixedBoxDetector([[100, 80, 200, 160]], [0], {0: "person"})
    engine = Engine.from_config(cfg, runner=BoxRunner(), detector=detector)
    run1 = list(track(str(first), config=cfg, engine=engine))
    assert [t.label for t in run1[0].tracks] == ["person"]
    run2 = list(track(str(second), config=cfg, engine=engine))
    assert [t.label for t in run2[0].tracks] == ["person"]


class _HeldEncodeRunner(BoxRunner):
    """:class:`BoxRunner` whose first background encode (of the old source) is held until the
    new source's embedding is being made current (or ``hold_s`` has passed); that new
    embedding then waits (bounded) for the old encode to end, the order a loaded machine gives.
    Records ``(thread, frame size of the current embedding)`` at every decoder call."""

    def __init__(self, hold_s: float = 0.5):
        super().__init__()
        self.hold_s = hold_s
        self.release, self.old_used = threading.Event(), threading.Event()
        self.old_size: tuple[int, int] | None = None
        self.decoded_on: list[tuple[str, tuple[int, int]]] = []

    def embed(self, image_bgr):
        if self.old_size is None:
            self.old_size = image_bgr.shape[:2]
            self.release.wait(self.hold_s)
        return super().embed(image_bgr)

    def _making_new_current(self, size):
        if size != self.old_size:
            self.release.set()
            self.old_used.wait(5.0)

    def use(self, embedding):
        super().use(embedding)
        if embedding[0] == self.old_size:
            self.old_used.set()
        else:
            self._making_new_current(embedding[0])

    def encode(self, image_bgr):
        super().encode(image_bgr)
        self._making_new_current(image_bgr.shape[:2])

    def decode(self, *args, **kwargs):
        self.decoded_on.append((threading.current_thread().name, self._size))
        return super().decode(*args, **kwargs)


@pytest.mark.parametrize("on", ["the frame loop", "a new worker"])
def test_an_encode_running_at_reset_never_leaves_its_embedding_to_the_new_source(on):
    # reset() forgets an encode running on the worker, but the encode went on and ended by making
    # its old frame's embedding the runner's current one: the new source's decodes, here or on
    # the next pipeline's worker (the old one still busy when it closed), used the old frame
    # (measured: a 160x120 frame decoded against the old 320x240 embedding).
    from concurrent.futures import ThreadPoolExecutor

    from realtime_sam.tracking.discovery import DiscoveryConfig
    from realtime_sam.tracking.engine import EngineConfig
    from realtime_sam.types import Frame

    runner = _HeldEncodeRunner()
    grid = DiscoveryConfig(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    engine = Engine(runner, EngineConfig(background_encode=True), discovery_config=grid)
    old_worker, new_worker = ThreadPoolExecutor(1, "old-worker"), ThreadPoolExecutor(1, "new-worker")
    try:
        engine.attach_worker(old_worker.submit)
        engine.add_object(ObjectPrompt(box=(10, 10, 100, 100)))
        engine.process(Frame(0, np.full((240, 320, 3), 90, np.uint8), 0.0, time.monotonic()))  # its encode: held
        engine.reset()
        if on == "the frame loop":
            engine.set_auto(True)  # the point grid is decoded on this thread
        else:
            engine.attach_worker(new_worker.submit)
            engine.add_object(ObjectPrompt(box=(20, 20, 80, 80)))
        for i in range(3):
            engine.process(Frame(i, np.full((120, 160, 3), 40, np.uint8), i / 25, time.monotonic()))
            time.sleep(0.2)
        old_worker.shutdown(wait=True)
        new_worker.shutdown(wait=True)
    finally:
        old_worker.shutdown(wait=False, cancel_futures=True)
        new_worker.shutdown(wait=False, cancel_futures=True)
    new = [size for thread, size in runner.decoded_on if not thread.startswith("old-worker")]
    assert new and set(new) == {(120, 160)}, runner.decoded_on


def test_an_encode_running_through_two_resets_is_still_waited_for():
    # reset() keeps the running encode (A) for the next job to wait for; that job (B, queued on the
    # same worker behind A) is cancelled by a second reset, and A went with it: nothing waited for A
    # any more, and A ended by making the old source's embedding current on the frame loop.
    from concurrent.futures import ThreadPoolExecutor

    from realtime_sam.tracking.discovery import DiscoveryConfig
    from realtime_sam.tracking.engine import EngineConfig
    from realtime_sam.types import Frame

    # Held until the test lets it go (below), not for a fixed half second: on a loaded machine the
    # half second ran out before B was queued, and B had started by the check that it had not.
    runner = _HeldEncodeRunner(hold_s=30.0)
    grid = DiscoveryConfig(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    engine = Engine(runner, EngineConfig(background_encode=True), discovery_config=grid)
    worker = ThreadPoolExecutor(1, "old-worker")
    try:
        engine.attach_worker(worker.submit)
        engine.add_object(ObjectPrompt(box=(10, 10, 100, 100)))
        engine.process(Frame(0, np.full((240, 320, 3), 90, np.uint8), 0.0, time.monotonic()))  # A: held
        engine.reset()
        engine.add_object(ObjectPrompt(box=(20, 20, 80, 80)))
        engine.process(Frame(0, np.full((120, 160, 3), 40, np.uint8), 0.0, time.monotonic()))  # B: queued behind A
        assert len(engine.background.jobs) == 1 and not engine.background.jobs[0].started
        engine.reset()  # B is cancelled
        # A ends half a second from now, unless the new embedding is made current first (the fault).
        threading.Timer(0.5, runner.release.set).start()
        engine.attach_worker(None)
        engine.set_auto(True)  # the point grid is encoded and decoded on this thread
        for i in range(3):
            engine.process(Frame(i, np.full((120, 160, 3), 40, np.uint8), i / 25, time.monotonic()))
        worker.shutdown(wait=True)
    finally:
        worker.shutdown(wait=False, cancel_futures=True)
    new = [size for thread, size in runner.decoded_on if not thread.startswith("old-worker")]
    assert new and set(new) == {(120, 160)}, runner.decoded_on


_LEFT_OPEN = """
import sys
from realtime_sam import Engine, ObjectPrompt, load_config, track
from realtime_sam.output.sinks import make_sink
from realtime_sam.testing.fakes import BoxRunner

clip, video, jsonl = sys.argv[1:]
cfg = load_config("cpu")
gen = track(clip, prompts=[ObjectPrompt(box=(100, 80, 200, 160))], config=cfg,
            engine=Engine.from_config(cfg, runner=BoxRunner()),
            sinks=[make_sink("video", video), make_sink("jsonl", jsonl)])
for result in gen:  # the generator is a global: it outlives the loop
    if result.index == 5:
        raise RuntimeError("a bug in the loop body")
"""


def test_a_generator_left_open_at_exit_still_finalises_its_sinks(clips, tmp_path):
    # A script whose loop body raised, with track()'s generator kept in a variable: nothing
    # closed it before the process exited, and the video was 0 bytes ("moov atom not found").
    import json
    import subprocess
    import sys

    import av

    video, jsonl = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    script = tmp_path / "user.py"
    script.write_text(_LEFT_OPEN)
    proc = subprocess.run(
        [sys.executable, str(script), str(clips[0]), str(video), str(jsonl)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and "a bug in the loop body" in proc.stderr, proc.stderr
    with av.open(str(video)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert frames >= 6  # at least every frame the loop saw (0..5)
    lines = jsonl.read_text().splitlines()
    assert [json.loads(line) for line in lines]  # every line whole


def _tracked(clip: Path, edit) -> list[list[tuple[int, int, tuple]]]:
    """Each frame's (track id, mask area, box) with the cpu preset's engine driven by hand;
    ``edit(result)`` is called on frame 3's result, as a user's loop body would."""
    from realtime_sam.capture.sources import open_source

    cfg = load_config("cpu")
    engine = Engine.from_config(cfg, runner=BoxRunner())
    engine.add_object(ObjectPrompt(box=(100, 80, 200, 160)))
    src = open_source(str(clip), cfg.source)
    seen = []
    try:
        while (frame := src.read()) is not None:
            result = engine.process(frame)
            seen.append([(t.track_id, int(t.mask.sum()), t.box) for t in result.tracks])
            if result.index == 3:
                edit(result)
    finally:
        src.close()
    return seen


def test_editing_a_results_mask_in_place_cannot_change_the_next_frames(clips):
    # The result's mask was the tracker's own array: a user's `t.mask[:] = False` (or `&=` with a
    # region) on frame 3 emptied the track's mask on frames 4..13 (sparse flow moves it from there).
    refused = []

    def clear(result):
        for t in result.tracks:
            try:
                t.mask[:] = False
            except ValueError as exc:  # read-only: the user copies it to edit it
                refused.append(str(exc))

    assert _tracked(clips[0], clear) == _tracked(clips[0], lambda result: None)
    assert refused and "read-only" in refused[0]


def test_drawing_on_a_results_frame_cannot_reach_the_output_video(clips, tmp_path):
    # The sinks render result.frame.image on their own thread: a user's overlay drawn on it in
    # place showed in some frames of the video and not in others (16 of 30 in one run).
    import av

    from realtime_sam.output.sinks import make_sink

    cfg = load_config("cpu")
    video = tmp_path / "out.mp4"
    for result in track(str(clips[0]), prompts=[ObjectPrompt(box=(100, 80, 200, 160))], config=cfg,
                        engine=Engine.from_config(cfg, runner=BoxRunner()), sinks=[make_sink("video", video)]):
        try:
            result.frame.image[0:40, 0:40] = (0, 255, 0)
        except ValueError:  # read-only: the user draws on a copy
            result.frame.image.copy()[0:40, 0:40] = (0, 255, 0)
    with av.open(str(video)) as container:
        corners = [frame.to_ndarray(format="rgb24")[5:35, 5:35] for frame in container.decode(video=0)]
    assert len(corners) == 10
    assert not any((c[..., 1] > 200).mean() > 0.5 for c in corners)


@pytest.mark.parametrize(
    "prompt, says",
    [
        ((10, 10, 50, 50), "must be an ObjectPrompt, e.g. ObjectPrompt(box="),  # was AttributeError: no attribute 'points'
        (ObjectPrompt(box=(10, 10, 50)), "box must be (x0, y0, x1, y1), four numbers; got 3"),  # was: not enough values to unpack
        (ObjectPrompt(box=(10, 10, 50, 50, 1)), "box must be (x0, y0, x1, y1), four numbers; got 5"),
        (ObjectPrompt(box="10,10,50,50"), "box must be (x0, y0, x1, y1)"),
        (ObjectPrompt(points=((20, 20, 1),), labels=(1,)), "point 1 must be (x, y), two numbers"),  # was: taken as (20, 20)
        (ObjectPrompt(points=((20, 20),), labels=(1,), track_id="3"), "track_id must be a track's id"),  # was: refined 3
        (ObjectPrompt(points=((20, 20),), labels=(0,)), "needs a box or at least one point with label 1"),
        # Empty: one message from add_object and track() (add_object said "a prompt needs at least one
        # point or a box", track() "prompt needs a box or at least one point with label 1 ...").
        (ObjectPrompt(), "prompt needs at least one point or a box"),
        (ObjectPrompt(points=[], labels=[]), "prompt needs at least one point or a box"),
    ],
)
def test_add_object_refuses_a_bad_prompt_with_one_line_saying_what_to_give(prompt, says):
    engine = Engine.from_config(load_config("cpu"), runner=BoxRunner())
    with pytest.raises(ValueError) as caught:  # a PromptError, also a ValueError
        engine.add_object(prompt)
    assert isinstance(caught.value, PromptError)
    assert says in str(caught.value) and "\n" not in str(caught.value)
    with pytest.raises(PromptError, match=re.escape(says)):  # track() checks them at the call
        track("never-opened.mp4", prompts=[prompt], config="cpu")


def test_numpy_numbers_make_the_same_prompt_as_python_numbers(clips):
    # A box taken from an array (a detector's xyxy row, np.float32) was refused:
    # "box value 1 must be a number, got float32 np.float32(100.0)"; points as an array raised
    # numpy's "truth value of an array ... is ambiguous".
    def first_frame(prompt):
        cfg = load_config("cpu")
        results = track(str(clips[0]), prompts=[prompt], config=cfg, engine=Engine.from_config(cfg, runner=BoxRunner()))
        try:
            return [(t.box, int(t.mask.sum())) for t in next(results).tracks]
        finally:
            results.close()

    plain = first_frame(ObjectPrompt(box=(100, 80, 200, 160), points=((150, 120),), labels=(1,)))
    assert plain
    xyxy = np.array([[100, 80, 200, 160]], dtype=np.float32)
    arrays = ObjectPrompt(box=tuple(xyxy[0]), points=np.array([[150, 120]]), labels=np.array([1]))
    assert first_frame(arrays) == plain


def test_remove_object_refuses_an_id_that_is_not_an_integer():
    # int(1.5) removed track 1.
    engine = Engine.from_config(load_config("cpu"), runner=BoxRunner())
    engine.add_object(ObjectPrompt(box=(10, 10, 50, 50)))
    for bad in (1.5, "1", None):
        with pytest.raises(PromptError, match="remove_object takes a track id"):
            engine.remove_object(bad)
    engine.remove_object(99)  # an integer no track has: ignored, as documented


@pytest.mark.parametrize(
    "prompts, says",
    [
        (ObjectPrompt(box=(1, 1, 9, 9)), "prompts takes a list of ObjectPrompt; got one: give prompts=[ObjectPrompt(...)]"),
        ("1,1,9,9", "prompts takes a list of ObjectPrompt, e.g. [ObjectPrompt(box=(x0, y0, x1, y1))]; got str '1,1,9,9'"),
        (5, "prompts takes a list of ObjectPrompt, e.g. [ObjectPrompt(box=(x0, y0, x1, y1))]; got int 5"),
    ],
)
def test_track_refuses_prompts_that_are_not_a_list_in_one_line(prompts, says):
    """One prompt instead of a list was a raw TypeError ("not iterable"); a string was read
    character by character ("prompt must be an ObjectPrompt ... got str '1'")."""
    with pytest.raises(PromptError) as caught:
        track("never-opened.mp4", prompts=prompts, config="cpu")
    assert str(caught.value) == says
