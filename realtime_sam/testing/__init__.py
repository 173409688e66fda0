"""Test support that scripts and users' own tests can use.

Nothing in the product imports this package.

* ``synthetic``: easy scenes (flat shapes, constant speed) with exact
  ground truth, written as video files and ground-truth archives.
* ``hard_scene``: a scene about as hard as real video (photographs, moving
  camera, deformation, crossings, an object that leaves the frame).
* ``fakes``: stand-ins that need no network or camera: ``BoxRunner`` (the
  mask is the prompt's box), ``GroundTruthRunner`` (answers from a scene's
  ground truth) and ``LoopingSceneSource`` (a scene as an endless camera).
* ``oracle``: ``GroundTruthOracle``, the VOS evaluation's stand-in for a
  perfect decoder (the protocol is in its docstring).
"""
