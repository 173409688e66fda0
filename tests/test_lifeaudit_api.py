"""The streaming API's life cycle: runs never started, one engine in two runs, the exit under a
model step, frames the engine cannot take.

Where the exit is the point, a real subprocess runs a user's script; the model is the real one
with random weights (``random_checkpoint``) where torch must be inside a call at exit, else
:class:`~realtime_sam.testing.fakes.BoxRunner`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import av
import numpy as np
import pytest
from fixtures_app import app_env, frame_lines

from realtime_sam import track
from realtime_sam.config import load_config
from realtime_sam.output.sinks import make_sink
from realtime_sam.testing.fakes import BoxRunner
from realtime_sam.testing.synthetic import standard_scene, write_video
from realtime_sam.tracking.engine import Engine
from realtime_sam.types import Frame, ObjectPrompt

BOX = ObjectPrompt(box=(100, 80, 200, 160))


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(standard_scene(320, 240, num_frames=8, num_objects=2), tmp_path_factory.mktemp("life") / "clip.mp4")


def _engine() -> Engine:
    return Engine.from_config(load_config("cpu"), runner=BoxRunner())


def _script(tmp_path: Path, text: str, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(text))
    return subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=180, env=app_env(), cwd=tmp_path
    )


# -- a run that never started leaves no files --------------------------------------------------


@pytest.mark.parametrize("how", ["close", "drop", "bad prompt"])
def test_a_run_closed_or_dropped_before_its_first_result_leaves_no_files(how, clip, tmp_path):
    # The sinks stayed open: a 0-byte video ("moov atom not found") and an empty masks file.
    out = tmp_path / "out"
    sinks = [make_sink("video", out / "v.mp4"), make_sink("jsonl", out / "m.jsonl")]
    assert sorted(p.name for p in out.iterdir()) == ["m.jsonl", "v.mp4"]
    if how == "close":
        gen = track(str(clip), prompts=[BOX], engine=_engine(), sinks=sinks)
        gen.close()
        gen.close()  # twice: nothing more
        assert list(gen) == []
    elif how == "drop":
        track(str(clip), prompts=[BOX], engine=_engine(), sinks=sinks)  # never iterated
    else:
        with pytest.raises(ValueError, match="inverted"):
            track(str(clip), prompts=[ObjectPrompt(box=(50, 50, 10, 10))], engine=_engine(), sinks=sinks)
    assert not out.exists()
    assert all(s.closed for s in sinks)


def test_a_generator_never_iterated_and_kept_to_the_exit_leaves_no_files(clip, tmp_path):
    proc = _script(tmp_path, """
        import sys
        from realtime_sam import Engine, ObjectPrompt, load_config, track
        from realtime_sam.output.sinks import make_sink
        from realtime_sam.testing.fakes import BoxRunner

        cfg = load_config("cpu")
        gen = track(sys.argv[1], prompts=[ObjectPrompt(box=(100, 80, 200, 160))], config=cfg,
                    engine=Engine.from_config(cfg, runner=BoxRunner()),
                    sinks=[make_sink("video", "out/v.mp4"), make_sink("jsonl", "out/m.jsonl")])
        print("made", file=sys.stderr)
    """, str(clip))
    assert proc.returncode == 0 and "made" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists(), sorted(p.name for p in (tmp_path / "out").iterdir())


# -- one engine, one run at a time ------------------------------------------------------------------


def test_a_second_run_on_an_engine_in_use_is_refused_and_the_first_goes_on(clip, tmp_path):
    # Two generators given one engine, iterated in turn: two inference threads in one engine,
    # and one failed inside it (KeyError, or "'NoneType' object has no attribute 'box'").
    engine = _engine()
    first = track(str(clip), prompts=[BOX], engine=engine, sinks=[make_sink("jsonl", tmp_path / "a.jsonl")])
    got = [next(first)]
    second = track(str(clip), prompts=[BOX], engine=engine, sinks=[make_sink("jsonl", tmp_path / "b.jsonl")])
    with pytest.raises(ValueError, match=r"this engine is in use by another run .* close that one first"):
        next(second)
    assert not (tmp_path / "b.jsonl").exists()  # as any run that cannot start
    got += list(first)
    assert [r.index for r in got] == list(range(8))
    assert all([t.track_id for t in r.tracks] == [1] for r in got)  # its track untouched by the second
    assert [r["frame"] for r in frame_lines(tmp_path / "a.jsonl")] == list(range(8))
    # Finished (or closed), it is free again.
    assert len(list(track(str(clip), prompts=[BOX], engine=engine))) == 8
    third = track(str(clip), engine=engine)
    next(third)
    third.close()
    assert len(list(track(str(clip), engine=engine))) == 8


# -- Engine.process: frames it cannot take leave it as it was ---------------------------------------


def _frames(clip: Path) -> list[np.ndarray]:
    with av.open(str(clip)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


@pytest.mark.parametrize(
    "bad, says",
    [
        (lambda im: im.astype(np.float32), "got 240x320x3 float32; scale it to 0..255"),  # failed half-way
        (lambda im: np.ascontiguousarray(im[:, :, 0]), "got 240x320 uint8; convert it first: cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)"),
        (lambda im: np.dstack([im, im[:, :, :1]]), "got 240x320x4 uint8; convert it first: cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)"),
        (lambda im: im[:0], "got 0x320x3 uint8"),
    ],
)
def test_a_frame_the_engine_cannot_take_is_refused_and_the_tracks_go_on(bad, says, clip):
    # A grey, BGRA or empty image was taken without a word, as a change of frame size: every track dropped.
    images = _frames(clip)

    def run(insert_bad: bool) -> list[list[tuple]]:
        engine = _engine()
        engine.add_object(BOX)
        seen = []
        for i, im in enumerate(images):
            if insert_bad and i == 3:
                with pytest.raises(ValueError) as caught:
                    engine.process(Frame(i, bad(im), i / 25, time.monotonic()))
                assert str(caught.value).startswith("frame 3: the image must be HxWx3 uint8 BGR, ")
                assert says in str(caught.value)
            r = engine.process(Frame(i, im, i / 25, time.monotonic()))
            seen.append([(t.track_id, t.state.value, int(t.mask.sum()), t.box) for t in r.tracks])
        return seen

    assert run(True) == run(False)


def test_process_refuses_what_is_not_a_frame(clip):
    engine = _engine()
    with pytest.raises(ValueError, match=r"^Engine.process takes a Frame\(index, image, timestamp, capture_time\), got ndarray$"):
        engine.process(_frames(clip)[0])  # type: ignore[arg-type]


def test_process_takes_views_and_read_only_images_as_copies(clip):
    images = _frames(clip)[:5]

    def run(view) -> list:
        engine = _engine()
        engine.add_object(BOX)
        return [[(t.track_id, int(t.mask.sum()), t.box) for t in engine.process(Frame(i, view(im), i / 25, 0.0)).tracks]
                for i, im in enumerate(images)]

    padded = lambda im: np.pad(im, ((0, 0), (0, 0), (0, 1)))[:, :, :3]  # noqa: E731  (not contiguous)
    flipped = lambda im: np.ascontiguousarray(im[:, ::-1])[:, ::-1]  # noqa: E731  (negative strides)
    assert run(padded) == run(flipped) == run(np.copy)


# -- the exit while a model step runs -------------------------------------------------------------

_EXIT_IN_A_STEP = """
import atexit, logging, sys, threading, time
# Registered first: runs last, and only when the interpreter finalizes.
atexit.register(lambda: print("interpreter finalized", file=sys.stderr, flush=True))
import torch
from realtime_sam.model.runners import InferenceRunner

