"""Streams on Ray actors: resuming outputs after a worker dies (no Ray needed), and a real local Ray cluster."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from realtime_sam.app.cluster import AppendingJsonl, StreamJob, StreamWorker, done_marker, resume_point, workers_that_fit
from realtime_sam.app.scheduler import EncodeScheduler
from realtime_sam.app.streams import StreamSpec
from realtime_sam.config import load_config
from realtime_sam.output.jsonl import load_jsonl
from realtime_sam.testing.fakes import BoxRunner
from realtime_sam.types import ObjectPrompt

RAY_MISSING = "ray is not installed (optional: pip install 'realtime-sam[ray]'); the Ray cluster test needs it"


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> list[Path]:
    from realtime_sam.testing.synthetic import standard_scene, write_video

    folder = tmp_path_factory.mktemp("cluster_clips")
    return [
        write_video(standard_scene(width=160, height=120, num_frames=n, seed=i), folder / f"clip{i}.mp4")
        for i, n in enumerate((60, 50, 60, 50))
    ]


def _fake_worker() -> StreamWorker:
    sched = EncodeScheduler(lambda images: [BoxRunner().embed(im) for im in images])
    return StreamWorker(None, runner_for=BoxRunner, scheduler=sched)



def test_a_resumed_live_stream_numbers_its_frames_on_and_still_defers_their_conversion():
    """A live stream taken up again after a restart: indices go on from the output's, and the
    frames the pipeline will drop come unconverted, as from the stream itself."""
    from realtime_sam.app.cluster import _Resumed
    from realtime_sam.capture.base import DeferredFrame
    from realtime_sam.capture.sources import open_source

    with open_source("lavfi:testsrc2=size=96x64:rate=50") as inner:
        src = _Resumed(inner, 120)
        got = [src.read_deferred() for _ in range(4)]
        assert [f.index for f in got] == [120, 121, 122, 123]  # type: ignore[union-attr]
        assert all(isinstance(f, DeferredFrame) for f in got[1:])
        frame = got[2].frame()  # type: ignore[union-attr]
        assert frame is not None and frame.index == 122 and frame.image.shape == (64, 96, 3)
        assert src.read().index == 124  # type: ignore[union-attr]

class _DropsOnce:
    """:class:`test_pipeline.DropsOnce` (the real reconnect logic of LiveSource) with 64x48 frames."""

    @staticmethod
    def make(n: int, drop_at: int, outage_s: float, on_status=None):
        from test_pipeline import DropsOnce

        return DropsOnce(n, drop_at, outage_s, on_status, size=(64, 48))


def test_a_resumed_live_stream_passes_its_reconnects_on_to_the_pipeline():
    """The pipeline starts its count of encode intervals over after a reconnect: it must see the
    reconnects through the cluster's wrapper, or the outage counts as the time between two encodes."""
    from realtime_sam.app.cluster import _Resumed
    from realtime_sam.app.pipeline import Pipeline
    from realtime_sam.types import FrameResult

    outage = 1.0
    src = _Resumed(_DropsOnce.make(100, drop_at=45, outage_s=outage), 200)
    seen: list[tuple[int, float | None]] = []

    class Lands:  # an encode lands on every 10th frame of the stream
        has_pending = False

        def process(self, frame):
            seen.append((frame.index, pipe.stats.encode_interval_s))
            time.sleep(0.005)
            return FrameResult(frame=frame, tracks=(), encoded=frame.index % 10 == 0, timings={"propagate": 5.0, "total": 5.0})

    pipe = Pipeline(src, Lands())
    with pipe:
        list(pipe)
    assert src.source.reconnects == 1
    after = [(i, v) for i, v in seen if i > 245]
    second = [i for i, _ in after if i % 10 == 0][1]
    assert all(v is None for i, v in after if i <= second), seen  # the count started over at the reconnect
    assert all(v is not None and v < outage / 2 for i, v in after if i > second), seen


