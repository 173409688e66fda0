"""Run the live window on a synthetic scene with the model replaced by the scene's ground truth.

Used by ``tests/test_ui.py`` to make the README's screenshot: with random
test weights SAM's masks are noise, so here the decoder's answer is the true
mask of the prompted object. Everything else is the real application: the
image-folder source, the pipeline threads, the engine (propagation,
association, lifecycle), the renderer and the OpenCV window.

    python tests/window_demo.py FOLDER      # prints "frame INDEX tracks N" per shown result
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import cv2  # before PyAV (see realtime_sam/app/cli.py)

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime_sam.app.pipeline import Pipeline, PipelineConfig  # noqa: E402
from realtime_sam.app.ui import LiveWindow, WindowConfig  # noqa: E402
from realtime_sam.capture.sources import open_source  # noqa: E402
from realtime_sam.config import SourceConfig  # noqa: E402
from realtime_sam.testing.fakes import GroundTruthRunner  # noqa: E402
from realtime_sam.testing.synthetic import standard_scene  # noqa: E402
from realtime_sam.tracking.association import mask_to_box  # noqa: E402
from realtime_sam.tracking.engine import Engine, EngineConfig  # noqa: E402
from realtime_sam.types import ObjectPrompt  # noqa: E402

WIDTH, HEIGHT, FRAMES = 640, 360, 150


def _digest(image) -> str:
    return hashlib.sha1(image.tobytes()).hexdigest()


class FrameLookupRunner(GroundTruthRunner):
    """:class:`GroundTruthRunner` that finds the frame index from the image itself."""

    def __init__(self, scene, index_of: dict[str, int]):
        super().__init__(scene)
        self.index_of = index_of

    def encode(self, image_bgr):
        self.current = self.index_of[_digest(image_bgr)]
        super().encode(image_bgr)


def main(folder: str) -> int:
    scene = standard_scene(WIDTH, HEIGHT, num_frames=FRAMES, num_objects=3, seed=4)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    index_of = {}
    for i in range(FRAMES):
        image, _ = scene.render(i)
        cv2.imwrite(str(out / f"{i:04d}.png"), image)  # lossless: the source gives these exact pixels
        index_of[_digest(image)] = i
    _, gt0 = scene.render(0)
    engine = Engine(FrameLookupRunner(scene, index_of), EngineConfig(reencode_every=6))
    for oid in sorted(gt0):
        engine.add_object(ObjectPrompt(box=tuple(float(v) for v in mask_to_box(gt0[oid])), label=f"object {oid}"))
    source = open_source(str(out / "*.png"), SourceConfig(image_fps=25.0))
    pipeline = Pipeline(source, engine, config=PipelineConfig(realtime=True))

    def shown(result):
        print(f"frame {result.index} tracks {len(result.tracks)}", flush=True)

    with LiveWindow(WindowConfig(), on_message=lambda text: None) as window:
        window.run(pipeline, engine, on_result=shown)
    pipeline.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
