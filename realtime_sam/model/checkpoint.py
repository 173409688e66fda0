"""Reading and checking SAM / MobileSAM checkpoint files.

A checkpoint is a ``torch.save``-d state dict (optionally nested under a
``"model"`` key) in the official key layout. We load it with
``map_location="cpu", weights_only=True`` (no pickle code runs) and compare it
to the manifest of the requested model *before* touching a module, so each
failure becomes one sentence: missing file, not a checkpoint, truncated, or a
checkpoint of another model.
"""

from __future__ import annotations

import functools
import json
import os
import zipfile
from importlib import resources
from pathlib import Path
from typing import Mapping

import torch

from realtime_sam.errors import CheckpointDamagedError, CheckpointError, CheckpointNotFoundError

__all__ = [
    "MODEL_TYPES",
    "MODEL_NAMES",
    "manifest",
    "read_state_dict",
    "identify_model_type",
    "check_against_manifest",
    "load_checkpoint",
    "check_checkpoint_file",
]

MODEL_TYPES = ("vit_t", "vit_b", "vit_l", "vit_h")

MODEL_NAMES = {
    "vit_t": "MobileSAM (vit_t, mobile_sam.pt)",
    "vit_b": "SAM ViT-B (sam_vit_b_01ec64.pth)",
    "vit_l": "SAM ViT-L (sam_vit_l_0b3195.pth)",
    "vit_h": "SAM ViT-H (sam_vit_h_4b8939.pth)",
}


@functools.lru_cache(maxsize=None)
def manifest(model_type: str) -> Mapping[str, tuple[int, ...]]:
    """``{key: shape}`` of every tensor in the official checkpoint of ``model_type``."""
    if model_type not in MODEL_TYPES:
        raise CheckpointError(
            f"unknown model type {model_type!r}; choose one of {', '.join(MODEL_TYPES)}"
        )
    text = resources.files("realtime_sam.model").joinpath(
        f"data/state_dict_manifest_{model_type}.json"
    ).read_text(encoding="utf-8")
    return {k: tuple(v) for k, v in json.loads(text).items()}


def read_state_dict(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, torch.Tensor]:
    """Load a checkpoint file into a flat ``{key: tensor}`` dict on the CPU.

    ``mmap`` maps the tensors' bytes instead of reading them (zip-format files only,
    which is what ``torch.save`` writes): keys and shapes for a few milliseconds. Where
    mapping fails, the file is read as without it.

    Raises:
        CheckpointError: the file is missing (:class:`CheckpointNotFoundError`, also a
            ``FileNotFoundError``), or truncated or not a checkpoint
            (:class:`~realtime_sam.errors.CheckpointDamagedError`).
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointNotFoundError(f"checkpoint not found: {p}")
    if not p.is_file():
        raise CheckpointError(f"checkpoint path is not a file: {p}")
    try:
        try:
            # A str path: torch 2.1 maps only a str filename (a Path is its ValueError).
            obj = torch.load(os.fspath(p), map_location="cpu", weights_only=True, mmap=mmap)
        except Exception:  # noqa: BLE001
            if not mmap:
                raise
            # Mapping can fail where reading works (a filesystem without mmap, an old torch):
            # read it plainly; a file that is no checkpoint fails that too, with its own error.
            obj = torch.load(os.fspath(p), map_location="cpu", weights_only=True, mmap=False)
    # torch.load has no single error for "not a checkpoint": random bytes end in
    # IndexError, KeyError, UnicodeDecodeError... from inside the unpickler.
    except Exception as exc:  # noqa: BLE001  (every way of not being a checkpoint is one message)
        size = p.stat().st_size
        hint = "it looks truncated (download it again)" if size > 0 else "it is empty"
        with open(p, "rb") as f:
            head = f.read(2)
        if size > 0 and head != b"PK" and head[:1] != b"\x80":
            # Neither a zip (torch.save since 1.6) nor a pickle (older torch.save): not cut short, another file.
            hint = "it is not a PyTorch checkpoint"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "Unsupported global" in str(exc):
            hint = "it holds Python objects, not plain tensors (not a SAM state dict)"
        elif "Weights only load failed" in reason or "Unsupported operand" in str(exc):
            hint = "it is not a PyTorch checkpoint"
        elif "zip archive" in reason or "central directory" in reason or "failed finding" in reason:
            hint = "it is not a complete PyTorch checkpoint (truncated or another format)"
        raise CheckpointDamagedError(f"cannot read checkpoint {p}: {hint}") from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not obj or not all(
        isinstance(v, torch.Tensor) for v in obj.values()
    ):
        raise CheckpointError(f"{p} is a PyTorch file but not a state dict of tensors")
    return dict(obj)


def identify_model_type(state: Mapping[str, torch.Tensor]) -> str | None:
    """The model type whose manifest matches ``state`` exactly, else the closest one.

    Returns ``None`` when no manifest shares even half of its keys.
    """
    best, best_score = None, 0.0
    for mt in MODEL_TYPES:
        ref = manifest(mt)
        shared = sum(1 for k, shape in ref.items() if k in state and tuple(state[k].shape) == shape)
        score = shared / max(len(ref), len(state))
        if score > best_score:
            best, best_score = mt, score
    return best if best_score >= 0.5 else None


def check_against_manifest(state: Mapping[str, torch.Tensor], model_type: str, source: str) -> None:
    """Raise :class:`CheckpointError` unless ``state`` has exactly the keys and shapes of ``model_type``."""
    ref = manifest(model_type)
    missing = [k for k in ref if k not in state]
    unexpected = [k for k in state if k not in ref]
    wrong = [k for k in ref if k in state and tuple(state[k].shape) != ref[k]]
    if not (missing or unexpected or wrong):
        return
    guess = identify_model_type(state)
    if guess is not None and guess != model_type:
        raise CheckpointError(
            f"{source} is a {MODEL_NAMES[guess]} checkpoint, not {MODEL_NAMES[model_type]}; "
            f"use --model-type {guess} (sam_model_registry[\"{guess}\"] in Python) or pass the right file"
        )
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} wrong shapes (e.g. {k}: {tuple(state[k].shape)} != {ref[k]})")
    raise CheckpointError(
        f"{source} does not match the {MODEL_NAMES[model_type]} layout: {'; '.join(parts)}"
    )


def load_checkpoint(path: str | os.PathLike, model_type: str) -> dict[str, torch.Tensor]:
    """Read ``path`` and check it is a complete ``model_type`` checkpoint.

    Returns the flat state dict (CPU tensors) ready for ``load_state_dict(strict=True)``.
    """
    state = read_state_dict(path)
    check_against_manifest(state, model_type, str(path))
    return state


def check_checkpoint_file(path: str | os.PathLike, model_type: str) -> None:
    """Raise what :func:`load_checkpoint` would for ``path``, without reading the tensors' data.

    For a caller about to do something it cannot undo first (the app truncates an earlier
    run's output files as it opens its own): a truncated, foreign or incomplete file
    fails here in milliseconds. A zip-format file (every ``torch.save`` since PyTorch 1.6,
    the official MobileSAM and SAM files) is memory-mapped, so only its index is read; a
    truncated one has lost that index (it lies at the end). Any other file is read whole.

    Raises:
        CheckpointError: as :func:`load_checkpoint`.
    """
    p = Path(path)
    state = read_state_dict(p, mmap=p.is_file() and zipfile.is_zipfile(p))
    check_against_manifest(state, model_type, str(path))
