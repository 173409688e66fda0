"""Label writers: YOLO segmentation text files and a COCO JSON file.

Both know which images are already done, so a run can be resumed, and
neither leaves a half-written file: a YOLO label is written to a temporary
name and renamed; the COCO file is rewritten whole (temporary name, rename)
at most every few seconds and when the writer closes, also after an error
or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from realtime_sam.errors import SinkError, describe_error

__all__ = ["LabeledObject", "YoloLabelWriter", "CocoWriter", "FORMATS"]

FORMATS = ("yolo", "coco")
_COCO_FLUSH_S = 5.0


@dataclass(frozen=True, eq=False)
class LabeledObject:
    """One object of one image, ready to write.

    Attributes:
        class_id: the detector's class index.
        polygons: ``Kx2`` pixel ``(x, y)`` rings (one, or several with ``segments: all``); for COCO
            the outline of the pixel squares, corners at integer coordinates, as pycocotools fills it,
            each hole joined to it by a zero-width bridge (cut out, not filled).
        ring: the single ring a YOLO line holds (the polygons joined), ``Kx2`` pixels.
        box: ``XYXY`` of the mask, pixels.
        area: mask pixels.
        rle: the mask as COCO compressed RLE (``{"size": [H, W], "counts": str}``).
        score: the detector's confidence.
    """

    class_id: int
    polygons: Sequence[np.ndarray]
    ring: np.ndarray
    box: tuple[float, float, float, float]
    area: int
    rle: Mapping[str, object]
    score: float


def _replace(tmp: Path, path: Path, data: bytes) -> None:
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        raise SinkError(f"cannot write {path}: {describe_error(exc)}") from None


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(f"cannot create the output folder {path}: {describe_error(exc)}; give another --output-dir") from None


class YoloLabelWriter:
    """``<output_dir>/<image stem>.txt``, one object per line: ``class x1 y1 x2 y2 ...``.

    Coordinates are normalised to ``[0, 1]`` by the image's width and
    height and written with ``%g`` (six significant digits), as Ultralytics
    writes segmentation labels. An image without objects gets an empty
    file (a background image to Ultralytics' loader), so it counts as done.
    """

    def __init__(self, output_dir: str | os.PathLike[str]) -> None:
        self.output_dir = Path(output_dir)
        _make_dir(self.output_dir)

    def path(self, stem: str) -> Path:
        return self.output_dir / f"{stem}.txt"

    def done(self, stem: str) -> bool:
        return self.path(stem).is_file()

    def write(
        self, stem: str, file_name: str, size: tuple[int, int], objects: Sequence[LabeledObject],
        names: Mapping[int, str] | None = None,
    ) -> None:
        """Write the image's label file (``names`` is not needed: a line holds the class index)."""
        h, w = size
        lines = []
        for o in objects:
            xy = np.clip(o.ring / np.array([w, h], dtype=np.float64), 0.0, 1.0).reshape(-1)
            lines.append(f"{int(o.class_id)} " + " ".join("%g" % v for v in xy))
        path = self.path(stem)
        _replace(path.with_name(path.name + ".tmp"), path, "".join(line + "\n" for line in lines).encode("ascii"))

    def close(self) -> None:
        pass


class CocoWriter:
    """``<output_dir>/annotations.json``: COCO instances with the image list and the category names.

    Each annotation has ``segmentation`` as polygons (pixel ``[x1, y1, x2, y2, ...]``
    lists, one per part, along the pixels' outer edges), ``bbox`` ``[x, y, w, h]`` and ``area`` of the mask,
    ``iscrowd: 0``, the detector's ``score`` and the exact mask as compressed
    RLE under ``rle`` (``pycocotools.mask.decode`` reads it). Category ids
    are the detector's class index + 1 (COCO ids start at 1). An existing
    file is read first: its images are done and new ones are appended; a
    category of it that names a class otherwise than ``names`` is a :class:`SinkError`.
    """

    FILE_NAME = "annotations.json"

    def __init__(self, output_dir: str | os.PathLike[str], names: Mapping[int, str], classes: Sequence[int] | None) -> None:
        self.output_dir = Path(output_dir)
        _make_dir(self.output_dir)
        self.file = self.output_dir / self.FILE_NAME
        self.data: dict = {"info": {"description": "realtime-sam annotate"}, "images": [], "annotations": [], "categories": []}
        if self.file.is_file():
            try:
                self.data = json.loads(self.file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise SinkError(f"{self.file} exists but is not readable COCO JSON ({describe_error(exc)}); move it away to start over") from None
        self.data.setdefault("categories", [])
        self._add_categories(sorted(names) if classes is None else sorted(classes), names)
        self._done = {Path(im["file_name"]).stem for im in self.data["images"]}
        self._next_image = max((im["id"] for im in self.data["images"]), default=0) + 1
        self._next_ann = max((a["id"] for a in self.data["annotations"]), default=0) + 1
        self._dirty = False
        self._flushed = time.monotonic()

    def _add_categories(self, ids: Sequence[int], names: Mapping[int, str]) -> None:
        """Categories for the class ``ids`` (``names``: the detector's), those not listed yet."""
        known = {c["id"]: c.get("name") for c in self.data["categories"]}
        for cid in ids:
            # A resumed run with a detector that numbers its classes otherwise would write its
            # objects under the earlier run's names for those ids.
            old, new = known.get(cid + 1), names.get(cid, str(cid))
            if cid + 1 in known and cid in names and old != new:
                raise SinkError(
                    f"{self.file} was written with other class names: category {cid + 1} is {old!r} there but class "
                    f"{cid} of this detector is {new!r}; use that run's detector (--det-model), or another --output-dir"
                )
        added = [cid for cid in dict.fromkeys(ids) if cid + 1 not in known]
        for cid in added:
            self.data["categories"].append({"id": cid + 1, "name": names.get(cid, str(cid)), "supercategory": "object"})
        if added:
            self.data["categories"].sort(key=lambda c: c["id"])

    def done(self, stem: str) -> bool:
        return stem in self._done

    def write(
        self, stem: str, file_name: str, size: tuple[int, int], objects: Sequence[LabeledObject],
        names: Mapping[int, str] | None = None,
    ) -> None:
        """Add one image and its objects; ``names`` (the detector's now) names a class not listed yet."""
        # A class first seen here (a detector whose names grew) gets its category: no annotation
        # may point at a category the file does not have.
        self._add_categories([int(o.class_id) for o in objects], names or {})
        h, w = size
        image_id = self._next_image
        # Made first and added together: an interrupt (Ctrl-C, SIGTERM) while they are made leaves
        # no image listed, and so "done" to the next run, with only some of its objects.
        annotations = []
        for k, o in enumerate(objects):
            x0, y0, x1, y1 = o.box
            annotations.append({
                "id": self._next_ann + k,
                "image_id": image_id,
                "category_id": int(o.class_id) + 1,
                "segmentation": [[round(float(v), 2) for v in p.reshape(-1)] for p in o.polygons],
                "area": int(o.area),
                "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
                "iscrowd": 0,
                "score": round(float(o.score), 5),
                "rle": dict(o.rle),
            })
        self.data["annotations"].extend(annotations)
        self.data["images"].append({"id": image_id, "file_name": file_name, "height": int(h), "width": int(w)})
        self._next_image += 1
        self._next_ann += len(annotations)
        self._done.add(stem)
        self._dirty = True
        if time.monotonic() - self._flushed >= _COCO_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Write the whole file now (temporary name, then rename)."""
        if not self._dirty and self.file.is_file():
            return
        _replace(self.file.with_name(self.file.name + ".tmp"), self.file, json.dumps(self.data).encode("utf-8"))
        self._dirty = False
        self._flushed = time.monotonic()

    def close(self) -> None:
        self.flush()
