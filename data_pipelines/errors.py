"""Error types for user mistakes: the CLI prints their message in one line, no traceback.

They live here, at the bottom of the dependency graph, so that ``data_pipelines`` needs
nothing from ``user_embed``; :mod:`user_embed.errors` re-exports them (same classes) and adds
the model-side ones.
"""


class UserError(ValueError):
    """Bad input from the user (file, config, flag, checkpoint). The message says what and where."""


class ConfigError(UserError):
    """A configuration value is unknown or inconsistent."""
