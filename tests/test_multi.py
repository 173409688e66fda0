"""Several streams in one process: the shared encoder's scheduling, per-stream engines, names and stream files."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from realtime_sam.app.multi import MultiPipeline, StreamRun, open_streams
from realtime_sam.app.pipeline import Pipeline
from realtime_sam.app.scheduler import EncodeCancelled, EncodeScheduler, SharedRunner
from realtime_sam.app.streams import (
    StreamSpec,
    expand_path,
    load_streams_file,
    specs_from_sources,
    stream_name,
    unique_names,
)
from realtime_sam.config import Config
from realtime_sam.errors import ConfigError, PromptError, SinkError, SourceError
from realtime_sam.output.sinks import open_sinks
from realtime_sam.testing.fakes import BoxRunner
from realtime_sam.tracking.engine import Engine
from realtime_sam.types import Frame, ObjectPrompt

# ------------------------------------------------------------------ the scheduler


def _image(value: int) -> np.ndarray:
    return np.full((4, 4, 3), value, np.uint8)


def _wait_until(cond, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


class _GatedEncoder:
    """``encode_many`` that returns each image's fill value, and holds its calls until ``gate`` is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls: list[list[int]] = []

    def __call__(self, images):
        values = [int(im[0, 0, 0]) for im in images]
        self.calls.append(values)
        self.gate.wait(5)
        return values


def _ask(sched: EncodeScheduler, key: str, value: int, out: dict) -> threading.Thread:
    def go() -> None:
        try:
            out[(key, value)] = sched.encode(key, _image(value))
        except BaseException as exc:
            out[(key, value)] = exc

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("max_batch, calls", [(1, [[1], [2], [3], [4]]), (3, [[1], [2, 3, 4]])])
def test_the_stalest_stream_encodes_first_and_waiting_streams_batch(max_batch, calls):
    enc = _GatedEncoder()
    sched = EncodeScheduler(enc, max_batch=max_batch)
    out: dict = {}
    threads = [_ask(sched, "a", 1, out)]
    _wait_until(lambda: enc.calls)  # "a" is in the encoder
    # While it runs: "a" again (it has an embedding now), then two streams that have none yet.
    threads.append(_ask(sched, "a", 4, out))
    _wait_until(lambda: len(sched._waiting) == 1)
    threads.append(_ask(sched, "b", 2, out))
    _wait_until(lambda: len(sched._waiting) == 2)
    threads.append(_ask(sched, "c", 3, out))
    _wait_until(lambda: len(sched._waiting) == 3)
    enc.gate.set()
    for t in threads:
        t.join(5)
    assert enc.calls == calls  # b and c (never encoded) before a's second encode
    assert sched.order == ["a", "b", "c", "a"]
    assert out == {("a", 1): 1, ("a", 4): 4, ("b", 2): 2, ("c", 3): 3}  # each caller gets its own embedding
    assert sched.stats("a").encodes == 2 and sched.stats("b").encodes == 1
    assert sched.batches == [len(c) for c in calls]


def test_a_file_read_flat_out_does_not_starve_a_live_stream():
    def enc(images):
        time.sleep(0.005)
        return [None] * len(images)

    sched = EncodeScheduler(enc)
    stop = threading.Event()
    file_encodes = [0]

    def file_loop() -> None:  # a file: asks again the moment it gets an embedding
        while not stop.is_set():
            sched.encode("file", _image(0))
            file_encodes[0] += 1

    t = threading.Thread(target=file_loop, daemon=True)
    t.start()
    _wait_until(lambda: file_encodes[0] >= 3)
    ahead = []
    for _ in range(6):  # a camera: one encode every few frames
        time.sleep(0.02)
        before = len(sched.order)
        sched.encode("live", _image(1))
        ahead.append(sched.order.index("live", before) - before)
    stop.set()
    t.join(5)
    # Only the file encode already running when the camera asked can go before it.
    assert max(ahead) <= 1, ahead
    assert file_encodes[0] > 6
    st = sched.stats("live")
    assert st.encodes == 6 and st.age_s is not None and st.age_s >= 0


def test_a_request_with_latest_embeds_the_streams_newest_image_when_its_turn_comes():
    enc = _GatedEncoder()
    now = [100.0]
    sched = EncodeScheduler(enc, clock=lambda: now[0])
    out: dict = {}
    t1 = _ask(sched, "a", 1, out)
    _wait_until(lambda: enc.calls)  # a's encode holds the encoder
    newest = [(_image(2), 0.0)]  # b's newest frame and the seconds since it offered it
    taken = []

    def latest():
        taken.append(newest[0][0])
        return newest[0]

    t2 = threading.Thread(target=lambda: out.__setitem__("b", sched.encode("b", latest=latest)), daemon=True)
    t2.start()
    _wait_until(lambda: len(sched._waiting) == 1)
    assert not taken  # nothing is taken while it waits
    newest[0] = (_image(4), 0.25)  # b's stream went on while it waited: frame 4, offered 0.25 s ago
    now[0] = 103.0
    enc.gate.set()
    t1.join(5)
    t2.join(5)
    assert enc.calls == [[1], [4]] and out["b"] == 4 and len(taken) == 1
    # Its age counts from when frame 4 was offered, not from when b asked (3 s before).
    assert sched.stats("b").age_s == pytest.approx(0.25)
    with pytest.raises(TypeError, match="not both or neither"):
        sched.encode("c")
    with pytest.raises(TypeError, match="not both or neither"):
        sched.encode("c", _image(1), latest=latest)


