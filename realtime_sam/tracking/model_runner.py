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

    ``encode``, ``decode`` and ``masks`` are required. Any further method is
    optional: the engine looks for it at run time and works, with less, when a
    runner lacks it. Known optional methods:

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
      its signature comes with its first use).
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
        """``points BxNx2``, ``labels BxN``, ``boxes Bx4``, ``mask_input Bx256x256`` ->
        ``(low_res_logits BxCx256x256 float32, iou BxC)``."""
        ...

    def masks(self, low_res: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``Bx256x256`` logits -> ``BxHxW bool`` at ``size = (H, W)``."""
        ...