def test_a_streams_source_events_and_status_lines_come_from_its_worker(tmp_path):
    """What the driver shows for a stream on an actor: its source's events (dropped, reconnecting,
    back) and its status line, reconnect attempt included, as one process shows them."""
    worker = StreamWorker(
        None, runner_for=BoxRunner,
        scheduler=EncodeScheduler(lambda images: [BoxRunner().embed(im) for im in images]),
        source_for=lambda spec, config, on_status: _DropsOnce.make(60, drop_at=20, outage_s=1.5, on_status=on_status),
    )
    job = StreamJob(StreamSpec("cam", "fake"), str(tmp_path / "cam.jsonl"), (ObjectPrompt(box=(5, 5, 30, 30)),), load_config(None, []))
    lines: list[str] = []
    run = threading.Thread(target=lambda: lines.append(worker.run(job).state))
    run.start()
    reports = []
    while run.is_alive():
        reports.append(worker.report())
        time.sleep(0.1)
    run.join()
    reports.append(worker.report())
    events = [e for ev, _ in reports for e in ev]
    status = [s for _, st in reports for s in st]
    assert lines == ["stopped"]
    # Each with whether a quiet run shows it (as one process does): the drop and the return, not each attempt.
    assert any(e.startswith("cam: source: cam disconnected: the test dropped it") and important for e, important in events), events
    assert any(e.startswith("cam: source: reconnected to cam") and important for e, important in events), events
    assert any(e.startswith("cam: source: reconnecting to cam") and not important for e, important in events), events
    assert any(s.startswith("cam: reconnecting (attempt 1), frames ") for s in status), status
    assert any(s.startswith("cam: running, frames ") for s in status), status
    assert reports[-1] == ([], [])  # nothing left over once it ended


def test_a_restarted_stream_appends_continues_ids_and_marks_completion(clips, tmp_path):
    out = tmp_path / "out" / "clip0.jsonl"
    prompt = ObjectPrompt(box=(10, 10, 60, 60), label="thing")
    cut = load_config(None, ["pipeline.max_frames=20", "engine.reencode_every=4"])
    job = StreamJob(StreamSpec("clip0", str(clips[0])), str(out), (prompt,), cut)
    first = _fake_worker().run(job)
    assert first.state == "stopped" and first.frames == 20 and not done_marker(out).exists()
    # A crash in the middle of a line: the restart drops the half line.
    with open(out, "ab") as f:
        f.write(b'{"frame": 20, "tracks": [{"id"')
    before = resume_point(out)
    assert (before.next_frame, before.frames, before.next_id) == (20, 20, 2)
    assert before.last_tracks and before.last_tracks[0][1] == "thing"
    whole = StreamJob(job.spec, str(out), (prompt,), load_config(None, ["engine.reencode_every=4"]))
    second = _fake_worker().run(whole)
    assert second.state == "done" and second.frames == 60
    header, frames = load_jsonl(out)
    assert header is not None and header["width"] == 160
    assert [f["frame"] for f in frames] == list(range(60))  # every frame once, in order
    assert out.read_text().count('"realtime_sam"') == 1  # one header: appended, not rewritten
    ids_before = {t["id"] for f in frames[:20] for t in f["tracks"]}
    ids_after = {t["id"] for f in frames[20:] for t in f["tracks"]}
    assert ids_before == {1} and ids_after and min(ids_after) >= 2  # ids continue, none reused
    assert {t.get("label") for f in frames[20:] for t in f["tracks"]} == {"thing"}  # taken up again from its last box
    assert json.loads(done_marker(out).read_text()) == {"frames": 60}
    # Complete: a further run skips it.
    assert _fake_worker().run(whole).state == "skipped"


@pytest.mark.parametrize(
    "prompt, says",
    [
        (ObjectPrompt(box=(10, 10, 60, 60), start_frame=500), "start_frame 500 is past the end of"),
        (ObjectPrompt(box=(1000, 1000, 1100, 1100)), "outside"),
    ],
)
def test_a_streams_bad_prompt_fails_it_with_the_reason_instead_of_running_without_it(clips, tmp_path, prompt, says):
    """On a worker, a user's prompt is refused as in one process (a start_frame past the 60-frame
    file's end, a box wholly outside its 160x120 frame): the stream fails with the one-line reason
    before writing anything. It used to run to the end without that object, saying nothing."""
    from realtime_sam.errors import PromptError

    out = tmp_path / "clip0.jsonl"
    job = StreamJob(StreamSpec("clip0", str(clips[0])), str(out), (prompt,), load_config(None, []))
    with pytest.raises(PromptError, match=says):
        _fake_worker().run(job)
    assert not out.exists() and not done_marker(out).exists()


