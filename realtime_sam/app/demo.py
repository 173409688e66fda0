"""The demo that ``realtime-sam --source demo`` plays: a short clip and boxes on three of its objects.

Both ship inside the package (``realtime_sam/demo/clip.mp4``, 640x480, 8 s at
15 fps, H.264; ``realtime_sam/demo/prompts.yaml``, in the ``--prompts``
format), written by ``scripts/make_demo.py`` from the hard synthetic scene
(:mod:`realtime_sam.testing.hard_scene`), and are read with
:mod:`importlib.resources`, so an installed wheel has them too.
"""

from __future__ import annotations

import contextlib
from importlib import resources
from pathlib import Path
from typing import Iterator

from realtime_sam.tracking.prompts import load_prompts_file
from realtime_sam.types import ObjectPrompt

__all__ = ["DEMO_SOURCE", "is_demo", "demo_clip", "demo_prompts"]

DEMO_SOURCE = "demo"
"""The ``--source`` value that selects the demo clip (a file called ``demo`` is ``./demo``)."""

_FOLDER = "demo"


def is_demo(source: str) -> bool:
    """Whether ``--source`` names the demo clip."""
    return source.strip().lower() == DEMO_SOURCE


@contextlib.contextmanager
def demo_clip() -> Iterator[Path]:
    """The demo clip as a file path, valid inside the ``with`` block (extracted first from a zipped package)."""
    with resources.as_file(resources.files("realtime_sam").joinpath(_FOLDER).joinpath("clip.mp4")) as path:
        yield path


def demo_prompts() -> list[ObjectPrompt]:
    """The demo's preset objects, in file order: boxes on the cat, the astronaut and the cup, labelled so."""
    with resources.as_file(resources.files("realtime_sam").joinpath(_FOLDER).joinpath("prompts.yaml")) as path:
        return load_prompts_file(path)
