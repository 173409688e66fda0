"""``scripts/benchmark.py``: its oracle decoder, the tracking-quality score, the engine's frame rate
(on a fake clock), bad input refused before the run, and one tiny run of the script.

The oracle rounds stand a perfect decoder in for SAM (answers come from the
synthetic clip's ground truth), so what they score is the engine itself.
Here the network under the oracle is a stand-in that costs nothing; the
last test runs the whole script once with the real model on a tiny clip.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from script_loader import load_script

from realtime_sam.capture.sources import open_source
from realtime_sam.model.runners import low_res_to_masks
from realtime_sam.model.transforms import preprocess_shape

bench = load_script("benchmark")


class FreeRunner:
    """A network that costs nothing and knows nothing: empty logits, real upsampling."""

    def __init__(self):
        self.encoded = 0
        self.embedded = 0
        self._shape = None

    def encode(self, image_bgr):
        self.encoded += 1
        self._shape = image_bgr.shape[:2]

    def embed(self, image_bgr):
        self.embedded += 1
        return image_bgr.shape[:2]

    def use(self, embedding):
        self._shape = embedding

    def decode(self, points, labels, boxes, mask_input, multimask):
        n, c = (len(boxes) if boxes is not None else len(points)), (3 if multimask else 1)
        return np.zeros((n, c, 256, 256), np.float32), np.zeros((n, c), np.float32)

    def masks(self, low_res, size):
        return low_res_to_masks(low_res, preprocess_shape(*self._shape, 1024), 1024, size)


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 320x240, 40-frame standard clip with 2 objects: (path, boxes at frame 0, scene, digests)."""
    path, boxes, scene = bench.make_clip(tmp_path_factory.mktemp("bench"), (320, 240), 40, 2)
    return path, boxes, scene, bench.clip_digests(path)


def _frames(path):
    source = open_source(path)
    try:
        out = []
        while (f := source.read()) is not None:
            out.append(f.image)
        return out
    finally:
        source.close()


def test_every_decoded_frame_is_recognised(clip):
    path, _, _, index_of = clip
    frames = _frames(path)
    assert len(frames) == 40 and len(index_of) == 40
    assert [index_of[bench.frame_digest(f)] for f in frames] == list(range(40))


def test_the_oracle_answers_from_the_frame_that_was_encoded(clip):
    path, _, scene, index_of = clip
    frames = _frames(path)
    inner = FreeRunner()
    oracle = bench.OracleRunner(inner, scene, index_of)
    _, gt5 = scene.render(5)
    _, gt30 = scene.render(30)
    box5 = np.array([bench.mask_to_box(gt5[1])])

    oracle.encode(frames[5])
    low, iou = oracle.decode(None, None, box5, None, False)
    assert inner.encoded == 1 and low.shape == (1, 1, 256, 256) and iou.tolist() == [[pytest.approx(0.95)]]
    assert bench._iou(oracle.masks(low[:, 0], (240, 320))[0], gt5[1]) > 0.9

    # Background mode: embed on one frame, make it current later.
    embedding = oracle.embed(frames[30])
    assert inner.embedded == 1
    oracle.use(embedding)
    point = np.array([[scene.center(30, 2)]])
    low, iou = oracle.decode(point, np.ones((1, 1)), None, None, True)
    assert low.shape == (1, 3, 256, 256)
    assert bench._iou(oracle.masks(low[:, 0], (240, 320))[0], gt30[2]) > 0.9

    # A box over nothing: an empty, low-scored answer, as a good decoder would give.
    low, iou = oracle.decode(None, None, np.array([[0.0, 0.0, 4.0, 4.0]]), None, False)
    assert not oracle.masks(low[:, 0], (240, 320)).any() and iou[0, 0] < 0.5

    with pytest.raises(RuntimeError, match="not in the clip"):
        oracle.encode(np.zeros_like(frames[0]))
    with pytest.raises(TypeError, match="embed"):
        bench.OracleRunner(object(), scene, index_of)


