"""Property tests: random prompts and command sequences thrown at the engine.

Whatever a user (a click, a prompts file, the API) sends, the engine either
refuses it at once with :class:`PromptError` -- exactly when it breaks the
rules of :mod:`realtime_sam.tracking.prompts` -- or takes it, and then every frame
still yields masks of the frame's shape, boxes inside the frame, and track
ids that are unique, increase, and never come back once gone.

Most examples use ``BoxRunner`` (a stand-in model whose mask is the prompt's
box, and which raises on any coordinate the engine should have clamped or
refused); a few run the real network on a 160x120 frame.
"""

from __future__ import annotations

import functools
import math
import sys
import time
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, precondition, rule

from realtime_sam.errors import PromptError
from realtime_sam.model.predictor import SamPredictor
from realtime_sam.model.runners import PredictorRunner
from realtime_sam.testing.synthetic import standard_scene
from realtime_sam.tracking.discovery import DiscoveryConfig
from realtime_sam.tracking.engine import Engine, EngineConfig
from realtime_sam.tracking.prompts import MAX_COORD
from realtime_sam.tracking.tracks import TrackerConfig
from realtime_sam.types import Frame, FrameResult, ObjectPrompt, TrackState

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from realtime_sam.testing.fakes import BoxRunner  # noqa: E402

# -- prompts: mostly plausible, with every kind of garbage mixed in ---------------------

_WILD = [math.nan, math.inf, -math.inf, 1e9, -1e9, 1e300, MAX_COORD, MAX_COORD + 1, -0.0, 10**400]
coords = st.one_of(
    st.floats(-60, 260, allow_nan=False, allow_infinity=False),
    st.integers(-20, 200),
    st.sampled_from(_WILD),
)
label_values = st.sampled_from([1, 1, 1, 0, 0, 2, -1, True])


@st.composite
def prompts(draw) -> ObjectPrompt:
    points = draw(st.lists(st.tuples(coords, coords), max_size=4))
    if draw(st.integers(0, 9)) == 0:
        labels = draw(st.lists(label_values, max_size=5))  # often the wrong count
    else:
        labels = [draw(label_values) for _ in points]
    box = draw(st.none() | st.tuples(coords, coords, coords, coords))
    if box is not None and draw(st.booleans()):
        # A well-ordered box around plausible coordinates (random tuples are mostly inverted).
        x0, x1 = sorted(draw(st.tuples(st.floats(-40, 240), st.floats(-40, 240))))
        y0, y1 = sorted(draw(st.tuples(st.floats(-40, 180), st.floats(-40, 180))))
        box = (x0, y0, x1, y1)
    return ObjectPrompt(
        points=tuple(points),
        labels=tuple(labels),
        box=box,
        label=draw(st.none() | st.text(max_size=6)),
        start_frame=draw(st.sampled_from([0, 0, 0, 1, 3, -1])),
        track_id=draw(st.none() | st.integers(0, 12)),
    )


def _coord_ok(v: object) -> bool:
    if isinstance(v, bool):
        return False
    try:
        f = float(v)  # type: ignore[arg-type]
    except OverflowError:
        return False
    return math.isfinite(f) and abs(f) <= MAX_COORD


def expected_valid(p: ObjectPrompt, size: tuple[int, int] | None) -> bool:
    """The rules of :mod:`realtime_sam.tracking.prompts`, restated; ``size`` = ``(H, W)`` of the last frame or ``None``."""
    if not p.points and p.box is None:
        return False
    if len(p.points) != len(p.labels):
        return False
    if not all(_coord_ok(c) for pt in p.points for c in pt):
        return False
    if not all(type(v) is int and v in (0, 1) for v in p.labels):
        return False
    if p.box is not None:
        if not all(_coord_ok(c) for c in p.box):
            return False
        x0, y0, x1, y1 = (float(c) for c in p.box)
        if not (x1 > x0 and y1 > y0):
            return False
    if p.box is None and 1 not in p.labels and p.track_id is None:
        return False
    if p.track_id is not None and p.track_id < 1:
        return False  # ids start at 1: 0 names no track (refused at the call since the prompt checks)
    if p.start_frame < 0:
        return False
    if size is not None and p.box is not None:
        # Once the frame size is known, a box wholly outside the frame is refused.
        h, w = size
        cx0, cx1 = min(max(x0, 0.0), w - 1.0), min(max(x1, 0.0), w - 1.0)
        cy0, cy1 = min(max(y0, 0.0), h - 1.0), min(max(y1, 0.0), h - 1.0)
        if not (cx1 > cx0 and cy1 > cy0):
            return False
    return True


# -- checks on every result -------------------------------------------------------------


