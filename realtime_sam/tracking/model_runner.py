"""The contract between the engine and a model: :class:`ModelRunner`.

Torch-free on purpose: the engine imports it, and the engine must not pull in
the model stack. Implementations live in :mod:`realtime_sam.model.runners`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["ModelRunner"]


class ModelRunner(Protocol):
    """What the engine needs from a model: one image embedding at a time, batched decoding.

    Coordinates are source-image pixels; images are ``HxWx3 uint8`` BGR.

    Low-res logits are laid out as SAM's decoder gives them: a ``256x256``
    grid over the image resized so its longest side fills it, padded
    bottom/right (one cell is ``max(H, W) / 256`` source pixels). The engine
    relies on that layout: it hands a track's logits back as ``mask_input``,
    and between encodes it moves them by optical flow and upsamples them
    itself, as ``masks`` should.

    ``encode``, ``decode`` and ``masks`` are required; the engine checks what
    ``decode`` and ``masks`` return and raises a ``TypeError``/``ValueError``
    naming the method for another shape or a float mask. Numpy arrays are
    expected (a CPU torch tensor, a list or ``float64`` logits are converted).
    Any further method is optional: the engine looks for it at run time and
    works, with less, when a runner lacks it. Known optional methods:

    * ``embed(image_bgr) -> embedding``: embed an image without making it
      current, safe to call from another thread while the runner decodes; and
      ``use(embedding)``: make such an embedding current. Only runners with
      both support ``EngineConfig.background_encode`` (with one alone the
      encodes run on the engine's thread, as without it); there the worker
      thread calls ``embed``, ``use``, ``decode`` and ``masks`` in turn (the
      frame loop then makes no model call, and never at the same time).
    * ``embed_latest(latest) -> embedding``: like ``embed``, for a runner whose
      encodes may wait (an encoder shared by several streams): it calls
      ``latest()`` once, when the encode starts, for the image to embed
      (``(HxWx3 uint8 BGR, seconds since it was offered)``), so the engine
      can move a waiting encode to its newest frame. Without it the worker
      embeds the newest frame when it starts the job.
    * ``features(...)``: image features for appearance matching (reserved;
      its signature comes with its first use). Nothing calls it yet: lost
      tracks are found again by their colours on the frame's pixels.
    """

    def encode(self, image_bgr: np.ndarray) -> None: ...

    def decode(
        self,
        points: np.ndarray | None,
        labels: np.ndarray | None,
        boxes: np.ndarray | None,
        mask_input: np.ndarray | None,
        multimask: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``points BxNx2`` float, ``labels BxN`` int (1 foreground, 0 background), ``boxes Bx4`` XYXY,
        ``mask_input Bx256x256`` float32 logits (any may be ``None``; ``B`` prompts) ->
        ``(low_res_logits BxCx256x256 float32, iou BxC)``.

        ``C`` is 1 without ``multimask`` (the engine takes the first mask); with it, up
        to 3 candidates, of which the engine keeps the best-scored (1 is fine too)."""
        ...

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``Bx256x256`` logits -> ``BxHxW bool`` at ``size = (H, W)`` (the logits above 0, padding cropped)."""
        ...
