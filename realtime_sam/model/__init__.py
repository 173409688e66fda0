"""The model: MobileSAM's networks and everything needed to run them.

``modeling/`` holds the faithful SAM / MobileSAM modules (the reference
layout, strict checkpoint loading); ``runtime/`` the fast inference path
(fused encoder, batched decoder, export). ``weights`` downloads and verifies
checkpoints, ``build`` makes models (``sam_model_registry``), ``predictor`` is
the SAM-compatible ``SamPredictor``, ``automatic_mask_generator`` its
``SamAutomaticMaskGenerator`` (masks for everything in an image), ``loader`` turns a
:class:`~realtime_sam.model.config.ModelConfig` into a ready model, and
``runners`` adapts a model to the engine's
:class:`~realtime_sam.tracking.model_runner.ModelRunner` protocol.
"""
