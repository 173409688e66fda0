"""A video's frames and labels stay paired when a run stops between a saved frame and its label.

Ultralytics takes a frame in ``images/`` without a label file in ``labels/``
as a background image: every object in it is trained as a negative. A
Ctrl-C (or SIGTERM, which unwinds the same way) that lands after a frame is
saved and before its label is written left exactly that.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from realtime_sam.app.annotate import annotate
from realtime_sam.output.labels import CocoWriter, YoloLabelWriter
from realtime_sam.testing.fakes import FixedBoxDetector
from realtime_sam.testing.synthetic import standard_scene, write_video


class _BoxModel:
    """encode/decode/upscale where the mask of a box prompt is the box."""

    def encode(self, image, image_format="RGB"):
        return image.shape[:2]

    def decode(self, embedding, boxes=None, multimask_output=False, **_):
        return torch.as_tensor(np.asarray(boxes, dtype=np.float32))[:, None, :], torch.ones(len(boxes), 1)

    def upscale(self, low, embedding):
        h, w = embedding
        out = torch.full((len(low), 1, h, w), -1.0)
        for i, (x0, y0, x1, y1) in enumerate(low[:, 0].round().int().tolist()):
            out[i, 0, y0:y1, x0:x1] = 1.0
        return out


@pytest.mark.parametrize("fmt", ["yolo", "coco"])
def test_ctrl_c_between_a_frame_and_its_label_leaves_no_unlabelled_frame(tmp_path: Path, monkeypatch, fmt: str):
    video = write_video(standard_scene(96, 64, num_frames=6, num_objects=1), tmp_path / "clip.mp4")
    writer_class = YoloLabelWriter if fmt == "yolo" else CocoWriter
    real_write = writer_class.write
    calls = []

    def interrupted_write(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 3:  # the third frame is saved; Ctrl-C arrives before its label is written
            raise KeyboardInterrupt
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(writer_class, "write", interrupted_write)
    detector = FixedBoxDetector([[10, 10, 50, 40]], [0], {0: "thing"})
    out = tmp_path / "ds"
    with pytest.raises(KeyboardInterrupt):
        annotate(video, detector=detector, model=_BoxModel(), every=2, output_dir=out, format=fmt, progress=False)
    frames = sorted(p.stem for p in (out / "images").iterdir())
    if fmt == "yolo":
        labelled = sorted(p.stem for p in (out / "labels").glob("*.txt"))
    else:
        coco = json.loads((out / "labels" / "annotations.json").read_text())
        labelled = sorted(Path(im["file_name"]).stem for im in coco["images"])
    assert frames == labelled == ["clip_000000", "clip_000002"]

    monkeypatch.setattr(writer_class, "write", real_write)
    summary = annotate(video, detector=detector, model=_BoxModel(), every=2, output_dir=out, format=fmt, progress=False)
    assert (summary.skipped, summary.annotated) == (2, 1)
    assert sorted(p.stem for p in (out / "images").iterdir()) == ["clip_000000", "clip_000002", "clip_000004"]
