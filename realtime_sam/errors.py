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
    "WeightsDownloadError",
    "ConfigError",
    "SourceError",
    "StreamInterrupted",
    "PromptError",
    "SinkError",
]


class RealtimeSamError(Exception):
    """Base class: the message is a complete, one-line explanation."""


class CheckpointError(RealtimeSamError):
    """A weights file is missing, damaged, or belongs to another model."""


class WeightsDownloadError(RealtimeSamError):
    """Fetching the official weights failed (offline, interrupted, corrupt)."""


class ConfigError(RealtimeSamError):
    """A configuration key is unknown, mistyped or out of range."""


class SourceError(RealtimeSamError):
    """A video source cannot be opened or failed for good."""


class StreamInterrupted(SourceError):
    """A file ended early because of damage; frames before it were delivered."""


class PromptError(RealtimeSamError):
    """A point, box or prompts file cannot be used."""


class SinkError(RealtimeSamError):
    """An output cannot be written."""
