"""The shared encoder's frame budget: live streams capped while the encoder is behind, and only then."""

from __future__ import annotations

import itertools
import time

import pytest

from realtime_sam.app.budget import EncoderCall, FrameBudget, StreamsConfig
from realtime_sam.app.multi import open_streams
from realtime_sam.app.pipeline import Pipeline
from realtime_sam.app.scheduler import EncodeScheduler
from realtime_sam.app.streams import StreamSpec, load_streams_file
from realtime_sam.config import load_config, parse_config
from realtime_sam.errors import ConfigError
from realtime_sam.testing.fakes import BoxRunner, LoopingSceneSource
from realtime_sam.testing.synthetic import standard_scene
from realtime_sam.tracking.engine import Engine
from realtime_sam.types import ObjectPrompt

# ------------------------------------------------------------------ the decisions


class _Encoder:
    """Feeds a :class:`FrameBudget` encoder calls on a made-up clock."""

    def __init__(self, budget: FrameBudget) -> None:
        self.budget = budget
        self.now = 0.0

    def calls(self, n: int, keys=("a", "b", "c"), *, busy: float = 1.0, idle: float = 0.0, waiting: bool = True) -> None:
        for i in range(n):
            self.now += idle
            key = keys[i % len(keys)]
            others = tuple(k for k in keys if k != key) if waiting else ()
            self.budget.observe(EncoderCall(self.now, self.now + busy, (key,), others))
            self.now += busy


def _budget(config: StreamsConfig | None = None, live=("a", "b", "c"), fps=30.0) -> FrameBudget:
    b = FrameBudget(config or StreamsConfig())
    for key in live:
        b.add(key, live=True, fps=fps)
    return b


def test_live_streams_are_capped_while_the_encoder_is_behind_and_share_the_budget():
    b = _budget()
    b.add("file", live=False, fps=25.0)
    enc = _Encoder(b)
    enc.calls(1)
    assert not b.behind and b.cap_fps("a") is None  # one call is no trend
    enc.calls(4)  # back to back, the others waiting each time
    assert b.behind
    assert [b.cap_fps(k) for k in ("a", "b", "c")] == [10.0, 10.0, 10.0]  # 30 fps / 3 streams
    assert b.interval_s("a") == pytest.approx(0.1)
    assert b.cap_fps("file") is None and b.interval_s("file") == 0.0  # a file has nothing to drop
    b.end("c")
    assert b.cap_fps("a") == 15.0  # the streams still running share its budget
    b.end("b")
    assert b.cap_fps("a") is None  # one live stream left: never capped


def test_the_cap_is_lifted_when_the_encoder_would_keep_up_without_it():
    b = _budget()
    enc = _Encoder(b)
    enc.calls(5)
    assert b.behind
    # Capped at a third of their rate, the streams leave the encoder idle half the time: uncapped they
    # would ask three times as often, so it would be behind again. The cap stays.
    enc.calls(6, busy=1.0, idle=1.0)
    assert b.behind and b.cap_fps("a") == 10.0
    # Idle nine tenths of the time: it keeps up even at three times the requests.
    enc.calls(6, busy=1.0, idle=9.0)
    assert not b.behind and b.cap_fps("a") is None
    enc.calls(5)
    assert b.behind
    # One stream left using the encoder (the others have nothing to track): nobody waits for anybody.
    enc.calls(3, keys=("a",), waiting=False)
    assert not b.behind and b.cap_fps("b") is None


def test_one_stream_alone_and_an_encoder_that_keeps_up_are_never_capped():
    alone = _budget(live=("a",))
    _Encoder(alone).calls(20, keys=("a",), waiting=False)  # busy all the time, for one stream
    assert not alone.behind and alone.cap_fps("a") is None
    quick = _budget()
    # A GPU: every waiting stream in one short call, then idle until the next frames ask.
    _Encoder(quick).calls(20, busy=0.03, idle=0.25)
    assert not quick.behind and quick.cap_fps("a") is None
    # Two live streams, but only one of them an encoder user: the other stream and a file contend.
    mixed = _budget(live=("a", "b"))
    mixed.add("file", live=False)
    _Encoder(mixed).calls(20, keys=("a", "file"))
    assert mixed.behind and mixed.cap_fps("a") == 15.0 and mixed.cap_fps("file") is None


