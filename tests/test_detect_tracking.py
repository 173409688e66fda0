"""Detector-prompted tracking: ``--detect MODEL --classes ... --detect-every K``.

Exact behaviour with a fixed-box detector (boxes from the synthetic scene's
ground truth, or constant) and the ground-truth / box runners; the
background worker through the real pipeline on a real video file; an
Ultralytics YOLO built from its bundled YAML for the integration.
"""

from __future__ import annotations

import importlib.util

import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest

from realtime_sam.app.cli import main
from realtime_sam.config import Config, load_config
from realtime_sam.output.mots import MotsSink
from realtime_sam.output.render import Renderer
from realtime_sam.output.rle import mask_to_box
from realtime_sam.testing.fakes import BoxRunner, FixedBoxDetector, GroundTruthRunner
from realtime_sam.testing.synthetic import standard_scene, write_video
from realtime_sam.tracking.detection import DetectConfig, class_numbers
from realtime_sam.tracking.engine import Engine, EngineConfig
from realtime_sam.tracking.tracks import TrackerConfig
from realtime_sam.types import Frame, ObjectPrompt, TrackState

NAMES = {0: "person", 1: "bicycle", 2: "car"}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def _scene_engine(frames: int, detect: DetectConfig, class_of=lambda oid: 0, **engine):
    """Two objects that do not meet in the first ``frames`` (< 30) frames; the detector sees the ground truth of the frame shown."""
    scene = standard_scene(320, 240, num_frames=100, num_objects=2)
    runner = GroundTruthRunner(scene)

    def boxes(image):
        return [mask_to_box(m) for m in scene.render(runner.current)[1].values()]

    ids = list(scene.render(0)[1])
    detector = FixedBoxDetector(boxes, [class_of(oid) for oid in ids], NAMES)
    eng = Engine(
        runner, EngineConfig(**{"reencode_every": 5, **engine}), detector=detector, detect_config=detect,
        tracker_config=TrackerConfig(min_hits=2),
    )
    return scene, runner, detector, eng


def _run(scene, runner, engine, frames):
    out = []
    for i in frames:
        runner.current = i
        img, gt = scene.render(i)
        out.append((engine.process(Frame(i, img, i / 25.0, time.monotonic())), gt))
    return out


def test_detections_start_labelled_tracks_and_redetections_never_add_ids():
    scene, runner, detector, engine = _scene_engine(12, DetectConfig(every_k_frames=3), class_of=lambda oid: 2 if oid == 2 else 0)
    results = _run(scene, runner, engine, range(12))
    assert detector.calls == 4  # frames 0, 3, 6, 9
    first, _ = results[0]
    assert sorted(t.track_id for t in first.tracks) == [1, 2]
    for r, gt in results[1:]:
        assert sorted(t.track_id for t in r.tracks) == [1, 2]  # the same two ids through four detector runs
    last, gt = results[-1]
    labels = {}
    for t in last.tracks:
        best = max(gt, key=lambda oid: _iou(t.mask, gt[oid]))
        assert _iou(t.mask, gt[best]) > 0.8 and t.state is TrackState.CONFIRMED
        labels[best] = t.label
    assert labels == {1: "person", 2: "car"}


def test_classes_and_conf_choose_what_is_tracked():
    scene, runner, detector, engine = _scene_engine(
        4, DetectConfig(every_k_frames=2, classes=("car",)), class_of=lambda oid: 2 if oid == 2 else 0
    )
    (r, gt), *_ = _run(scene, runner, engine, range(1))
    assert [t.label for t in r.tracks] == ["car"] and _iou(r.tracks[0].mask, gt[2]) > 0.8
    scene, runner, detector, engine = _scene_engine(4, DetectConfig(every_k_frames=2, conf=0.95))
    (r, _), *_ = _run(scene, runner, engine, range(1))
    assert detector.calls == 1 and r.tracks == ()  # the fixed detector scores 0.9


def test_every_k_frames_sets_the_detector_cadence():
    for k, calls in ((1, 10), (4, 3), (15, 1)):
        scene, runner, detector, engine = _scene_engine(10, DetectConfig(every_k_frames=k))
        _run(scene, runner, engine, range(10))
        assert detector.calls == calls, k


def test_a_tracked_object_is_matched_not_duplicated_and_takes_the_class_name():
    # The user clicks object 1 on frame 0; the detector first reports on frame 3 (its boxes are empty before).
    scene, runner, detector, engine = _scene_engine(8, DetectConfig(every_k_frames=3))
    boxes = detector.boxes
    detector.boxes = lambda image: boxes(image) if runner.current >= 3 else []
    engine.add_object(ObjectPrompt(box=mask_to_box(scene.render(0)[1][1])))
    results = _run(scene, runner, engine, range(8))
    assert [t.label for t in results[2][0].tracks] == [None]
    ids = {t.track_id for r, _ in results for t in r.tracks}
    assert ids == {1, 2}  # the clicked object kept id 1; only the other one is new
    last, gt = results[-1]
    clicked = next(t for t in last.tracks if t.track_id == 1)
    assert _iou(clicked.mask, gt[1]) > 0.8 and clicked.label == "person"


