"""``track``'s sinks: one output given twice is refused at the call, and a run that never starts
leaves an earlier run's masks file of the same name as it was.

The model is :class:`~realtime_sam.testing.fakes.BoxRunner` (the mask is the prompt's box) where
a run must go; the files are real, written by the real sinks.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from realtime_sam import make_sink, open_sinks, track
from realtime_sam.config import load_config
from realtime_sam.errors import ConfigError, SourceError
from realtime_sam.output.jsonl import load_jsonl
from realtime_sam.testing.fakes import BoxRunner
from realtime_sam.testing.synthetic import standard_scene, write_video
from realtime_sam.tracking.engine import Engine
from realtime_sam.types import ObjectPrompt

BOX = ObjectPrompt(box=(100, 80, 200, 160))
EARLIER = "an earlier run's masks\n"


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A 6-frame 320x240 clip."""
    return write_video(standard_scene(320, 240, num_frames=6, num_objects=1, seed=0), tmp_path_factory.mktemp("c") / "clip.mp4")


def _engine() -> Engine:
    return Engine.from_config(load_config("cpu"), runner=BoxRunner())


# ------------------------------------------------------------------ one output given twice


def test_one_sink_given_twice_is_refused_at_the_call(clip, tmp_path):
    """``sinks=[s, s]`` wrote every frame into ``s`` twice (a header and 12 lines for 6 frames)."""
    sink = make_sink("jsonl", tmp_path / "out.jsonl")
    with pytest.raises(ConfigError) as caught:
        track(str(clip), prompts=[BOX], engine=_engine(), sinks=[sink, sink])  # the call itself, no next()
    assert str(caught.value) == "sinks[0] and sinks[1] are one sink; give each sink once"
    # Nothing ran; the sink is closed and the file making it created is removed.
    assert sink.closed and not (tmp_path / "out.jsonl").exists()


def test_two_sinks_of_one_path_are_refused_at_the_call(clip, tmp_path):
    path = tmp_path / "out.txt"
    sinks = [make_sink("jsonl", path), make_sink("mots", tmp_path / "." / "out.txt")]
    with pytest.raises(ConfigError) as caught:
        track(str(clip), prompts=[BOX], engine=_engine(), sinks=sinks)
    assert str(caught.value) == f"sinks[0] and sinks[1] both write {tmp_path / '.' / 'out.txt'}; give each its own path"
    assert all(s.closed for s in sinks) and not path.exists()


def test_a_sink_of_open_sinks_given_again_beside_it_is_refused(clip, tmp_path):
    several = open_sinks([tmp_path / "a.jsonl", tmp_path / "b.txt"])
    with pytest.raises(ConfigError, match=r"^sinks\[0\]\.sinks\[1\] and sinks\[1\] are one sink; give each sink once$"):
        track(str(clip), prompts=[BOX], engine=_engine(), sinks=[several, several.sinks[1]])


def test_one_sink_not_in_a_list_is_refused_at_the_call(clip, tmp_path):
    sink = make_sink("jsonl", tmp_path / "out.jsonl")
    with pytest.raises(ConfigError, match=r"^sinks is one sink; give a list: sinks=\[sink\]$"):
        track(str(clip), prompts=[BOX], engine=_engine(), sinks=sink)
    assert sink.closed and not (tmp_path / "out.jsonl").exists()


def test_different_outputs_each_get_every_frame_once(clip, tmp_path):
    sinks = [make_sink("jsonl", tmp_path / "a.jsonl"), make_sink("jsonl", tmp_path / "b.jsonl")]
    assert len(list(track(str(clip), prompts=[BOX], engine=_engine(), sinks=sinks))) == 6
    for name in ("a.jsonl", "b.jsonl"):
        header, frames = load_jsonl(tmp_path / name)
        assert header is not None and [f["frame"] for f in frames] == list(range(6))


# ------------------------------------------------------------------ a run that never starts


@pytest.mark.parametrize("kind, name", [("jsonl", "prev.jsonl"), ("mots", "prev.txt")])
def test_making_a_masks_sink_leaves_an_earlier_file_until_the_run_writes(kind, name, tmp_path):
    path = tmp_path / name
    path.write_text(EARLIER)
    sink = make_sink(kind, path)
    assert path.read_text() == EARLIER  # it was emptied here, before any run
    sink.close()  # a run that started and ended with no frame: the run's (empty) file
    assert EARLIER not in path.read_text()


@pytest.mark.parametrize("kind, name", [("jsonl", "prev.jsonl"), ("mots", "prev.txt")])
def test_a_run_whose_source_does_not_open_leaves_an_earlier_masks_file_as_it_was(kind, name, tmp_path):
    path = tmp_path / name
    path.write_text(EARLIER)
    results = track(str(tmp_path / "missing.mp4"), prompts=[BOX], engine=_engine(), sinks=[make_sink(kind, path)])
    with pytest.raises(SourceError):
        next(results)
    # Before: empty (mots), or a header and no frame (jsonl).
    assert path.read_text() == EARLIER


def test_a_run_whose_weights_do_not_load_leaves_an_earlier_masks_file_as_it_was(clip, tmp_path):
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(b"not a checkpoint")
    path = tmp_path / "prev.jsonl"
    path.write_text(EARLIER)
    results = track(str(clip), prompts=[BOX], config="cpu", overrides=[f"model.weights={damaged}"], sinks=[make_sink("jsonl", path)])
    with pytest.raises(Exception) as caught:
        next(results)
    assert "damaged.pt" in str(caught.value)
    assert path.read_text() == EARLIER


@pytest.mark.parametrize("kind, name", [("jsonl", "prev.jsonl"), ("mots", "prev.txt")])
def test_a_run_that_starts_replaces_the_earlier_file(clip, kind, name, tmp_path):
    path = tmp_path / name
    path.write_text(EARLIER)
    assert len(list(track(str(clip), prompts=[BOX], engine=_engine(), sinks=[make_sink(kind, path)]))) == 6
    text = path.read_text()
    assert EARLIER not in text
    if kind == "jsonl":
        assert [f["frame"] for f in load_jsonl(path)[1]] == list(range(6))
    else:
        assert sorted({int(line.split()[0]) for line in text.splitlines()}) == list(range(6))