def test_frame_budget_scales_the_cap_and_zero_turns_it_off():
    caps = {}
    for budget in (1.0, 0.5, 0.0):
        b = _budget(StreamsConfig(frame_budget=budget, min_fps=1.0))
        _Encoder(b).calls(5)
        caps[budget] = b.cap_fps("a")
    assert caps == {1.0: 10.0, 0.5: 5.0, 0.0: None}


def test_min_fps_is_the_floor_of_the_cap():
    caps = {}
    for min_fps in (4.0, 6.0, 30.0):
        b = _budget(StreamsConfig(frame_budget=0.3, min_fps=min_fps))  # 0.3 x 30 / 3 = 3 fps
        _Encoder(b).calls(5)
        caps[min_fps] = b.cap_fps("a")
    assert caps == {4.0: 4.0, 6.0: 6.0, 30.0: None}  # a floor at the source's rate is no cap


def test_engage_duty_decides_whether_a_busy_but_not_saturated_encoder_is_behind():
    behind = {}
    for engage in (0.9, 0.75):
        b = _budget(StreamsConfig(engage_duty=engage, lift_duty=0.5))
        _Encoder(b).calls(8, busy=1.0, idle=0.25)  # busy 80 % of the time, the others always waiting
        assert b.duty == pytest.approx(0.8)
        behind[engage] = (b.behind, b.cap_fps("a"))
    assert behind == {0.9: (False, None), 0.75: (True, 10.0)}


def test_lift_duty_decides_when_the_cap_is_lifted():
    lifted = {}
    for lift in (0.6, 0.4):
        b = _budget(StreamsConfig(lift_duty=lift))
        enc = _Encoder(b)
        enc.calls(5)
        assert b.behind
        # Idle five sixths of the time under the cap; uncapped the streams would ask three times as often:
        # 1/6 x 3 = 0.5, below 0.6 but not below 0.4, however long it goes on.
        enc.calls(12, busy=1.0, idle=5.0)
        lifted[lift] = (b.behind, b.cap_fps("a"))
    assert lifted == {0.6: (False, None), 0.4: (True, 10.0)}


def test_duty_smoothing_sets_how_fast_the_duty_follows_the_encoders_calls():
    after_one_quiet_call = {}
    for smoothing in (0.5, 1.0):
        b = _budget(StreamsConfig(duty_smoothing=smoothing))
        enc = _Encoder(b)
        enc.calls(5)
        assert b.behind and b.duty == pytest.approx(1.0)
        enc.calls(1, busy=1.0, idle=9.0)  # one call busy a tenth of the time since the last
        after_one_quiet_call[smoothing] = (round(b.duty, 6), b.behind)
    # 0.5: halfway to 0.1 (0.55 x 3 is still behind); 1: the last call alone (0.1 x 3 < 0.6, lifted).
    assert after_one_quiet_call == {0.5: (0.55, True), 1.0: (0.1, False)}


def test_the_default_thresholds_are_the_ones_the_budget_always_had():
    config = StreamsConfig()
    assert (config.engage_duty, config.lift_duty, config.duty_smoothing) == (0.9, 0.6, 0.5)
    assert load_config("cpu").streams == config


def test_a_source_without_a_frame_rate_counts_as_30_fps():
    b = FrameBudget()
    b.add("a", live=True, fps=None)
    b.add("b", live=True, fps=0.0)
    _Encoder(b).calls(5, keys=("a", "b"))
    assert b.cap_fps("a") == b.cap_fps("b") == 15.0


