"""Runners written outside the package, as a user would, drive every engine feature.

The runners here subclass nothing of the package and import only numpy: the
:class:`~realtime_sam.tracking.model_runner.ModelRunner` protocol is all they
know. :class:`ColourRunner` has only the required ``encode``/``decode``/``masks``
(it "segments" the saturated pixels of the prompt's dominant colour inside the
prompt's box); :class:`EmbedRunner` adds ``embed``/``use``. The engine must work
with both, with less for the first; and what a runner returns that the protocol
does not allow is one clear error naming the method.
"""

from __future__ import annotations

import numpy as np
import pytest

from realtime_sam import Engine, ObjectPrompt, Pipeline, open_source, track
from realtime_sam.app.multi import open_streams
from realtime_sam.app.scheduler import EncodeScheduler
from realtime_sam.app.streams import StreamSpec
from realtime_sam.config import load_config
from realtime_sam.testing.fakes import FixedBoxDetector
from realtime_sam.testing.synthetic import standard_scene, write_video
from realtime_sam.tracking.association import mask_to_box
from realtime_sam.types import Frame, TrackState

W, H = 240, 180  # (at 160x120 the blue ellipse, 21x13 px, is lost by dense flow with any runner)
LOW = 256


# ------------------------------------------------------------------ the user's runners


def _colour_classes(image_bgr: np.ndarray) -> np.ndarray:
    """``HxW``: 0 for muted pixels, else 1 + the index of the pixel's strongest channel."""
    img = image_bgr.astype(np.int16)
    saturated = img.max(axis=2) - img.min(axis=2) > 70
    return np.where(saturated, img.argmax(axis=2) + 1, 0)


class ColourRunner:
    """``encode``, ``decode`` and ``masks`` only, numpy only."""

    def __init__(self) -> None:
        self.classes: np.ndarray | None = None
        self.calls: list[str] = []

    def encode(self, image_bgr):
        self.calls.append("encode")
        self.classes = _colour_classes(image_bgr)

    def _to_low(self, mask):
        """``HxW bool`` -> SAM's low-res layout (longest side fills 256, padded bottom/right)."""
        h, w = mask.shape
        s = LOW / max(h, w)
        out = np.full((LOW, LOW), -10.0, np.float32)
        lh, lw = int(np.ceil(h * s)), int(np.ceil(w * s))
        ys = np.minimum((np.arange(lh) / s).astype(int), h - 1)
        xs = np.minimum((np.arange(lw) / s).astype(int), w - 1)
        out[:lh, :lw] = np.where(mask[ys][:, xs], 10.0, -10.0)
        return out

    def _segment(self, box=None, point=None):
        cls = self.classes
        h, w = cls.shape
        colour = None
        if box is None:
            x, y = int(np.clip(point[0], 0, w - 1)), int(np.clip(point[1], 0, h - 1))
            e = max(h, w) / 6
            box, colour = (x - e, y - e, x + e, y + e), cls[y, x]
        x0, y0, x1, y1 = box
        gx, gy = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
        x0, y0 = int(max(0, x0 - gx)), int(max(0, y0 - gy))
        x1, y1 = int(min(w, x1 + gx + 1)), int(min(h, y1 + gy + 1))
        window = cls[y0:y1, x0:x1]
        if colour is None:
            counts = np.bincount(window.ravel(), minlength=4)[1:]
            colour = counts.argmax() + 1 if counts.max() > 0 else 0
        mask = np.zeros((h, w), bool)
        if colour:
            mask[y0:y1, x0:x1] = window == colour
        return mask

    def decode(self, points, labels, boxes, mask_input, multimask):
        self.calls.append("decode")
        n = len(boxes) if boxes is not None else len(points)
        c = 3 if multimask else 1
        low = np.full((n, c, LOW, LOW), -10.0, np.float32)
        iou = np.full((n, c), 0.05, np.float32)
        for i in range(n):
            point = None
            if points is not None:
                fg = [p for p, lab in zip(points[i], labels[i]) if lab == 1]
                point = fg[0] if fg else None
            if boxes is None and point is None:
                continue
            mask = self._segment(box=None if boxes is None else boxes[i], point=point)
            if mask.any():
                low[i, :] = self._to_low(mask)
                iou[i, :] = 0.9
        return low, iou

    def masks(self, low_res, size):
        self.calls.append("masks")
        h, w = size
        s = LOW / max(h, w)
        ys = np.minimum((np.arange(h) * s).astype(int), LOW - 1)
        xs = np.minimum((np.arange(w) * s).astype(int), LOW - 1)
        return np.asarray(low_res)[:, ys][:, :, xs] > 0


