"""User-facing errors.

Every error a user can cause (a bad argument, a missing file, a dead stream)
is a :class:`RealtimeSamError` whose message is one line that says what went
wrong and what to do. The CLI prints that line and exits non-zero; anything
else reaching the top is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "RealtimeSamError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "CheckpointDamagedError",
    "WeightsDownloadError",
    "ConfigError",
    "SourceError",
    "StreamInterrupted",
    "PromptError",
    "SamInputError",
    "SamPromptError",
    "SinkError",
    "DetectorError",
    "describe_error",
]


class RealtimeSamError(Exception):
    """Base class: the message is a complete, one-line explanation."""


class CheckpointError(RealtimeSamError):
    """A weights file is missing, damaged, or belongs to another model."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No weights file where one was named: a :class:`CheckpointError` that is also the
    ``FileNotFoundError`` ``segment_anything``'s builders raise for a missing checkpoint."""


class CheckpointDamagedError(CheckpointError):
    """A weights file that cannot be read as a checkpoint: truncated, empty, or another kind of file."""


class WeightsDownloadError(RealtimeSamError):
    """Fetching the official weights failed (offline, interrupted, corrupt)."""


class ConfigError(RealtimeSamError):
    """A configuration key is unknown, mistyped or out of range."""


class SourceError(RealtimeSamError):
    """A video source cannot be opened or failed for good."""


class StreamInterrupted(SourceError):
    """A file ended early because of damage; frames before it were delivered."""


class PromptError(RealtimeSamError, ValueError):
    """A point, box or prompts file cannot be used: also a ``ValueError`` (a bad argument,
    such as an :class:`~realtime_sam.types.ObjectPrompt` given to ``Engine.add_object``)."""


class SamInputError(ValueError, AssertionError):
    """A bad image or argument where ``segment_anything`` asserts (``set_image``'s
    ``image_format``, ``set_torch_image``'s shape): caught by ``except ValueError``
    and by code written for the reference's ``except AssertionError``."""


class SamPromptError(PromptError, AssertionError):
    """A prompt refused where ``segment_anything`` asserts (``point_coords`` without
    ``point_labels``): a :class:`PromptError` that is also an ``AssertionError``."""


class SinkError(RealtimeSamError):
    """An output cannot be written."""


class DetectorError(RealtimeSamError):
    """The object detector (``--detect``, ``annotate``) cannot be loaded or run."""


def describe_error(exc: BaseException | str) -> str:
    """A short one-line reason for ``exc``, to end a user-facing message with.

    The OS's or FFmpeg's own text (``strerror``, e.g. ``"Permission denied"``)
    where there is one, since the message around it already names the file;
    never the text of an exception that carries a ``filename`` (it would repeat
    the path, or a stream URL with its password); otherwise the exception's
    message with its line breaks folded into spaces; the type's name when all
    of these are empty. A plain string (``URLError.reason`` can be one) is
    folded the same way.
    """
    strerror = getattr(exc, "strerror", None)
    if isinstance(strerror, str) and strerror.strip():
        text = strerror
    elif getattr(exc, "filename", None) is not None:
        text = ""
    else:
        text = str(exc)
    return " ".join(text.split()) or type(exc).__name__