def test_a_stream_behind_others_on_the_shared_encoder_embeds_its_newest_frame():
    # The engine's background encode waits while another stream's encode holds the shared
    # encoder; the frames go on meanwhile, and the encode embeds the newest when it starts.
    from test_background_encode import EmbeddingGroundTruthRunner, _box, _iou

    from realtime_sam.app.pipeline import SerialWorker
    from realtime_sam.testing.synthetic import standard_scene
    from realtime_sam.tracking.engine import EngineConfig

    scene = standard_scene(320, 240, num_frames=100, num_objects=2, seed=1)
    gt_runner = EmbeddingGroundTruthRunner(scene)
    gate, other_running = threading.Event(), threading.Event()
    gate.set()

    def encode_many(images):
        if images[0].shape[:2] == (4, 4):  # the other stream's encode: held until the gate opens
            other_running.set()
            gate.wait(5)
            return [None]
        return [gt_runner.embed(im) for im in images]

    sched = EncodeScheduler(encode_many)
    engine = Engine(SharedRunner(gt_runner, sched, "cam"), EngineConfig(reencode_every=1, background_encode=True, first_look=False))
    worker = SerialWorker("cam-background")
    engine.attach_worker(worker.submit)
    keep: list[np.ndarray] = []

    def step(i: int):
        img, gt = scene.render(i)
        gt_runner.frame_of[id(img)] = i
        keep.append(img)
        return engine.process(Frame(i, img, i / 25.0, time.monotonic())), gt

    try:
        _, gt0 = scene.render(0)
        for oid in sorted(gt0):
            engine.add_object(ObjectPrompt(box=_box(gt0[oid]), label=str(oid)))
        i, landed = 0, 0
        while landed < 2:  # the prompts' encode and one periodic one, with the encoder free
            assert i < 60
            r, _ = step(i)
            landed += r.encoded
            i += 1
            time.sleep(0.01)
        gate.clear()
        other = threading.Thread(target=lambda: sched.encode("other", _image(0)), daemon=True)
        other.start()
        assert other_running.wait(5)
        while not sched._waiting:  # our next encode: submitted, waiting behind the other stream's
            assert i < 90
            step(i)
            i += 1
            time.sleep(0.01)
        submitted = i - 1
        for _ in range(5):
            step(i)
            i += 1
        gate.set()
        other.join(5)
        _wait_until(lambda: engine.background.jobs and engine.background.jobs[0].future.done())
        r, gt = step(i)
    finally:
        gate.set()
        worker.close(1.0)
    assert r.encoded
    assert gt_runner.embedded[-1] == submitted + 5 == i - 1  # not the frame it was submitted on
    assert engine.last_encode_index == submitted + 5
    assert sched.stats("cam").encodes == len(gt_runner.embedded)
    owner = {t.track_id: int(t.label) for t in r.tracks}
    assert len(owner) == 2
    for t in r.tracks:
        assert _iou(t.mask, gt[owner[t.track_id]]) > 0.8, t.track_id


def test_encoder_errors_reach_every_caller_of_the_batch_and_withdraw_cancels():
    enc = _GatedEncoder()
    sched = EncodeScheduler(enc)
    out: dict = {}
    t1 = _ask(sched, "a", 1, out)
    _wait_until(lambda: enc.calls)
    t2 = _ask(sched, "b", 2, out)
    _wait_until(lambda: len(sched._waiting) == 1)
    sched.withdraw("b")
    t2.join(5)
    assert isinstance(out[("b", 2)], EncodeCancelled)
    enc.gate.set()
    t1.join(5)
    assert out[("a", 1)] == 1

    def broken(images):
        raise RuntimeError("encoder exploded")

    bad = EncodeScheduler(broken)
    with pytest.raises(RuntimeError, match="exploded"):
        bad.encode("a", _image(0))
    assert bad.stats("a").encodes == 0 and bad.stats("a").age_s is None


def test_with_a_serial_worker_every_encode_runs_on_its_one_thread():
    from realtime_sam.app.pipeline import SerialWorker

    threads = []

    def enc(images):
        threads.append(threading.current_thread().name)
        return [None] * len(images)

    worker = SerialWorker("the-encoder")
    try:
        sched = EncodeScheduler(enc, submit=worker.submit)
        out: dict = {}
        callers = [_ask(sched, k, i, out) for i, k in enumerate(["a", "b", "c", "a"])]
        for t in callers:
            t.join(5)
    finally:
        worker.close(1.0)
    assert len(threads) == 4 and set(threads) == {"the-encoder"}
    assert len(out) == 4 and sched.stats("a").encodes == 2


def test_shared_runner_makes_the_scheduled_embedding_current():
    sched = EncodeScheduler(lambda images: [BoxRunner().embed(im) for im in images])
    runner = SharedRunner(BoxRunner(), sched, "cam")
    runner.encode(np.zeros((240, 320, 3), np.uint8))
    low, iou = runner.decode(None, None, np.array([[10.0, 10.0, 100.0, 80.0]]), None, False)
    mask = runner.masks(low[:, 0], (240, 320))[0]
    ys, xs = np.nonzero(mask)
    assert abs(xs.min() - 10) <= 2 and abs(xs.max() - 100) <= 2 and abs(ys.max() - 80) <= 2
    assert sched.stats("cam").encodes == 1
    with pytest.raises(TypeError, match="use"):
        SharedRunner(object(), sched, "x")


