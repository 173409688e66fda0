"""``realtime-sam`` with several real sources at once: a file, a lavfi graph and an RTSP stream killed mid-run."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from fixtures_app import HEIGHT, WIDTH, app_losing_its_stream, frame_lines, running_app, wait_for_frames  # noqa: F401
from realtime_sam.app import cli

LAVFI = "lavfi:testsrc2=size=320x240:rate=25"


def _err_lines(capsys) -> list[str]:
    return [x for x in capsys.readouterr().err.splitlines() if x.strip()]


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["--source", "a.mp4", "--source", "b.mp4", "--headless", "--save-masks", "m.jsonl"], "put {name} in it"),
        (["--source", "a.mp4", "--source", "b.mp4", "--headless", "--output", "v.mp4"], "--output v.mp4 would be written by every stream"),
        (["--source", "a.mp4", "--source", "b.mp4"], "(DISPLAY is not set); add --headless"),
        (["--sources", "missing.yaml", "--headless"], "--sources file not found"),
        (["--sources", ".", "--headless"], "--sources . is not a file; give a YAML file"),  # was "not found"
        (["--sources", "e.yaml", "--headless"], "stream 1: save_masks is empty; give a path, or leave the key out"),
        # Sources open before the model loads: a missing one fails at once, not after a download.
        (["--source", "b.mp4", "--source", "a.mp4", "--headless", "--weights", "nope.pt"], "source not found: b.mp4"),
        (["--source", "x/a.mp4", "--sources", "s.yaml", "--headless"], "stream name(s) a used twice"),
        # Which streams write one file: a stream's own save_masks: and another's from {name}.
        (["--sources", "s.yaml", "--source", "x/b.mp4", "--headless", "--save-masks", "{name}.jsonl"],
         "streams a and b both write b.jsonl; give each stream its own path"),
    ],
)
def test_several_sources_usage_errors_are_one_line_exit_2(capsys, tmp_path, monkeypatch, argv, fragment):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    (tmp_path / "s.yaml").write_text("- {source: a.mp4, save_masks: b.jsonl}\n")
    (tmp_path / "e.yaml").write_text("- {source: a.mp4, save_masks: ''}\n")  # '' wrote nothing
    assert cli.main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and fragment in lines[0], lines


def test_sources_file_settings_are_checked_over_the_runs_configuration(capsys, tmp_path, monkeypatch):
    # A stream's backoff_initial_s of 20 fits the run's --set source.backoff_max_s=60 (it was refused
    # against the default 10); the run goes on to the next check (the missing weights here).
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(f"- {{name: door, source: '{LAVFI}', settings: {{source: {{backoff_initial_s: 20}}}}}}\n")
    argv = ["--sources", "s.yaml", "--headless", "--weights", "nope.pt"]
    assert cli.main([*argv, "--set", "source.backoff_max_s=60"]) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "nope.pt" in lines[0] and "backoff" not in lines[0], lines
    assert cli.main(argv) == 2
    assert _err_lines(capsys) == ["error: s.yaml: stream 1: settings: source.backoff_max_s (10.0) must be >= backoff_initial_s (20.0)"]


def test_run_detect_settings_with_a_detector_named_by_every_stream_are_taken(capsys, tmp_path, monkeypatch):
    # --classes (and --set detect.*) with no --detect: each stream of the file names its own
    # detector, so the run's settings have one to use in every stream; they were refused for the
    # run as a whole ("--classes ... need --detect MODEL"). The run goes on to the next check
    # (the missing weights); a stream without a detector is still refused, by name.
    monkeypatch.chdir(tmp_path)
    stream = "- {{name: {}, source: '" + LAVFI + "', settings: {{detect: {{model: yolo11n.pt}}}}}}\n"
    (tmp_path / "s.yaml").write_text(stream.format("door") + stream.format("yard"))
    argv = ["--sources", "s.yaml", "--headless", "--weights", "nope.pt", "--classes", "person", "--set", "detect.conf=0.5"]
    assert cli.main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "weights file not found" in lines[0] and "detector" not in lines[0], lines
    (tmp_path / "s.yaml").write_text(stream.format("door") + f"- {{name: yard, source: '{LAVFI}'}}\n")
    assert cli.main(argv) == 2
    lines = _err_lines(capsys)
    assert len(lines) == 1 and "stream yard: detect.classes and detect.conf are set but there is no detector" in lines[0], lines


def test_several_sources_on_a_display_with_no_x_server_is_one_line(capsys, tmp_path, monkeypatch):
    from fixtures_app import free_x_display_number

    n = free_x_display_number()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISPLAY", f":{n}")
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli.main(["--source", "a.mp4", "--source", "b.mp4"]) == 2
    assert _err_lines(capsys) == [f"error: no display to show a window on (no X server answers at DISPLAY=:{n}); add --headless to run without one"]


def test_file_lavfi_and_rtsp_at_once_with_the_rtsp_server_killed(tmp_path, checkpoint_path, rtsp_server, small_clip):  # noqa: F811
    server = rtsp_server()
    (tmp_path / "streams.yaml").write_text(
        "streams:\n"
        f"  - name: cam\n    source: {server.url('live')}\n"
        # This stream runs until its server dies, and gives up after one failed reconnect.
        "    settings: {pipeline: {max_frames: 0}, source: {reconnect_max_tries: 1, backoff_initial_s: 0.2}}\n"
        f"  - name: pattern\n    source: '{LAVFI}'\n"
        "    prompts: [{box: [40, 40, 120, 120], label: square}]\n"
    )
    with app_losing_its_stream(
        tmp_path, "--headless", "--sources", "streams.yaml", "--source", str(small_clip),
        "--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "1000",
        "--box", "20,20,120,100", "--max-frames", "15", "--status-interval", "1",
        "--save-masks", "out/{name}.jsonl",
        server=server, jsonl=tmp_path / "out" / "cam.jsonl", frames=5, timeout=150,
    ) as (proc, err_path):
        code = proc.wait(timeout=120)
    text = err_path.read_text()
    assert code == 1, text  # one stream did not finish cleanly
    lines = text.splitlines()
    # The killed stream: reported by name, its outputs valid and complete up to the kill.
    assert any(x.startswith("cam: source:") and "disconnected" in x for x in lines), text
    assert any(x.startswith("error: cam:") for x in lines), text
    cam = [f["frame"] for f in frame_lines(tmp_path / "out" / "cam.jsonl")]
    assert len(cam) >= 5 and cam == sorted(set(cam))
    assert (tmp_path / "out" / "cam.jsonl").read_text().endswith("\n")
    # The others were not affected: every frame asked for, their own objects and ids.
    small = frame_lines(tmp_path / "out" / "small.jsonl")
    assert [f["frame"] for f in small] == list(range(10))
    assert {t["id"] for f in small for t in f["tracks"]} == {1}
    pattern = frame_lines(tmp_path / "out" / "pattern.jsonl")
    assert len(pattern) == 15
    # Its own prompt first (id 1), then the command line's (id 2).
    assert {t["id"]: t.get("label") for t in pattern[0]["tracks"]} == {1: "square", 2: None}
    for name in ("small", "pattern"):
        header = json.loads((tmp_path / "out" / f"{name}.jsonl").read_text().splitlines()[0])
        assert "realtime_sam" in header
    # Each stream has its own status line, with its encode age.
    for name in ("cam", "pattern", "small"):
        assert any(x.startswith(f"{name}: ") and "encode age" in x for x in lines), text
    assert any(x.startswith("small: done") for x in lines) and any(x.startswith("cam: failed") for x in lines)


def test_name_placeholder_with_one_source_is_its_name(tmp_path, monkeypatch, checkpoint_path, small_clip):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    code = cli.main(["--source", str(small_clip), "--headless", "--save-masks", "o/{name}.jsonl", "--weights",
                     str(checkpoint_path), "--device", "cpu", "--max-frames", "3", "--quiet"])
    assert code == 0
    assert [f["frame"] for f in frame_lines(tmp_path / "o" / "small.jsonl")] == [0, 1, 2]


def test_a_streams_object_whose_start_frame_never_came_is_named_at_the_end(tmp_path, monkeypatch, capsys, checkpoint_path, small_clip):  # noqa: F811
    # As for one stream: --max-frames ended both streams before the object's start_frame, said even with --quiet.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(
        f"streams:\n  - name: a\n    source: '{small_clip}'\n    prompts: [{{box: [20, 20, 80, 80], label: car, start_frame: 6}}]\n"
        f"  - name: b\n    source: '{LAVFI}'\n"
    )
    code = cli.main(["--sources", "s.yaml", "--headless", "--weights", str(checkpoint_path), "--device", "cpu",
                     "--max-frames", "4", "--quiet"])
    err = _err_lines(capsys)
    assert code == 0, err
    assert err == ["warning: a: prompt (label 'car', box 20,20,80,80): never tracked: the run ended before its start_frame 6"]


@pytest.mark.parametrize("own_settings", [False, True])
def test_a_live_stream_with_the_file_configuration_is_pointed_to_the_presets(tmp_path, monkeypatch, capsys, checkpoint_path, small_clip, own_settings):  # noqa: F811
    # As one stream is: a live stream run with the default (file) configuration is told to pick
    # a preset, by name; a file is not, nor a live stream whose own settings move masks otherwise.
    monkeypatch.chdir(tmp_path)
    settings = "    settings: {propagation: {method: flow}}\n" if own_settings else ""
    (tmp_path / "s.yaml").write_text(f"streams:\n  - name: pattern\n    source: '{LAVFI}'\n" + settings)
    code = cli.main(["--sources", "s.yaml", "--source", str(small_clip), "--headless", "--weights", str(checkpoint_path),
                     "--device", "cpu", "--max-frames", "2"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert ("note: pattern: this configuration is made for files" in err and "--config cpu" in err) != own_settings, err
    assert "note: small:" not in err, err


def test_a_stream_whose_server_went_away_is_reconnecting_in_its_status_line(tmp_path, checkpoint_path, rtsp_server):
    # Its status line said "cam: running" all the while its source was reopening the connection.
    server = rtsp_server()
    (tmp_path / "streams.yaml").write_text(
        "streams:\n"
        f"  - name: cam\n    source: {server.url('live')}\n"
        "    settings: {pipeline: {max_frames: 0}, source: {backoff_initial_s: 0.2, backoff_max_s: 0.5}}\n"
        f"  - name: pattern\n    source: '{LAVFI}'\n    settings: {{pipeline: {{max_frames: 0}}}}\n"
    )

    def wait_line(pattern: str, since: int = 0) -> int:
        deadline = time.monotonic() + 60
        while True:
            text = err_path.read_text()
            m = re.search(pattern, text[since:], re.MULTILINE)
            if m:
                return since + m.end()
            assert proc.poll() is None and time.monotonic() < deadline, text[-3000:]
            time.sleep(0.1)

    with app_losing_its_stream(
        tmp_path, "--headless", "--sources", "streams.yaml", "--weights", str(checkpoint_path), "--device", "cpu",
        "--reencode-every", "1000", "--status-interval", "0.5", "--save-masks", "out/{name}.jsonl",
        server=server, jsonl=tmp_path / "out" / "cam.jsonl", frames=3, timeout=150,
    ) as (proc, err_path):
        down = wait_line(r"^cam: source: .*disconnected")
        wait_line(r"^cam: reconnecting \(attempt \d+\), frames \d+ read", down)
        wait_line(r"^pattern: running, ", down)  # the other stream is not affected
        server.start()
        back = wait_line(r"^cam: source: reconnected", down)
        wait_line(r"^cam: running, frames \d+ read", back)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, err_path.read_text()[-3000:]
    lines = err_path.read_text().splitlines()
    # Before the server went away, and after it came back, the line said running.
    assert not [x for x in lines if x.startswith("cam: reconnecting") and "attempt" not in x]


@pytest.fixture(scope="module")
def door_clip(tmp_path_factory) -> Path:
    """A 250-frame 320x240 synthetic clip: far more frames than a run that encodes every one gets through."""
    from realtime_sam.testing.synthetic import standard_scene, write_video

    return write_video(standard_scene(width=WIDTH, height=HEIGHT, num_frames=250), tmp_path_factory.mktemp("door") / "door.mp4")


@pytest.mark.parametrize(
    "signals, code",
    [((signal.SIGINT,), 130), ((signal.SIGTERM,), 143), ((signal.SIGINT, signal.SIGINT), 130)],
    ids=["ctrl-c", "sigterm", "ctrl-c-twice"],
)
def test_a_signal_stops_every_stream_and_fails_none(tmp_path, checkpoint_path, rtsp_server, door_clip, signals, code):
    # An RTSP stream and a file, each encoding every frame on the one encoder with no frame budget:
    # one of them is always waiting for the encoder when the signal comes, and the stop withdraws
    # that request. The twice: a second Ctrl-C (or `timeout -s INT`, which signals the process and
    # then its group) while the streams finish their encodes exits at once.
    server = rtsp_server()
    (tmp_path / "streams.yaml").write_text(
        f"streams:\n  - name: cam\n    source: {server.url('live')}\n    settings: {{pipeline: {{max_frames: 0}}}}\n"
    )
    with running_app(
        tmp_path, "--headless", "--sources", "streams.yaml", "--source", str(door_clip),
        "--weights", str(checkpoint_path), "--device", "cpu", "--reencode-every", "1",
        "--set", "streams.frame_budget=0", "--box", "100,60,220,180", "--status-interval", "1000",
        "--save-masks", "out/{name}.jsonl",
    ) as (proc, err_path):
        for name in ("cam", "door"):
            wait_for_frames(tmp_path / "out" / f"{name}.jsonl", 3, proc, timeout=150)
        for i, sig in enumerate(signals):
            if i:
                time.sleep(0.1)  # the first one handled (not merged with it), an encode still running
            proc.send_signal(sig)
        proc.wait(timeout=60)
    text = err_path.read_text()
    lines = text.splitlines()
    assert proc.returncode == code, text
    # Stopped, not failed: no stream's error and no failed state.
    assert not [x for x in lines if x.startswith("error:") or ": failed," in x], text
    if len(signals) == 1:
        assert f"stopped by {signals[0].name}" in text
        for name in ("cam", "door"):
            assert any(x.startswith(f"{name}: done,") for x in lines), text
    # Every stream's outputs are finalised.
    for name in ("cam", "door"):
        path = tmp_path / "out" / f"{name}.jsonl"
        assert path.read_text().endswith("\n")
        frames = [f["frame"] for f in frame_lines(path)]
        assert len(frames) >= 3 and frames == sorted(set(frames))


@pytest.mark.parametrize("existing", [False, True])
def test_a_source_that_does_not_open_leaves_no_outputs(tmp_path, monkeypatch, capsys, checkpoint_path, small_clip, existing):  # noqa: F811
    # As with one stream: every source opens before any output is created, so a source that does
    # not open leaves no output behind, and a file already at an output path is not touched. (A
    # missing --weights path fails before the outputs too: test_cli; a damaged checkpoint, found
    # only as the model loads after them, still leaves header-only files.)
    monkeypatch.chdir(tmp_path)
    old = tmp_path / "out" / "small.jsonl"
    if existing:
        old.parent.mkdir()
        old.write_text("from an earlier run\n")
    code = cli.main(["--headless", "--source", str(small_clip), "--source", "missing.mp4", "--box", "100,80,300,200",
                     "--save-masks", "out/{name}.jsonl", "--output", "out/{name}.mp4",
                     "--weights", str(checkpoint_path), "--device", "cpu"])
    lines = _err_lines(capsys)
    assert code == 2 and len(lines) == 1 and "source not found: missing.mp4" in lines[0], lines
    if existing:
        assert [p.name for p in (tmp_path / "out").iterdir()] == ["small.jsonl"]
        assert old.read_text() == "from an earlier run\n"
    else:
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv, line",
    [
        (["--source", "a.mp4", "--source", "b.mp4", "--output", "{name}.mp4"],
         "error: --output a.mp4 is the source of stream a: writing it would destroy the file being read; give another path, e.g. --output 'out/{name}.mp4'"),
        (["--source", "b.mp4", "--source", "clips/a.mp4", "--output", "clips/{name}.mp4"],
         "error: --output clips/a.mp4 is the source of stream a: writing it would destroy the file being read; give another path, e.g. --output 'out/{name}.mp4'"),
        (["--sources", "s.yaml", "--mask-format", "jsonl"],
         "error: stream door: save_masks: b.mp4 is the source of stream door: writing it would destroy the file being read; give another path"),
        (["--source", "a.mp4", "--output", "./a.mp4"],
         "error: --output ./a.mp4 is the source: writing it would destroy the file being read; give another path, e.g. --output 'out/{name}.mp4'"),
    ],
    ids=["name-is-the-stem", "folder", "streams-file", "one-stream"],
)
def test_an_output_over_a_source_is_refused_and_the_source_kept(tmp_path, monkeypatch, capsys, checkpoint_path, small_clip, argv, line):  # noqa: F811
    # `--output '{name}.mp4'` beside the clips made each stream's video the file it was reading:
    # opened for writing, the source was truncated and the run ended "a.mp4 is damaged" (exit 1),
    # the user's clips replaced by 29-frame renders.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "clips").mkdir()
    for path in ("a.mp4", "b.mp4", "clips/a.mp4"):
        (tmp_path / path).write_bytes(small_clip.read_bytes())
    (tmp_path / "s.yaml").write_text("- {name: door, source: b.mp4, save_masks: b.mp4}\n- {source: a.mp4}\n")
    code = cli.main(["--headless", *argv, "--weights", str(checkpoint_path), "--device", "cpu", "--max-frames", "2", "--quiet"])
    assert (code, _err_lines(capsys)) == (2, [line])
    for path in ("a.mp4", "b.mp4", "clips/a.mp4"):
        assert (tmp_path / path).read_bytes() == small_clip.read_bytes(), path


def test_an_ended_streams_status_line_is_told_once_while_the_others_run(tmp_path, checkpoint_path, small_clip):  # noqa: F811
    # A stream that ended (here a 10-frame file; a camera that gave up, with its error) printed its
    # "done"/"failed" line again on every beat, for as long as the other streams ran.
    (tmp_path / "s.yaml").write_text(f"- {{name: pattern, source: '{LAVFI}', settings: {{pipeline: {{max_frames: 0}}}}}}\n")
    with running_app(
        tmp_path, "--headless", "--sources", "s.yaml", "--source", str(small_clip), "--weights", str(checkpoint_path),
        "--device", "cpu", "--reencode-every", "1000", "--box", "20,20,120,100", "--status-interval", "0.2",
        "--save-masks", "out/{name}.jsonl",
    ) as (proc, err_path):
        deadline = time.monotonic() + 120
        while True:
            lines = err_path.read_text().splitlines()
            done = [i for i, x in enumerate(lines) if x.startswith("small: done,")]
            if done and sum(x.startswith("pattern: running,") for x in lines[done[0]:]) >= 8:
                break
            assert proc.poll() is None and time.monotonic() < deadline, "\n".join(lines[-20:])
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    lines = err_path.read_text().splitlines()
    # Once when it ended, once in the summary at the end; the running stream on every beat.
    assert sum(x.startswith("small: ") and "frames" in x for x in lines[done[0]:]) == 2, lines
    assert any(x.startswith("pattern: done,") for x in lines[-4:]), lines[-4:]
    assert [f["frame"] for f in frame_lines(tmp_path / "out" / "small.jsonl")] == list(range(10))