@pytest.mark.parametrize("background", [False, True])
def test_quality_rounds_score_the_engine_against_the_ground_truth(clip, background):
    path, boxes, scene, index_of = clip
    ceiling = bench.oracle_ceiling(scene, 40).summary()
    assert 0.9 < ceiling["mean"] < 1.0 and ceiling["recall"] == 1.0

    oracle = bench.OracleRunner(FreeRunner(), scene, index_of)
    kept, landed = [], []
    timing = bench.RunTiming()
    bench.run_engine(oracle, path, boxes, 4, timing, background=background, keep=kept, landed=landed)
    assert [i for i, _ in kept] == list(range(40))
    assert landed == sorted(set(landed)) and (background or set(range(0, 40, 4)) <= set(landed))
    assert len(landed) >= 6, landed  # encodes land all along (10 every 4 frames; late ones on a loaded machine)
    q = bench.Quality(fps=timing.fps[-1], encodes=timing.encodes[-1])
    bench.score_quality(scene, kept, q)
    assert len(q.ious) == 80  # 2 objects, visible in every frame
    s = q.summary()
    # Object 1 passes behind object 2 mid-clip (frames ~16-24): only those frames may score low.
    # Masks from the first frame on: in background mode, until the prompts' encode lands, the
    # objects' first looks (GrabCut in their boxes: 0.96-0.99 on these flat shapes).
    start = 2 * next(i for i, masks in kept if masks)
    assert start == 0
    assert q.ious[:start] == [0.0] * start and q.shown == q.ious[start:]
    assert s["mean_shown"] == pytest.approx(float(np.mean(q.ious[start:])))
    # Judged on the frames shown: how late the first background encode lands depends on the
    # machine's load (a loaded one left 4 of 40 frames without masks, and the mean over all
    # frames under 0.8 for the engine before as after a change).
    assert s["mean_shown"] > 0.8 and float(np.mean(np.asarray(q.shown) >= 0.5)) > 0.85, s
    assert s["mean"] == pytest.approx(float(np.mean(q.ious)))
    # In background mode the object coming out from behind is taken back when the
    # encode after it lands (frame 29 here, 26 on the calling thread); dense flow
    # cannot grow a mask from the sliver the last decode saw.
    back = 60 if background else 52
    # A first background encode that lands late (a cold process: frame 4) gives masks replayed
    # through the frames kept since, a few frames of flow drift (0.86): corrected by the next.
    settle = 2 * landed[1] if background else start
    # Nor are the frames before a landing that came late judged so closely: on a loaded machine
    # a background encode may land a frame or two late (14 instead of 13), and the masks of the
    # frames before it were carried by flow from an earlier encode (0.87 and 0.84 at frames 12
    # and 13, object 1 nearing object 2). On the calling thread none is late.
    late = {f for a, b in zip(landed, landed[1:]) if b - a > 4 for f in range(a + 1, b)}
    late |= set(range(landed[-1] + 4, 40))
    assert len([f for f in late if f < 14 or f >= 30]) <= 8 and (background or not late), (landed, late)
    judged = [v for i, v in enumerate(q.ious) if (settle <= i < 28 or i >= back) and i // 2 not in late]
    assert min(q.ious[start:28]) > 0.8 and min(judged) > 0.9, ([round(v, 2) for v in q.ious], landed)
    assert s["mean"] <= ceiling["mean"] + 0.02
    # The stand-in's own work is counted apart, and leaving it out can only raise the frame rate.
    assert oracle.own_s > 0 and timing.fps_net[-1] >= timing.fps[-1]

    # A second round on the same oracle: the reader again holds frame 1 back until the
    # prompts' encode is done, so the round times an engine that is tracking.
    again = bench.RunTiming()
    bench.run_engine(oracle, path, boxes, 4, again, background=background)
    # (Two objects; fewer masks where the first encode lands late or object 1 is behind.)
    assert again.masks_per_frame[-1] > 1.25 and again.first_mask_s[-1] >= 0.0

    # Take the second object's track away after frame 9: those frames score 0.
    lost_id = max(next(masks for _, masks in kept if masks))
    dropped = [(i, {tid: m for tid, m in masks.items() if i < 10 or tid != lost_id}) for i, masks in kept]
    q2 = bench.Quality()
    bench.score_quality(scene, dropped, q2)
    assert q2.ious.count(0.0) >= 30 and q2.summary()["mean"] < s["mean"] - 0.3


@pytest.mark.parametrize("propagation", ["dense", "flow", "none"])
def test_engine_rounds_move_masks_the_way_asked(clip, propagation, monkeypatch):
    # On a GPU the engine encodes every frame and the gpu preset runs no flow, which costs CPU
    # time on every frame: the benchmark's GPU figures must be measured that way.
    from realtime_sam.tracking import dense_flow, propagation as sparse

    calls = {"dense": 0, "flow": 0}
    dis, lk = dense_flow.cv2.DISOpticalFlow_create, sparse.cv2.calcOpticalFlowPyrLK

    def counted(kind, fn):
        def call(*args, **kwargs):
            calls[kind] += 1
            return fn(*args, **kwargs)
        return call

    monkeypatch.setattr(dense_flow.cv2, "DISOpticalFlow_create", counted("dense", dis))
    monkeypatch.setattr(sparse.cv2, "calcOpticalFlowPyrLK", counted("flow", lk))
    path, boxes, scene, index_of = clip
    kept = []
    timing = bench.RunTiming()
    bench.run_engine(bench.OracleRunner(FreeRunner(), scene, index_of), path, boxes, 1, timing, keep=kept, propagation=propagation)
    q = bench.Quality()
    bench.score_quality(scene, kept, q)
    # (Dense flow checks small objects with sparse flow too.)
    assert (calls["dense"] > 0) == (propagation == "dense") and (calls["flow"] > 0) == (propagation != "none"), calls
    # Every frame decoded: the masks follow with or without flow (object 1 passes behind 2).
    assert q.summary()["mean"] > 0.85, q.summary()


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])
def test_engine_rounds_use_the_dis_preset_asked(clip, preset, monkeypatch):
    # --flow-preset times dense flow at a cheaper DIS preset (README, the record's ultrafast entry).
    from realtime_sam.tracking import dense_flow

    made = []
    dis = dense_flow.cv2.DISOpticalFlow_create

    def create(p):
        made.append(p)
        return dis(p)

    monkeypatch.setattr(dense_flow.cv2, "DISOpticalFlow_create", create)
    path, boxes, scene, index_of = clip
    kept = []
    bench.run_engine(
        bench.OracleRunner(FreeRunner(), scene, index_of), path, boxes, 1, bench.RunTiming(), keep=kept, flow_preset=preset
    )
    want = {"ultrafast": dense_flow.cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, "medium": dense_flow.cv2.DISOPTICAL_FLOW_PRESET_MEDIUM}
    # The engine's own flow (the first made) has the preset; the key flow is always ultrafast.
    assert made and made[0] == want[preset], made
    q = bench.Quality()
    bench.score_quality(scene, kept, q)
    assert q.summary()["mean"] > 0.85, q.summary()