def test_encode_batch_gives_each_image_its_own_embedding(checkpoint_path):
    from realtime_sam.model.config import ModelConfig
    from realtime_sam.model.runtime import load_inference_model

    model = load_inference_model(checkpoint_path, ModelConfig(device="cpu"))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    b = rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)
    batch = model.encode_batch([a, b], "BGR")
    for image, got in zip([a, b], batch):
        alone = model.encode(image, "BGR")
        assert got.input_size == alone.input_size and got.original_size == alone.original_size
        assert got.features.shape == alone.features.shape == (1, 256, 64, 64)
        np.testing.assert_allclose(got.features.numpy(), alone.features.numpy(), atol=1e-4)
    assert not np.allclose(batch[0].features.numpy(), batch[1].features.numpy())


# ------------------------------------------------------------------ names, paths, the streams file


def test_a_streams_status_line_says_how_often_its_encodes_land():
    from realtime_sam.app.multi import StreamStatus

    status = StreamStatus(name="door", live=True, state="running", frames_read=420, frames_processed=400,
                          frames_dropped=20, model_fps=152.3, encodes=18, encode_age_s=0.4, tracks=2,
                          encode_interval_s=1.24)
    assert "| model 152.3 fps, encode every 1.2 s | encodes 18, encode age 0.4 s |" in status.line()


def test_stream_names():
    assert stream_name(0) == "cam0" and stream_name("2") == "cam2"
    assert stream_name("/data/clips/door.mp4") == "door"
    assert stream_name("rtsp://user:secret@10.0.0.5:554/live/main?token=abc") == "10_0_0_5_554_live_main"
    assert stream_name("lavfi:testsrc2=size=320x240") == "lavfi_testsrc2_size_320x240"
    assert "secret" not in stream_name("rtsp://user:secret@host/x")
    assert unique_names(["a", "b", "a", "a"]) == ["a", "b", "a-2", "a-3"]
    assert [s.name for s in specs_from_sources(["x/a.mp4", "y/a.mp4", "0"])] == ["a", "a-2", "cam0"]


def test_name_placeholder_is_required_with_several_streams():
    assert expand_path("out/{name}.jsonl", "door", several=True, flag="--save-masks") == "out/door.jsonl"
    assert expand_path("out.jsonl", "door", several=False, flag="--save-masks") == "out.jsonl"
    assert expand_path(None, "door", several=True, flag="--output") is None
    with pytest.raises(SinkError, match=r"put \{name\} in it"):
        expand_path("out.jsonl", "door", several=True, flag="--save-masks")


def test_streams_file(tmp_path):
    (tmp_path / "yard.yaml").write_text("- box: [1, 2, 30, 40]\n")
    (tmp_path / "streams.yaml").write_text(
        "streams:\n"
        "  - name: door\n    source: clips/door.mp4\n    prompts: [{box: [10, 10, 50, 50], label: person}]\n"
        "    settings: {engine: {reencode_every: 3}}\n    save_masks: elsewhere/door.jsonl\n"
        "  - url: rtsp://cam/live\n    prompts: yard.yaml\n"
        "  - 0\n"
    )
    specs = load_streams_file(tmp_path / "streams.yaml")
    assert [s.name for s in specs] == ["door", "cam_live", "cam0"]
    assert specs[0].source == str(tmp_path / "clips" / "door.mp4")  # relative to the file
    assert specs[0].prompts == (ObjectPrompt(box=(10.0, 10.0, 50.0, 50.0), label="person"),)
    assert specs[0].settings == {"engine": {"reencode_every": 3}} and specs[0].save_masks == "elsewhere/door.jsonl"
    assert specs[1].source == "rtsp://cam/live" and specs[1].prompts[0].box == (1.0, 2.0, 30.0, 40.0)
    assert specs[2].source == 0


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[]", "non-empty list of streams"),
        ("- {name: a}\n", "exactly one of source:, url: or path:"),
        ("- {source: a.mp4, colour: red}\n", "unknown key(s) colour"),
        ("- {source: a.mp4, settings: {model: {device: cpu}}}\n", "one model serves every stream"),
        ("- {source: a.mp4, settings: {engine: {reencode_every: 0}}}\n", "reencode_every"),
        ("- {source: a.mp4, name: 'a b'}\n", "must be 1-64 of letters"),
        ("- {source: a.mp4, name: x}\n- {source: b.mp4, name: x}\n", "used twice"),
        ("- {source: a.mp4, prompts: {box: 3}}\n", "prompts must be a list"),
        ("- [unclosed\n", "--sources file"),
        # A key given twice is refused, as in config files: PyYAML kept the last silently.
        ("- {source: a.mp4, name: a, name: b}\n", "'name' is given twice"),
        ("- source: a.mp4\n  settings:\n    source: {backoff_max_s: 60}\n    source: {backoff_initial_s: 20}\n", "'source' is given twice (lines 3 and 4)"),
        ("- {source: a.mp4, settings: {source: {backoff_initial_s: 20}}}\n", "stream 1: settings: source.backoff_max_s (10.0)"),
        # detect.* with no detector was refused only when the stream's engine was built, its sources open.
        ("- {source: a.mp4}\n- {source: b.mp4, settings: {detect: {conf: 0.5}}}\n",
         "s.yaml: stream 2: settings: detect.conf is set but there is no detector to use it: add --detect MODEL"),
        # Which stream's prompts file is missing, among several.
        ("- {source: a.mp4}\n- {source: b.mp4, prompts: nope.yaml}\n", "s.yaml: stream 2: prompts file not found: "),
    ],
)
def test_bad_streams_files_are_one_clear_error(tmp_path, text, fragment):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_streams_file(path)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_streams_file_settings_are_checked_over_the_runs_configuration(tmp_path):
    # backoff_initial_s 20 is above the default backoff_max_s (10) but not the run's (60): it is the
    # run's configuration the settings go over (multi.stream_config), so it is what they are checked against.
    from realtime_sam.app.multi import stream_config
    from realtime_sam.config import load_config

    path = tmp_path / "s.yaml"
    path.write_text("- {name: door, source: a.mp4, settings: {source: {backoff_initial_s: 20}}}\n")
    run = load_config(None, ["source.backoff_max_s=60"])
    (spec,) = load_streams_file(path, run)
    assert stream_config(run, spec).source.backoff_initial_s == 20
    with pytest.raises(ConfigError, match=r"stream 1: settings: source.backoff_max_s \(10.0\) must be >="):
        load_streams_file(path)  # over the defaults
    with pytest.raises(ConfigError, match=r"^stream door: settings: source.backoff_max_s"):
        stream_config(Config(), spec)  # a spec applied over a configuration it does not fit: which stream