@pytest.mark.parametrize(
    "data, message",
    [
        ({"streams": {"frame_budget": -1}}, "streams.frame_budget must be >= 0 (0 = no cap), got -1.0"),
        ({"streams": {"min_fps": 0}}, "streams.min_fps must be > 0 (frames per second), got 0.0"),
        ({"streams": {"min_fps": "fast"}}, "streams.min_fps must be a number, not 'fast'"),
        ({"streams": {"engage_duty": 2}}, "streams.engage_duty must be > 0 and <= 1 (a share of the encoder's time), got 2.0"),
        ({"streams": {"engage_duty": 0}}, "streams.engage_duty must be > 0 and <= 1 (a share of the encoder's time), got 0.0"),
        (
            {"streams": {"engage_duty": 0.5}},
            "streams.lift_duty must be > 0 and below streams.engage_duty (0.5), got 0.6: lower lift_duty or raise engage_duty",
        ),
        (
            {"streams": {"lift_duty": 0}},
            "streams.lift_duty must be > 0 and below streams.engage_duty (0.9), got 0.0: lower lift_duty or raise engage_duty",
        ),
        (
            {"streams": {"duty_smoothing": 1.5}},
            "streams.duty_smoothing must be > 0 and <= 1 (weight of the newest encoder call), got 1.5",
        ),
        (
            {"streams": {"cap": 3}},
            "unknown key streams.cap; valid keys in streams: frame_budget, min_fps, engage_duty, lift_duty, duty_smoothing",
        ),
    ],
)
def test_bad_settings_are_one_clear_line(data, message):
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    assert str(err.value) == message


def test_the_budget_is_the_runs_not_a_streams(tmp_path):
    path = tmp_path / "streams.yaml"
    path.write_text("streams:\n  - source: lavfi:testsrc2\n    settings: {streams: {frame_budget: 0}}\n")
    with pytest.raises(ConfigError, match=r"settings cannot change the streams section: it is the run's \(--set streams"):
        load_streams_file(path)


@pytest.mark.parametrize(
    "setting, message",
    [
        ("streams.min_fps=-2", "streams.min_fps must be > 0 (frames per second), got -2.0"),
        ("streams.engage_duty=2", "streams.engage_duty must be > 0 and <= 1 (a share of the encoder's time), got 2.0"),
        (
            "streams.lift_duty=0.95",
            "streams.lift_duty must be > 0 and below streams.engage_duty (0.9), got 0.95: lower lift_duty or raise engage_duty",
        ),
    ],
)
def test_the_command_line_refuses_a_bad_budget_with_one_line(tmp_path, setting, message):
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "realtime_sam", "--headless", "--source", "lavfi:testsrc2", "--source", "lavfi:testsrc",
         "--set", setting, "--save-masks", str(tmp_path / "{name}.jsonl")],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: {message}"]
    assert not list(tmp_path.iterdir())  # refused before anything was opened or written


# ------------------------------------------------------------------ the pipeline's pace


