"""A masks file made by hand with the source's URL as given hides the URL's credentials.

The command and ``track()`` pass the source's already hidden name; a ``JsonlSink`` (or
``make_sink("jsonl", source_name=...)``, or the cluster's appending writer) given the URL itself
wrote the password into the file's header.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from realtime_sam.app.cluster import AppendingJsonl
from realtime_sam.output.jsonl import JsonlSink, load_jsonl
from realtime_sam.output.sinks import make_sink
from realtime_sam.types import Frame, FrameResult

URLS = [
    ("rtsp://viewer:s3cretpw@cam.local:554/live", "rtsp://***@cam.local:554/live"),
    ("rtsp://viewer:s3c/retpw@cam.local/live", "rtsp://***@cam.local/live"),
    ("rtsp://viewer:pa ss w0rd@cam.local/live", "rtsp://***@cam.local/live"),
    ("http://cam.local/snap?user=viewer&password=s3cretpw", "http://cam.local/snap?user=***&password=***"),
]


def _result() -> FrameResult:
    return FrameResult(Frame(0, np.zeros((48, 64, 3), np.uint8), 0.0, 0.0), ())


def _header(path: Path) -> dict:
    return json.loads(path.read_text().splitlines()[0])


@pytest.mark.parametrize("url,shown", URLS)
@pytest.mark.parametrize("how", ["JsonlSink", "make_sink", "AppendingJsonl"])
def test_a_masks_file_made_by_hand_hides_the_sources_credentials(how, url, shown, tmp_path):
    path = tmp_path / "m.jsonl"
    if how == "JsonlSink":
        sink = JsonlSink(path, source=url, fps=25)
    elif how == "make_sink":
        sink = make_sink("jsonl", path, source_name=url, fps=25)
    else:
        sink = AppendingJsonl(path, source=url, fps=25)
    sink.write(_result())
    sink.close()
    text = path.read_text()
    assert "w0rd" not in text and "retpw" not in text and "s3cretpw" not in text
    assert _header(path)["source"] == shown
    if how != "AppendingJsonl":
        assert sink.source == shown  # the attribute too
    header, frames = load_jsonl(path)
    assert [f["frame"] for f in frames] == [0]


def test_a_plain_name_or_a_hidden_one_is_written_as_given(tmp_path):
    for name in ["clip.mp4", "rtsp://***@cam.local/live", "lavfi:testsrc=size=64x48", "cam 1.mp4"]:
        path = tmp_path / "m.jsonl"
        with JsonlSink(path, source=name) as sink:
            sink.write(_result())
        assert _header(path)["source"] == name