def test_a_detection_on_the_frame_of_a_click_does_not_start_a_second_track():
    scene, runner, detector, engine = _scene_engine(4, DetectConfig(every_k_frames=3))
    engine.add_object(ObjectPrompt(box=mask_to_box(scene.render(0)[1][1])))
    results = _run(scene, runner, engine, range(4))
    assert all(len(r.tracks) == 2 for r, _ in results)
    first, gt = results[0]
    clicked = max(first.tracks, key=lambda t: _iou(t.mask, gt[1]))
    assert clicked.state is TrackState.CONFIRMED and clicked.label == "person"  # the user's track, named by the detector


def test_on_the_worker_with_background_encoding(tmp_path: Path):
    from realtime_sam.app.pipeline import Pipeline
    from realtime_sam.capture.sources import open_source

    # The detector's boxes are constant, so the objects stand still: with moving
    # ones, a first background encode landing late (a loaded machine) replays the
    # kept frames, flow carries a track off its constant box, and the next
    # detection rightly starts a third track. Still objects make the count exact.
    moving = standard_scene(320, 240, num_frames=30, num_objects=2)
    scene = dataclasses.replace(moving, objects=tuple(dataclasses.replace(o, velocity=(0.0, 0.0)) for o in moving.objects))
    video = write_video(scene, tmp_path / "clip.mp4")
    detector = FixedBoxDetector([[20, 30, 90, 100], [200, 120, 300, 220]], [0, 2], NAMES)
    engine = Engine(
        BoxRunner(), EngineConfig(reencode_every=5, background_encode=True), detector=detector,
        detect_config=DetectConfig(every_k_frames=10),
    )
    source = open_source(str(video))
    with Pipeline(source, engine) as pipe:
        results = list(pipe)
    assert detector.calls >= 1 and set(detector.threads) == {"rtsam-encode"}  # never on the frame loop's thread
    labelled = {t.label for r in results for t in r.tracks}
    assert labelled == {"person", "car"}
    assert max(len(r.tracks) for r in results) == 2  # constant boxes found again: still two ids


def test_mots_numbers_the_classes_and_jsonl_and_the_renderer_carry_names(tmp_path: Path):
    from realtime_sam.output.jsonl import JsonlSink
    from realtime_sam.types import FrameResult, TrackResult

    assert class_numbers(NAMES, (2, 0)) == {"car": 1, "person": 2}
    assert class_numbers(NAMES, None) == {"person": 1, "bicycle": 2, "car": 3}
    mask_a = np.zeros((20, 30), bool)
    mask_a[2:8, 2:8] = True
    mask_b = np.zeros((20, 30), bool)
    mask_b[10:15, 10:20] = True
    frame = Frame(0, np.zeros((20, 30, 3), np.uint8), 0.0, 0.0)
    result = FrameResult(frame, (
        TrackResult(3, mask_a, (2, 2, 8, 8), 0.9, TrackState.CONFIRMED, "person"),
        TrackResult(4, mask_b, (10, 10, 20, 15), 0.9, TrackState.CONFIRMED, None),
    ))
    sink = MotsSink(tmp_path / "t.txt", class_ids={"car": 1, "person": 2})
    lines = sink.frame_lines(result)
    sink.close()
    assert [line.split()[1:3] for line in lines] == [["2003", "2"], ["1004", "1"]]  # unlabelled: output.mots_class_id
    with JsonlSink(tmp_path / "t.jsonl") as jsonl:
        jsonl.write(result)
    assert '"label":"person"' in (tmp_path / "t.jsonl").read_text().replace(" ", "")
    assert Renderer._tag(result.tracks[0]) == "3 person"


def test_the_detect_section_is_parsed_and_checked():
    cfg = load_config(None, ["detect.model=yolo11n.pt", "detect.classes=[person, 2]", "detect.every_k_frames=7"])
    assert cfg.detect == DetectConfig(model="yolo11n.pt", classes=("person", "2"), every_k_frames=7)
    assert Config().detect.model is None
    from realtime_sam.errors import ConfigError

    with pytest.raises(ConfigError, match="every_k_frames"):
        load_config(None, ["detect.every_k_frames=0"])


