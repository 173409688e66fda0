"""Background encoding: frames flow on optical flow while the encoder works; finished encodes are carried forward.

The engine is lent a deterministic stand-in for the pipeline's worker whose
encodes finish a fixed number of frames after they were submitted, so each
case is exact; the last tests run the real :class:`Pipeline` worker thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future

import numpy as np
import pytest
from test_engine import _box, _iou

from realtime_sam.app.pipeline import Pipeline
from realtime_sam.testing.fakes import GroundTruthRunner
from realtime_sam.testing.synthetic import Scene, SceneObject, standard_scene
from realtime_sam.tracking.engine import Engine, EngineConfig
from realtime_sam.tracking.propagation import MaskPropagator, PropagationConfig
from realtime_sam.types import Frame, ObjectPrompt, TrackState


class EmbeddingGroundTruthRunner(GroundTruthRunner):
    """:class:`GroundTruthRunner` that can also embed off-thread (``embed``/``use``)."""

    def __init__(self, scene):
        super().__init__(scene)
        self.frame_of: dict[int, int] = {}  # id(image) -> frame index, filled by the test loop
        self.embedded: list[int] = []
        self.busy = threading.Lock()
        self.overlaps = 0

    def embed(self, image_bgr):
        if not self.busy.acquire(blocking=False):
            self.overlaps += 1
            self.busy.acquire()
        try:
            index = self.frame_of[id(image_bgr)]
            self.embedded.append(index)
            return index, self.scene.render(index)[1], image_bgr.shape[:2]
        finally:
            self.busy.release()

    def use(self, embedding):
        index, gt, (h, w) = embedding
        self.encoded.append(index)
        self._gt = gt
        from realtime_sam.model.transforms import preprocess_shape

        self._input = preprocess_shape(h, w, 1024)


class _HeldFuture(Future):
    """Done after some ticks, or at once for whoever blocks on it (the call already ran)."""

    def __init__(self, value):
        super().__init__()
        self.value = value
        self.set_running_or_notify_cancel()

    def result(self, timeout=None):
        if not self.done():
            self.set_result(self.value)
        return super().result(timeout)


class DelayedWorker:
    """``submit`` runs the call at once but reports it done only ``delay`` ticks later."""

    def __init__(self, delay: int):
        self.delay = delay
        self.pending: list[tuple[int, Future, object]] = []
        self.ticks = 0
        self.submitted: list[int] = []

    def submit(self, fn, *args):
        future = _HeldFuture(fn(*args))
        self.pending.append((self.ticks + self.delay, future, future.value))
        self.submitted.append(self.ticks)
        return future

    def tick(self):
        self.ticks += 1
        keep = []
        for due, future, value in self.pending:
            if future.done():
                continue
            if due <= self.ticks:
                future.set_result(value)
            else:
                keep.append((due, future, value))
        self.pending = keep


def _setup(delay=6, num_frames=100, reencode_every=1, first_look=True):
    # Object 1 passes behind object 2 at num_frames // 2; the tests here stop before.
    scene = standard_scene(320, 240, num_frames=num_frames, num_objects=3, seed=1)
    runner = EmbeddingGroundTruthRunner(scene)
    engine = Engine(runner, EngineConfig(reencode_every=reencode_every, background_encode=True, first_look=first_look))
    worker = DelayedWorker(delay)
    assert engine.wants_worker
    engine.attach_worker(worker.submit)
    return scene, runner, engine, worker


def _step(engine, runner, worker, scene, i):
    img, gt = scene.render(i)
    runner.frame_of[id(img)] = i
    runner.current = i
    worker.tick()
    return engine.process(Frame(i, img, i / 25.0, time.monotonic())), gt, img


def _track_objects(engine, runner, worker, scene, frames, on_frame=None):
    _, gt0 = scene.render(0)
    for oid in sorted(gt0):
        engine.add_object(ObjectPrompt(box=_box(gt0[oid]), label=str(oid)))
    out, keep = [], []
    for i in frames:
        if on_frame:
            on_frame(i)
        r, gt, img = _step(engine, runner, worker, scene, i)
        keep.append(img)  # ids in frame_of stay unique while the images live
        out.append((r, gt))
    return out


def _decoded(result):
    """The tracks of ``result`` that have a decoded mask (not first looks: those are tentative, score 0)."""
    return [t for t in result.tracks if t.state is not TrackState.TENTATIVE]


def _owner(results):
    """``{track id: scene object id}`` from the first result with tracks (labels are object ids)."""
    first = next(r for r, _ in results if r.tracks)
    return {t.track_id: int(t.label) for t in first.tracks}


def test_prompts_and_periodic_encodes_run_in_the_background_and_land_later():
    scene, runner, engine, worker = _setup(delay=6)
    results = _track_objects(engine, runner, worker, scene, range(30))
    # No frame ever waits for the encoder, not even the one with the new prompts.
    assert all("encode" not in r.timings for r, _ in results)
    # One encode in flight at a time: the prompts' frame 0 lands at frame 6, the
    # next is submitted at once from frame 7's corrected tracks, and so on.
    assert runner.embedded == [0, 7, 13, 19, 25]
    landed = [r.index for r, _ in results if r.encoded]
    assert landed == [6, 13, 19, 25]
    # The decodes used the embedded frame's image (the runner's ground truth of that frame),
    # each on the worker right after its embedding: frame 25's too, which lands later.
    assert runner.encoded == [0, 7, 13, 19, 25]
    assert engine.last_encode_index == 19
    assert runner.overlaps == 0
    # Every object is shown at once: until its encode lands by a first look at it
    # (tentative, not decoded: score 0), from then on by its decoded mask, under one id.
    assert [len(r.tracks) for r, _ in results] == [3] * 30
    assert all(t.state is TrackState.TENTATIVE and t.score == 0.0 for r, _ in results[:6] for t in r.tracks)
    assert all(t.state is TrackState.CONFIRMED and t.score > 0.5 for r, _ in results[6:] for t in r.tracks)
    assert {t.track_id for t in results[0][0].tracks} == {t.track_id for t in results[-1][0].tracks}
    owner = _owner(results)
    for r, gt in results[:6]:
        for t in r.tracks:
            assert _iou(t.mask, gt[owner[t.track_id]]) > 0.5, (r.index, t.track_id)


def test_without_first_looks_new_objects_appear_when_their_encode_lands():
    scene = standard_scene(320, 240, num_frames=30, num_objects=3, seed=1)
    runner = EmbeddingGroundTruthRunner(scene)
    engine = Engine(runner, EngineConfig(reencode_every=1, background_encode=True, first_look=False))
    worker = DelayedWorker(6)
    engine.attach_worker(worker.submit)
    results = _track_objects(engine, runner, worker, scene, range(12))
    assert [len(r.tracks) for r, _ in results] == [0] * 6 + [3] * 6


def test_an_object_removed_before_its_encode_lands_never_appears():
    # A click on an object's first look removes it: the encode in flight must not bring it back.
    scene, runner, engine, worker = _setup(delay=6)
    _, gt0 = scene.render(0)
    ids = [engine.add_object(ObjectPrompt(box=_box(gt0[oid]))) for oid in sorted(gt0)]
    keep, landed = [], []
    for i in range(14):
        if i == 3:
            engine.remove_object(ids[0])
        r, _, img = _step(engine, runner, worker, scene, i)
        keep.append(img)
        landed += [i] if r.encoded else []
        shown = {t.track_id for t in r.tracks}
        assert shown == (set(ids) if i < 3 else set(ids[1:])), i
    assert landed and landed[0] == 6  # the prompts' encode landed after the removal


def test_an_encode_is_decoded_on_the_worker_and_a_landing_frame_calls_no_decoder():
    # The decoding of a landing (every track, the searches, new prompts: 200-550 ms on
    # two CPU cores) would stall the frames: it runs on the worker after the embedding.
    scene, runner, engine, worker = _setup(delay=6)
    _, gt0 = scene.render(0)
    for oid in sorted(gt0):
        engine.add_object(ObjectPrompt(box=_box(gt0[oid]), label=str(oid)))
    keep, landings = [], 0
    for i in range(26):
        worker.tick()
        img, _ = scene.render(i)
        runner.frame_of[id(img)] = i
        keep.append(img)
        before = len(runner.decode_batches)
        submitted = len(worker.submitted)
        r = engine.process(Frame(i, img, i / 25.0, time.monotonic()))
        if len(worker.submitted) == submitted:
            assert len(runner.decode_batches) == before, f"frame {i} decoded on the inference thread"
        landings += r.encoded
        if r.encoded:
            assert len(r.tracks) == 3
    assert landings == 4 and len(runner.decode_batches) > 0


def test_landed_masks_are_carried_to_the_current_frame_not_left_on_the_encoded_one(monkeypatch):
    def landing_ious() -> list[float]:
        scene, runner, engine, worker = _setup(delay=8)
        results = _track_objects(engine, runner, worker, scene, range(40))
        owner = _owner(results)
        return [
            _iou(t.mask, gt[owner[t.track_id]])
            for r, gt in results
            if r.encoded and r.index > 8  # landings for tracks (the one at 8 brings the new objects)
            for t in r.tracks
            if owner[t.track_id] in gt
        ]

    carried = landing_ious()
    import realtime_sam.tracking.engine as engine_module

    monkeypatch.setattr(engine_module, "_moved", lambda d, *args: d)  # masks stay where they were decoded
    stale = landing_ious()
    assert len(carried) >= 9
    assert np.mean(carried) > 0.8
    assert np.mean(carried) > np.mean(stale) + 0.05


def test_a_landed_track_mask_is_replayed_through_the_frames_since_not_moved_by_the_track(monkeypatch):
    # Flow between frames that follows nothing (every mask reported moved, and left where it
    # was), as a track drifted off its object is: the track's own motion since the encoded
    # frame then says little, while the decoded mask's pixels, replayed through the kept
    # frames, follow the object.
    from realtime_sam.tracking.propagation import MaskPropagator, PropagatedMask

    def frozen(self, prev, cur, tracks, partly_hidden=()):
        self.work(cur)  # the replay's copy of the frame comes from here
        return {tid: PropagatedMask(np.asarray(m, dtype=bool), np.asarray(b, dtype=np.float64), True) for tid, (m, b) in tracks.items()}

    monkeypatch.setattr(MaskPropagator, "step", frozen)

    def landed(history: int) -> tuple[float, float]:
        """Mean IoU of the landed track masks with the objects now, and on the encoded frame."""
        scene, runner, engine, worker = _setup(delay=8)
        engine._history = deque(maxlen=history)  # 2: the encoded frame is forgotten, nothing to replay
        results = _track_objects(engine, runner, worker, scene, range(40))
        owner = _owner(results)
        pairs = [
            (_iou(t.mask, gt[o]), _iou(t.mask, scene.render(r.index - 8)[1][o]))
            for r, gt in results
            if r.encoded and r.index > 8  # landings for tracks (the one at 8 brings the new objects)
            for t in r.tracks
            if (o := owner[t.track_id]) in gt and o in scene.render(r.index - 8)[1]
        ]
        assert len(pairs) >= 9
        return float(np.mean([p[0] for p in pairs])), float(np.mean([p[1] for p in pairs]))

    replayed, then = landed(300)
    by_motion, _ = landed(2)  # the fallback: moved by the track's box since the encode
    assert replayed > 0.95 and replayed > then + 0.3
    assert replayed > by_motion + 0.05


@pytest.mark.parametrize("trust_replay", [False, True])
def test_a_replay_that_lost_its_object_gives_way_to_the_move_that_followed_it(monkeypatch, trust_replay):
    # The reverse case of the test above: the flow between frames follows every object,
    # but the replay through the kept frames loses them (it leaves each mask where it was
    # decoded, as it left a horse's on DAVIS horsejump-high, live: J 0.22). A landing then
    # takes the mask moved as the track (or a new object's first look) moved since the
    # encoded frame: where the two disagree, the one whose pixels look more like the
    # decoded object (its colour histogram). trust_replay: the replay always taken.
    import realtime_sam.tracking.engine as engine_module
    from realtime_sam.tracking.propagation import PropagatedMask

    def lost(self, frames, masks, sizes=None):
        return {k: PropagatedMask(np.asarray(m, dtype=bool), np.asarray(b, dtype=np.float64), True) for k, (m, b) in masks.items()}

    monkeypatch.setattr(MaskPropagator, "replay", lost)
    if trust_replay:
        monkeypatch.setattr(engine_module, "_LIKELIER", float("inf"))
        # Without the reshape too (tests/test_reshape.py): laid over the current frame, the
        # encoded one's flow pulls a stale mask part way to its object (IoU now 0.57, then 0.75).
        monkeypatch.setattr(Engine, "_reshaped", lambda self, then, moved, image_then: moved)
    scene, runner, engine, worker = _setup(delay=8)
    results = _track_objects(engine, runner, worker, scene, range(40))
    owner = _owner(results)
    landed = {"new": [], "track": []}
    for r, gt in results:
        if r.encoded:
            kind = "new" if r.index == 8 else "track"  # the first landing brings the new objects
            _, then = scene.render(r.index - 8)
            landed[kind] += [(_iou(t.mask, gt[o]), _iou(t.mask, then[o])) for t in r.tracks if (o := owner[t.track_id]) in gt and o in then]
    assert len(landed["new"]) == 3 and len(landed["track"]) >= 9
    for kind, pairs in landed.items():
        now, then = np.mean([p[0] for p in pairs]), np.mean([p[1] for p in pairs])
        if trust_replay:  # left where the encoded frame had them
            assert then > now + 0.2, (kind, now, then)
        else:
            assert now > 0.85 and now > then + 0.2, (kind, now, then)


def test_a_landing_replays_tracks_within_their_whole_size(monkeypatch):
    # What a replay fills in from the frame's edge stops at the object's whole size (see
    # test_propagation): the engine hands every replayed track's size, and none for a new
    # object (it has none yet).
    from realtime_sam.tracking.propagation import MaskPropagator

    calls = []
    replay = MaskPropagator.replay

    def spy(self, frames, masks, sizes=None):
        calls.append((set(masks), dict(sizes or {})))
        return replay(self, frames, masks, sizes)

    monkeypatch.setattr(MaskPropagator, "replay", spy)
    scene, runner, engine, worker = _setup(delay=8)
    _track_objects(engine, runner, worker, scene, range(30))
    assert calls[0][1] == {} and all(k[0] == "new" for k in calls[0][0])  # the first landing: new objects
    later = [(keys, sizes) for keys, sizes in calls[1:] if any(k[0] == "track" for k in keys)]
    assert len(later) >= 2
    for keys, sizes in later:
        tracks = {k for k in keys if k[0] == "track"}
        assert set(sizes) == tracks
        assert all(s is not None and s[0] > 10 and s[1] > 10 for s in sizes.values())


@pytest.mark.parametrize("history", [300, 2])
def test_new_objects_appear_where_they_are_when_their_encode_lands(history):
    # Without first looks: a new object whose look followed it by its patch lands where the
    # look is (test_a_small_new_object_lands_where_its_first_look_followed_it).
    scene, runner, engine, worker = _setup(delay=8, first_look=False)
    engine._history = deque(maxlen=history)  # 2: the encoded frame is forgotten, nothing to replay
    results = _track_objects(engine, runner, worker, scene, range(9))
    first = next(r for r, _ in results if r.encoded)
    assert first.index == 8 and all(t.state is TrackState.CONFIRMED for t in first.tracks)
    _, gt8 = scene.render(8)
    _, gt0 = scene.render(0)
    owner = _owner(results)
    for t in first.tracks:
        now, then = gt8[owner[t.track_id]], gt0[owner[t.track_id]]
        if history == 2:  # left where it was decoded
            assert _iou(t.mask, then) > _iou(t.mask, now) + 0.1
        else:  # replayed through the kept frames
            assert _iou(t.mask, now) > 0.7 and _iou(t.mask, now) > _iou(t.mask, then) + 0.1



def _small_fast(history: int, reencode_every: int = 1, frames: int = 9):
    """The CPU preset's flow (sparse, 320 px) on a 24 px textured square crossing at 12 px a frame
    beside a large still one; encodes land 8 frames after they start. Results and ground truth per frame."""
    scene = Scene(640, 480, 40, (
        SceneObject(1, "rect", (40, 40, 230), 24.0, (100.0, 150.0), (12.0, 0.0)),
        SceneObject(2, "rect", (230, 90, 40), 140.0, (420.0, 330.0)),
    ))
    runner = EmbeddingGroundTruthRunner(scene)
    engine = Engine(
        runner, EngineConfig(reencode_every=reencode_every, background_encode=True),
        propagation_config=PropagationConfig(method="flow", max_side=320),
    )
    worker = DelayedWorker(8)
    engine.attach_worker(worker.submit)
    engine._history = deque(maxlen=history)
    return scene, _track_objects(engine, runner, worker, scene, range(frames)), engine


def test_a_small_new_object_lands_where_its_first_look_followed_it():
    # Its first look is moved by its patch on every frame. The landed mask (decoded on frame 0)
    # is moved as the look was, not replayed through the kept grey copies (shrunk, steps apart:
    # there a 12 px patch matches look-alikes). Here nothing is kept to replay through, so
    # before, the mask stayed where it was decoded, 96 px behind the object.
    scene, results, _ = _small_fast(history=2)
    first = next(r for r, _ in results if r.encoded)
    assert first.index == 8
    owner = _owner(results)
    small = next(t for t in first.tracks if owner[t.track_id] == 1)
    _, gt = scene.render(8)
    assert small.state is TrackState.CONFIRMED and _iou(small.mask, gt[1]) > 0.7
    big = next(t for t in first.tracks if owner[t.track_id] == 2)
    assert _iou(big.mask, gt[2]) > 0.9  # still, with corners: decoded where it is


def test_a_small_track_lands_moved_by_its_own_motion_not_replayed(monkeypatch):
    replayed: list[set] = []
    original = MaskPropagator.replay

    def spy(self, frames, masks, sizes=None):
        replayed.append(set(masks))
        return original(self, frames, masks, sizes)

    monkeypatch.setattr(MaskPropagator, "replay", spy)
    scene, results, engine = _small_fast(history=300, reencode_every=4, frames=30)
    owner = _owner(results)
    landings = [r for r, _ in results if r.encoded and r.index > 8]
    assert len(landings) >= 2
    # Tracks' landings replay the large object only (the keys name the tracks' detections).
    tracks_replayed = [keys for keys in replayed if any(k[0] == "track" for k in keys)]
    assert tracks_replayed and all(len([k for k in keys if k[0] == "track"]) == 1 for keys in tracks_replayed)
    for r, gt in results:
        if r.encoded and r.index > 8:
            for t in r.tracks:
                assert _iou(t.mask, gt[owner[t.track_id]]) > 0.6, (r.index, t.track_id)


def test_masks_follow_the_motion_on_every_frame():
    scene, runner, engine, worker = _setup(delay=8)
    results = _track_objects(engine, runner, worker, scene, range(40))
    owner = _owner(results)
    assert len(owner) == 3
    ious = [_iou(t.mask, gt[owner[t.track_id]]) for r, gt in results for t in r.tracks if owner[t.track_id] in gt]
    assert len(ious) == 3 * 40  # first looks on the 8 frames before the prompts' encode lands
    assert np.mean(ious) > 0.75
    assert {t.track_id for t in results[-1][0].tracks} == set(owner)  # no id lost or added


def test_removed_track_is_not_revived_by_a_late_encode():
    scene, runner, engine, worker = _setup(delay=6)
    removed = []

    def remove(i):
        if i == 9:  # while the encode submitted at frame 7 is in flight
            removed.append(min(t.track_id for t in engine._last_tracks))
            engine.remove_object(removed[0])

    results = _track_objects(engine, runner, worker, scene, range(15))
    assert results[13][0].encoded
    results = results[:9]
    scene, runner, engine, worker = _setup(delay=6)
    results = _track_objects(engine, runner, worker, scene, range(15), on_frame=remove)
    for r, _ in results[9:]:
        assert removed[0] not in {t.track_id for t in r.tracks}
    assert results[13][0].encoded and len(results[13][0].tracks) == 2


def test_a_prompt_while_an_encode_is_in_flight_gets_its_own_encode_of_its_frame():
    scene, runner, engine, worker = _setup(delay=6)
    _, gt0 = scene.render(0)
    engine.add_object(ObjectPrompt(box=_box(gt0[1]), label="1"))
    keep, results = [], []
    for i in range(20):
        if i == 9:  # the encode submitted at frame 7 is in flight
            _, gt9 = scene.render(9)
            engine.add_object(ObjectPrompt(box=_box(gt9[2]), label="2"))
        r, gt, img = _step(engine, runner, worker, scene, i)
        keep.append(img)
        results.append((r, gt))
    assert runner.embedded[:3] == [0, 7, 9]
    assert [r.index for r, _ in results if r.encoded][:3] == [6, 13, 15]
    labels = [sorted(t.label for t in _decoded(r)) for r, _ in results]
    assert labels[14] == ["1"] and labels[15] == ["1", "2"]
    (new,) = [t for t in results[15][0].tracks if t.label == "2"]
    assert _iou(new.mask, results[15][1][2]) > 0.75  # decoded on frame 9, shown where it is at 15


def test_clear_drops_prompts_in_flight_and_taking_the_worker_back_keeps_them():
    scene, runner, engine, worker = _setup(delay=6)
    _, gt0 = scene.render(0)
    engine.add_object(ObjectPrompt(box=_box(gt0[1])))
    keep = []
    r, _, img = _step(engine, runner, worker, scene, 0)
    keep.append(img)
    assert engine.has_pending and len(r.tracks) == 1 and not _decoded(r)  # its first look: waiting for its encode
    engine.clear()
    for i in range(1, 9):
        r, _, img = _step(engine, runner, worker, scene, i)
        keep.append(img)
    assert r.tracks == () and not engine.has_pending

    engine.add_object(ObjectPrompt(box=_box(scene.render(9)[1][1])))
    r, _, img = _step(engine, runner, worker, scene, 9)
    keep.append(img)
    (looked,) = r.tracks
    assert not _decoded(r)
    engine.attach_worker(None)  # e.g. the pipeline closing: the prompt is not lost
    r, _, img = _step(engine, runner, worker, scene, 10)
    keep.append(img)
    assert "encode" in r.timings and runner.encoded[-1] == 10
    assert [t.track_id for t in _decoded(r)] == [t.track_id for t in r.tracks] == [looked.track_id]


def test_without_a_worker_the_engine_encodes_inline():
    scene = standard_scene(160, 120, num_frames=10, num_objects=1)
    runner = EmbeddingGroundTruthRunner(scene)
    engine = Engine(runner, EngineConfig(reencode_every=3, background_encode=True))
    _, gt0 = scene.render(0)
    engine.add_object(ObjectPrompt(box=_box(gt0[1])))
    for i in range(7):
        img, _ = scene.render(i)
        runner.current = i
        engine.process(Frame(i, img, i / 25.0, time.monotonic()))
    assert runner.encoded == [0, 3, 6] and runner.embedded == []


# -- through the real pipeline worker ------------------------------------------------------


class SceneSource:
    live = False

    def __init__(self, scene, runner, n):
        self.scene, self.runner, self.n, self.i = scene, runner, n, 0
        self.images = []

    def read(self):
        if self.i >= self.n:
            return None
        img, _ = self.scene.render(self.i)
        self.images.append(img)
        self.runner.frame_of[id(img)] = self.i
        self.runner.current = self.i
        frame = Frame(self.i, img, self.i / 25.0, time.monotonic())
        self.i += 1
        time.sleep(0.005)
        return frame

    def close(self):
        pass


class SlowEmbedRunner(EmbeddingGroundTruthRunner):
    def __init__(self, scene, delay_s=0.05, fail=False):
        super().__init__(scene)
        self.delay_s, self.fail = delay_s, fail
        self.threads: set[str] = set()

    def embed(self, image_bgr):
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail:
            raise RuntimeError("encoder exploded")
        return super().embed(image_bgr)


def _pipeline(fail=False, n=40):
    scene = standard_scene(320, 240, num_frames=n, num_objects=2, seed=3)
    runner = SlowEmbedRunner(scene, fail=fail)
    engine = Engine(runner, EngineConfig(reencode_every=1, background_encode=True))
    _, gt0 = scene.render(0)
    for oid in sorted(gt0):
        engine.add_object(ObjectPrompt(box=_box(gt0[oid])))
    return Pipeline(SceneSource(scene, runner, n), engine), runner, engine


def test_pipeline_lends_a_worker_thread_and_takes_it_back():
    pipe, runner, engine = _pipeline()
    with pipe:
        results = list(pipe)
    assert len(results) == 40
    assert runner.threads == {"rtsam-encode"}
    assert len(runner.embedded) >= 2 and runner.overlaps == 0
    assert sum(r.encoded for r in results) >= 3  # frame 0 plus background encodes that landed
    assert engine._submit is None and not any(t.name == "rtsam-encode" for t in threading.enumerate())


def test_a_background_encode_error_reaches_the_consumer():
    pipe, runner, engine = _pipeline(fail=True)
    with pytest.raises(RuntimeError, match="encoder exploded"):
        with pipe:
            for _ in pipe:
                pass


# -- the real model, as the CPU preset runs it --------------------------------------------


@pytest.mark.slow
def test_cpu_preset_encodes_the_real_model_in_the_background(checkpoint_path, tmp_path):
    from realtime_sam import track
    from realtime_sam.testing.synthetic import write_video
    from realtime_sam.tracking.association import mask_to_box

    scene = standard_scene(320, 240, num_frames=125, num_objects=2, seed=2)
    clip = write_video(scene, tmp_path / "clip.mp4", fps=25)
    _, gt0 = scene.render(0)
    prompts = [ObjectPrompt(box=tuple(float(v) for v in mask_to_box(gt0[oid]))) for oid in sorted(gt0)]
    # Random weights give noise-like masks: accept them all so the objects stay tracked.
    overrides = [
        f"model.weights={checkpoint_path}", "tracker.min_score=0.0",
        "tracker.min_area_frac=0.0", "tracker.max_area_frac=1.0", "tracker.max_area_change=1e9",
        "tracker.match_iou_thresh=0.01", "tracker.max_lost_frames=1000",
    ]
    results = []
    for r in track(str(clip), prompts=prompts, config="cpu", overrides=overrides):  # a file: every frame
        results.append(r)
        if sum(x.encoded for x in results) < 2:
            # A slow consumer holds the pipeline back (back-pressure), so the
            # encoder has time to land twice however loaded the machine is: up to 37 s.
            time.sleep(0.3)
    assert len(results) == 125 and [r.index for r in results] == list(range(125))
    # Even the prompts' encode runs in the background: frame 0 does not wait for it.
    assert not results[0].encoded and "encode" not in results[0].timings and not _decoded(results[0])
    landed = [r for r in results if r.encoded]
    # The prompts' encode and one or more periodic ones landed; neither their encode nor
    # their decode ran on the inference thread (both run on the worker).
    assert len(landed) >= 2, "fewer than two background encodes landed"
    assert all("encode" not in r.timings and "decode" not in r.timings for r in landed)
    first = results.index(landed[0])
    assert len(_decoded(results[first])) == 2 and not any(_decoded(r) for r in results[:first])
    assert not any(t.name == "rtsam-encode" for t in threading.enumerate())


def test_a_prompt_given_while_paused_lands_on_the_frozen_frame():
    scene = standard_scene(320, 240, num_frames=400, num_objects=2, seed=3)
    runner = SlowEmbedRunner(scene, delay_s=0.3)
    engine = Engine(runner, EngineConfig(reencode_every=8, background_encode=True))
    source = SceneSource(scene, runner, 400)
    with Pipeline(source, engine) as pipe:
        first = pipe.poll(5.0)
        assert first is not None and first.tracks == ()
        pipe.pause()
        time.sleep(0.2)  # the inference thread is parked on the frozen frame
        while pipe.poll(0.05) is not None:  # results made before the pause
            pass
        frozen = source.i
        _, gt = scene.render(0)
        engine.add_object(ObjectPrompt(box=_box(gt[1])))
        seen = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (seen and _decoded(seen[-1])):
            r = pipe.poll(0.1)
            if r is not None:
                seen.append(r)
        assert seen and _decoded(seen[-1]), "the prompt never landed while paused"
        assert seen[-1].encoded and "encode" not in seen[-1].timings
        # While paused the same frame was shown again, a few times, not in a tight loop.
        assert len({r.index for r in seen}) == 1 and len(seen) < 60
        assert source.i <= frozen + pipe.config.queue_size + 2  # reading stopped with the pause
        pipe.stop()


class QueuedWorker:
    """``submit`` queues the call: it starts ``wait`` ticks later (the encoder busy with other
    streams), one at a time in order, and is done ``delay`` ticks after it started."""

    def __init__(self, wait: int, delay: int):
        self.wait, self.delay = wait, delay
        self.queue: list[tuple[int, Future, object, tuple]] = []  # (submitted at, future, fn, args)
        self.running: tuple[int, Future, object] | None = None  # (done at, future, value)
        self.ticks = 0
        self.started: list[int] = []

    def submit(self, fn, *args):
        future = Future()
        future.set_running_or_notify_cancel()
        self.queue.append((self.ticks, future, fn, args))
        return future

    def tick(self):
        self.ticks += 1
        if self.running is not None and self.running[0] <= self.ticks:
            self.running[1].set_result(self.running[2])
            self.running = None
        if self.running is None and self.queue and self.queue[0][0] + self.wait <= self.ticks:
            _, future, fn, args = self.queue.pop(0)
            self.started.append(self.ticks)
            self.running = (self.ticks + self.delay, future, fn(*args))


def test_an_encode_waiting_for_the_encoder_embeds_the_newest_frame_when_it_starts():
    # Several streams on one encoder: a stream's periodic encode waits for the others'. It is
    # moved to each newer frame meanwhile and embeds the one it finds when it starts.
    scene = standard_scene(320, 240, num_frames=100, num_objects=3, seed=1)  # nothing hidden before frame 50
    runner = EmbeddingGroundTruthRunner(scene)
    engine = Engine(runner, EngineConfig(reencode_every=1, background_encode=True))
    worker = QueuedWorker(wait=5, delay=3)
    engine.attach_worker(worker.submit)
    results = _track_objects(engine, runner, worker, scene, range(40))
    landed = [r.index for r, _ in results if r.encoded]
    # Frame 0's (new prompts: tied to the frame they were given on) starts at tick 6 and
    # embeds frame 0. Each later one is submitted on the frame after a landing (9, 17, 25,
    # 33), waits five ticks and embeds the frame processed just before it starts (tick t
    # comes before frame t - 1), four frames newer than the one it was submitted on.
    assert runner.embedded == [0, 13, 21, 29, 37]
    assert runner.embedded[1:] == [t - 2 for t in worker.started[1:]]
    assert landed == [8, 17, 25, 33] == [t + 2 for t in worker.started[:4]]
    assert engine.last_encode_index == 29  # the embedded frame, which the landing replayed from
    owner = _owner(results)
    for r, gt in results[8:]:
        for t in r.tracks:
            assert _iou(t.mask, gt[owner[t.track_id]]) > 0.8, (r.index, t.track_id)


def test_a_waiting_encode_with_new_prompts_keeps_the_frame_they_were_given_on():
    scene, runner, engine, _ = _setup()
    worker = QueuedWorker(wait=5, delay=3)
    engine.attach_worker(worker.submit)
    _, gt0 = scene.render(0)
    engine.add_object(ObjectPrompt(box=_box(gt0[1]), label="1"))
    keep = []
    for i in range(9):
        r, _, img = _step(engine, runner, worker, scene, i)
        keep.append(img)
    assert runner.embedded == [0] and r.encoded
    (t,) = _decoded(r)
    assert _iou(t.mask, scene.render(8)[1][1]) > 0.8


def test_prompts_in_flight_when_the_frame_size_changes_are_dropped_with_the_tracks(caplog):
    # An RTSP stream renegotiated 320x240 -> 160x120 while the encode of a user's box was in flight:
    # the box came back to the queue and was decoded on the new frames at its old numbers (cut to
    # the frame), an object where the user never pointed. Prompts due before the change go with the
    # tracks; one that starts on a later frame is in that frame's pixels and is kept.
    scene, runner, engine, worker = _setup(delay=6)
    small = standard_scene(160, 120, num_frames=100, num_objects=1, seed=2)
    _, gt0 = scene.render(0)
    for oid in sorted(gt0):
        engine.add_object(ObjectPrompt(box=_box(gt0[oid]), label=str(oid)))
    _, gt_small = small.render(5)
    later = engine.add_object(ObjectPrompt(box=_box(next(iter(gt_small.values()))), label="later", start_frame=5))
    keep = []
    for i in range(3):
        r, _, img = _step(engine, runner, worker, scene, i)
        keep.append(img)
        assert len(r.tracks) == 3  # first looks while the encode is in flight
    runner.scene = small
    seen = []
    with caplog.at_level("WARNING"):
        for i in range(3, 16):
            r, _, img = _step(engine, runner, worker, small, i)
            keep.append(img)
            seen.append({t.track_id for t in r.tracks})
    assert seen[:2] == [set(), set()]
    assert all(ids <= {later} for ids in seen) and later in seen[-1]
    changed = [m for m in caplog.messages if m.startswith("frame size changed")]
    assert changed == [
        "frame size changed from 320x240 to 160x120 at frame 3; dropping 0 track(s) and 3 prompt(s) not yet decoded "
        "(given on the old size: prompt again)"
    ]
