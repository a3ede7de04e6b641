"""Error types for user mistakes: the CLI prints their message in one line, no traceback.

:class:`UserError` and :class:`ConfigError` are defined in :mod:`data_pipelines.errors` (the
pipelines raise them too) and re-exported here, so ``except UserError`` catches every one.
"""

from data_pipelines.errors import ConfigError, UserError

__all__ = ["CheckpointError", "ConfigError", "UserError"]


class CheckpointError(UserError):
    """A checkpoint is missing, unsafe, or does not match the model or data."""
