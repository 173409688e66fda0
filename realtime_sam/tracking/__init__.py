"""Tracking: from an encoded frame and last frame's tracks to this frame's masks.

Per frame, :class:`~realtime_sam.tracking.engine.Engine` does:
propagate (``dense_flow`` / ``propagation``: move each track's mask with the
image motion), decode (re-prompt the model with the propagated box and
logits on encode frames; ``prompts`` builds the prompts), associate
(``association``: Hungarian matching of decoded masks to tracks) and update
the tracks' lifecycle (``tracks``: tentative, confirmed, lost, re-acquired).
``discovery`` finds new objects with a point grid, ``background`` keeps the
bookkeeping of encodes run on a worker thread. The engine talks to the model
only through the ``model_runner`` protocol, so it imports without torch.
"""
