"""CUDA graphs for the encoder and decoder: each input shape is captured once, then replayed.

On a GPU this model is bound by kernel launches, not arithmetic: the decoder
takes about the same time for 1 prompt as for 16. A CUDA graph replays a
captured call's kernels with one launch. Measured on an H200 in fp16
(``scripts/benchmark_cuda_graphs.py``, medians, outputs bit-identical):

====================== ========= =========
call                    eager      graph
====================== ========= =========
encoder, 1 image        5.7 ms     2.3 ms
decode, 1 box + mask    3.6 ms     0.5 ms
decode, 5 boxes + mask  3.9 ms     0.9 ms
decode, 16 boxes + mask 4.0 ms     1.8 ms
====================== ========= =========

A graph works on fixed tensors, so :class:`GraphCache` keeps one graph per
*key* (the shapes and which optional inputs are present), copies each call's
inputs into that graph's tensors, replays it and returns clones of its
outputs (the next replay overwrites them). The least recently used graph is
dropped past ``max_graphs``. All graphs share one memory pool: safe because
replays are serialised by one lock and outputs are cloned before the lock is
released, so one graph's scratch memory is never live across another's replay.

Memory: each graph keeps its output tensors, and the shared pool keeps
the largest captured call's scratch (on the gpu preset, discovery's decodes
of 256 point prompts).

A call whose capture fails (an operation CUDA cannot capture, another
thread's work in the way) is run eagerly, and its key is not tried again.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import torch

__all__ = ["GraphCache", "capture_graph"]

log = logging.getLogger(__name__)

_WARMUP_CALLS = 3  # before capture, on a side stream: lazy initialisation (cuBLAS handles, kernels) must not be captured


def capture_graph(
    fn: Callable[..., Sequence[torch.Tensor]],
    static: Sequence[torch.Tensor | None],
    *,
    device: torch.device,
    pool: tuple | None = None,
) -> tuple[torch.cuda.CUDAGraph, tuple[torch.Tensor, ...]]:
    """Capture ``fn(*static)`` on ``device`` as a CUDA graph, after warm-up calls on a side stream.

    Returns the graph, whose ``replay()`` reruns the call on whatever
    ``static`` holds then, and the tensors it writes (``fn``'s outputs).
    ``pool``: a memory pool shared with other graphs (``torch.cuda.graph_pool_handle()``).
    Raises what CUDA raises for a call it cannot capture.
    """
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(_WARMUP_CALLS):
            fn(*static)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    # thread_local: another stream's thread may use CUDA meanwhile; that is not this capture's business.
    with torch.cuda.graph(graph, pool=pool, capture_error_mode="thread_local"):
        outputs = tuple(fn(*static))
    return graph, outputs


@dataclass
class _Graph:
    graph: torch.cuda.CUDAGraph
    inputs: tuple[torch.Tensor | None, ...]  # the tensors the graph reads; None where the call had no such input
    outputs: tuple[torch.Tensor, ...]  # the tensors it writes


class GraphCache:
    """Runs ``fn(*inputs)`` through a CUDA graph captured for that call's ``key``.

    Args:
        device: the CUDA device the graphs run on.
        max_graphs: graphs kept; the least recently used is dropped beyond it.
    """

    def __init__(self, device: torch.device, *, max_graphs: int = 48) -> None:
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.device = device
        self.max_graphs = max_graphs
        self._graphs: OrderedDict[Hashable, _Graph] = OrderedDict()
        self._failed: set[Hashable] = set()
        self._lock = threading.Lock()
        with torch.cuda.device(device):
            self._pool = torch.cuda.graph_pool_handle()
        self.captures = 0  # graphs captured so far (tests and benchmarks read these)
        self.replays = 0

    def run(
        self,
        key: Hashable,
        fn: Callable[..., Sequence[torch.Tensor]],
        inputs: Sequence[torch.Tensor | None],
    ) -> tuple[torch.Tensor, ...]:
        """``fn(*inputs)``'s outputs (fresh tensors), by graph replay where it can be captured.

        ``key`` must determine every input's shape, dtype and presence
        (``None`` inputs are passed through as ``None``); ``fn`` must be a pure
        function of ``inputs`` and of tensors that stay put (weights).
        """
        if key in self._failed:
            return tuple(fn(*inputs))
        # The graphs' streams are this device's, whichever device is current (cuda:1 beside cuda:0).
        with self._lock, torch.cuda.device(self.device):
            entry = self._graphs.get(key)
            if entry is None:
                entry = self._capture(key, fn, inputs)
                if entry is None:
                    return tuple(fn(*inputs))
            else:
                self._graphs.move_to_end(key)
            for static, x in zip(entry.inputs, inputs):
                if static is not None:
                    static.copy_(x)  # type: ignore[arg-type]
            entry.graph.replay()
            self.replays += 1
            return tuple(o.clone() for o in entry.outputs)

    def _capture(
        self, key: Hashable, fn: Callable[..., Sequence[torch.Tensor]], inputs: Sequence[torch.Tensor | None]
    ) -> _Graph | None:
        static = tuple(None if x is None else x.detach().clone() for x in inputs)
        try:
            graph, outputs = capture_graph(fn, static, device=self.device, pool=self._pool)
        except Exception as exc:  # noqa: BLE001 - any capture failure: run this key eagerly from now on
            log.warning("CUDA graph capture failed for %r (%s); running it without a graph", key, exc)
            self._failed.add(key)
            return None
        entry = _Graph(graph, static, outputs)
        self._graphs[key] = entry
        self.captures += 1
        while len(self._graphs) > self.max_graphs:
            self._graphs.popitem(last=False)
        return entry
