"""`user-embed pretrain --config configs/pretrain_<kind>.yaml`: pre-train a sequence encoder (LightningCLI).

The YAML holds ``trainer`` (Lightning Trainer arguments), ``model`` (NextItemModule: the
encoder, softmax, optimiser, output folder) and ``data`` (NextItemDataModule: data folder,
protocol, split). Any value can be overridden on the command line, e.g.
``--model.encoder.kind gru4rec --trainer.max_epochs 2``. Prints the test metrics and writes the
checkpoint folder (encoder.safetensors, head.safetensors, config.json, metrics.json, README.md).
"""

from __future__ import annotations

import json
import os

from user_embed.errors import ConfigError


def main(argv: list[str], command: str = "pretrain") -> int:
    os.environ.setdefault("WANDB_MODE", "offline")
    from lightning.pytorch.cli import LightningCLI

    from user_embed.pretrain.data import NextItemDataModule
    from user_embed.pretrain.loop import run_pretrain
    from user_embed.pretrain.module import NextItemModule

    try:
        cli = LightningCLI(NextItemModule, NextItemDataModule, run=False, args=argv, seed_everything_default=0,
                           save_config_callback=None,
                           trainer_defaults={"enable_checkpointing": False, "logger": False, "accelerator": "auto",
                                             "devices": 1})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if code:
            raise ConfigError(f"invalid arguments or config for `user-embed {command}` (see the message above)") from None
        return 0
    report = run_pretrain(cli.model, cli.datamodule, cli.trainer)
    summary = {"encoder": report["encoder"], "softmax": report["softmax"], "test": report["test"],
               "popularity_test": report["popularity_test"], "truncation": report["data"]["truncation"],
               "checkpoint": cli.model.output_dir}
    print(json.dumps(summary, indent=2))
    return 0