def test_a_bad_flow_preset_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--flow-preset", "slow"])
    assert exc.value.code == 2
    assert "--flow-preset" in capsys.readouterr().err


def test_the_hard_scene_refuses_more_objects_than_it_has(capsys):
    # It has 5: 7 would track 5 under a header saying 7.
    with pytest.raises(SystemExit) as exc:
        bench.main(["--scene", "hard", "--objects", "7"])
    assert exc.value.code == 2
    assert "--scene hard has at most 5 objects" in capsys.readouterr().err
    assert bench.BenchConfig(scene="hard", objects=5).objects == 5


class _FakeClock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize(
    "first_mask_at, fps",
    [
        (0, 4 / 0.4),  # 5 results 0.1 s apart, masks from the first: 4 frames after it in 0.4 s
        (2, 2 / 0.2),
        (4, float("nan")),  # masks only on the last result: no rate (it used to read 1 frame / ~0 s)
    ],
)
def test_engine_fps_counts_the_frames_after_the_first_mask(first_mask_at, fps, monkeypatch):
    """The rate once tracked: frames after the first masked result over the time they took, on a fake clock."""
    from types import SimpleNamespace

    clock = _FakeClock()

    class Pipe:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            clock.t += 5.0  # the pipeline's shutdown: not frame time

        def __iter__(self):
            for i in range(5):
                clock.t += 0.1
                mask = np.full((4, 4), i >= first_mask_at)
                track = SimpleNamespace(state=bench.TrackState.CONFIRMED, mask=mask)
                yield SimpleNamespace(encoded=False, index=i, tracks=[track], timings={"total": 100.0})

    monkeypatch.setattr(bench.time, "perf_counter", clock)
    monkeypatch.setattr(bench, "Pipeline", Pipe)
    monkeypatch.setattr(bench, "Engine", lambda *a, **k: SimpleNamespace(add_object=lambda p: None))
    monkeypatch.setattr(bench, "open_source", lambda clip: SimpleNamespace(close=lambda: None))
    timing = bench.RunTiming()
    bench.run_engine(object(), "clip.mp4", [(0, 0, 4, 4)], 5, timing)  # type: ignore[arg-type]
    if np.isnan(fps):
        assert np.isnan(timing.fps[-1]) and np.isnan(timing.fps_net[-1])
    else:
        assert timing.fps[-1] == pytest.approx(fps) and timing.fps_net[-1] == pytest.approx(fps)
    assert timing.first_mask_s[-1] == pytest.approx(0.1 * (first_mask_at + 1))