class IdLedger:
    """Remembers every id seen, to check that ids are unique, increasing and never reused."""

    def __init__(self) -> None:
        self.alive: set[int] = set()
        self.gone: set[int] = set()
        self.max_seen = 0

    def check(self, result: FrameResult, *, scores_in_unit_range: bool) -> None:
        h, w = result.frame.height, result.frame.width
        ids = [t.track_id for t in result.tracks]
        assert len(ids) == len(set(ids)), f"duplicate ids {ids}"
        assert ids == sorted(ids), f"tracks not ordered by id: {ids}"
        for t in result.tracks:
            assert t.track_id >= 1
            assert isinstance(t.mask, np.ndarray) and t.mask.dtype == bool and t.mask.shape == (h, w), (
                t.track_id, getattr(t.mask, "shape", None), (h, w))
            assert t.state is not TrackState.REMOVED
            x0, y0, x1, y1 = t.box
            assert all(math.isfinite(v) for v in t.box), t.box
            assert -1e-6 <= x0 <= x1 <= w + 1e-6 and -1e-6 <= y0 <= y1 <= h + 1e-6, (t.box, (w, h))
            assert math.isfinite(t.score)
            if scores_in_unit_range:
                assert 0.0 <= t.score <= 1.0
            if t.state is TrackState.LOST:
                assert not t.mask.any()
        now = set(ids)
        assert not (now & self.gone), f"ids {sorted(now & self.gone)} came back after being removed"
        new = now - self.alive
        assert all(i > self.max_seen for i in new), f"new ids {sorted(new)} not above every earlier id ({self.max_seen})"
        self.gone |= self.alive - now
        self.alive = now
        self.max_seen = max([self.max_seen, *now])