def test_a_resumed_image_folder_of_several_sizes_prompts_its_objects_again_at_the_frame_they_resume_on(tmp_path):
    """The last boxes are prompted again on the frame the restart takes over at, cut to that frame's size,
    not clamped into the folder's first image (here smaller than the rest)."""
    import cv2
    import numpy as np

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(10):
        h, w = (60, 80) if i == 0 else (240, 320)
        cv2.imwrite(str(folder / f"{i:03d}.png"), np.full((h, w, 3), 40, np.uint8))
    out = tmp_path / "images.jsonl"
    box = (40.0, 30.0, 300.0, 220.0)  # reaches past the first image, inside the others
    prompt = ObjectPrompt(box=box, label="big", start_frame=2)
    first = StreamJob(StreamSpec("images", str(folder)), str(out), (prompt,), load_config(None, ["pipeline.max_frames=5"]))
    assert _fake_worker().run(first).state == "stopped"
    assert resume_point(out).last_tracks == ((box, "big"),)
    rest = StreamJob(first.spec, str(out), (prompt,), load_config(None, []))
    assert _fake_worker().run(rest).state == "done"
    _, frames = load_jsonl(out)
    assert [f["frame"] for f in frames] == list(range(10))
    assert [[(t["box"], t["label"]) for t in f["tracks"]] for f in frames[5:]] == [[(list(box), "big")]] * 5


def test_appending_to_a_new_file_writes_the_header_once(tmp_path):
    import numpy as np

    from realtime_sam.types import Frame, FrameResult

    path = tmp_path / "a.jsonl"
    for i in range(2):
        sink = AppendingJsonl(path, source="x", fps=25.0)
        sink.write(FrameResult(frame=Frame(i, np.zeros((4, 6, 3), np.uint8), i / 25, 0.0), tracks=()))
        sink.close()
    header, frames = load_jsonl(path)
    assert header["source"] == "x" and header["width"] == 6 and [f["frame"] for f in frames] == [0, 1]


def test_appended_file_header_is_the_masks_files_own(tmp_path):
    from fractions import Fraction

    import numpy as np

    from realtime_sam.output.jsonl import JsonlSink
    from realtime_sam.types import Frame, FrameResult

    result = FrameResult(frame=Frame(0, np.zeros((4, 6, 3), np.uint8), 0.0, 0.0), tracks=())
    for make in (AppendingJsonl, JsonlSink):  # the same header, pixel shape included, from both writers
        sink = make(tmp_path / f"{make.__name__}.jsonl", source="x", fps=25.0, sample_aspect_ratio=Fraction(16, 15))
        sink.write(result)
        sink.close()
    (a, _), (b, _) = (load_jsonl(tmp_path / f"{m.__name__}.jsonl") for m in (AppendingJsonl, JsonlSink))
    assert a == b and a["sample_aspect_ratio"] == "16:15"


def test_a_frame_of_another_size_says_its_size_in_both_writers_and_after_a_restart(tmp_path):
    import numpy as np

    from realtime_sam.output.jsonl import JsonlSink
    from realtime_sam.types import Frame, FrameResult

    def result(i: int, h: int, w: int) -> FrameResult:
        return FrameResult(frame=Frame(i, np.zeros((h, w, 3), np.uint8), i / 25, 0.0), tracks=())

    sizes = [(4, 6), (8, 10), (4, 6)]
    for make in (AppendingJsonl, JsonlSink):
        sink = make(tmp_path / f"{make.__name__}.jsonl", source="x", fps=25.0)
        for i, (h, w) in enumerate(sizes):
            sink.write(result(i, h, w))
        sink.close()
    resumed = AppendingJsonl(tmp_path / "AppendingJsonl.jsonl", source="x", fps=25.0)  # reads the header's size
    resumed.write(result(3, 8, 10))
    resumed.write(result(4, 4, 6))
    resumed.close()
    (_, a), (_, b) = (load_jsonl(tmp_path / f"{m.__name__}.jsonl") for m in (AppendingJsonl, JsonlSink))
    assert a[:3] == b
    assert [(f.get("width"), f.get("height")) for f in a] == [(None, None), (10, 8), (None, None), (10, 8), (None, None)]


