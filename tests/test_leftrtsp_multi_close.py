"""Closing several streams waits for the shared encoder's encode in progress as a pipeline waits for its own.

``MultiPipeline.close`` gave the shared encoder's thread a fixed 1 s. A stream's first encode,
made behind another stream's, had not been timed by its pipeline, so nothing waited for it: the
encoder ran on past ``close()`` (a model call still running when a script went on or exited).
Now the wait is ``join_timeout_s`` plus one and a half of the slowest encode the encoder ran.

The streams are built by ``open_streams`` as ``track_many`` builds them around a loaded model (its
shared encoder thread included); the model is a stand-in whose encode takes ``SLOW_S`` and whose
"masks" are the prompts' boxes (:class:`~realtime_sam.testing.fakes.BoxRunner`), so the test
needs no weights and takes seconds.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

import realtime_sam.model.runners as runners
from realtime_sam.app.multi import open_streams
from realtime_sam.app.streams import StreamSpec
from realtime_sam.config import load_config
from realtime_sam.testing.fakes import BoxRunner
from realtime_sam.testing.synthetic import standard_scene, write_video
from realtime_sam.types import ObjectPrompt

SLOW_S = 2.0  # each encode: longer than the fixed 1 s wait, shorter than 1.5 encodes


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(standard_scene(160, 120, num_frames=30, num_objects=1), tmp_path_factory.mktemp("mclose") / "c.mp4")


class _SlowModel:
    """What ``open_streams`` needs of a loaded model here: ``encode_batch(images, "BGR")``, each call ``SLOW_S`` long."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.ended: list[int] = []
        self.second_started = threading.Event()

    def encode_batch(self, images, fmt):
        n = len(self.started)
        self.started.append(n)
        if n == 1:
            self.second_started.set()
        time.sleep(SLOW_S)
        self.ended.append(n)
        return [BoxRunner().embed(im) for im in images]


def test_close_waits_for_a_streams_first_encode_in_progress(clip, monkeypatch):
    monkeypatch.setattr(runners, "InferenceRunner", lambda model: BoxRunner())  # each stream's decoder
    cfg = load_config(None, ["engine.reencode_every=1000", "pipeline.join_timeout_s=0.1"])
    model = _SlowModel()
    box = (ObjectPrompt(box=(5, 5, 60, 60)),)
    multi = open_streams([StreamSpec("a", str(clip), prompts=box), StreamSpec("b", str(clip), prompts=box)], cfg, model=model)
    with multi:
        for _ in range(600):  # one stream's first encode, then the other's, made behind it
            if model.second_started.is_set():
                break
            multi.poll(0.05)
        assert model.second_started.is_set(), model.started
    # close() has returned: the encode it found in progress has ended, and the encoder's thread with it.
    assert model.ended == [0, 1]
    (encoder,) = multi._workers  # the one open_streams made for the shared model
    assert not encoder.thread.is_alive()