class EmbedRunner(ColourRunner):
    """:class:`ColourRunner` with ``embed``/``use``: background encoding."""

    def embed(self, image_bgr):
        self.calls.append("embed")
        return _colour_classes(image_bgr)

    def use(self, embedding):
        self.calls.append("use")
        self.classes = embedding


# ------------------------------------------------------------------ helpers


def _iou(a, b) -> float:
    u = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / u) if u else 1.0


@pytest.fixture(scope="module")
def scene():
    # Objects 1 and 2 cross at frame 20; object 3 (blue ellipse) never meets them.
    return standard_scene(W, H, num_frames=40)


def _box(gt, oid):
    return tuple(float(v) for v in mask_to_box(gt[oid]))


def _centre(gt, oid):
    ys, xs = np.nonzero(gt[oid])
    return float(xs.mean()), float(ys.mean())


def _run(engine, scene, frames, at=None, start=0):
    """Process ``frames`` of ``scene`` from ``start``; ``at``: ``{index: fn(engine, gt)}`` called before that frame."""
    results = []
    for i in range(start, start + frames):
        image, gt = scene.render(i)
        if at and i in at:
            at[i](engine, gt)
        results.append(engine.process(Frame(i, image, i / 25.0, 0.0)))
    return results


def _prompt_both(engine, gt):
    """A box on object 1 and a click on object 3: track ids 1 and 2."""
    assert engine.add_object(ObjectPrompt(box=_box(gt, 1), label="box")) == 1
    assert engine.add_object(ObjectPrompt(points=(_centre(gt, 3),), labels=(1,), label="click")) == 2


# ------------------------------------------------------------------ features


@pytest.mark.parametrize("preset", ["cpu", "gpu", None])
@pytest.mark.parametrize("method", ["dense", "flow", "none"])
@pytest.mark.parametrize("runner_type", [ColourRunner, EmbedRunner])
def test_box_and_point_prompts_track_with_a_users_runner(preset, method, runner_type, scene):
    runner = runner_type()
    engine = Engine.from_config(load_config(preset, [f"propagation.method={method}"]), runner=runner)
    results = _run(engine, scene, 12, at={0: _prompt_both})
    image, gt = scene.render(11)
    shown = {t.track_id: t for t in results[-1].tracks}
    assert set(shown) == {1, 2}
    assert shown[1].label == "box" and shown[2].label == "click"
    if method != "none":  # without propagation a mask waits for the next encode
        assert _iou(shown[1].mask, gt[1]) > 0.6
        assert _iou(shown[2].mask, gt[3]) > 0.6
    # Without a worker, the engine's own thread encodes: embed/use are never needed.
    assert "embed" not in runner.calls and "use" not in runner.calls


def test_prompts_mid_stream_remove_clear_and_auto_with_a_users_runner(scene):
    engine = Engine.from_config(load_config("cpu"), runner=ColourRunner())
    results = _run(engine, scene, 10, at={4: _prompt_both})
    assert {t.track_id for t in results[3].tracks} == set()
    assert {t.track_id for t in results[-1].tracks} == {1, 2}
    engine.remove_object(1)
    assert {t.track_id for t in _run(engine, scene, 1, start=10)[0].tracks} == {2}
    engine.clear()
    assert _run(engine, scene, 1, start=11)[0].tracks == ()
    engine.set_auto(True)  # queued: on from the next frame
    found = _run(engine, scene, 3, start=12)[-1].tracks
    assert engine.auto
    _, gt = scene.render(14)
    # Discovery's point grid finds objects (and nothing else: the background is muted).
    assert len(found) >= 2 and {t.track_id for t in found}.isdisjoint({1, 2})
    assert all(max(_iou(t.mask, m) for m in gt.values()) > 0.6 for t in found)


def test_detector_prompts_with_a_users_runner(scene):
    frames = {}
    detector = FixedBoxDetector(lambda image: [mask_to_box(frames[id(image)][1])], [0], {0: "ball"})
    engine = Engine.from_config(load_config("cpu"), runner=ColourRunner(), detector=detector)
    for i in range(6):
        image, gt = scene.render(i)
        frames[id(image)] = gt
        result = engine.process(Frame(i, image, i / 25.0, 0.0))
    assert detector.calls >= 1
    assert [t.label for t in result.tracks] == ["ball"]
    assert _iou(result.tracks[0].mask, gt[1]) > 0.6