@pytest.mark.parametrize(
    "gaps, fps",
    [
        # A 6-frame clip played as a 30 fps camera: the first mask comes with the prompts' encode,
        # 1.3 s in, the clip long over; the one frame kept meanwhile is done 10 ms later. That
        # single interval was reported as 100 fps processed (60.9 and 117 seen in real runs).
        ([1.3, 0.01], float("nan")),
        ([1.3, 0.01, 0.033, 0.033], float("nan")),  # 76 ms: still too short to hold a rate
        # A normal-length round: 40 frames 1/25 s apart after the first mask. Its rate is as before.
        ([1.3] + [0.04] * 40, 25.0),
    ],
)
def test_live_fps_is_a_rate_over_a_second_or_more(gaps, fps, monkeypatch):
    """Live rounds: frames after the first mask over the time they took, '-' (NaN) when that is under a second."""
    from types import SimpleNamespace

    clock = _FakeClock()

    class Pipe:
        def __init__(self, *a, **k):
            assert k["config"].realtime

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            clock.t += 5.0

        def __iter__(self):
            for i, gap in enumerate(gaps):
                clock.t += gap
                track = SimpleNamespace(state=bench.TrackState.CONFIRMED, mask=np.ones((4, 4), bool))
                yield SimpleNamespace(encoded=i == 0, index=i, tracks=[track], timings={"total": 1e3 * gap})

    monkeypatch.setattr(bench.time, "perf_counter", clock)
    monkeypatch.setattr(bench, "Pipeline", Pipe)
    monkeypatch.setattr(bench, "Engine", lambda *a, **k: SimpleNamespace(add_object=lambda p: None))
    monkeypatch.setattr(bench, "open_source", lambda clip: SimpleNamespace(close=lambda: None))
    timing = bench.RunTiming()
    bench.run_engine(object(), "clip.mp4", [(0, 0, 4, 4)], 5, timing, realtime=True)  # type: ignore[arg-type]
    if np.isnan(fps):
        assert np.isnan(timing.fps[-1]), timing.fps
    else:
        assert timing.fps[-1] == pytest.approx(fps)
    assert timing.first_mask_s[-1] == pytest.approx(1.3)


