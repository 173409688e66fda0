"""The streaming API, ``realtime_sam.track``, as a user calls it: errors, engine reuse.

The model is :class:`~realtime_sam.testing.fakes.BoxRunner` (the mask is the
prompt's box): no checkpoint, no network.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime_sam import track, track_many
from realtime_sam.config import load_config
from realtime_sam.errors import ConfigError, SourceError
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
        def write(self, result):
            raise AssertionError("nothing is written")

        def close(self):
            raise AssertionError("nothing is closed")

    # The stream of "clip0.mp4" is named "clip0": sinks keyed by the file name were never fed nor closed.
    with pytest.raises(ConfigError, match=r"'clip0\.mp4'.*'clip0'"):
        track_many([str(clips[0])], config="cpu", sinks={str(clips[0].name): [Sink()]})


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