def _out_and_back(i: int) -> tuple[np.ndarray, np.ndarray]:
    """A red square that leaves through the right edge (out by frame 19) and comes back (from frame 22)."""
    image = np.full((H, W, 3), 110, np.uint8)
    x = 20 + 12 * i if i <= 20 else 260 - 12 * (i - 20)
    mask = np.zeros((H, W), bool)
    mask[80:100, max(0, x):max(0, min(W, x + 20))] = True
    image[mask] = (30, 30, 220)
    return image, mask


@pytest.mark.parametrize("preset", ["cpu", None])
def test_a_track_that_leaves_and_comes_back_keeps_its_id_with_a_users_runner(preset):
    # The runner has no image features: the lost track is found again by its colours.
    engine = Engine.from_config(load_config(preset), runner=ColourRunner())
    engine.add_object(ObjectPrompt(box=(20, 80, 40, 100)))
    states = []
    for i in range(40):
        image, mask = _out_and_back(i)
        result = engine.process(Frame(i, image, i / 25.0, 0.0))
        states.append({t.track_id: t.state for t in result.tracks})
    assert any(s.get(1) == TrackState.LOST for s in states[12:30])
    shown = {t.track_id: t for t in result.tracks}
    assert list(shown) == [1] and shown[1].state != TrackState.LOST
    assert _iou(shown[1].mask, mask) > 0.6


@pytest.fixture(scope="module")
def clip(tmp_path_factory, scene):
    return write_video(scene, tmp_path_factory.mktemp("user_runner") / "clip.mp4")


@pytest.mark.parametrize("overrides", [[], ["pipeline.two_way=false"], ["engine.background_encode=true"]])
@pytest.mark.parametrize("runner_type", [ColourRunner, EmbedRunner])
def test_track_and_pipeline_drive_a_users_runner(overrides, runner_type, clip, scene):
    config = load_config(None, overrides)
    runner = runner_type()
    engine = Engine.from_config(config, runner=runner)
    _, gt0 = scene.render(0)
    results = list(track(str(clip), prompts=[ObjectPrompt(box=_box(gt0, 3))], config=config, engine=engine))
    assert [r.index for r in results] == list(range(scene.num_frames))
    _, gt = scene.render(results[-1].index)
    assert [t.track_id for t in results[-1].tracks] == [1]
    assert _iou(results[-1].tracks[0].mask, gt[3]) > 0.5
    background = config.engine.background_encode and runner_type is EmbedRunner
    assert ("embed" in runner.calls) == background


class EmbedOnlyRunner(ColourRunner):
    """``embed`` without ``use``: it cannot make an embedding current, so no background encodes."""

    def embed(self, image_bgr):
        self.calls.append("embed")
        return _colour_classes(image_bgr)


def test_a_runner_with_embed_but_no_use_encodes_on_the_engines_thread(clip, scene):
    config = load_config("cpu", ["engine.background_encode=true"])
    runner = EmbedOnlyRunner()
    engine = Engine.from_config(config, runner=runner)
    assert not engine.wants_worker
    _, gt0 = scene.render(0)
    with Pipeline(open_source(str(clip)), engine, config=config.pipeline) as pipe:
        engine.add_object(ObjectPrompt(box=_box(gt0, 3)))
        results = list(pipe)
    assert len(results) == scene.num_frames and results[-1].tracks
    assert "embed" not in runner.calls and "encode" in runner.calls


def test_several_streams_share_a_users_runners_encoder(tmp_path, scene):
    clips = {name: write_video(standard_scene(W, H, num_frames=10, seed=seed), tmp_path / f"{name}.mp4") for name, seed in (("a", 1), ("b", 2))}
    scheduler = EncodeScheduler(lambda images: [_colour_classes(im) for im in images])
    specs = [StreamSpec(name, str(path), prompts=(ObjectPrompt(points=((40.0, 40.0),), labels=(1,)),)) for name, path in clips.items()]
    # (A click on the background decodes to nothing: the streams' own objects come from discovery.)
    config = load_config("cpu", ["engine.auto=true"])
    with open_streams(specs, config, runner_for=lambda spec: EmbedRunner(), scheduler=scheduler) as multi:
        results = list(multi)
    for name in clips:
        mine = [r for r in results if r.stream == name]
        assert len(mine) == 10 and mine[-1].tracks
    assert sorted(set(scheduler.order)) == ["a", "b"]