def test_a_paced_live_pipeline_processes_the_newest_frame_at_most_once_per_interval():
    source = LoopingSceneSource(standard_scene(96, 72, num_frames=6), fps=30)
    engine = Engine(BoxRunner())
    pipe = Pipeline(source, engine)
    pipe.pace_with(lambda: 0.2)
    indices = []
    start = time.monotonic()
    with pipe:
        for result in pipe:
            indices.append(result.index)
            if len(indices) == 8:
                break
        elapsed = time.monotonic() - start
        stats = pipe.stats
    assert len(indices) <= elapsed / 0.2 + 1  # the pace is a ceiling, whatever the load
    gaps = sorted(b - a for a, b in itertools.pairwise(indices))
    assert gaps[len(gaps) // 2] >= 3  # ~6 frames come in 0.2 s: the newest is taken, the others dropped
    assert stats.frames_dropped >= sum(gaps) - len(gaps) - 2


# ------------------------------------------------------------------ several live streams, one slow encoder

_GRAPH = "lavfi:testsrc2=size=160x120:rate=30"


def _run(k: int, encode_s: float, overrides=(), seconds: float = 2.5) -> dict:
    """``k`` live 30 fps streams on one encoder taking ``encode_s`` per image, with background encodes
    (the CPU preset): what each stream did over ``seconds`` once every stream has been encoded twice."""

    def encode_many(images):
        time.sleep(encode_s)
        return [BoxRunner().embed(im) for im in images]

    config = load_config("cpu", list(overrides))
    scheduler = EncodeScheduler(encode_many)
    specs = [StreamSpec(f"s{i}", _GRAPH) for i in range(k)]
    multi = open_streams(
        specs, config, prompts=[ObjectPrompt(box=(20, 20, 80, 80))], runner_for=lambda spec: BoxRunner(), scheduler=scheduler
    )
    caps, lines, behind = set(), [], False
    with multi:
        deadline = time.monotonic() + 30
        while any(st.encodes < 2 for st in multi.status()) or (k > 1 and encode_s > 0 and len(scheduler.order) < 4 * k):
            assert time.monotonic() < deadline, [st.line() for st in multi.status()]
            multi.poll(0.02)
        before = {st.name: st for st in multi.status()}
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds:
            multi.poll(0.02)
            for st in multi.status():
                caps.add(st.fps_cap)
                lines.append(st.line())
            behind = behind or multi.budget.behind
        elapsed = time.monotonic() - t0
        after = {st.name: st for st in multi.status()}
    processed = [after[n].frames_processed - before[n].frames_processed for n in after]
    read = [after[n].frames_read - before[n].frames_read for n in after]
    return {"caps": caps, "lines": lines, "behind": behind, "processed": processed, "read": read, "elapsed": elapsed}


def test_live_streams_on_a_slow_shared_encoder_are_capped_and_report_it():
    run = _run(3, 0.15)  # three streams asking every 8 frames (0.27 s): the encoder is busy all the time
    assert run["behind"]
    assert 10.0 in run["caps"]  # 30 fps / 3 streams
    assert any(line.startswith("s1: running") and ", capped at 10.0 fps (encoder behind) |" in line for line in run["lines"])
    for n in run["processed"]:
        assert 1 <= n <= 10.0 * run["elapsed"] + 2  # a ceiling: no load can make it process more


def test_with_the_budget_off_the_streams_process_what_they_can():
    run = _run(3, 0.15, ["streams.frame_budget=0"])
    assert run["caps"] == {None} and not any("capped" in line for line in run["lines"])
    for n, r in zip(run["processed"], run["read"]):
        assert n > 10.0 * run["elapsed"] + 2 and n >= r // 2  # past the cap the budget would have set


@pytest.mark.parametrize("k, encode_s", [(1, 0.15), (3, 0.0)], ids=["one stream, slow encoder", "three streams, quick encoder"])
def test_one_stream_alone_or_a_quick_encoder_is_never_capped(k, encode_s):
    run = _run(k, encode_s, seconds=2.0)
    assert not run["behind"] and run["caps"] == {None}
    for n, r in zip(run["processed"], run["read"]):
        assert n >= r // 2 and n > 10.0 * run["elapsed"] + 2


def test_streams_on_one_ray_actor_share_its_frame_budget(tmp_path):
    import threading

    from realtime_sam.app.cluster import StreamJob, StreamWorker

    def encode_many(images):  # two streams asking every 8 frames (0.27 s at 30 fps): behind
        time.sleep(0.2)
        return [BoxRunner().embed(im) for im in images]

    worker = StreamWorker(None, runner_for=BoxRunner, scheduler=EncodeScheduler(encode_many))  # plain Python, no Ray
    config = load_config("cpu", ["pipeline.max_frames=45"])
    prompt = ObjectPrompt(box=(20, 20, 80, 80))
    jobs = [StreamJob(StreamSpec(f"s{i}", _GRAPH), str(tmp_path / f"s{i}.jsonl"), (prompt,), config) for i in range(2)]
    outcomes: list = []
    threads = [threading.Thread(target=lambda j=j: outcomes.append(worker.run(j)), daemon=True) for j in jobs]
    for t in threads:
        t.start()
    caps = set()
    while any(t.is_alive() for t in threads):
        caps |= {worker.budget.cap_fps(f"s{i}@0") for i in range(2)}
        time.sleep(0.02)
    assert sorted(o.frames for o in outcomes) == [45, 45]
    assert 15.0 in caps  # 30 fps / 2 streams while the encoder was behind
    assert worker.budget.cap_fps("s0@0") is None  # ended: no longer counted
