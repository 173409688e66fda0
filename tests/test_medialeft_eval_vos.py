"""scripts/eval_vos.py reads DAVIS frames under any path (not through cv2.imread's narrow path)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from script_loader import load_script


def test_eval_vos_reads_frames_under_a_name_opencv_cannot_open(tmp_path: Path, monkeypatch) -> None:
    """On Windows ``cv2.imread`` opens a file by a narrow path and does not find ``C:\\数据\\...``:
    every frame was "cannot read frame". Simulated here as OpenCV behaves there."""
    from PIL import Image

    ev = load_script("eval_vos")
    root = tmp_path / "数据"
    (root / "JPEGImages" / "480p" / "s").mkdir(parents=True)
    (root / "Annotations" / "480p" / "s").mkdir(parents=True)
    images = []
    for i in range(3):
        image = np.full((24, 32, 3), 60 * i, np.uint8)
        (root / "JPEGImages" / "480p" / "s" / f"{i:05d}.png").write_bytes(cv2.imencode(".png", image)[1].tobytes())
        images.append(image)
        lab = np.zeros((24, 32), np.uint8)
        lab[5:15, 5 + i : 15 + i] = 1
        png = Image.fromarray(lab, mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0] + [0] * (254 * 3))
        png.save(root / "Annotations" / "480p" / "s" / f"{i:05d}.png")
    real_imread = cv2.imread
    monkeypatch.setattr(cv2, "imread", lambda path, *a: real_imread(path, *a) if str(path).isascii() else None)
    seq = ev.load_sequence(root, "s", None)
    assert len(seq.frames) == 3
    assert all(np.array_equal(f, image) for f, image in zip(seq.frames, images))
