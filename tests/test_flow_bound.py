"""scripts/flow_bound.py: the ground truth carried by optical flow alone, on a DAVIS-layout folder written here."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from script_loader import load_script
from test_dense_flow import _texture
from test_eval_vos import SHARED_DAVIS

fb = load_script("flow_bound")


def _write(root: Path, frames: int = 10, speed: int = 10) -> None:
    """Sequence 'disk' (400x240): a textured disk of radius 50 moving ``speed`` px a frame right
    over a still textured background, its texture moving with it."""
    from PIL import Image

    h, w = 240, 400
    bg, obj = _texture(h, w, 0), _texture(h, w, 1)
    yy, xx = np.mgrid[:h, :w]
    (root / "JPEGImages" / "480p" / "disk").mkdir(parents=True)
    (root / "Annotations" / "480p" / "disk").mkdir(parents=True)
    for i in range(frames):
        disk = (yy - h // 2) ** 2 + (xx - (80 + speed * i)) ** 2 < 50**2
        image = bg.copy()
        image[disk] = np.roll(obj, speed * i, axis=1)[disk]
        cv2.imwrite(str(root / "JPEGImages" / "480p" / "disk" / f"{i:05d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        Image.fromarray((disk * 255).astype(np.uint8), mode="L").save(root / "Annotations" / "480p" / "disk" / f"{i:05d}.png")


def _disk(root: Path):
    """The 'disk' sequence written under ``root`` and read back."""
    _write(root)
    return fb.eval_vos.load_sequence(root, "disk", fb.eval_vos.find_sequences(root)["disk"])


def test_flow_carries_a_moving_object_far_better_than_leaving_it_still(tmp_path):
    seq = _disk(tmp_path)
    still = fb.carried(seq, None, every=3, steps=3)
    moved = fb.carried(seq, fb.FLOWS["medium"](), every=3, steps=3)
    # Left still, the disk (radius 50, 10 px a frame) overlaps itself less every frame.
    assert still[0] < 0.8 and still[2] < still[1] < still[0]
    # The flow follows it (DIS loses a little at the edge each frame, as on real footage).
    assert moved[0] > 0.85
    assert all(m > s + 0.08 for m, s in zip(moved, still))
    assert moved[2] > still[2] + 0.2
    # Through the logits the mask is quantised to cells: no better, still on the disk.
    quantised = fb.carried(seq, fb.FLOWS["medium"](), every=3, steps=1, logits=True)
    assert 0.8 < quantised[0] <= moved[0] + 0.02


def test_a_grid_of_lucas_kanade_points_spread_over_every_pixel_follows_the_object(tmp_path):
    seq = _disk(tmp_path)
    still = fb.carried(seq, None, every=3, steps=3)
    moved = fb.carried(seq, fb.FLOWS["lk-grid"](), every=3, steps=3)
    assert moved[0] > 0.85
    assert all(m > s + 0.08 for m, s in zip(moved, still))
    # The field covers the whole frame, frames of any size: a zero flow on a still pair.
    a = _texture(101, 203, 2)[..., 0]
    field = fb.FLOWS["lk-grid"]()(a, a)
    assert field.shape == (101, 203, 2) and field.dtype == np.float32
    assert np.abs(field).max() < 0.05


def test_main_prints_a_row_per_flow_with_its_time(tmp_path, capsys):
    _write(tmp_path / "data")
    rc = fb.main(
        ["--root", str(tmp_path / "data"), "--flows", "medium,ultrafast,lk-grid", "--steps", "2", "--every", "4", "--logits"]
    )
    assert rc == 0
    out = capsys.readouterr().out
    for row in ("| still |", "| medium |", "| medium, through the logits |", "| ultrafast |", "| lk-grid |", "| disk |"):
        assert row in out
    assert "| ms a frame pair |" in out

    def cells(name: str) -> list[str]:
        return out.split(f"| {name} | ")[1].split("\n")[0].rstrip(" |").split(" | ")

    still, medium = cells("still"), cells("medium")
    assert float(medium[0]) > float(still[0]) + 0.08
    # Two steps' J, then the time: none for leaving the mask still, some for each flow.
    assert len(still) == 3 and still[2] == "-"
    for name in ("medium", "ultrafast", "lk-grid"):
        assert float(cells(name)[2]) > 0


@pytest.mark.parametrize(
    "args, message",
    [
        (["--flows", "raft"], "unknown flow raft"),
        (["--steps", "0"], "--every and --steps"),
        (["--sequences", "nope"], "no sequence nope"),
        (["--sequences", ","], "names no sequence"),
        (["--max-frames", "-1"], "--max-frames must be >= 0"),
        (["--steps", "9"], "no start frame is --steps 9 frames from a sequence's end"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    _write(tmp_path / "data", frames=4)
    assert fb.main(["--root", str(tmp_path / "data"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_a_video_ffmpeg_cannot_read_exits_2_with_one_line(tmp_path, capsys):
    _write(tmp_path / "data", frames=2)
    broken = tmp_path / "broken"
    (broken / "Annotations" / "480p" / "x").mkdir(parents=True)
    label = tmp_path / "data" / "Annotations" / "480p" / "disk" / "00000.png"
    (broken / "Annotations" / "480p" / "x" / "00000.png").write_bytes(label.read_bytes())
    (broken / "x.mp4").write_bytes(b"\x00" * 4096)
    assert fb.main(["--root", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: sequence x:") and "x.mp4" in err and "\n" not in err


@pytest.mark.skipif(not SHARED_DAVIS.is_dir(), reason="../shared/davis not found (it exists only on the project's machines)")
def test_on_real_footage_the_flow_beats_leaving_the_mask_still():
    # breakdance: fast, non-rigid motion; its first 21 frames.
    seq = fb.eval_vos.load_sequence(SHARED_DAVIS, "breakdance", SHARED_DAVIS / "breakdance.mp4", max_frames=21)
    still = fb.carried(seq, None, every=5, steps=2)
    moved = fb.carried(seq, fb.FLOWS["medium"](), every=5, steps=2)
    assert moved[0] > still[0] + 0.1 and moved[1] > still[1] + 0.1