# ------------------------------------------------------------------ what a runner returns


class TorchLike:
    """An array-like (as a CPU torch tensor is): numpy converts it with ``__array__``."""

    def __init__(self, a):
        self.a = a

    def __array__(self, dtype=None, copy=None):
        return self.a if dtype is None else self.a.astype(dtype)


class OnTheGpu:
    """An array numpy cannot read (as a CUDA torch tensor is)."""

    def __array__(self, dtype=None, copy=None):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor to host memory first.")


class _Variant(ColourRunner):
    def __init__(self, change_decode=None, change_masks=None):
        super().__init__()
        self.change_decode, self.change_masks = change_decode, change_masks

    def decode(self, *args):
        low, iou = super().decode(*args)
        return self.change_decode(low, iou, args[-1]) if self.change_decode else (low, iou)

    def masks(self, low_res, size):
        m = super().masks(low_res, size)
        return self.change_masks(m) if self.change_masks else m


def _shown(runner, scene, auto=False):
    engine = Engine.from_config(load_config("cpu"), runner=runner)
    engine.set_auto(auto)
    results = _run(engine, scene, 6, at=None if auto else {0: _prompt_both})
    return [[(t.track_id, t.mask, round(t.score, 4)) for t in r.tracks] for r in results]


@pytest.mark.parametrize(
    "decode, masks",
    [
        (lambda low, iou, multi: (TorchLike(low), TorchLike(iou)), None),
        (lambda low, iou, multi: (low.astype(np.float64), iou.astype(np.float64)), None),
        (lambda low, iou, multi: (low.tolist(), iou.tolist()), None),
        (lambda low, iou, multi: (low[:, :1], iou[:, :1]), None),  # one mask where three were asked for
        (None, lambda m: TorchLike(m)),
        (None, lambda m: m.astype(np.uint8)),
    ],
    ids=["array-like", "float64", "lists", "single-mask", "array-like-masks", "uint8-masks"],
)
@pytest.mark.parametrize("auto", [False, True])
def test_answers_the_protocol_allows_give_the_same_masks(decode, masks, auto, scene):
    want = _shown(ColourRunner(), scene, auto)
    got = _shown(_Variant(decode, masks), scene, auto)
    assert len(want[-1]) >= 2
    assert [[(i, s) for i, _, s in r] for r in got] == [[(i, s) for i, _, s in r] for r in want]
    assert all(np.array_equal(a[1], b[1]) for rg, rw in zip(got, want) for a, b in zip(rg, rw))


@pytest.mark.parametrize(
    "decode, masks, error, says",
    [
        (lambda low, iou, multi: (low, iou[:, 0]), None, ValueError, r"_Variant\.decode returned .* IoU scores of shape \(\d+,\)"),
        (lambda low, iou, multi: (low[:, 0], iou), None, ValueError, r"_Variant\.decode returned low-res logits of shape \(\d+, 256, 256\)"),
        (lambda low, iou, multi: (low[:, :, ::4, ::4], iou), None, ValueError, r"expected \(\d+, C, 256, 256\)"),
        (lambda low, iou, multi: low, None, TypeError, r"_Variant\.decode returned ndarray; expected a pair"),
        (lambda low, iou, multi: (OnTheGpu(), iou), None, TypeError, r"_Variant\.decode returned low-res logits that are no array \(can't convert cuda"),
        (None, lambda m: m.astype(np.float32), ValueError, r"_Variant\.masks returned float32 masks"),
        (None, lambda m: m[:, ::2], ValueError, r"_Variant\.masks returned bool masks of shape \(\d+, 90, 240\); expected \(\d+, 180, 240\)"),
    ],
    ids=["flat-iou", "no-candidate-axis", "64x64-logits", "no-pair", "gpu-tensor", "float-masks", "wrong-size-masks"],
)
@pytest.mark.parametrize("auto", [False, True])
def test_answers_the_protocol_does_not_allow_are_one_error_naming_the_method(decode, masks, error, says, auto, scene):
    with pytest.raises(error, match=says) as info:
        _shown(_Variant(decode, masks), scene, auto)
    assert "\n" not in str(info.value) and "realtime_sam.ModelRunner" in str(info.value)
