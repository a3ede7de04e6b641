"""`user-embed fit|validate|test --config configs/<name>.yaml` through LightningCLI.

The YAML holds ``trainer``, ``model`` (UserEmbedModule arguments) and ``data``
(UserDataModule arguments); any value can be overridden on the command line, e.g.
``--trainer.max_steps 10`` or ``--model.adapter.num_tokens 1``.
"""

from __future__ import annotations

import os

from user_embed.errors import ConfigError


def main(argv: list[str], command: str = "fit") -> int:
    os.environ.setdefault("WANDB_MODE", "offline")  # wandb stays offline unless the user opts in
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lightning.pytorch.cli import LightningCLI

    from user_embed.data.datamodule import UserDataModule
    from user_embed.module import UserEmbedModule

    try:
        LightningCLI(UserEmbedModule, UserDataModule, args=[command, *argv], save_config_kwargs={"overwrite": True},
                     seed_everything_default=0)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if code:
            raise ConfigError(f"invalid arguments or config for `user-embed {command}` (see the message above)") from None
        return 0
    return 0