def test_streams_file_detect_settings_are_taken_with_a_detector_from_the_run_or_the_stream(tmp_path):
    from realtime_sam.config import load_config

    path = tmp_path / "s.yaml"
    path.write_text("- {name: door, source: a.mp4, settings: {detect: {conf: 0.5}}}\n"
                    "- {name: yard, source: b.mp4, settings: {detect: {model: yolo11n.pt, conf: 0.4}}}\n")
    with pytest.raises(ConfigError, match=r"stream 1: settings: detect.conf is set but there is no detector"):
        load_streams_file(path)
    door, yard = load_streams_file(path, load_config(None, ["detect.model=yolo11n.pt"]))
    assert door.settings == {"detect": {"conf": 0.5}} and yard.settings["detect"]["conf"] == 0.4


def test_track_many_takes_the_runs_detect_settings_when_every_stream_names_a_detector():
    # The run's detect.conf with a detector named by each stream's settings: every engine has one
    # to use it; track_many refused it at the call, checking the run's settings alone.
    import realtime_sam

    own = {"detect": {"model": "yolo11n.pt"}}
    gen = realtime_sam.track_many([StreamSpec("door", "a.mp4", settings=own), StreamSpec("yard", "b.mp4", settings=own)],
                                  overrides=["detect.conf=0.5"])
    gen.close()  # not run: nothing is opened before the first next()
    with pytest.raises(ConfigError, match=r"^stream yard: detect.conf is set but there is no detector"):
        realtime_sam.track_many([StreamSpec("door", "a.mp4", settings=own), StreamSpec("yard", "b.mp4")],
                                overrides=["detect.conf=0.5"])


# ------------------------------------------------------------------ streams side by side (fake model, real files)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    from realtime_sam.testing.synthetic import standard_scene, write_video

    folder = tmp_path_factory.mktemp("multi_clips")
    return {
        "a": write_video(standard_scene(width=160, height=120, num_frames=12, seed=1), folder / "a.mp4"),
        "b": write_video(standard_scene(width=200, height=150, num_frames=9, seed=2), folder / "b.mp4"),
    }


def _fake_streams(specs, tmp_path, prompts=(), config=Config()):
    sched = EncodeScheduler(lambda images: [BoxRunner().embed(im) for im in images])

    def sinks_for(spec, source, cfg):
        return [open_sinks([f"jsonl:{tmp_path / (spec.name + '.jsonl')}"], fps=source.fps, config=cfg.output)]

    return open_streams(specs, config, prompts=prompts, runner_for=lambda spec: BoxRunner(), scheduler=sched, sinks_for=sinks_for)


