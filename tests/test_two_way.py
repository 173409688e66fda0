"""Two-way propagation for files (realtime_sam.tracking.two_way): masks carried back from the next encode.

The engine runs a photo-textured, deforming clip (the hard scene) with the
ground-truth oracle as its decoder, so the masks between encodes can be scored
against exact ground truth; the same engine results are scored one-way (as
live) and two-way (as a file).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from realtime_sam.app.pipeline import Pipeline, PipelineConfig
from realtime_sam.config import load_config
from realtime_sam.testing.hard_scene import hard_scene
from realtime_sam.testing.oracle import GroundTruthOracle
from realtime_sam.tracking.association import mask_to_box
from realtime_sam.tracking.dense_flow import DenseFlowPropagator
from realtime_sam.tracking.engine import Engine
from realtime_sam.tracking.two_way import SoftMasks, TwoWay
from realtime_sam.types import Frame, FrameResult, ObjectPrompt, TrackResult, TrackState

EVERY = 10


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


@pytest.fixture(scope="module")
def clip():
    scene = hard_scene(320, 240, seconds=2, seed=1, num_objects=2)
    rendered = [scene.render(i) for i in range(scene.num_frames)]
    return [f for f, _ in rendered], [g for _, g in rendered]


def _engine(frames, gts, *overrides: str) -> Engine:
    cfg = load_config(None, [f"engine.reencode_every={EVERY}", *overrides])
    oracle = GroundTruthOracle(lambda i: gts[i], frames, inner=None)
    engine = Engine.from_config(cfg, runner=oracle)
    for oid in (1, 2):
        box = mask_to_box(gts[0][oid])
        engine.add_object(ObjectPrompt(box=tuple(float(v) for v in box)))
    return engine


def _score(results, gts) -> dict[int, dict[int, float]]:
    """``{frame: {object: IoU}}`` (track ids 1, 2 are objects 1, 2: prompted in that order)."""
    out = {}
    for r in results:
        masks = {t.track_id: t.mask for t in r.tracks}
        out[r.index] = {oid: _iou(masks.get(oid, np.zeros_like(g)), g) for oid, g in gts[r.index].items() if oid in (1, 2)}
    return out


def test_two_way_beats_one_way_between_encodes_and_keeps_every_frame_in_order(clip):
    frames, gts = clip
    engine = _engine(frames, gts)
    two_way = engine.two_way()
    assert two_way is not None
    one, both = [], []
    for i, image in enumerate(frames):
        r = engine.process(Frame(i, image, i / 30.0, time.monotonic()))
        one.append(r)
        out = two_way.push(r, engine.soft_masks())
        # Held until the next encode, then all at once, in order.
        assert two_way.held == (0 if r.encoded else i % EVERY)
        both.extend(out)
    # The end of the clip: its last frame is encoded once more and anchors the frames since
    # the last periodic encode (51-58), whose results come out now.
    tail = two_way.finish(engine)
    assert [r.index for r in tail] == list(range(len(frames) // EVERY * EVERY - EVERY + 1, len(frames)))
    assert tail[-1].encoded and not one[-1].encoded
    both.extend(tail)
    assert two_way.held == 0 and two_way.finish(engine) == []
    assert [r.index for r in both] == list(range(len(frames)))
    # Ids, states and scores are the forward run's; only masks between encodes change.
    for a, b in zip(one[:-1], both):
        assert [(t.track_id, t.state, t.score) for t in a.tracks] == [(t.track_id, t.state, t.score) for t in b.tracks]
        if a.encoded:
            assert b is a
    # Scored where the forward run is on the object both at the frame and at the next encode
    # (an object lost in a crossing is lost either way).
    s1, s2 = _score(one, gts), _score(both, gts)
    pairs = [
        (i, oid) for i in range((len(frames) - 1) // EVERY * EVERY) for oid in (1, 2)
        if i % EVERY and s1[i][oid] > 0.5 and s1[(i // EVERY + 1) * EVERY][oid] > 0.5
    ]
    assert len(pairs) > 20
    j1, j2 = np.mean([s1[i][o] for i, o in pairs]), np.mean([s2[i][o] for i, o in pairs])
    assert j2 > j1 + 0.01, (j1, j2)
    # The frame just before an encode gains most: it is one frame from the backward decode.
    last = [(i, o) for i, o in pairs if (i + 1) % EVERY == 0]
    assert np.mean([s2[i][o] for i, o in last]) > np.mean([s1[i][o] for i, o in last]) + 0.03
    # The tail too, anchored by the extra encode of the last frame.
    tail_pairs = [(i, o) for i in range(51, 59) for o in (1, 2) if s1[i][o] > 0.5]
    assert np.mean([s2[i][o] for i, o in tail_pairs]) > np.mean([s1[i][o] for i, o in tail_pairs]) + 0.005


def _result(index: int, masks: dict[int, np.ndarray], encoded: bool, image: np.ndarray) -> FrameResult:
    tracks = tuple(
        TrackResult(tid, m, tuple(float(v) for v in (mask_to_box(m) if m.any() else (0, 0, 1, 1))), 0.9, TrackState.CONFIRMED)
        for tid, m in masks.items()
    )
    return FrameResult(Frame(index, image, index / 30.0, 0.0), tracks, encoded)


def _logits(mask: np.ndarray) -> np.ndarray:
    from realtime_sam.model.transforms import preprocess_shape
    from realtime_sam.testing.synthetic import mask_logits

    return mask_logits(mask, preprocess_shape(*mask.shape, 1024))


def test_only_tracks_with_a_mask_at_both_ends_are_blended_and_the_front_one_hides_the_other():
    h, w = 120, 160
    image = np.full((h, w, 3), 90, np.uint8)
    a = np.zeros((h, w), bool)
    a[30:70, 30:70] = True
    b = np.zeros((h, w), bool)
    b[40:80, 60:100] = True  # overlaps a
    lone = np.zeros((h, w), bool)
    lone[90:110, 120:150] = True
    tw = TwoWay(DenseFlowPropagator(), max_held=10)
    assert tw.push(_result(0, {1: a, 2: b}, True, image), SoftMasks({1: _logits(a), 2: _logits(b)}, (1, 2)))[0].index == 0
    # Frame 1: track 3 appears between encodes; frame 2's encode no longer has it.
    held = _result(1, {1: a, 2: b, 3: lone}, False, image)
    assert tw.push(held, SoftMasks({1: _logits(a), 2: _logits(b), 3: _logits(lone)}, (2, 1, 3))) == []
    # The anchor decodes track 1 shifted right and track 2 where it was.
    a2 = np.roll(a, 20, axis=1)
    out = tw.push(_result(2, {1: a2, 2: b}, True, image), SoftMasks({1: _logits(a2), 2: _logits(b)}, (2, 1)))
    assert [r.index for r in out] == [1, 2]
    got = {t.track_id: t.mask for t in out[0].tracks}
    # Track 3 had no mask at the anchor: its forward mask, untouched.
    assert got[3] is held.tracks[2].mask
    # Track 2 is in front (order at frame 1): whole; track 1 loses the overlap to it.
    assert _iou(got[2], b) > 0.97
    assert not (got[1] & got[2]).any()
    # Track 1 halfway (weight 0.5) between a and a2 (a still frame: flow moves nothing): the
    # logits are +-10 inside/outside each, so the blend is positive where both are.
    assert _iou(got[1], a & a2 & ~b) > 0.9
    assert out[0].tracks[0].box == tuple(float(v) for v in mask_to_box(got[1]))


def test_max_held_bounds_the_wait():
    h, w = 60, 80
    image = np.zeros((h, w, 3), np.uint8)
    m = np.zeros((h, w), bool)
    m[10:30, 10:30] = True
    tw = TwoWay(DenseFlowPropagator(), max_held=3)
    got = []
    for i in range(6):
        got += tw.push(_result(i, {1: m}, False, image), SoftMasks({1: _logits(m)}, (1,)))
        assert tw.held <= 3
    assert [r.index for r in got] == [0, 1, 2]
    assert [r.index for r in tw.flush()] == [3, 4, 5]
    with pytest.raises(ValueError, match="max_held"):
        TwoWay(DenseFlowPropagator(), max_held=0)


def test_no_two_way_without_dense_flow(clip):
    frames, gts = clip
    assert _engine(frames, gts, "propagation.method=flow").two_way() is None


class _ListSource:
    """A file source over rendered frames."""

    live = False
    fps = 30.0
    name = "clip"

    def __init__(self, frames) -> None:
        self._frames = list(frames)
        self._i = 0
        self.size = (frames[0].shape[1], frames[0].shape[0])

    def read(self):
        if self._i >= len(self._frames):
            return None
        i, self._i = self._i, self._i + 1
        return Frame(i, self._frames[i], i / self.fps, time.monotonic())

    def interrupt(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Collect:
    def __init__(self) -> None:
        self.results: list[FrameResult] = []
        self.closed = False

    def write(self, result: FrameResult) -> None:
        self.results.append(result)

    def close(self) -> None:
        self.closed = True


class _StoppingSource(_ListSource):
    """Serves ``stop_at`` frames, then, once the engine has processed them all, stops the run (as
    Ctrl-C does: ``stop``, then the source's read ends) with the file not at its end."""

    def __init__(self, frames, stop_at: int, processed: threading.Semaphore) -> None:
        super().__init__(frames)
        self.stop_at, self.processed, self.stop = stop_at, processed, lambda: None

    def read(self):
        if self._i == self.stop_at:
            for _ in range(self.stop_at):
                assert self.processed.acquire(timeout=60), "the engine did not process the frames served"
            # The inference thread is now waiting for the next frame (or soon will be), where the
            # stop meets the end that the source's read sends after it: no file's end (no encode).
            time.sleep(0.3)
            self.stop()
            return None
        return super().read()


@pytest.mark.parametrize("two_way", [True, False])
def test_pipeline_on_a_file_writes_every_frame_once_in_order_also_when_stopped_between_encodes(clip, two_way):
    frames, gts = clip
    stop_at = 25  # mid-interval: frames 21-24 are held when the run stops
    sink = _Collect()
    engine = _engine(frames, gts)
    processed = threading.Semaphore(0)
    process = engine.process

    def counting(frame):
        result = process(frame)
        processed.release()
        return result

    engine.process = counting  # type: ignore[method-assign]
    source = _StoppingSource(frames[:40], stop_at, processed)
    cfg = PipelineConfig(two_way=two_way)
    with Pipeline(source, engine, sinks=[sink], config=cfg) as pipe:
        source.stop = pipe.stop
        yielded = [r.index for r in pipe]
    assert sink.closed
    assert [r.index for r in sink.results] == list(range(stop_at))
    assert yielded == list(range(stop_at))
    direct = _engine(frames, gts)
    plain = [direct.process(Frame(i, frames[i], i / 30.0, 0.0)) for i in range(stop_at)]
    same = [all((t.mask == u.mask).all() for t, u in zip(r.tracks, p.tracks)) for r, p in zip(sink.results, plain)]
    if two_way:
        # Frames 1-9 and 11-19 blended; 21-24 went out one-way at the stop (no encode more).
        assert not any(same[1:10]) and not any(same[11:20])
        assert all(same[20:]) and not sink.results[-1].encoded
    else:
        assert all(same)


@pytest.mark.parametrize("length, max_frames", [(25, 0), (40, 25)], ids=["the-file-ends", "max-frames-ends-it"])
def test_pipeline_on_a_file_that_ends_blends_the_frames_after_the_last_encode_too(clip, length, max_frames):
    # A run cut short by max_frames ends as a file of that length does.
    frames, gts = clip
    sink = _Collect()
    config = PipelineConfig(max_frames=max_frames)
    with Pipeline(_ListSource(frames[:length]), _engine(frames, gts), sinks=[sink], config=config) as pipe:
        yielded = [r.index for r in pipe]
    assert yielded == [r.index for r in sink.results] == list(range(25))
    direct = _engine(frames, gts)
    plain = [direct.process(Frame(i, frames[i], i / 30.0, 0.0)) for i in range(25)]
    same = [all((t.mask == u.mask).all() for t, u in zip(r.tracks, p.tracks)) for r, p in zip(sink.results, plain)]
    # 21-23 blended with the re-encoded last frame (24), which is now an encoded result.
    assert not any(same[21:24]) and sink.results[24].encoded and not plain[24].encoded


def test_pipeline_two_way_is_off_for_live_and_realtime_sources(clip):
    frames, gts = clip

    class _Live(_ListSource):
        live = True

    for source, cfg in ((_Live(frames[:12]), PipelineConfig()), (_ListSource(frames[:12]), PipelineConfig(realtime=True))):
        engine = _engine(frames, gts)
        direct = _engine(frames, gts)
        with Pipeline(source, engine, config=cfg) as pipe:
            for r in pipe:
                # One result per frame as it is processed: the live order and masks, unchanged.
                p = direct.process(Frame(r.index, frames[r.index], 0.0, 0.0))
                assert all((t.mask == u.mask).all() for t, u in zip(r.tracks, p.tracks))


def test_the_backward_run_reads_the_forward_runs_flow_and_blends_as_it_would_computing_its_own(clip):
    """Flow shared between the two runs (FlowCache): most backward steps run no DIS, and the masks hardly move."""
    frames, gts = clip

    def run(share: bool):
        engine = _engine(frames, gts)
        two_way = engine.two_way()
        flows = two_way.propagator.reuse_from
        assert flows is not None and engine.dense.record_to is flows
        if not share:
            engine.dense.record_to = two_way.propagator.reuse_from = None
        out = []
        for i, image in enumerate(frames):
            r = engine.process(Frame(i, image, i / 30.0, time.monotonic()))
            out.extend(two_way.push(r, engine.soft_masks()))
            if r.encoded:
                assert flows.get(frames[i - 1], frames[i]) == {}  # spent at the blend: cleared
        return out + two_way.finish(engine), flows

    shared, flows = run(True)
    alone, _ = run(False)
    assert flows.hits > flows.misses > 0  # most of the backward run's flow is read, not computed
    assert [r.index for r in shared] == [r.index for r in alone]
    ious = [
        _iou(a.mask, b.mask)
        for ra, rb in zip(shared, alone) for a, b in zip(ra.tracks, rb.tracks)
        if a.mask.any() or b.mask.any()
    ]
    assert len(ious) > 50 and np.mean(ious) > 0.98
    # Where they differ (another crop, so slightly other flow), no worse against the ground truth.
    j_shared = np.mean([v for f in _score(shared, gts).values() for v in f.values()])
    j_alone = np.mean([v for f in _score(alone, gts).values() for v in f.values()])
    assert j_shared > j_alone - 0.01, (j_shared, j_alone)


def test_blended_masks_edges_run_on_the_lent_thread_with_the_same_masks(clip):
    """Two-way re-decides its blended masks' edges track by track, every other one on the thread the
    engine lends dense flow: the masks are those of a run with no thread lent, or with one whose
    owner cancels what it is handed (closing)."""
    from concurrent.futures import ThreadPoolExecutor

    from test_dense_flow import _cancelled

    frames, gts = clip

    def run(submit):
        engine = _engine(frames, gts)
        two_way = engine.two_way()
        at_blend: list[str] = []
        blending = False
        if submit is not None:
            def counted(fn, *args):
                if blending:
                    at_blend.append(getattr(fn, "__name__", ""))
                return submit(fn, *args)

            engine.attach_flow_worker(counted)
        out = []
        for i, image in enumerate(frames):
            r = engine.process(Frame(i, image, i / 30.0, time.monotonic()))
            blending = True
            out.extend(two_way.push(r, engine.soft_masks()))
            blending = False
        blending = True
        return out + two_way.finish(engine), at_blend

    alone, _ = run(None)
    with ThreadPoolExecutor(1, thread_name_prefix="lent") as pool:
        shared, at_blend = run(pool.submit)
    closing, _ = run(_cancelled)
    assert at_blend.count("edge_by_motion") > 5  # the blends handed edges to the thread
    assert [r.index for r in alone] == [r.index for r in shared] == [r.index for r in closing]
    for a, b, c in zip(alone, shared, closing):
        for ta, tb, tc in zip(a.tracks, b.tracks, c.tracks):
            assert ta.track_id == tb.track_id == tc.track_id
            assert np.array_equal(ta.mask, tb.mask) and np.array_equal(ta.mask, tc.mask)


def test_reversed_flows_are_the_forward_ones_with_roles_swapped(clip):
    """What makes the reuse exact for a given crop: DIS from b to a is what a forward step from a to b computed."""
    frames, _ = clip
    p = DenseFlowPropagator()
    g0, g1 = (np.ascontiguousarray(f[..., 1]) for f in frames[3:5])
    size = frames[0].shape[:2]
    crop = (40, 30, 260, 200)
    fwd = p._flows(g0, g1, crop, size)
    rev = p._flows(g1, g0, crop, size)
    assert np.array_equal(rev.back, fwd.fwd) and np.array_equal(rev.fwd, fwd.back) and rev.block == fwd.block
    swapped = p._derive(type(fwd)(fwd.fwd, fwd.back, fwd.block), size)
    for a, b in zip(swapped, p._derive(rev, size)):
        assert np.array_equal(a, b)


def test_the_flow_cache_keeps_the_last_pairs_only():
    from realtime_sam.tracking.dense_flow import FlowCache

    cache = FlowCache(max_frames=3)
    images = [np.zeros((4, 4), np.uint8) for _ in range(6)]
    for i in range(5):
        cache.put(images[i], images[i + 1], (0, 0, 4, 4), "flows")  # type: ignore[arg-type]
    assert cache.get(images[1], images[2]) == {}  # dropped: only the last three pairs
    assert cache.get(images[4], images[5]) == {(0, 0, 4, 4): "flows"}
    assert cache.get(images[5], images[4]) == {}  # a pair is ordered
    assert cache.get(images[4].copy(), images[5]) == {}  # frames are matched by identity, not content
    assert len(cache) == 3
    # Held weakly: frames nobody else holds take their pairs with them (an engine reused for a
    # live source, with no backward run left to read them, keeps no frames alive).
    del images[:5]
    cache.put(images[0], np.zeros((4, 4), np.uint8), (0, 0, 4, 4), "flows")  # type: ignore[arg-type]
    assert len(cache) == 1


def test_held_flows_keep_only_their_crops_cells_and_give_back_the_whole_grid():
    from realtime_sam.tracking.two_way import _Cells

    rng = np.random.default_rng(0)
    flow = np.zeros((192, 256, 2), np.float32)
    flow[10:50, 20:90] = rng.normal(0, 2, (40, 70, 2))
    kept = _Cells.of(flow)
    assert kept.part.shape == (40, 70, 2)  # a held frame keeps its crop's cells, not the whole grid
    assert np.array_equal(kept.whole(), flow)
    none = np.zeros_like(flow)
    assert np.array_equal(_Cells.of(none).whole(), none)
    # A cell that moves along one axis only is flow too: the rectangle reaches it.
    flow[9, 19] = (0.0, 1.5)
    flow[50, 90] = (-0.5, 0.0)
    kept = _Cells.of(flow)
    assert kept.at == (9, 19) and kept.part.shape == (42, 72, 2)
    assert np.array_equal(kept.whole(), flow)


@pytest.mark.parametrize("max_held", [120, 4])
def test_the_forward_runs_edges_are_worked_out_only_where_two_way_shows_them_with_the_same_masks(clip, monkeypatch, max_held):
    """The engine leaves its dense-flow masks' edges to the two-way (SoftMasks.shown): the results are
    those of an engine that re-decides every edge at once, with fewer edges worked out. Track 2 is
    removed between encodes (its held masks are not blended: shown as the forward run made them),
    the run stops between encodes (flushed as they are), and with ``max_held`` 4 the oldest held
    results go out unblended."""
    from test_dense_flow import _count_edges

    frames, gts = clip
    calls = _count_edges(monkeypatch)  # the forward run's (two-way calls its own)

    def run(defer: bool):
        calls.clear()
        engine = _engine(frames, gts)
        two_way = engine.two_way(max_held=max_held)
        assert engine.dense.defer_edges
        engine.dense.defer_edges = defer
        out = []
        for i, image in enumerate(frames[:47]):
            if i == 15:
                engine.remove_object(2)
            r = engine.process(Frame(i, image, i / 30.0, time.monotonic()))
            soft = engine.soft_masks()
            if soft.shown:
                assert defer and not r.encoded
                deferred.append(i)
            out.extend(two_way.push(r, soft))
        return out + two_way.flush(), len(calls)

    deferred: list[int] = []
    at_once, made = run(False)
    later, worked_out = run(True)
    assert len(deferred) > 20
    assert [r.index for r in at_once] == [r.index for r in later] == list(range(47))
    non_blended = 0
    for a, b in zip(at_once, later):
        assert [t.track_id for t in a.tracks] == [t.track_id for t in b.tracks]
        for ta, tb in zip(a.tracks, b.tracks):
            np.testing.assert_array_equal(ta.mask, tb.mask)
            assert ta.box == tb.box and ta.state == tb.state
        non_blended += a.index in (11, 12, 13, 14) and any(t.track_id == 2 for t in a.tracks)
    assert non_blended == 4
    # Worked out: track 2's held frames, the frames flushed at the end, and (max_held 4) the oldest held.
    assert 0 < worked_out < (made / 2 if max_held > EVERY else made), (worked_out, made)
