"""Exceptions for user mistakes: the CLI turns each into a one-line message and exit status 2."""

from __future__ import annotations


class FastRobustError(Exception):
    """A problem the user can fix (bad setting, missing file, foreign checkpoint, ...).

    Messages speak the library's terms: a setting is named as its field (``attack.steps``),
    and ``field`` carries that name so the CLI can say the flag instead
    (:func:`fastrobust.settings.render_error`)."""

    def __init__(self, *args: object, field: str | None = None) -> None:
        super().__init__(*args)
        self.field = field


class ConfigError(FastRobustError, ValueError):
    """An invalid configuration value."""


class DataError(FastRobustError):
    """A dataset that is missing, malformed, or does not fit the model."""


class CheckpointError(FastRobustError):
    """A checkpoint or run folder that is missing, corrupt or not written by fastrobust."""


class TrainingDiverged(FastRobustError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


class OutputError(FastRobustError):
    """An output location that cannot be written (a file in the way, read-only, disk full)."""


class RunFolderLocked(FastRobustError):
    """Another live process is training in the run folder."""