def _jsonl_frames(path: Path) -> list[dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return [x for x in lines if "frame" in x]


def test_streams_share_one_encoder_and_keep_their_own_tracks_and_outputs(clips, tmp_path):
    specs = [
        StreamSpec("a", str(clips["a"]), prompts=(ObjectPrompt(box=(5, 5, 40, 40)),), settings={"engine": {"reencode_every": 4}}),
        StreamSpec("b", str(clips["b"])),
    ]
    seen: dict[str, list[int]] = {"a": [], "b": []}
    ids: dict[str, set[int]] = {"a": set(), "b": set()}
    with _fake_streams(specs, tmp_path, prompts=[ObjectPrompt(box=(60, 50, 100, 90))]) as multi:
        for r in multi:
            seen[r.stream].append(r.index)
            ids[r.stream] |= {t.track_id for t in r.tracks}
            assert r.result.frame.width == {"a": 160, "b": 200}[r.stream]
        status = {s.name: s for s in multi.status()}
    assert seen == {"a": list(range(12)), "b": list(range(9))}
    # Ids are per stream: each stream numbers its own objects from 1.
    assert ids == {"a": {1, 2}, "b": {1}}
    # The stream's own setting took effect: a re-encode every 4 frames (0, 4, 8) against the default 5
    # (0, 5); each file's last frame is encoded once more at its end (two-way's last anchor).
    assert status["a"].encodes == 4 and status["b"].encodes == 3
    assert all(s.state == "done" and s.error is None for s in status.values())
    assert multi.scheduler.order.count("a") == 4
    for name, n in (("a", 12), ("b", 9)):
        frames = _jsonl_frames(tmp_path / f"{name}.jsonl")
        assert [f["frame"] for f in frames] == list(range(n))


class _BreaksAfter:
    """A file-like source that fails (a damaged file) after ``n`` frames."""

    live = False
    fps = 25.0
    num_frames = None
    name = "breaks"

    def __init__(self, n: int) -> None:
        self.n, self.i = n, 0
        self.size = (160, 120)

    def read(self):
        if self.i >= self.n:
            raise SourceError("breaks: damaged after 3 frames")
        self.i += 1
        return Frame(self.i - 1, np.zeros((120, 160, 3), np.uint8), self.i / 25.0, time.monotonic())

    def close(self) -> None:
        pass


def test_a_failing_stream_ends_alone_and_the_others_finish(clips, tmp_path):
    good = _fake_streams([StreamSpec("a", str(clips["a"]), prompts=(ObjectPrompt(box=(5, 5, 40, 40)),))], tmp_path)
    sched = good.scheduler
    engine = Engine(SharedRunner(BoxRunner(), sched, "broken"))
    engine.add_object(ObjectPrompt(box=(5, 5, 40, 40)))
    sink = open_sinks([f"jsonl:{tmp_path / 'broken.jsonl'}"])
    bad = StreamRun("broken", _BreaksAfter(3), engine, Pipeline(_BreaksAfter(3), engine, sinks=[sink]))
    counts = {"a": 0, "broken": 0}
    with MultiPipeline([*good.runs, bad], sched) as multi:
        for r in multi:
            counts[r.stream] += 1
    assert counts == {"a": 12, "broken": 3}
    assert set(multi.errors) == {"broken"} and "damaged after 3 frames" in str(multi.errors["broken"])
    status = {s.name: s for s in multi.status()}
    assert status["broken"].state == "failed" and "damaged" in status["broken"].error
    assert status["a"].state == "done"
    assert [f["frame"] for f in _jsonl_frames(tmp_path / "broken.jsonl")] == [0, 1, 2]  # complete up to the fault
    assert len(_jsonl_frames(tmp_path / "a.jsonl")) == 12


def test_open_streams_closes_what_it_opened_when_a_source_fails(clips, tmp_path):
    specs = [StreamSpec("a", str(clips["a"])), StreamSpec("missing", str(tmp_path / "nope.mp4"))]
    with pytest.raises(SourceError):
        _fake_streams(specs, tmp_path)
    # Every source opens before any output: the first stream's output was never created.
    assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("what", ["box", "source"])
def test_a_stream_that_cannot_start_is_named(clips, tmp_path, what):
    # A --box that fits stream b's 200x150 frame and not a's 160x120 said only "box (165,10,190,40)
    # lies outside the 160x120 frame"; a source that did not open, only its path or URL.
    specs = [StreamSpec("door", str(clips["b"])), StreamSpec("yard", str(clips["a"]) if what == "box" else str(tmp_path / "nope.mp4"))]
    error, message = {
        "box": (PromptError, r"^stream yard: box \(165,10,190,40\) lies outside the 160x120 frame; give coordinates within"),
        "source": (SourceError, r"^stream yard: source not found: .*nope\.mp4; give "),
    }[what]
    with pytest.raises(error, match=message):
        _fake_streams(specs, tmp_path, prompts=[ObjectPrompt(box=(165, 10, 190, 40))])
    assert not (tmp_path / "door.jsonl").exists()


def test_open_streams_closes_what_it_opened_when_an_output_fails(clips, tmp_path):
    (tmp_path / "b.jsonl").mkdir()  # the second stream's output path is a folder
    specs = [StreamSpec("a", str(clips["a"])), StreamSpec("b", str(clips["b"]))]
    with pytest.raises(SinkError, match="is a folder"):
        _fake_streams(specs, tmp_path)
    # The first stream's sink was finalised: its file is a valid (header-only) JSONL.
    lines = (tmp_path / "a.jsonl").read_text().splitlines()
    assert len(lines) == 1 and "realtime_sam" in json.loads(lines[0])


def test_track_many_shares_one_model_and_tags_results(clips, checkpoint_path):
    import realtime_sam
    from realtime_sam.config import load_config
    from realtime_sam.model.loader import load_model

    cfg = load_config(None, [f"model.weights={checkpoint_path}", "model.device=cpu", "engine.reencode_every=1000"])
    model = load_model(cfg.model, progress=False)
    calls = []
    encode_batch = model.encode_batch
    model.encode_batch = lambda images, fmt: calls.append(len(images)) or encode_batch(images, fmt)
    sources = [str(clips["a"]), StreamSpec("second", str(clips["b"]), prompts=(ObjectPrompt(box=(10, 10, 60, 60)),))]
    got: dict[str, list[int]] = {}
    for r in realtime_sam.track_many(sources, config=cfg, model=model, prompts=[ObjectPrompt(box=(5, 5, 40, 40))]):
        assert isinstance(r, realtime_sam.StreamResult)
        got.setdefault(r.stream, []).append(r.index)
        ids = [t.track_id for t in r.tracks]
        # Per-stream ids: "a" has the shared prompt (1); "second" its own (1), then the shared one (2).
        if r.index == 0:
            assert ids == ([1] if r.stream == "a" else [1, 2])
        assert set(ids) <= ({1} if r.stream == "a" else {1, 2})
        assert r.encode_age_s is not None and r.encode_age_s >= 0
    assert got == {"a": list(range(12)), "second": list(range(9))}
    # One encode per stream at its start (re-encode interval 1000) and one at its end (two-way's
    # anchor for the frames since), one image at a time on the CPU.
    assert calls == [1, 1, 1, 1]


def test_an_endless_live_stream_beside_a_file_can_be_stopped_alone(clips, tmp_path):
    from realtime_sam.testing.fakes import LoopingSceneSource
    from realtime_sam.testing.synthetic import standard_scene

    multi = _fake_streams([StreamSpec("a", str(clips["a"]), prompts=(ObjectPrompt(box=(5, 5, 40, 40)),))], tmp_path)
    live_source = LoopingSceneSource(standard_scene(160, 120, num_frames=10), fps=30)
    engine = Engine(SharedRunner(BoxRunner(), multi.scheduler, "live"))
    engine.add_object(ObjectPrompt(box=(5, 5, 40, 40)))
    live = StreamRun("live", live_source, engine, Pipeline(live_source, engine))
    counts = {"a": 0, "live": 0}
    with MultiPipeline([*multi.runs, live], multi.scheduler) as both:
        for r in both:
            counts[r.stream] += 1
            if r.stream == "live" and counts["live"] == 5:
                both.stop_stream("live")
        status = {s.name: s for s in both.status()}
    assert counts["a"] == 12 and 5 <= counts["live"] <= 7  # at most what was already in flight after the stop
    assert status["live"].live and not status["a"].live
    assert status["live"].state == "done" and status["live"].error is None and both.errors == {}
    assert status["live"].encodes >= 1


class _FailsOnClose:
    """A sink whose close fails, as a full disk fails a file's last write."""

    def write(self, result) -> None:
        pass

    def close(self) -> None:
        raise OSError("no space left on device")


@pytest.mark.parametrize("closing", ["fine", "fails"])
def test_a_stop_that_withdraws_a_waiting_encode_ends_that_stream_cleanly(clips, tmp_path, closing):
    # Two streams on one encoder: one encodes (held), the other waits for it. The stop withdraws
    # the waiting request; that stream ends because it was stopped, not because it failed. A sink
    # that then fails as the outputs close is still that stream's failure, not hidden by the stop.
    enc = _GatedEncoder()
    sched = EncodeScheduler(lambda images: enc(images) and [BoxRunner().embed(im) for im in images])

    def sinks_for(spec, source, cfg):
        sinks = [open_sinks([f"jsonl:{tmp_path / (spec.name + '.jsonl')}"], fps=source.fps, config=cfg.output)]
        return sinks + ([_FailsOnClose()] if closing == "fails" else [])

    box = (ObjectPrompt(box=(5, 5, 40, 40)),)
    specs = [StreamSpec("a", str(clips["a"]), prompts=box), StreamSpec("b", str(clips["b"]), prompts=box)]
    multi = open_streams(specs, Config(), runner_for=lambda spec: BoxRunner(), scheduler=sched, sinks_for=sinks_for)
    with multi:
        _wait_until(lambda: enc.calls and len(sched._waiting) == 1)
        multi.stop()
        enc.gate.set()
        assert len(list(multi)) <= 1  # the held encode's frame, at most: every stream was stopped
        status = {s.name: s for s in multi.status()}
    if closing == "fails":
        assert {name: str(e) for name, e in multi.errors.items()} == {n: "no space left on device" for n in ("a", "b")}
        return
    assert multi.errors == {}
    assert all(s.state == "done" and s.error is None for s in status.values()), status
    for name in ("a", "b"):
        assert (tmp_path / f"{name}.jsonl").read_text().endswith("\n")  # finalised (header only)


def test_an_exception_raised_in_the_polling_thread_is_the_runs_not_a_streams(clips, tmp_path):
    # A second Ctrl-C raises SystemExit (KeyboardInterrupt without a handler) in whatever the main
    # thread is doing, most often waiting in poll(): it ends the run and fails no stream.
    import signal

    enc = _GatedEncoder()
    sched = EncodeScheduler(lambda images: enc(images) and [BoxRunner().embed(im) for im in images])
    specs = [StreamSpec("a", str(clips["a"]), prompts=(ObjectPrompt(box=(5, 5, 40, 40)),))]
    multi = open_streams(specs, Config(), runner_for=lambda spec: BoxRunner(), scheduler=sched)

    def insist(signum, _frame):
        raise SystemExit(130)

    previous = signal.signal(signal.SIGALRM, insist)
    try:
        with multi:
            signal.setitimer(signal.ITIMER_REAL, 0.3)  # while poll() waits for a result the held encode holds back
            with pytest.raises(SystemExit):
                multi.poll(5.0)
            enc.gate.set()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert multi.errors == {}
    assert [s.state for s in multi.status()] != ["failed"]


def test_track_many_raises_a_streams_failure_after_the_others_ran_to_their_end(clips, tmp_path, checkpoint_path):
    # A stream whose file was damaged part-way ended alone, and track_many then finished as if
    # nothing had happened (882 of 900 frames of a damaged clip, no word), where track() raises.
    import realtime_sam
    from realtime_sam.errors import StreamInterrupted
    from realtime_sam.output.sinks import JsonlSink
    from realtime_sam.testing.synthetic import standard_scene, write_video

    bad = write_video(standard_scene(width=160, height=120, num_frames=40), tmp_path / "bad.mp4", faststart=True)
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    overrides = [f"model.weights={checkpoint_path}", "model.device=cpu", "engine.reencode_every=1000"]
    got: dict[str, list[int]] = {}
    sinks = {"bad": [JsonlSink(tmp_path / "bad.jsonl")]}
    with pytest.raises(realtime_sam.StreamsFailed, match=r"^1 stream\(s\) failed \(bad: .*bad\.mp4 is damaged") as info:
        for r in realtime_sam.track_many([str(clips["a"]), str(bad)], overrides=overrides, sinks=sinks):
            got.setdefault(r.stream, []).append(r.index)
    assert list(info.value.errors) == ["bad"] and isinstance(info.value.errors["bad"], StreamInterrupted)
    assert isinstance(info.value.__cause__, StreamInterrupted)
    # The good stream ran to its end; the damaged one's frames up to the damage were given and saved.
    assert got["a"] == list(range(12))
    assert 0 < len(got["bad"]) < 40 and got["bad"] == list(range(len(got["bad"])))
    lines = (tmp_path / "bad.jsonl").read_text().splitlines()
    assert len(lines) == 1 + len(got["bad"])


def test_two_streams_of_one_name_are_refused_before_anything_opens(clips, tmp_path):
    # track_many(["a.mp4", StreamSpec("a", "b.mp4")]): the plain source is named "a" too. It was
    # refused (a ValueError) only after every source had opened and the model had loaded, and the
    # shared encoder's thread was left running.
    import realtime_sam

    before = set(threading.enumerate())
    sources = [str(clips["a"]), StreamSpec("a", str(clips["b"]))]
    with pytest.raises(ConfigError, match=r"^stream name\(s\) 'a' used twice .*; give each StreamSpec its own name$"):
        realtime_sam.track_many(sources, overrides=["model.weights=nope.pt"])
    with pytest.raises(ConfigError, match="used twice"):
        _fake_streams([StreamSpec("a", str(clips["a"])), StreamSpec("a", str(clips["b"]))], tmp_path)
    assert not list(tmp_path.iterdir())
    assert set(threading.enumerate()) == before


_NO_MODEL = ["model.weights=nope.pt"]  # every refusal below comes before the model would load


@pytest.mark.parametrize(
    "sources, kwargs, error, message",
    [
        # Each of these ran: [] loaded the model and yielded nothing; a path not in a list was read
        # letter by letter ("/" as an image folder); a dict or tuple became its text, "source not
        # found: {'name': ...}", after other streams had opened.
        ([], {}, ConfigError, r"^track_many needs at least one source; got an empty list$"),
        ("a", {}, ConfigError, r"^track_many takes a list of sources; got str '.*a\.mp4': give track_many\(\[source, \.\.\.\]\)"),
        (["a", {"name": "x", "source": "b"}], {}, ConfigError, r"^sources\[1\] is a dict .*; give a file, URL, .* or StreamSpec\("),
        (["a", None], {}, ConfigError, r"^sources\[1\] is a NoneType \(None\); give "),
        # StreamSpec's output/save_masks (read from a --sources file by the command) were ignored: no file.
        ([StreamSpec("door", "a", save_masks="out/{name}.jsonl")], {}, ConfigError,
         r"^stream door: StreamSpec output/save_masks are for the command's --sources file; with track_many give sinks="),
        # A stream's own bad prompt was an AttributeError at the first next(), after its source opened.
        ([StreamSpec("door", "a", prompts=("box",))], {}, PromptError, r"^stream door: prompts\[0\] must be an ObjectPrompt"),
        # One prompt, not a list of them: a raw TypeError ("not iterable").
        (["a"], {"prompts": ObjectPrompt(box=(1, 1, 9, 9))}, PromptError,
         r"^prompts takes a list of ObjectPrompt; got one: give prompts=\[ObjectPrompt\(\.\.\.\)\]$"),
        ([StreamSpec("door", "a", prompts=ObjectPrompt(box=(1, 1, 9, 9)))], {}, PromptError,
         r"^stream door: prompts takes a list of ObjectPrompt; got one"),
        # One sink, or a path, not in a list: a TypeError at the first next(), or the stream failing on
        # "'str' object has no attribute 'write'" with a warning per close.
        (["a"], {"sinks": {"a": "SINK"}}, ConfigError, r"^sinks\['a'\] is one sink; give a list: sinks=\{'a': \[sink\]\}$"),
        (["a"], {"sinks": {"a": "out.mp4"}}, ConfigError, r"^sinks\['a'\] is a str; give a list of sinks, e.g. "),
        (["a"], {"sinks": {"a": ["out.mp4"]}}, ConfigError, r"^sinks\['a'\]\[0\] is a str \('out.mp4'\), not a sink; make one with make_sink"),
    ],
    ids=["empty", "not-a-list", "dict", "none", "spec-output", "spec-prompt", "one-prompt", "spec-one-prompt", "one-sink", "sink-path", "path-in-list"],
)
def test_track_many_refuses_bad_arguments_at_the_call(clips, tmp_path, sources, kwargs, error, message):
    import realtime_sam

    real = {"a": str(clips["a"]), "b": str(clips["b"])}
    if isinstance(sources, str):
        sources = real[sources]
    else:
        sources = [real.get(s, s) if isinstance(s, str) else s for s in sources]
        sources = [replace(s, source=real[s.source]) if isinstance(s, StreamSpec) else s for s in sources]
    made = None
    if kwargs.get("sinks", {}).get("a") == "SINK":
        made = realtime_sam.make_sink("jsonl", tmp_path / "a.jsonl")
        kwargs = {"sinks": {"a": made}}
    before = set(threading.enumerate())
    with pytest.raises(error, match=message) as info:
        realtime_sam.track_many(sources, overrides=_NO_MODEL, **kwargs)  # at the call, not at the first next()
    assert "\n" not in str(info.value)
    assert set(threading.enumerate()) == before
    if made is not None:  # the sink refused was discarded: no empty file left
        assert not (tmp_path / "a.jsonl").exists()


@pytest.mark.parametrize("why", ["missing-source", "sinks-for-no-stream", "same-name", "bad-prompt"])
def test_track_many_that_cannot_start_removes_the_outputs_made_for_it(clips, tmp_path, why):
    # Its sinks were left as they were made: open, and their files empty (a 0-byte .mp4 and .jsonl),
    # where track() discards them, as README says of a run that cannot start.
    import realtime_sam

    out = tmp_path / "out"
    sinks = {"a": [realtime_sam.make_sink("video", out / "a.mp4"), realtime_sam.make_sink("jsonl", out / "a.jsonl")]}
    sources: list = [str(clips["a"])]
    prompts = []
    if why == "missing-source":
        sources.append(str(tmp_path / "nope.mp4"))
    elif why == "sinks-for-no-stream":
        sinks["a.mp4"] = [realtime_sam.make_sink("jsonl", out / "other.jsonl")]
    elif why == "same-name":
        sources.append(StreamSpec("a", str(clips["b"])))
    else:
        prompts = [ObjectPrompt(box=(1, 2, 3))]
    before = set(threading.enumerate())
    with pytest.raises((SourceError, ConfigError, PromptError)):
        for _ in realtime_sam.track_many(sources, overrides=_NO_MODEL, sinks=sinks, prompts=prompts):
            pass
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert set(threading.enumerate()) == before


@pytest.mark.parametrize("how", ["one-sink", "one-path", "inside-open-sinks"])
def test_track_many_refuses_two_streams_writing_one_output(clips, tmp_path, how):
    # One sink under two streams got both streams' frames interleaved (frames 0, 1, 2, 0, 3, ...)
    # and failed the stream that closed it second ("already closed"); two sinks of one path ran
    # without a word and left one stream's video (60 frames of 120 yielded). The command refuses both.
    import realtime_sam

    out = tmp_path / "out"
    if how == "one-sink":
        shared = realtime_sam.make_sink("jsonl", out / "both.jsonl")
        sinks = {"a": [shared], "b": [shared]}
        message = r"^sinks\['a'\]\[0\] and sinks\['b'\]\[0\] are one sink; make one sink per stream$"
    elif how == "one-path":
        sinks = {"a": [realtime_sam.make_sink("jsonl", out / "both.jsonl")], "b": [realtime_sam.make_sink("jsonl", out / "both.jsonl")]}
        message = r"^sinks\['a'\]\[0\] and sinks\['b'\]\[0\] both write .*both\.jsonl; give each its own path$"
    else:
        sinks = {
            "a": [realtime_sam.open_sinks([f"jsonl:{out / 'a.jsonl'}", f"video:{out / 'both.mp4'}"])],
            "b": [realtime_sam.make_sink("video", out / "both.mp4")],
        }
        message = r"^sinks\['a'\]\[0\]\.sinks\[1\] and sinks\['b'\]\[0\] both write .*both\.mp4; give each its own path$"
    with pytest.raises(ConfigError, match=message):
        realtime_sam.track_many([str(clips["a"]), str(clips["b"])], overrides=_NO_MODEL, sinks=sinks)
    assert not out.exists()  # the run never started: what the sinks made is removed


def test_track_many_takes_a_numpy_integer_as_a_webcam_index(clips):
    # track_many([np.int64(0)]) (indices from np.arange, a numpy array's items) opened camera 0 before
    # its arguments were checked; the new check refused it: "sources[0] is a int64 ...; give a ...
    # webcam index", of a webcam index.
    import realtime_sam
    from realtime_sam.app.multi import _specs_for

    realtime_sam.track_many([np.int64(0), str(clips["a"])], overrides=_NO_MODEL)  # no error at the call
    specs = _specs_for(np.arange(2))
    assert [(s.name, s.source, type(s.source)) for s in specs] == [("cam0", 0, int), ("cam1", 1, int)]
    with pytest.raises(ConfigError, match=r"^sources\[0\] is a bool"):
        _specs_for([True])
