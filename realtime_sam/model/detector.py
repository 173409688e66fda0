"""Object detectors whose boxes prompt SAM (``realtime-sam annotate``, ``--detect``).

A detector is any callable ``detector(image_bgr) -> BoxDetections`` with a
``names`` mapping (class index -> name), the
:class:`~realtime_sam.tracking.detection.Detector` protocol;
:class:`~realtime_sam.testing.fakes.FixedBoxDetector` is one for tests. :func:`load_yolo` wraps an Ultralytics YOLO detection
checkpoint (``yolo11n.pt``, ``yolo26n.pt``, ... or a model YAML such as
``yolo11n.yaml`` for random weights); it needs the optional extra
``realtime-sam[detect]``. :func:`select_detections` applies the confidence,
class and count limits to any detector's output, so every detector obeys
the same flags.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import types
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from realtime_sam.errors import DetectorError, describe_error
from realtime_sam.tracking.detection import DetectConfig, Detector, parse_classes, select_detections
from realtime_sam.types import BoxDetections

__all__ = ["Detector", "YoloDetector", "load_yolo", "load_detector", "parse_classes", "select_detections", "ultralytics_device"]

_ASSETS = "https://github.com/ultralytics/assets/releases/download"


class YoloDetector:
    """An Ultralytics YOLO detection model as a :class:`Detector`.

    Args:
        model: an ``ultralytics.YOLO`` (detect task).
        conf, iou, imgsz, max_det: Ultralytics' predict arguments (score
            threshold, NMS IoU, inference size, most boxes per image).
        classes: class ids to keep (``None``: all).
        device: ``"cpu"``, ``"cuda:0"``, ``"mps"``... (``None``: Ultralytics' choice).
    """

    def __init__(
        self,
        model,
        *,
        conf: float = 0.25,
        iou: float = 0.45,
        imgsz: int = 640,
        max_det: int = 300,
        classes: Sequence[int] | None = None,
        device: str | None = None,
    ) -> None:
        self.model = model
        self.names: dict[int, str] = {int(k): str(v) for k, v in dict(model.names).items()}
        self.conf, self.iou, self.imgsz, self.max_det = float(conf), float(iou), int(imgsz), int(max_det)
        self.classes = None if classes is None else tuple(int(c) for c in classes)
        self.device = device

    def __repr__(self) -> str:
        return f"YoloDetector({getattr(self.model, 'ckpt_path', None) or 'yaml'}, conf={self.conf}, classes={self.classes})"

    def __call__(self, image_bgr: np.ndarray) -> BoxDetections:
        """Boxes in ``image_bgr`` (``HxWx3 uint8`` BGR, as Ultralytics takes numpy images)."""
        result = self.model.predict(
            image_bgr, conf=self.conf, iou=self.iou, imgsz=self.imgsz, max_det=self.max_det,
            classes=list(self.classes) if self.classes is not None else None,
            device=self.device, verbose=False,
        )[0]
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return BoxDetections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), self.names)
        return BoxDetections(
            boxes.xyxy.float().cpu().numpy(), boxes.conf.float().cpu().numpy(), boxes.cls.cpu().numpy().astype(np.int64), self.names
        )


def load_yolo(
    det_model: str | os.PathLike[str],
    *,
    conf: float = 0.25,
    iou: float = 0.45,
    imgsz: int = 640,
    max_det: int = 300,
    classes: str | int | Sequence[str | int] | None = None,
    device: str | None = None,
    verbose: bool = True,
) -> YoloDetector:
    """Load an Ultralytics detection checkpoint (a path, a release name such as ``yolo11n.pt``, or a model YAML).

    A path may also name an Ultralytics export: a file (``.onnx``, ``.torchscript``) or a
    folder (``yolo11n_openvino_model/``).

    A release name that is not on disk is downloaded by Ultralytics; offline,
    the error says where to put the file. ``classes`` are ids or names.
    ``verbose=False`` (``--quiet``) keeps Ultralytics' own lines below its errors
    ("Loading yolo11n.onnx for ONNX Runtime inference...") from printing.

    Raises:
        DetectorError: Ultralytics is not installed, the file is missing, of no
            format Ultralytics reads or not a detection model, or a class is unknown.
    """
    spec = str(det_model)
    path = Path(spec).expanduser()
    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    # A folder is one of Ultralytics' exports (OpenVINO's yolo11n_openvino_model/, a TensorFlow
    # SavedModel, NCNN...): it reads them as it reads a .pt or an .onnx file.
    on_disk = path.is_file() or path.is_dir()
    if not is_yaml and not on_disk:
        if path.parent != Path(".") or path.suffix.lower() != ".pt":
            raise DetectorError(f"detector checkpoint not found: {path.absolute()}; check the path or give a release name such as yolo11n.pt")
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise DetectorError(
            f"the detector needs Ultralytics ({describe_error(exc)}); install it with "
            "`pip install \"realtime-sam[detect]\"` (or `pip install ultralytics`)"
        ) from None
    if not is_yaml and not on_disk and not _is_release_name(path.name):
        # Not on disk and not a name Ultralytics could download: a mistyped name or path. Said here,
        # before Ultralytics asks GitHub's API for the name (two long warnings offline) and fails.
        raise DetectorError(
            f"detector checkpoint not found: {path.absolute()}; {path.name} is not an Ultralytics release name "
            "known to the installed Ultralytics (such as yolo11n.pt): check the name, or give the file's path"
        )
    _ensure_nms()
    try:
        with _ultralytics_lines(verbose):
            model, task, names = _open_yolo(YOLO, spec if is_yaml or not on_disk else str(path), imgsz, device)
    except (ConnectionError, OSError) as exc:
        if not on_disk and not is_yaml:
            raise DetectorError(
                f"cannot download the detector checkpoint {path.name} (offline?): fetch {_ASSETS}/v8.4.0/{path.name} "
                f"(or any Ultralytics detection .pt) and put it at {Path.cwd() / path.name}, or give the file's path instead"
            ) from None
        raise DetectorError(f"cannot load the detector {spec}: {describe_error(exc)}") from None
    except Exception as exc:  # Ultralytics raises many types for a foreign or damaged file
        raise DetectorError(f"cannot load the detector {spec}: {describe_error(exc)}") from None
    if task != "detect":
        raise DetectorError(f"{spec} is an Ultralytics {task} model; give a detection model such as yolo11n.pt")
    return YoloDetector(
        model, conf=conf, iou=iou, imgsz=imgsz, max_det=max_det, classes=parse_classes(classes, names), device=device
    )


def _is_release_name(name: str) -> bool:
    """Whether Ultralytics finds ``name`` without a path: a release it publishes, or a file in its weights folder.

    As Ultralytics' ``attempt_download_asset`` looks (``yolov5n.pt`` means ``yolov5nu.pt``), less its
    question to GitHub's API for releases newer than the installed list. ``True`` where the
    installed Ultralytics lacks any of these (let it try).
    """
    try:
        from ultralytics.utils import SETTINGS
        from ultralytics.utils.checks import check_yolov5u_filename
        from ultralytics.utils.downloads import GITHUB_ASSETS_NAMES

        mapped = Path(check_yolov5u_filename(name, verbose=False)).name
        return mapped in GITHUB_ASSETS_NAMES or (Path(SETTINGS["weights_dir"]) / mapped).is_file()
    except Exception:  # noqa: BLE001  (an Ultralytics laid out otherwise: it decides)
        return True


@contextlib.contextmanager
def _ultralytics_lines(verbose: bool) -> Iterator[None]:
    """Ultralytics' logger kept to its errors while inside, unless ``verbose`` (its level restored after)."""
    logger = logging.getLogger("ultralytics")
    level = logger.level
    if not verbose:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _open_yolo(yolo: Any, spec: str, imgsz: int, device: str | None) -> tuple[Any, str, dict[int, str]]:
    """``(model, task, class names)`` of Ultralytics' ``YOLO(spec)``; the names empty unless a detection model.

    An export (.onnx, .torchscript, a folder) or a file of no format Ultralytics reads is opened only
    when its class names are asked for: its errors come from here too. Until a prediction has set its
    backend up, Ultralytics opens an export again for each read of the names (an ONNX session, an
    OpenVINO compile): three times, here, in :class:`YoloDetector` and at the first frame. One
    prediction on a blank image, at the frames' size and on their device, sets it up once for all.
    """
    model = yolo(spec, task=None)
    task = getattr(model, "task", "detect")
    if task != "detect":
        return model, task, {}
    if not hasattr(model.model, "names"):  # an export
        model.predict(np.zeros((imgsz, imgsz, 3), np.uint8), imgsz=imgsz, device=device, verbose=False)
    return model, task, {int(k): str(v) for k, v in dict(model.names).items()}


def load_detector(config: DetectConfig, device: str = "auto", verbose: bool = True) -> YoloDetector:
    """The detector of a ``detect`` config section, on ``device`` (``auto``, ``cpu``, ``cuda:N``, ``mps``).

    Every class is kept here; :class:`~realtime_sam.tracking.detection.DetectorPrompts`
    applies ``classes`` and ``conf`` (Ultralytics gets the score threshold too, so it keeps fewer boxes).
    """
    if not config.model:
        raise DetectorError("no detector model given; pass --detect MODEL (e.g. yolo11n.pt)")
    return load_yolo(config.model, conf=config.conf, device=ultralytics_device(device), verbose=verbose)


def ultralytics_device(device: str) -> str:
    """This project's device name (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``) resolved, as Ultralytics takes it."""
    from realtime_sam.model.device import resolve_device

    d = resolve_device(device)
    if d.type == "cuda":
        return str(d.index or 0)
    return d.type


def _ensure_nms() -> None:
    """Let Ultralytics run where torchvision is installed but cannot load.

    Ultralytics imports torchvision only for its NMS kernel. A torchvision
    wheel built for another PyTorch (the PyPI wheel, linked against CUDA,
    beside a CPU-only PyTorch) fails on import; Ultralytics then fails
    although it has an NMS of its own. In that case (only), ``torchvision``
    is registered as a small module whose ``ops.nms`` is Ultralytics' own.
    """
    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        return  # not installed: Ultralytics uses its own NMS
    except Exception:  # noqa: BLE001  (a binary built for another PyTorch raises RuntimeError/OSError)
        pass
    try:
        from ultralytics.utils.nms import TorchNMS
    except ImportError:  # an Ultralytics without its own NMS: nothing to fall back on
        return
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]

    shim = types.ModuleType("torchvision")
    shim.__doc__ = "Stand-in registered by realtime_sam.model.detector: the installed torchvision does not load."
    ops = types.ModuleType("torchvision.ops")
    ops.nms = TorchNMS.nms  # type: ignore[attr-defined]
    shim.ops = ops  # type: ignore[attr-defined]
    sys.modules["torchvision"] = shim
    sys.modules["torchvision.ops"] = ops
