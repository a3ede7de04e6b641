"""`user-embed pretrain --config configs/pretrain_<kind>.yaml`: pre-train a sequence encoder (LightningCLI).

The YAML holds ``trainer`` (Lightning Trainer arguments), ``model`` (NextItemModule: the
encoder, softmax, optimiser, output folder) and ``data`` (NextItemDataModule: data folder,
protocol, split). Any value can be overridden on the command line, e.g.
``--model.encoder.kind gru4rec --trainer.max_epochs 2``. Prints the test metrics and writes the
checkpoint folder (encoder.safetensors, head.safetensors, config.json, metrics.json, README.md).

The same guards as `user-embed fit`: ``--config`` files read defensively, trainer settings checked
against their domains, ``model.output_dir`` checked as a safe output before training (``--overwrite``
to write into a folder holding other files), a non-finite loss or gradient stops training.
"""

from __future__ import annotations

import json
import os

from user_embed.errors import ConfigError


def main(argv: list[str], command: str = "pretrain") -> int:
    os.environ.setdefault("WANDB_MODE", "offline")
    from lightning.pytorch.cli import LightningCLI

    from data_pipelines.outputs import check_output_dir
    from user_embed.commands.lightning import add_overwrite_argument, check_config_files, instantiate_checked
    from user_embed.output_kinds import ENCODER
    from user_embed.pretrain.data import NextItemDataModule
    from user_embed.pretrain.loop import run_pretrain
    from user_embed.pretrain.module import NextItemModule
    from user_embed.training.finite_guard import FiniteGuard

    class PretrainCLI(LightningCLI):
        def add_arguments_to_parser(self, parser) -> None:
            add_overwrite_argument(parser)

        def instantiate_classes(self) -> None:
            instantiate_checked(self, super().instantiate_classes)

    check_config_files(argv)
    try:
        cli = PretrainCLI(NextItemModule, NextItemDataModule, run=False, args=argv, seed_everything_default=0,
                          save_config_callback=None,
                          trainer_defaults={"enable_checkpointing": False, "logger": False, "accelerator": "auto",
                                            "devices": 1, "callbacks": [FiniteGuard()]})
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if code:
            raise ConfigError(f"invalid arguments or config for `user-embed {command}` (see the message above)") from None
        return 0
    cli.model.overwrite = bool(cli.config.get("overwrite"))
    encoder = cli.model.encoder_config
    check_output_dir(cli.model.output_dir, ENCODER, inputs=[cli.datamodule.data_dir, encoder.checkpoint],
                     overwrite=cli.model.overwrite, flag="model.output_dir")  # before training
    report = run_pretrain(cli.model, cli.datamodule, cli.trainer)
    summary = {"encoder": report["encoder"], "softmax": report["softmax"], "test": report["test"],
               "popularity_test": report["popularity_test"], "truncation": report["data"]["truncation"],
               "checkpoint": cli.model.output_dir}
    print(json.dumps(summary, indent=2))
    return 0
