"""A ``Sam`` whose networks answer a call they have answered before from memory (tests only).

On a 2-core CPU one image encode takes seconds (18 s beside other test runs) and a
decode of a few dozen prompts about as long; tests that run the same image or the same prompts through the same
model again (two generators side by side, a module of predictor checks sharing one
image) spent most of their time recomputing outputs they already had. The networks
are deterministic on the CPU, so the remembered output is the one they would
compute. An input differing by one bit runs the network: whatever a test checks
about the code around the networks (what it feeds them, what it does with their
outputs) is checked as before.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from typing import Any, Iterator

import torch


def call_key(value: Any) -> Any:
    """A hashable stand-in for a network call's argument: a tensor by its shape, dtype and bytes."""
    if isinstance(value, torch.Tensor):
        t = value.detach().contiguous().cpu()
        return ("tensor", tuple(t.shape), str(t.dtype), hashlib.sha1(t.numpy()).hexdigest())  # no copy of the bytes
    if isinstance(value, (tuple, list)):
        return tuple(call_key(v) for v in value)
    return value


def _copy(out: Any) -> Any:
    """A copy of a remembered output: a caller may change its output in place."""
    return tuple(t.clone() for t in out) if isinstance(out, tuple) else out.clone()


@contextmanager
def remembering(sam: Any) -> Iterator[Any]:
    """``sam`` (a ``Sam`` module) with its image encoder and mask decoder remembering their outputs.

    The encoder remembers each image of a batch (``Bx3x1024x1024`` in, ``Bx256x64x64`` out)
    on its own, so an image embedded alone is not embedded again inside a batch (``Sam.forward``)
    or the other way round; only the images it has not seen run, in one batch. The decoder
    remembers whole calls (its arguments as given). Left, both have the class's ``forward`` again.
    """
    encoder, decoder = sam.image_encoder, sam.mask_decoder
    encode, decode = encoder.forward, decoder.forward
    images: dict[Any, torch.Tensor] = {}
    calls: dict[Any, Any] = {}

    def remembered_encode(x: torch.Tensor) -> torch.Tensor:
        keys = [call_key(image) for image in x]
        new = [i for i, k in enumerate(keys) if k not in images]
        if new:
            for i, out in zip(new, encode(x[new])):
                images[keys[i]] = out
        return torch.stack([images[k] for k in keys]).clone()

    def remembered_decode(*args: Any, **kwargs: Any) -> Any:
        key = (call_key(args), tuple(sorted((k, call_key(v)) for k, v in kwargs.items())))
        if key not in calls:
            calls[key] = decode(*args, **kwargs)
        return _copy(calls[key])

    encoder.forward, decoder.forward = remembered_encode, remembered_decode
    try:
        yield sam
    finally:
        del encoder.forward, decoder.forward  # the class's forward again