slow, looping, release = threading.Event(), threading.Event(), threading.Event()
real_encode = InferenceRunner.encode

def encode(self, image):
    out = real_encode(self, image)
    if slow.is_set():
        # An encode slower than the exit's bounded waits (a first one on a busy CPU), always
        # inside torch: until released, then 0.3 s more.
        a = torch.rand(256, 256)
        looping.set()
        while not release.is_set():
            a = torch.tanh(a @ a)
        ends = time.monotonic() + 0.3
        while time.monotonic() < ends:
            a = torch.tanh(a @ a)
    return out

InferenceRunner.encode = encode

insist = sys.argv[3] == "insist"  # the step never ends: the user presses Ctrl-C

class Release(logging.Handler):
    def emit(self, record):  # the exit says it waits for the step: it may end now
        if "waiting for the model's step" in record.getMessage():
            print(record.getMessage(), file=sys.stderr, flush=True)
            if not insist:
                release.set()
            else:
                # The user presses Ctrl-C as soon as the line shows, while it is still being
                # written: the interrupt lands inside the logging call (it aborted, once, in CI).
                time.sleep(2.0)

logging.getLogger("realtime_sam.app.pipeline").addHandler(Release())
if not insist:
    # Registered before the pipeline's exit handler, so run after it: the step ends once that gave up.
    atexit.register(release.set)

from realtime_sam import ObjectPrompt, load_config, track
from realtime_sam.output.sinks import make_sink

clip, weights = sys.argv[1:3]
cfg = load_config(None, ["model.weights=" + weights, "tracker.min_score=0", "pipeline.join_timeout_s=0.5",
                         "engine.reencode_every=2"])
gen = track(clip, prompts=[ObjectPrompt(box=(10, 60, 70, 120))], config=cfg,
            sinks=[make_sink("video", "x.mp4"), make_sink("jsonl", "x.jsonl")])
first = next(gen)
slow.set()
looping.wait()  # the inference thread is inside the next encode
print(f"exit after frame {first.index}", file=sys.stderr, flush=True)
"""


def test_the_exit_waits_for_a_model_step_in_progress_and_finishes_the_outputs(tmp_path, random_checkpoint, small_clip):
    # The exit gave up on an encode after join_timeout_s (and 1.5 of the slowest step measured),
    # finalized the interpreter under it, and the encode coming back aborted the process
    # ("terminate called without an active exception", exit status 134), the video 0 bytes.
    proc = _script(tmp_path, _EXIT_IN_A_STEP, str(small_clip), str(random_checkpoint), "wait")
    assert "terminate called" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    assert "exit after frame 0" in proc.stderr and "interpreter finalized" in proc.stderr, proc.stderr
    assert "waiting for the model's step in progress to end before exiting (Ctrl-C to leave at once)" in proc.stderr
    written = [r["frame"] for r in frame_lines(tmp_path / "x.jsonl")]
    assert written[:1] == [0] and written == list(range(len(written))), written
    with av.open(str(tmp_path / "x.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == len(written)


def test_ctrl_c_while_the_exit_waits_for_a_step_leaves_at_once_with_130(tmp_path, random_checkpoint, small_clip):
    import signal

    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent(_EXIT_IN_A_STEP))
    proc = subprocess.Popen(
        [sys.executable, str(script), str(small_clip), str(random_checkpoint), "insist"],
        stderr=subprocess.PIPE, text=True, env=app_env(), cwd=tmp_path,
    )
    lines = []
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "waiting for the model's step in progress" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=60)[1]
    finally:
        proc.kill()
    err = "".join(lines) + rest
    assert proc.returncode == 130, err
    # Not finalized under the step still in torch: no abort.
    assert "terminate called" not in err and "interpreter finalized" not in err, err
