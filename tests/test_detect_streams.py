"""``--detect`` with several streams (``--source`` twice): a detector that cannot start loses no earlier output.

The CLI runs in a subprocess; the detector is a YOLO built from Ultralytics'
bundled YAML (random weights, no download) with COCO-like class names.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fixtures_app import run_app
from realtime_sam.testing.synthetic import standard_scene, write_video


def _yolo_pt(folder: Path) -> Path:
    """A random-weights YOLO detection checkpoint with classes person, bicycle, car."""
    ultralytics = pytest.importorskip("ultralytics")
    model = ultralytics.YOLO("yolo11n.yaml")
    model.model.names = {0: "person", 1: "bicycle", 2: "car"}
    path = folder / "det.pt"
    model.save(str(path))
    return path


def test_a_class_the_detector_lacks_keeps_an_earlier_runs_masks(tmp_path: Path, random_checkpoint: Path):
    # The streams' masks files were opened before each stream's detector was loaded, and closed
    # when it failed: an earlier run's masks were emptied to a header (and a fresh run left files
    # with a header and no frame).
    det = _yolo_pt(tmp_path)
    scene = standard_scene(96, 64, num_frames=4, num_objects=1)
    for name in ("a", "b"):
        write_video(scene, tmp_path / f"{name}.mp4")
    earlier = '{"realtime_sam": "0.1.0", "source": "a.mp4"}\n{"frame":0,"timestamp":0.0,"tracks":[]}\n'
    (tmp_path / "masks_a.jsonl").write_text(earlier)
    done = run_app(
        "--source", "a.mp4", "--source", "b.mp4", "--headless", "--quiet", "--weights", str(random_checkpoint),
        "--device", "cpu", "--detect", str(det), "--classes", "persn", "--save-masks", "masks_{name}.jsonl", cwd=tmp_path,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == "error: stream a: the detector has no class 'persn'; give ids or names such as person, bicycle, car"
    assert (tmp_path / "masks_a.jsonl").read_text() == earlier
    assert not (tmp_path / "masks_b.jsonl").exists()


def test_mots_files_number_each_streams_detector_classes(tmp_path: Path, golden_dir: Path, checkpoint_path: Path):
    # With one stream, --classes person writes a person's track as class 1; with two, every track
    # was written as output.mots_class_id (the sinks were not told the detector's classes).
    # Run with the golden checkpoint (golden_dir skips without it), the one this was checked with.
    import torch

    torch.manual_seed(0)  # the random detector's boxes: persons, at a very low score
    det = _yolo_pt(tmp_path)
    scene = standard_scene(320, 240, num_frames=4)
    for name in ("a", "b"):
        write_video(scene, tmp_path / f"{name}.mp4")
    loose = [f"--set={kv}" for kv in (
        "detect.conf=0.0001", "tracker.min_score=0", "tracker.min_area_frac=0", "tracker.max_area_frac=1",
        "tracker.max_new_overlap=1", "tracker.min_hits=1", "output.mots_class_id=5",
    )]
    done = run_app(
        "--source", "a.mp4", "--source", "b.mp4", "--headless", "--quiet", "--weights", str(checkpoint_path),
        "--device", "cpu", "--detect", str(det), "--classes", "person", *loose,
        "--save-masks", "m_{name}.txt", "--mask-format", "mots", "--max-frames", "2", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for name in ("a", "b"):
        rows = [line.split()[:3] for line in (tmp_path / f"m_{name}.txt").read_text().splitlines()]
        assert rows, name
        assert {cls for _frame, _obj, cls in rows} == {"1"} and all(int(obj) // 1000 == 1 for _f, obj, _c in rows)


def test_track_many_with_a_class_the_detector_lacks_keeps_an_earlier_runs_masks(tmp_path: Path, random_checkpoint: Path):
    # README: a run that cannot start leaves a file that was there before as it was. The sinks went
    # to the streams before each stream's detector loaded, and were closed when it failed: emptied.
    from realtime_sam import track_many
    from realtime_sam.errors import DetectorError
    from realtime_sam.output.sinks import make_sink

    det = _yolo_pt(tmp_path)
    scene = standard_scene(96, 64, num_frames=4, num_objects=1)
    clips = [str(write_video(scene, tmp_path / f"{name}.mp4")) for name in ("a", "b")]
    earlier = '{"realtime_sam": "0.1.0", "source": "a.mp4"}\n{"frame":0,"timestamp":0.0,"tracks":[]}\n'
    (tmp_path / "masks_a.jsonl").write_text(earlier)
    sink = make_sink("jsonl", tmp_path / "masks_a.jsonl")
    overrides = [f"detect.model={det}", "detect.classes=[persn]", f"model.weights={random_checkpoint}", "model.device=cpu"]
    with pytest.raises(DetectorError, match="the detector has no class 'persn'"):
        list(track_many(clips, overrides=overrides, sinks={"a": [sink]}))
    assert (tmp_path / "masks_a.jsonl").read_text() == earlier