@functools.lru_cache(maxsize=None)
def frames_of(size: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """24 frames of a synthetic scene of ``size = (H, W)`` (``HxWx3 uint8`` BGR)."""
    scene = standard_scene(size[1], size[0], num_frames=24, num_objects=3, seed=3)
    return tuple(scene.render(i)[0] for i in range(24))


SIZES = [(64, 96), (48, 80)]  # (H, W): the stream may switch resolution


class _TickFuture(Future):
    """Done after some frames, or at once for whoever blocks on it (the call already ran)."""

    def __init__(self, value, exc):
        super().__init__()
        self.value, self.exc = value, exc
        self.set_running_or_notify_cancel()

    def finish(self) -> None:
        if not self.done():
            if self.exc is not None:
                self.set_exception(self.exc)
            else:
                self.set_result(self.value)

    def result(self, timeout=None):
        self.finish()
        return super().result(timeout)


class TickWorker:
    """Stands in for the pipeline's encode thread: each call finishes ``delay`` frames after it was submitted."""

    def __init__(self, delay: int) -> None:
        self.delay = delay
        self.pending: list[list] = []

    def submit(self, fn, *args) -> Future:
        try:
            future = _TickFuture(fn(*args), None)
        except Exception as exc:  # handed to whoever waits, as the real worker does
            future = _TickFuture(None, exc)
        self.pending.append([self.delay, future])
        return future

    def tick(self) -> None:
        for item in self.pending:
            item[0] -= 1
            if item[0] <= 0:
                item[1].finish()
        self.pending = [item for item in self.pending if item[0] > 0]


class EngineMachine(RuleBasedStateMachine):
    """Random add/remove/clear/auto/track_at sequences interleaved with frames."""

    @initialize(reencode=st.integers(1, 4), auto=st.booleans(), background=st.sampled_from([None, 0, 1, 3]))
    def start(self, reencode: int, auto: bool, background: int | None) -> None:
        self.runner = BoxRunner(strict=True)
        self.engine = Engine(
            self.runner,
            EngineConfig(reencode_every=reencode, auto=auto, max_tracks=6, background_encode=background is not None),
            tracker_config=TrackerConfig(max_lost_frames=4, min_hits=2),
            discovery_config=DiscoveryConfig(points_per_side=3, every_k_frames=3, pred_iou_thresh=0.5, stability_score_thresh=0.5),
        )
        # With background encoding: a worker whose encodes land ``background`` frames later.
        self.worker = TickWorker(background) if background is not None else None
        if self.worker is not None:
            assert self.engine.wants_worker
            self.engine.attach_worker(self.worker.submit)
        self.ledger = IdLedger()
        self.index = 0
        self.size = SIZES[0]
        self.seen_size: tuple[int, int] | None = None
        self.last: Frame | None = None

    def _process(self, frame: Frame) -> None:
        result = self.engine.process(frame)
        assert result.frame is frame
        self.seen_size = (frame.height, frame.width)
        self.ledger.check(result, scores_in_unit_range=True)
        self.last = frame

    @rule(prompt=prompts())
    def add(self, prompt: ObjectPrompt) -> None:
        ok = expected_valid(prompt, self.seen_size)
        try:
            self.engine.add_object(prompt)
        except PromptError as exc:
            assert not ok, f"valid prompt refused: {prompt} ({exc})"
            assert "\n" not in str(exc) and str(exc)
        else:
            assert ok, f"invalid prompt accepted: {prompt}"

    @rule(track_id=st.integers(-1, 15))
    def remove(self, track_id: int) -> None:
        self.engine.remove_object(track_id)

    @rule()
    def clear(self) -> None:
        self.engine.clear()

    @rule(enabled=st.booleans())
    def auto(self, enabled: bool) -> None:
        self.engine.set_auto(enabled)

    @rule(n=st.integers(1, 3))
    def frames(self, n: int) -> None:
        images = frames_of(self.size)
        for _ in range(n):
            if self.worker is not None:
                self.worker.tick()
            image = images[self.index % len(images)]
            self._process(Frame(self.index, image, self.index / 25.0, time.monotonic()))
            self.index += 1

    @precondition(lambda self: self.last is not None)
    @rule()
    def same_frame_again(self) -> None:
        # A paused pipeline shows new prompts on the frozen frame: the same frame is processed twice.
        self._process(self.last)  # type: ignore[arg-type]

    @precondition(lambda self: self.worker is not None)
    @rule(attached=st.booleans())
    def lend_or_take_back_the_worker(self, attached: bool) -> None:
        # The pipeline takes its worker back when it closes; new prompts in flight must survive.
        self.engine.attach_worker(self.worker.submit if attached else None)  # type: ignore[union-attr]

    @rule()
    def switch_resolution(self) -> None:
        self.size = SIZES[1] if self.size == SIZES[0] else SIZES[0]

    @rule(x=coords, y=coords)
    def track_at(self, x, y) -> None:
        try:
            fx, fy = float(x), float(y)
        except OverflowError:
            return
        tid = self.engine.track_at(fx, fy)
        assert tid is None or tid in self.ledger.alive


EngineMachine.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestEngineCommands = EngineMachine.TestCase


def test_the_oracle_matches_the_documented_rules():
    """Spot checks of :func:`expected_valid` itself, so the properties above test what they claim."""
    assert expected_valid(ObjectPrompt(points=((5.0, 5.0),), labels=(1,)), None)
    assert not expected_valid(ObjectPrompt(points=((math.nan, 5.0),), labels=(1,)), None)
    assert not expected_valid(ObjectPrompt(points=((5.0, 5.0),), labels=(0,)), None)  # background only
    assert expected_valid(ObjectPrompt(points=((5.0, 5.0),), labels=(0,), track_id=1), None)  # refinement
    assert not expected_valid(ObjectPrompt(box=(10, 10, 5, 20)), None)  # inverted
    assert not expected_valid(ObjectPrompt(box=(10, 10, 10, 20)), None)  # zero width
    assert expected_valid(ObjectPrompt(box=(-50, -50, 500, 500)), (64, 96))  # clamped
    assert not expected_valid(ObjectPrompt(box=(200, 10, 300, 20)), (64, 96))  # wholly outside
    assert expected_valid(ObjectPrompt(box=(200, 10, 300, 20)), None)  # frame size not known yet
    assert not expected_valid(ObjectPrompt(points=((1e300, 5.0),), labels=(1,)), None)
    assert not expected_valid(ObjectPrompt(points=((5.0, 5.0),), labels=(True,)), None)


# -- the real network, a few examples ----------------------------------------------------

_REAL_SIZE = (120, 160)


@pytest.fixture(scope="module")
def real_runner(sam_model):
    return PredictorRunner(SamPredictor(sam_model.eval()))


@pytest.mark.slow
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(prompts(), min_size=1, max_size=5))
@example(
    batch=[
        ObjectPrompt(points=((-30.0, 500.0),), labels=(1,)),  # outside the frame: clamped
        ObjectPrompt(box=(-1e4, -1e4, 1e4, 1e4)),  # far larger than the frame: clamped
        ObjectPrompt(box=(40.0, 30.0, 40.5, 90.0)),  # half a pixel wide
        ObjectPrompt(points=((math.nan, 3.0),), labels=(1,)),  # refused
        ObjectPrompt(box=(100.0, 80.0, 20.0, 10.0)),  # inverted: refused
        ObjectPrompt(points=((80.0, 60.0), (81.0, 61.0), (159.0, 119.0)), labels=(1, 0, 1), box=(0, 0, 160, 120)),
    ]
)
def test_real_model_never_crashes_and_masks_have_the_frame_shape(real_runner, batch):
    frames = frames_of(_REAL_SIZE)
    engine = Engine(real_runner, EngineConfig(reencode_every=100))
    ledger = IdLedger()
    accepted = []
    for p in batch:
        ok = expected_valid(p, None)
        try:
            engine.add_object(p)
        except PromptError:
            assert not ok, p
        else:
            assert ok, p
            accepted.append(p)
    for i in range(2):  # the prompts' frame, then one more (encoded only for prompts starting there)
        result = engine.process(Frame(i, frames[i], i / 25.0, time.monotonic()))
        ledger.check(result, scores_in_unit_range=False)
        assert result.encoded == any(p.start_frame == i for p in accepted)
    new_objects = [p for p in accepted if p.track_id is None and p.start_frame <= 1]
    assert ledger.max_seen <= len(new_objects)
