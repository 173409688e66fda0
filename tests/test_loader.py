"""``loader``: a ModelConfig becomes the engine's runner on the chosen backend, faithful to the eager model."""

from __future__ import annotations

import numpy as np
import pytest

from realtime_sam.config import ModelConfig
from realtime_sam.errors import CheckpointError, ConfigError
from realtime_sam.model.loader import InferenceRunner, load_predictor, load_runner
from realtime_sam.model.predictor import SamPredictor
from realtime_sam.model.runners import PredictorRunner
from realtime_sam.testing.synthetic import standard_scene


@pytest.fixture(scope="module")
def frame() -> np.ndarray:
    scene = standard_scene(320, 240, num_frames=8, num_objects=3, seed=1)
    return scene.render(0)[0]  # HxWx3 uint8 BGR


@pytest.fixture(scope="module")
def runners(checkpoint_path):
    from realtime_sam.model.build import build_sam

    fast = load_runner(ModelConfig(weights=str(checkpoint_path), device="cpu", backend="torch"), progress=False)
    eager = PredictorRunner(SamPredictor(build_sam("vit_t", checkpoint_path)))
    return fast, eager


def test_load_runner_builds_the_requested_backend(runners):
    fast, _ = runners
    assert isinstance(fast, InferenceRunner)
    assert fast.model.backend == "torch" and str(fast.model.device) == "cpu"


@pytest.mark.slow
def test_fast_runner_agrees_with_the_eager_predictor(runners, frame):
    fast, eager = runners
    for r in runners:
        r.encode(frame)
    boxes = np.array([[20, 30, 120, 140], [150, 60, 300, 200]], dtype=np.float64)
    points = np.array([[[60, 80], [200, 120]]] * 2, dtype=np.float64)
    labels = np.array([[1, 0]] * 2)
    low_f, iou_f = fast.decode(points, labels, boxes, None, False)
    low_e, iou_e = eager.decode(points, labels, boxes, None, False)
    assert low_f.shape == low_e.shape == (2, 1, 256, 256)
    assert np.abs(low_f - low_e).max() < 1e-2 * max(1.0, np.abs(low_e).max())
    assert np.abs(iou_f - iou_e).max() < 1e-3
    # A mask prompt from the previous decode, as the engine feeds tracks back.
    low_f2, _ = fast.decode(None, None, boxes, low_f[:, 0], False)
    low_e2, _ = eager.decode(None, None, boxes, low_e[:, 0], False)
    m_f = fast.masks(low_f2[:, 0], frame.shape[:2])
    m_e = eager.masks(low_e2[:, 0], frame.shape[:2])
    assert m_f.shape == (2, 240, 320) and m_f.dtype == bool
    assert (m_f == m_e).mean() > 0.999


def test_runner_refuses_decoding_before_an_image():
    runner = InferenceRunner.__new__(InferenceRunner)
    runner._embedding = None
    with pytest.raises(RuntimeError, match="before encode"):
        runner.decode(None, None, np.zeros((1, 4)), None, False)


def test_load_predictor_is_sam_compatible(checkpoint_path, frame):
    predictor = load_predictor(ModelConfig(weights=str(checkpoint_path), device="cpu", backend="torch"), progress=False)
    assert isinstance(predictor, SamPredictor)
    predictor.set_image(frame[..., ::-1].copy())
    masks, scores, low = predictor.predict(box=np.array([20, 30, 120, 140]), multimask_output=False)
    assert masks.shape == (1, 240, 320) and scores.shape == (1,) and low.shape == (1, 256, 256)


def test_bad_model_settings_are_one_line_errors(tmp_path, checkpoint_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_runner(ModelConfig(weights=str(tmp_path / "nope.pt"), device="cpu"), progress=False)
    with pytest.raises(ConfigError, match="model.backend"):
        ModelConfig(weights=str(checkpoint_path), backend="tensorrt")
