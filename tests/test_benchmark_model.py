"""``scripts/benchmark_model.py``: the batched-encoder cases time what they say (no model run: a recording fake),
and bad input (``--json`` included) is one line before any model loads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from script_loader import load_script

bm = load_script("benchmark_model")


class RecordingModel:
    """Answers like an :class:`InferenceModel` and records the encoder calls (images per call)."""

    device = torch.device("cpu")

    def __init__(self) -> None:
        self.calls: list[list[np.ndarray]] = []

    def encode(self, image):
        self.calls.append([image])
        return object()

    def encode_batch(self, images):
        self.calls.append(list(images))
        return [object() for _ in images]

    def decode(self, emb, boxes=None, mask_input=None):
        return torch.zeros(len(boxes), 1, 256, 256), torch.zeros(len(boxes), 1)


def test_batched_encoder_cases_encode_distinct_images_in_one_call_against_one_call_each():
    model = RecordingModel()
    cases = {c.name: c for c in bm.build_cases(model, bm._image(), encode_batches=(4,))}
    assert cases["encode 4 batched"].images == cases["encode 4 one by one"].images == 4
    assert cases["encoder 1024"].images == 1 and cases["encoder 1024"].prompts == 0

    model.calls.clear()
    cases["encode 4 batched"].run()
    assert [len(c) for c in model.calls] == [4]
    batch = model.calls[0]
    assert len({im.tobytes() for im in batch}) == 4  # four streams' images, not one image four times

    model.calls.clear()
    cases["encode 4 one by one"].run()
    assert [len(c) for c in model.calls] == [1, 1, 1, 1]
    assert all(np.array_equal(a[0], b) for a, b in zip(model.calls, batch))  # the same images either way


def test_no_batched_encoder_cases_unless_asked():
    names = [c.name for c in bm.build_cases(RecordingModel(), bm._image())]
    assert not any(n.startswith("encode ") for n in names)


def test_a_batch_of_fewer_than_two_images_is_refused_in_one_line(capsys):
    import pytest

    with pytest.raises(SystemExit) as err:
        bm.main(["--encode-batch", "4", "1"])
    assert err.value.code == 2
    assert "--encode-batch needs image counts of 2 or more" in capsys.readouterr().err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--device", "cpu", "--precision", "fp16"], "precision 'fp16' is not supported on the CPU"),
        (["--device", "cpu", "--threads", "0"], "--threads must be >= 1"),
        (["--device", "cpu", "--backends", "torch", "tensorrt"], "unknown --backends tensorrt"),
        (["--device", "cpu", "--weights", "/nonexistent/w.pt"], "weights file not found: /nonexistent/w.pt"),
        # The file is written after every case has run: a folder that is not there is said now.
        (["--device", "cpu", "--json", "/nonexistent/dir/m.json"], "--json /nonexistent/dir/m.json: no folder /nonexistent/dir"),
        (["--device", "cpu", "--json", "/tmp"], "--json /tmp is a folder"),
        pytest.param(["--device", "cuda"], "device 'cuda' is not available here",
                     marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is here")),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_load(args, message, capsys, monkeypatch):
    monkeypatch.setattr(bm, "load_inference_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(bm, "BaselineWorker", lambda *a, **k: pytest.fail("the worker was started"))
    try:
        rc = bm.main(args)
    except SystemExit as exc:  # argparse's error
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and "Traceback" not in "\n".join(err)