def test_ray_flag_without_save_masks_or_with_video_is_a_clear_error(capsys, tmp_path, monkeypatch):
    from realtime_sam.app import cli

    monkeypatch.chdir(tmp_path)
    assert cli.main(["--source", "a.mp4", "--ray", "--headless"]) == 2
    assert "--ray needs --save-masks" in capsys.readouterr().err
    assert cli.main(["--source", "a.mp4", "--ray", "--headless", "--output", "o/{name}.mp4"]) == 2
    assert "--output is not available with --ray" in capsys.readouterr().err


def test_workers_that_fit_the_clusters_cpus_and_gpus():
    assert workers_that_fit({"CPU": 2.0}, num_cpus=1, num_gpus=0) == 2
    assert workers_that_fit({"CPU": 16.0, "GPU": 1.0}, num_cpus=1, num_gpus=1) == 1
    assert workers_that_fit({"CPU": 16.0}, num_cpus=1, num_gpus=1) == 0  # no GPU: none fits
    assert workers_that_fit({"CPU": 0.9}, num_cpus=0.3, num_gpus=0) == 3


def test_more_workers_than_a_local_cluster_has_room_for_run_on_those_it_has(clips, tmp_path, checkpoint_path):
    """An actor the cluster has no room for never starts: the streams pinned to it waited for ever,
    with nothing said (measured: --workers 3 on a 2-CPU machine, the third stream never began)."""
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    from realtime_sam.app.cluster import run_on_ray

    assert not ray.is_initialized()
    config = load_config(None, [f"model.weights={checkpoint_path}", "model.device=cpu", "pipeline.max_frames=5"])
    jobs = [StreamJob(StreamSpec(f"clip{i}", str(clips[i])), str(tmp_path / f"clip{i}.jsonl"), (), config) for i in range(2)]
    events: list[str] = []
    got: list = []
    # Each worker asks for every CPU this machine has: one fits.
    run = threading.Thread(target=lambda: got.append(run_on_ray(
        jobs, model_config=config.model, workers=2, on_event=events.append, num_cpus=float(os.cpu_count() or 1),
    )), daemon=True)
    try:
        run.start()
        run.join(120)
        assert got, f"run_on_ray did not finish: {events}"
        assert [o.state for o in got[0]] == ["stopped", "stopped"], events
        assert any(e.startswith("note: --workers 2, but this machine has room for 1") for e in events), events
    finally:
        ray.shutdown()


@pytest.fixture
def ray_cluster():
    ray = pytest.importorskip("ray", reason=RAY_MISSING)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def test_four_files_over_two_actors_with_one_killed(ray_cluster, clips, tmp_path, checkpoint_path):
    from realtime_sam.app.cluster import run_on_ray

    ray = ray_cluster
    config = load_config(None, [f"model.weights={checkpoint_path}", "model.device=cpu", "engine.reencode_every=1000"])
    outs = [tmp_path / f"clip{i}.jsonl" for i in range(4)]
    jobs = [
        StreamJob(StreamSpec(f"clip{i}", str(c)), str(o), (ObjectPrompt(box=(20, 20, 80, 80)),), config)
        for i, (c, o) in enumerate(zip(clips, outs))
    ]
    # A finished file from an earlier run: skipped (the job resumes).
    events: list[str] = []
    killed: list[int] = []

    def kill_first(actors) -> None:
        pid = ray.get(actors[0].pid.remote())

        def watch() -> None:  # actor 1 runs clip0 and clip2: kill it once clip0 is under way
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if outs[0].exists() and len(load_jsonl(outs[0])[1]) >= 3:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    return
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()

    outcomes = run_on_ray(jobs, model_config=config.model, workers=2, on_event=events.append, on_started=kill_first, status_interval_s=0.5)
    assert killed, events
    assert any(e.startswith("clip1: running, frames ") for e in events), events  # the actors' status lines reach the driver
    by_name = {o.name: o for o in outcomes}
    assert by_name["clip0"].attempts == 2 and "clip0: worker died, restarting on worker 2" in events
    for i, (n, o) in enumerate(zip((60, 50, 60, 50), outs)):
        assert by_name[f"clip{i}"].state == "done", (events, outcomes)
        _, frames = load_jsonl(o)
        assert [f["frame"] for f in frames] == list(range(n)), f"clip{i}"  # complete: every frame once
        assert done_marker(o).exists()
    # clip0's ids continue past the crash: the restarted run never reuses an id.
    _, frames = load_jsonl(outs[0])
    seen = [t["id"] for f in frames for t in f["tracks"]]
    first_ids = {t["id"] for t in frames[0]["tracks"]}
    assert first_ids == {1} and max(seen) >= 2
    # Run again: everything is complete, so every file is skipped.
    again = run_on_ray(jobs, model_config=config.model, workers=2)
    assert [o.state for o in again] == ["skipped"] * 4


