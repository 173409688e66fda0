"""``track_many``'s generator closed, dropped or kept to the exit before its first result leaves no files.

Its body never ran, so nothing closed the sinks given: a 0-byte video ("moov atom not found") and
an empty masks file stayed, as ``track()``'s did before it was primed.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from fixtures_app import app_env

import realtime_sam
from realtime_sam.app.streams import StreamSpec
from realtime_sam.output.sinks import make_sink
from realtime_sam.testing.synthetic import standard_scene, write_video


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(standard_scene(160, 120, num_frames=4, num_objects=1), tmp_path_factory.mktemp("many") / "c.mp4")


@pytest.mark.parametrize("how", ["close", "drop"])
def test_track_many_closed_or_dropped_before_its_first_result_leaves_no_files(how, clip, tmp_path):
    out = tmp_path / "out"
    door = [make_sink("video", out / "door.mp4"), make_sink("jsonl", out / "door.jsonl")]
    yard = [make_sink("jsonl", out / "yard.jsonl")]
    assert sorted(p.name for p in out.iterdir()) == ["door.jsonl", "door.mp4", "yard.jsonl"]
    specs = [StreamSpec("door", str(clip)), StreamSpec("yard", str(clip))]
    if how == "close":
        gen = realtime_sam.track_many(specs, config="cpu", sinks={"door": door, "yard": yard})
        gen.close()
        gen.close()  # twice: nothing more
        assert list(gen) == []
    else:
        realtime_sam.track_many(specs, config="cpu", sinks={"door": door, "yard": yard})  # never iterated
        gc.collect()
    assert not out.exists(), sorted(p.name for p in out.iterdir())
    assert all(s.closed for s in (*door, *yard))


def test_track_many_never_iterated_and_kept_to_the_exit_leaves_no_files(clip, tmp_path):
    script = tmp_path / "user.py"
    script.write_text(textwrap.dedent("""
        import sys
        import realtime_sam
        from realtime_sam.output.sinks import make_sink

        gen = realtime_sam.track_many([sys.argv[1], sys.argv[1]], config="cpu",
                                      sinks={"c": [make_sink("video", "out/v.mp4"), make_sink("jsonl", "out/m.jsonl")]})
        print("made", file=sys.stderr)
    """))
    proc = subprocess.run(
        [sys.executable, str(script), str(clip)], capture_output=True, text=True, timeout=180, env=app_env(), cwd=tmp_path
    )
    assert proc.returncode == 0 and "made" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists(), sorted(p.name for p in (tmp_path / "out").iterdir())
