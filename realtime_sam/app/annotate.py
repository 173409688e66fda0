"""Auto-annotation: detector boxes prompt SAM, masks become YOLO or COCO labels.

:func:`annotate` is Ultralytics' ``auto_annotate`` with this project's
model: for every image of a folder or glob (or every ``every``-th frame of a
video) a detector finds boxes, all of an image's boxes are decoded by SAM in
one batched call on one encode, each mask becomes a polygon
(:mod:`realtime_sam.output.polygons`) and the labels are written
(:mod:`realtime_sam.output.labels`). Images already labelled are skipped,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from realtime_sam.capture.images import AnimationNotice, image_files, is_animation, is_image_alone, read_listed_bgr
from realtime_sam.errors import ConfigError, SinkError, SourceError, describe_error
from realtime_sam.model.detector import load_yolo, ultralytics_device
from realtime_sam.output.image_file import write_image
from realtime_sam.output.labels import (
    FORMATS,
    CocoWriter,
    LabeledObject,
    YoloLabelWriter,
)
from realtime_sam.output.polygons import (
    SEGMENTS,
    join_parts,
    kept_parts,
    outline_parts_with_holes,
    parts_mask,
    simplify_parts,
)
from realtime_sam.output.rle import encode_rle, mask_to_box
from realtime_sam.tracking.detection import Detector, check_detector, parse_classes, select_detections

__all__ = ["annotate", "AnnotateSummary", "default_output_dir", "build_annotate_parser", "annotate_main"]

_UPSCALE_CHUNK = 16  # masks upsampled to full size at a time (bounds memory with many boxes)
_UPSCALE_PIXELS = 2**25  # ... and at most this many pixels of them (128 MB of float32 logits): fewer for a huge image


@dataclass(frozen=True)
class AnnotateSummary:
    """What an :func:`annotate` run did.

    Attributes:
        output_dir: where the labels are.
        images: inputs seen (images, or the video frames picked).
        annotated: images labelled by this run.
        skipped: images that already had labels (an earlier run's).
        empty: annotated images with no object kept (an empty label file).
        objects: objects written per class name.
        too_small: masks dropped as empty or smaller than ``min_area`` pixels.
        unreadable: files not labelled: not readable images (each said on stderr).
    """

    output_dir: Path
    images: int = 0
    annotated: int = 0
    skipped: int = 0
    empty: int = 0
    objects: Mapping[str, int] = field(default_factory=dict)
    too_small: int = 0
    unreadable: int = 0

    def text(self) -> str:
        """A few lines for the end of a run."""
        per_class = ", ".join(f"{name}: {n}" for name, n in sorted(self.objects.items(), key=lambda kv: (-kv[1], kv[0])))
        lines = [
            f"images: {self.images} ({self.annotated} annotated, {self.skipped} already labelled"
            + (f", {self.unreadable} unreadable" if self.unreadable else "") + ")",
            f"objects: {sum(self.objects.values())}" + (f" ({per_class})" if per_class else ""),
            f"empty images: {self.empty}",
            f"masks too small to keep: {self.too_small}",
            f"labels: {self.output_dir}",
        ]
        return "\n".join(lines)


@dataclass(frozen=True)
class _Item:
    stem: str  # label file stem
    file_name: str  # the image's path as written to COCO
    load: Callable[[], np.ndarray | str]  # the BGR image, or why it is not read
    save_to: Path | None = None  # video frames: where to write the image before its label


def _is_video(path: Path) -> bool:
    """A file labelled frame by frame, as a source reads it alone: a video, a GIF, or an animated image
    (APNG, animated WebP, AVIF sequence), which was labelled as one image, its first frame."""
    return path.is_file() and (not is_image_alone(path) or is_animation(path))


def _glob_base(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    base = []
    for p in parts:
        if any(ch in p for ch in "*?["):
            break
        base.append(p)
    return Path(*base) if base else Path(".")


def default_output_dir(data: str | os.PathLike[str]) -> Path:
    """``<data folder name>_auto_annotate_labels`` beside the data, as Ultralytics names it.

    For a glob the data folder is the pattern's folder; for a video or one
    image, the file's name without its extension.
    """
    text = str(data)
    path = Path(text)
    if not path.exists() and any(ch in text for ch in "*?["):
        path = _glob_base(text)
    path = path.absolute()
    return path.parent / f"{path.stem}_auto_annotate_labels"


def _image_items(data: str) -> list[_Item]:
    files = image_files(
        data, no_match=f"no images match {data}; give a folder, a glob (quoted) or a video file"
    )
    stems: dict[str, Path] = {}
    for f in files:
        if f.stem in stems:
            raise SourceError(f"{stems[f.stem]} and {f} would share the label file {f.stem}.txt; rename one or annotate them separately")
        stems[f.stem] = f

    # An animation among the images is labelled as its first frame, and said once, as a folder source says it.
    notice = AnimationNotice(data, hint="give it alone as DATA to label all its frames")

    def reader(f: Path) -> Callable[[], np.ndarray | str]:
        def load() -> np.ndarray | str:
            # As an image source reads it (any path, as on Windows): upright, as Ultralytics (cv2.imread)
            # trains on a phone photo stored sideways; a float TIFF scaled from 0..1 as viewers show it.
            image = read_listed_bgr(f, notice)
            return "not a readable image" if image is None else image

        return load

    return [_Item(f.stem, str(f), reader(f)) for f in files]


def _video_items(path: Path, every: int, images_dir: Path) -> tuple[int | None, Iterator[_Item]]:
    from realtime_sam.capture.images import AnimatedImageSource
    from realtime_sam.capture.video_file import VideoFileSource

    try:
        source = AnimatedImageSource(path) if is_image_alone(path) else VideoFileSource(path)
    except SourceError as exc:
        # Any file that is not an image is tried as a video: say what annotate takes (a user of
        # Ultralytics may give its list of image paths, list.txt, which is not read here).
        raise SourceError(f"{exc}; give a folder of images, a glob (quoted), one image or a video file") from None
    total = None if not source.num_frames else (source.num_frames + every - 1) // every

    def items() -> Iterator[_Item]:
        try:
            while (frame := source.read()) is not None:
                if frame.index % every:
                    continue
                stem = f"{path.stem}_{frame.index:06d}"
                target = images_dir / f"{stem}.jpg"
                yield _Item(stem, str(target), lambda image=frame.image: image, save_to=target)
        finally:
            source.close()

    return total, items()


def _torch_device(device: str | None) -> str:
    """Ultralytics' device strings (``""`` auto, ``"0"``, ``"cpu"``, ``"cuda:1"``) as this project's."""
    text = "" if device is None else str(device).strip().lower()
    if text in ("", "auto"):
        return "auto"
    if text.isdigit():
        return f"cuda:{text}"
    return text


def annotate(
    data: str | os.PathLike[str],
    det_model: str | os.PathLike[str] = "yolo11x.pt",
    sam_model: str | os.PathLike[str] | None = "mobile_sam.pt",
    device: str = "",
    conf: float = 0.25,
    iou: float = 0.45,
    imgsz: int = 640,
    max_det: int = 300,
    classes: str | int | Sequence[str | int] | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    *,
    format: str = "yolo",
    segments: str = "largest",
    simplify: float = 1.0,
    min_area: int = 10,
    every: int = 1,
    progress: bool = True,
    detector: Detector | None = None,
    model=None,
) -> AnnotateSummary:
    """Label every image of ``data`` with the masks of a detector's boxes.

    The first ten parameters are Ultralytics' ``auto_annotate``'s, with its
    defaults.

    Args:
        data: a folder of images, a glob (``"shots/*.jpg"``), one image, or a
            video, a GIF or an animated image (APNG, WebP, AVIF) given alone
            (every ``every``-th frame; the frames are saved as JPEG under
            ``<output_dir>/images`` and the labels go to ``<output_dir>/labels``).
        det_model: an Ultralytics detection checkpoint (path or release name).
        sam_model: the SAM checkpoint; ``"mobile_sam.pt"`` not on disk means the
            usual weights (``$REALTIME_SAM_WEIGHTS``, the cache, downloaded once).
        device: ``""``/``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"0"``, ``"mps"``.
        conf: detector score threshold. iou: its NMS IoU. imgsz: its input size.
        max_det: most boxes per image.
        classes: class ids or names to keep (``"person,car"``, ``[0, 2]``, ``0``); ``None`` = all.
        output_dir: default ``<data folder name>_auto_annotate_labels`` beside the data.
        format: ``"yolo"`` (one ``.txt`` per image) or ``"coco"`` (``annotations.json``).
        segments: ``"largest"`` (the largest part of each mask) or ``"all"`` (every part).
        simplify: polygon tolerance in pixels (Douglas-Peucker; 0 keeps every contour point).
        min_area: masks (and parts) with fewer pixels are dropped and counted as too small.
        every: for a video, label every ``every``-th frame.
        progress: show a progress bar on stderr (and Ultralytics' own lines as the detector loads).
        detector: use this detector instead of loading ``det_model`` (any
            :class:`~realtime_sam.model.detector.Detector`; ``conf``,
            ``classes`` and ``max_det`` are applied to its boxes too).
        model: use this :class:`~realtime_sam.model.runtime.InferenceModel`
            instead of loading ``sam_model``.

    Returns:
        An :class:`AnnotateSummary`.

    Raises:
        SourceError: no images at ``data``. DetectorError: the detector cannot
        be loaded or a class is unknown. SinkError: the output cannot be written.
        ConfigError: a bad argument.
    """
    if format not in FORMATS:
        raise ConfigError(f"format must be one of {', '.join(FORMATS)}, not {format!r}")
    if segments not in SEGMENTS:
        raise ConfigError(f"segments must be one of {', '.join(SEGMENTS)}, not {segments!r}")
    if not 0.0 <= conf <= 1.0 or not 0.0 <= iou <= 1.0:
        raise ConfigError(f"conf and iou must be in [0, 1], got conf={conf} and iou={iou}")
    if every < 1 or max_det < 1 or imgsz < 32 or min_area < 0 or simplify < 0:
        raise ConfigError("every and max_det must be >= 1, imgsz >= 32, min_area and simplify >= 0")
    text = str(data)
    path = Path(text)
    if not path.exists() and not any(ch in text for ch in "*?["):
        raise SourceError(f"{text} not found; give a folder of images, a glob or a video file")
    video = _is_video(path)
    if every != 1 and not video:  # it labelled every image, as if --every were not there
        raise ConfigError(f"--every is for a video file, and {text} is images: every image is labelled; choose them with a glob instead")
    out = Path(output_dir) if output_dir else default_output_dir(text)
    with _no_empty_folders_left_on_failure(out, out / "images", out / "labels"):
        total: int | None
        if video:
            labels_dir, images_dir = out / "labels", out / "images"
            try:
                images_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise SinkError(f"cannot create {images_dir}: {describe_error(exc)}; give another --output-dir") from None
            total, items = _video_items(path, every, images_dir)
        else:
            labels_dir = out
            listed = _image_items(text)
            total, items = len(listed), iter(listed)

        loaded: dict[str, object] = {}

        def get_detector() -> Detector:
            if "detector" not in loaded:
                loaded["detector"] = detector if detector is not None else load_yolo(
                    det_model, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, classes=classes,
                    device=ultralytics_device(_torch_device(device)), verbose=progress,
                )
            return loaded["detector"]  # type: ignore[return-value]

        def get_model():
            if "model" not in loaded:
                loaded["model"] = model if model is not None else _load_sam(sam_model, device, progress)
            return loaded["model"]

        # The class filter needs the detector's names; a given detector is checked at once.
        class_ids = parse_classes(classes, check_detector(detector).names) if detector is not None else None
        writer: YoloLabelWriter | CocoWriter | None = YoloLabelWriter(labels_dir) if format == "yolo" else None
        counts: Counter[str] = Counter()
        stats = Counter()
        bar = None

        def start_bar() -> None:
            # Made once the first image needing the models has them loaded: a missing detector or
            # SAM checkpoint is then its one error line, not that line under a bar at 0 %.
            nonlocal bar
            if bar is None and progress:
                from tqdm import tqdm

                # The images before this one (already labelled, unreadable) are counted in its start.
                bar = tqdm(total=total, initial=stats["images"] - 1, unit="image", desc="annotate", file=sys.stderr, dynamic_ncols=True)

        try:
            for item in items:
                stats["images"] += 1
                if writer is None:  # COCO: the categories need the detector's names
                    det = get_detector()
                    if class_ids is None:
                        class_ids = parse_classes(classes, det.names)
                    writer = CocoWriter(labels_dir, det.names, class_ids)
                if writer.done(item.stem):
                    stats["skipped"] += 1
                    if bar is not None:  # else counted by the bar's start
                        bar.update(1)
                    continue
                image = item.load()
                if isinstance(image, str):
                    stats["unreadable"] += 1
                    if progress:
                        message = f"skipped {item.file_name}: {image}"
                        if bar is not None:
                            bar.write(message, file=sys.stderr)  # tqdm writes to stdout unless told
                            bar.update(1)
                        else:
                            print(message, file=sys.stderr)
                    continue
                det = get_detector()
                if class_ids is None and classes is not None:
                    class_ids = parse_classes(classes, det.names)
                sam = get_model()
                start_bar()
                objects, small = _label_image(
                    image, det, sam, conf, class_ids, max_det, segments, simplify, min_area, want_rle=format == "coco"
                )
                if item.save_to is not None:
                    try:
                        written = write_image(item.save_to, image)
                    except OSError as exc:  # a full disk, a folder gone: imwrite said False, this says why
                        raise SinkError(f"cannot write the frame image {item.save_to}: {describe_error(exc)}; check the folder") from None
                    if not written:
                        raise SinkError(f"cannot write the frame image {item.save_to}; check the folder")
                try:
                    writer.write(item.stem, item.file_name, image.shape[:2], objects, names=det.names)
                except BaseException:
                    # Ctrl-C, SIGTERM or a failed write between the frame and its label: a frame saved
                    # without a label is a background image to Ultralytics (its objects trained as
                    # negatives), so it goes too; the next run labels and saves it again.
                    if item.save_to is not None and not writer.done(item.stem):
                        with contextlib.suppress(OSError):
                            item.save_to.unlink()
                    raise
                stats["annotated"] += 1
                stats["too_small"] += small
                if not objects:
                    stats["empty"] += 1
                for o in objects:
                    counts[det.names.get(o.class_id, str(o.class_id))] += 1
                if bar is not None:
                    bar.set_postfix(objects=sum(counts.values()), refresh=False)
                    bar.update(1)
        finally:
            if bar is not None:
                bar.close()
            if writer is not None:
                writer.close()
        return AnnotateSummary(
            output_dir=labels_dir,
            images=stats["images"],
            annotated=stats["annotated"],
            skipped=stats["skipped"],
            empty=stats["empty"],
            objects=dict(counts),
            too_small=stats["too_small"],
            unreadable=stats["unreadable"],
        )


@contextlib.contextmanager
def _no_empty_folders_left_on_failure(*folders: Path) -> Iterator[None]:
    """Folders among ``folders`` that the block creates are removed again if it fails leaving them empty.

    A run that ends on an error before labelling anything (a missing detector, a video
    that does not decode) leaves the output folder as it found it; anything written stays.
    """
    new = [f for f in folders if not f.exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda f: len(f.parts), reverse=True):  # the deepest first
            try:
                folder.rmdir()  # only an empty one
            except OSError:
                pass
        raise


def _load_sam(sam_model, device: str, progress: bool):
    from realtime_sam.model.config import ModelConfig
    from realtime_sam.model.loader import load_model
    from realtime_sam.model.weights import locate_checkpoint

    # The official file's bare name means the usual place (the cache, $REALTIME_SAM_WEIGHTS).
    weights = None if sam_model is None else str(locate_checkpoint(sam_model, progress=progress))
    return load_model(ModelConfig(weights=weights, device=_torch_device(device)), progress=progress)


def _label_image(
    image: np.ndarray, detector: Detector, model, conf: float, classes, max_det: int, segments: str, simplify: float, min_area: int,
    *, want_rle: bool,
) -> tuple[list[LabeledObject], int]:
    """One image: detect, decode every box in one batched call, polygons; ``(objects, masks too small)``.

    ``want_rle`` (COCO): each object also gets its RLE, and its ``polygons`` follow the pixels' outer
    edges, holes cut out (:func:`outline_parts_with_holes`), instead of the edge pixels' centres.
    """
    h, w = image.shape[:2]
    dets = select_detections(detector(image), conf=conf, classes=classes, max_det=max_det, size=(h, w))
    if len(dets) == 0:
        return [], 0
    embedding = model.encode(image, image_format="BGR")
    low, _ = model.decode(embedding, boxes=dets.xyxy, multimask_output=False)  # all boxes, one call
    objects: list[LabeledObject] = []
    small = 0
    chunk = max(1, min(_UPSCALE_CHUNK, _UPSCALE_PIXELS // (h * w)))
    for start in range(0, len(dets), chunk):
        masks = (model.upscale(low[start : start + chunk], embedding)[:, 0] > 0).cpu().numpy()
        for k, mask in enumerate(masks):
            i = start + k
            area = int(np.count_nonzero(mask))
            contours = kept_parts(mask, segments=segments, min_area=min_area) if area >= max(min_area, 1) else []
            # YOLO rings run through the edge pixels' centres, as Ultralytics fills them (holes filled, as
            # its own labels); COCO's follow the pixels' outer edges, as pycocotools fills them, holes cut
            # out, so the segmentation is the mask that area and rle describe (realtime_sam.output.polygons).
            rings = [(c, ring) for c in contours for ring in simplify_parts([c], simplify)]
            if want_rle:
                polygons, kept = outline_parts_with_holes(mask, contours, simplify), contours
            else:
                polygons, kept = [ring for _, ring in rings], [c for c, _ in rings]
            if not polygons:
                small += 1
                continue
            # The box, area and RLE describe the parts the polygons hold: a speck dropped from the
            # segmentation (segments="largest", min_area) must not stretch the COCO bbox or area.
            mask = parts_mask(mask, kept)
            area = int(np.count_nonzero(mask))
            box = mask_to_box(mask)
            objects.append(
                LabeledObject(
                    class_id=int(dets.class_id[i]),
                    polygons=polygons,
                    ring=join_parts([ring for _, ring in rings]),
                    box=tuple(float(v) for v in box),  # type: ignore[arg-type]
                    area=area,
                    rle=encode_rle(mask) if want_rle else {},
                    score=float(dets.confidence[i]),
                )
            )
    return objects, small


# ---------------------------------------------------------------- the ``annotate`` sub-command

_EPILOG = """\
examples:
  realtime-sam annotate shots/
      YOLO segmentation labels for every image in shots/, in shots_auto_annotate_labels/
  realtime-sam annotate "shots/*.jpg" --det-model yolo11n.pt --classes person,car --conf 0.4
  realtime-sam annotate clip.mp4 --every 10 --format coco --output-dir clip_coco
      every 10th frame: frames in clip_coco/images, COCO JSON in clip_coco/labels

A run that stops can be started again with the same command: images that
already have labels are skipped. exit status: 0 done, 2 bad argument or input,
130 Ctrl-C, 143 SIGTERM (labels written so far are complete and kept).
"""


def build_annotate_parser():
    """The argument parser of ``realtime-sam annotate``."""
    import argparse

    from realtime_sam.app.cli import _float_where, _int_at_least, _Parser

    unit_float = _float_where(lambda v: 0.0 <= v <= 1.0, "in [0, 1]")
    non_negative = _float_where(lambda v: v >= 0.0, ">= 0")

    p = _Parser(
        prog="realtime-sam annotate",
        description="Label a folder of images (or a video's frames) with SAM masks of a YOLO detector's boxes.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("data", metavar="DATA", help="a folder of images, a glob (quoted), one image, or a video file")
    p.add_argument("--det-model", default="yolo11x.pt", metavar="PT", help="Ultralytics detection checkpoint (default: yolo11x.pt, downloaded by Ultralytics)")
    p.add_argument("--sam-model", "--weights", dest="sam_model", default="mobile_sam.pt", metavar="FILE", help="SAM checkpoint (default: mobile_sam.pt from the usual place, see `realtime-sam weights path`)")
    p.add_argument("--device", default="", metavar="DEV", help="auto (default), cpu, cuda, cuda:N, N or mps")
    p.add_argument("--conf", type=unit_float, default=0.25, help="detector score threshold (default: 0.25)")
    p.add_argument("--iou", type=unit_float, default=0.45, help="detector NMS IoU threshold (default: 0.45)")
    p.add_argument("--imgsz", type=_int_at_least(32), default=640, metavar="N", help="detector input size (default: 640)")
    p.add_argument("--max-det", type=_int_at_least(1), default=300, metavar="N", help="most boxes per image (default: 300)")
    p.add_argument("--classes", metavar="LIST", help="class ids or names to keep, comma-separated (default: all)")
    p.add_argument("--output-dir", metavar="DIR", help="where the labels go (default: <DATA name>_auto_annotate_labels beside DATA)")
    p.add_argument("--format", choices=FORMATS, default="yolo", help="yolo: one .txt per image (default); coco: annotations.json")
    p.add_argument("--segments", choices=SEGMENTS, default="largest", help="largest: each mask's largest part (default); all: every part")
    p.add_argument("--simplify", type=non_negative, default=1.0, metavar="PX", help="polygon tolerance in pixels (default: 1; 0 keeps every contour point)")
    p.add_argument("--min-area", type=_int_at_least(0), default=10, metavar="PX", help="drop masks smaller than this many pixels (default: 10)")
    p.add_argument("--every", type=_int_at_least(1), default=1, metavar="K", help="for a video: label every K-th frame (default: 1; not for images)")
    p.add_argument("--quiet", action="store_true", help="no progress bar; only the summary and errors")
    return p


def annotate_main(argv: Sequence[str]) -> int:
    """``realtime-sam annotate ...``; returns the exit status (0, 2 bad input, 130 Ctrl-C, 143 SIGTERM)."""
    from realtime_sam.errors import RealtimeSamError
    from realtime_sam.sigterm import EXIT_SIGTERM, RaiseOnTerm, Terminated

    parser = build_annotate_parser()
    try:
        args = parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        # SIGTERM (`timeout`, `docker stop`) unwinds as Ctrl-C does, so the COCO file is written
        # with every image labelled so far (its default action lost those since the last flush).
        with RaiseOnTerm():
            summary = annotate(
                args.data, det_model=args.det_model, sam_model=args.sam_model, device=args.device, conf=args.conf,
                iou=args.iou, imgsz=args.imgsz, max_det=args.max_det, classes=args.classes, output_dir=args.output_dir,
                format=args.format, segments=args.segments, simplify=args.simplify, min_area=args.min_area,
                every=args.every, progress=not args.quiet,
            )
    except RealtimeSamError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Terminated:
        print("stopped by SIGTERM: the labels written so far are kept; run the same command again to go on", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print("stopped: the labels written so far are kept; run the same command again to go on", file=sys.stderr)
        return 130
    print(summary.text(), file=sys.stderr)
    return 0