def test_cli_detect_flags_errors(tmp_path: Path, capsys):
    video = write_video(standard_scene(64, 48, num_frames=4, num_objects=1), tmp_path / "c.mp4")
    assert main(["--source", str(video), "--headless", "--classes", "person"]) == 2
    assert "need --detect" in capsys.readouterr().err
    assert main(["--source", str(video), "--headless", "--detect", str(tmp_path / "nope" / "y.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: detector checkpoint not found") and "\n" not in err
    if importlib.util.find_spec("ultralytics") is not None:
        # A bare name Ultralytics does not publish: said at once, naming no other command's flag.
        assert main(["--source", str(video), "--headless", "--detect", "nosuch.pt"]) == 2
        out, err = capsys.readouterr()
        assert "not an Ultralytics release name" in err and "--det-model" not in err and out == ""
    assert main(["--source", str(video), "--headless", "--detect", "y.pt", "--detect-every", "0"]) == 2
    assert "--detect-every" in capsys.readouterr().err



def test_without_ultralytics_the_error_says_what_to_install(tmp_path: Path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "ultralytics", None)  # as if not installed
    video = write_video(standard_scene(64, 48, num_frames=4, num_objects=1), tmp_path / "c.mp4")
    assert main(["--source", str(video), "--headless", "--detect", "yolo11n.pt"]) == 2
    err = capsys.readouterr().err.strip()
    assert 'pip install "realtime-sam[detect]"' in err and "\n" not in err


def test_yolo_from_bundled_yaml_prompts_tracks(tmp_path: Path):
    pytest.importorskip("ultralytics")
    from realtime_sam.model.detector import YoloDetector

    cfg = load_config(None, ["detect.model=yolo26n.yaml", "detect.conf=0.0001", "detect.classes=[0, 1, 2, 3]", "model.device=cpu"])
    cfg = dataclasses.replace(cfg, tracker=dataclasses.replace(cfg.tracker, max_new_overlap=1.0))
    engine = Engine.from_config(cfg, runner=BoxRunner())
    assert isinstance(engine.detection.detector, YoloDetector)
    scene = standard_scene(320, 240, num_frames=4, num_objects=2)
    result = engine.process(Frame(0, scene.render(0)[0], 0.0, time.monotonic()))
    assert result.tracks and {t.label for t in result.tracks} <= {"0", "1", "2", "3"}
    assert len({t.track_id for t in result.tracks}) == len(result.tracks)


@pytest.mark.parametrize(
    "extra, named",
    [
        (["--set", "detect.classes=[person]"], "detect.classes"),
        (["--set", "detect.every_k_frames=5", "--set", "detect.conf=0.5"], "detect.every_k_frames and detect.conf"),
        (["--source", "SECOND", "--classes", "person"], "--classes"),  # several streams
    ],
)
def test_detect_settings_without_a_detector_are_a_one_line_error(tmp_path: Path, capsys, extra, named):
    # They were ignored without a word: the run tracked nothing by class and exited 0.
    video = write_video(standard_scene(64, 48, num_frames=4, num_objects=1), tmp_path / "c.mp4")
    extra = [str(video) if a == "SECOND" else a for a in extra]
    assert main(["--source", str(video), "--headless", "--quiet", *extra]) == 2
    out, err = capsys.readouterr()
    assert err.startswith("error: ") and named in err and "--detect MODEL" in err and err.count("\n") == 1, err
    assert out == ""


def test_detect_settings_without_a_detector_are_refused_in_python_unless_one_is_given(tmp_path: Path):
    from realtime_sam import track, track_many
    from realtime_sam.errors import ConfigError

    video = str(write_video(standard_scene(64, 48, num_frames=4, num_objects=1), tmp_path / "c.mp4"))
    cfg = load_config(None, ["detect.classes=[person]"])  # settings alone: a detector may be given beside them
    for call in (
        lambda: Engine.from_config(cfg, runner=BoxRunner()),
        lambda: track(video, config=cfg),
        lambda: track(video, overrides=["detect.every_k_frames=3"]),
        lambda: track_many([video], config=cfg),
    ):
        with pytest.raises(ConfigError, match=r"^detect\.(classes|every_k_frames) is set but there is no detector"):
            call()
    detector = FixedBoxDetector([[10, 10, 40, 40]], [2], NAMES)
    assert Engine.from_config(cfg, runner=BoxRunner(), detector=detector).detection is not None
    # A detect: section at its defaults, as every preset carries it, is no setting.
    for preset in ("default", "cpu", "gpu"):
        Engine.from_config(load_config(preset), runner=BoxRunner())
    f = tmp_path / "c.yaml"
    f.write_text("detect:\n  model: null\n  classes: []\n  every_k_frames: 15\n  conf: 0.25\n")
    Engine.from_config(load_config(f), runner=BoxRunner())


def test_a_plain_function_detector_needs_names_and_says_so():
    # README: Engine.from_config(config, detector=fn) takes a callable that returns BoxDetections and has
    # `names`. A plain function without them raised AttributeError ("'function' object has no attribute
    # 'names'") from deep inside the engine; now a one-line TypeError says what to add, and with it, it works.
    from realtime_sam.types import BoxDetections

    def my_detector(image_bgr):
        return BoxDetections([[20, 20, 60, 60]], [0.9], [2], NAMES)

    config = load_config(None, ["detect.classes=[car]"])
    with pytest.raises(TypeError, match=r"my_detector has no names .*my_detector\.names = ") as info:
        Engine.from_config(config, runner=BoxRunner(), detector=my_detector)
    assert "\n" not in str(info.value)
    my_detector.names = NAMES
    engine = Engine.from_config(config, runner=BoxRunner(), detector=my_detector)
    result = engine.process(Frame(0, np.zeros((120, 160, 3), np.uint8), 0.0, 0.0))
    assert [t.label for t in result.tracks] == ["car"]
