"""Error types for user mistakes: the CLI prints their message in one line, no traceback."""


class UserError(ValueError):
    """Bad input from the user (file, config, flag, checkpoint). The message says what and where."""


class ConfigError(UserError):
    """A configuration value is unknown or inconsistent."""


class CheckpointError(UserError):
    """A checkpoint is missing, unsafe, or does not match the model or data."""