@pytest.mark.parametrize(
    "args, message",
    [
        # A negative count ran no naive frame, and the report divided by its 0 fps after the whole run.
        (["--naive-frames", "-1"], "--naive-frames must be >= 0"),
        # The JSON is written at the end: a folder that is not there used to cost the whole run.
        (["--json", "/nonexistent/dir/b.json"], "--json /nonexistent/dir/b.json: no folder /nonexistent/dir"),
        (["--json", "/tmp"], "--json /tmp is a folder"),
        (["--objects", "0"], "--objects must be in 1..8, got 0"),
        (["--frames", "-3"], "--frames must be >= 2 (the clip's length), got -3"),
        (["--repeats", "0"], "--repeats and --model-repeats must be >= 1, got 0 and 3"),
        (["--scene", "easy"], "argument --scene: invalid choice: 'easy'"),
        (["--reencode", "0"], "--reencode needs one or more integers >= 1"),
        (["--background", "x"], "expected comma-separated integers such as 1,5,15, got 'x'"),
        (["--size", "10x10"], "--size must be at least 64x64"),
        # The model's settings were checked only as it loaded, after "loading the model ..." had
        # been printed (and a random checkpoint written): now by the realtime-sam command's own check.
        (["--backend", "nope"], "model.backend must be one of auto, eager, torch, onnxruntime, openvino, not 'nope'"),
        (["--precision", "fp8"], "model.precision must be one of auto, fp32, fp16, bf16, not 'fp8'"),
        (["--device", "cpu", "--precision", "fp16"], "precision 'fp16' is not supported on the CPU"),
        (["--device", "cpu", "--backend", "onnxruntime", "--precision", "bf16"], "backend 'onnxruntime' runs in fp32 only"),
        (["--weights", "/nonexistent/weights.pt"], "weights file not found: /nonexistent/weights.pt"),
    ],
)
def test_bad_input_is_refused_before_the_run(args, message, capsys, monkeypatch):
    # One line, as the other scripts' bad input; argparse's usage block (ten lines) used to come first.
    monkeypatch.setattr(bench, "run", lambda *a, **k: pytest.fail("the benchmark ran"))
    with pytest.raises(SystemExit) as exc:
        bench.main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("error: ") and message in err, err


@pytest.mark.slow
def test_the_script_runs_end_to_end_and_prints_every_table(tmp_path, capsys):
    out = tmp_path / "bench.json"
    rc = bench.main([
        "--device", "cpu", "--frames", "4", "--repeats", "1", "--model-repeats", "1", "--reencode", "2",
        "--background", "2", "--naive-frames", "1", "--objects", "1", "--size", "160x120", "--json", str(out),
        "--propagation", "flow",
    ])
    assert rc == 0
    report = capsys.readouterr().out
    for heading in ("**Model**", "**End to end**", "**Engine stages**", "**Live**"):
        assert heading in report
    assert "propagation `flow`" in report and "FPS less stand-in" in report
    # Strict JSON (jq, JavaScript): a figure there is none of is null, not NaN. The ceiling row
    # has no frame rate; it was written as NaN, which strict parsers refuse.
    raw = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{out} holds {c}"))
    assert raw["live"]["ceiling"]["fps"] is None and raw["live"]["ceiling"]["mean"] == 1.0
    assert set(raw["end_to_end"]) == {"naive", "2", "bg2"}
    assert set(raw["live"]) == {"ceiling", "2", "bg2"}
    assert raw["end_to_end"]["2"]["encodes"][0] >= 2 and raw["matmul_gflops"] > 0
    assert raw["end_to_end"]["2"]["fps_net"][0] >= raw["end_to_end"]["2"]["fps"][0] and raw["end_to_end"]["naive"]["fps_net"] == []
    # The engine's masks are scored (the oracle's); in a 4-frame clip objects cross the frame in
    # strides no flow follows, so only the range is checked here (the tests above check the values).
    assert 0.0 < raw["end_to_end"]["2"]["quality"]["mean"] <= 1.0 and raw["end_to_end"]["naive"]["quality"] is None
    for name in ("2", "bg2"):
        assert 0.0 < raw["live"][name]["processed"] <= 1.0 and 0.0 <= raw["live"][name]["mean"] <= 1.0