def test_sigterm_to_the_driver_ends_the_run_as_terminated_with_the_outputs_complete(ray_cluster, clips, tmp_path, checkpoint_path):
    """ray.init puts its own SIGTERM handler over the command's (exit status 1 or 15 and a C++ stack
    on stderr): while the driver waits on the actors, SIGTERM is Terminated again (exit status 143)."""
    from realtime_sam.app.cluster import run_on_ray
    from realtime_sam.sigterm import Terminated

    from realtime_sam.testing.synthetic import standard_scene, write_video

    # Long enough to be still under way when the signal comes.
    long = write_video(standard_scene(width=160, height=120, num_frames=500, seed=7), tmp_path / "long.mp4")
    config = load_config(None, [f"model.weights={checkpoint_path}", "model.device=cpu", "engine.reencode_every=1000"])
    outs = [tmp_path / f"clip{i}.jsonl" for i in range(2)]
    jobs = [StreamJob(StreamSpec(f"clip{i}", str(long)), str(outs[i]), (ObjectPrompt(box=(20, 20, 80, 80)),), config) for i in range(2)]
    before = signal.getsignal(signal.SIGTERM)

    def term_once_under_way(_actors) -> None:
        def watch() -> None:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if outs[0].exists() and len(load_jsonl(outs[0])[1]) >= 3:
                    os.kill(os.getpid(), signal.SIGTERM)
                    return
                time.sleep(0.02)

        threading.Thread(target=watch, daemon=True).start()

    got: BaseException | None = None
    try:
        run_on_ray(jobs, model_config=config.model, workers=2, on_started=term_once_under_way)
    except BaseException as exc:  # noqa: BLE001 - before, Ray's handler raised SystemExit(15) or KeyboardInterrupt
        got = exc
    assert isinstance(got, Terminated), repr(got)
    assert signal.getsignal(signal.SIGTERM) == before  # the handler that was there is back
    _, frames = load_jsonl(outs[0])
    assert [f["frame"] for f in frames] == list(range(len(frames))) and len(frames) >= 3  # complete up to the stop
    assert len(frames) < 500 and not done_marker(outs[0]).exists(), len(frames)
    size = outs[0].stat().st_size
    time.sleep(2)
    assert outs[0].stat().st_size == size  # its actor was stopped too: nothing goes on writing


@pytest.mark.parametrize("ray_flag", [[], ["--ray"]], ids=["one-process", "ray"])
def test_quiet_still_says_when_a_stream_drops_and_comes_back_with_or_without_ray(
    ray_flag, request, rtsp_server, checkpoint_path, tmp_path, capsys, monkeypatch
):
    """--quiet keeps the lines that say a live stream dropped and came back; under --ray they were
    dropped with the rest (the actors' events went through the one callback --quiet silences)."""
    from fixtures_app import frame_lines

    from realtime_sam.app import cli

    if ray_flag:
        request.getfixturevalue("ray_cluster")  # the run joins it
    monkeypatch.chdir(tmp_path)
    server = rtsp_server()
    out = tmp_path / "cam.jsonl"

    def drop_once() -> None:
        deadline = time.monotonic() + 120
        while len(frame_lines(out)) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        server.kill()
        time.sleep(2)
        server.start()

    threading.Thread(target=drop_once, daemon=True).start()
    rc = cli.main([
        "--source", server.url(), "--headless", "--quiet", *ray_flag, "--weights", str(checkpoint_path), "--device", "cpu",
        "--reencode-every", "1000", "--box", "10,10,80,80", "--save-masks", str(out), "--max-frames", "60",
        "--set", "source.backoff_initial_s=0.2",
    ])
    err = capsys.readouterr().err
    assert rc == 0, err
    url = server.url()
    lines = [line.split("source: ", 1)[1] for line in err.splitlines() if "source: " in line]
    assert [line.split(" (attempt")[0] for line in lines] == [f"{url} disconnected: the stream ended", f"reconnected to {url}"], err
    assert len(frame_lines(out)) == 60
