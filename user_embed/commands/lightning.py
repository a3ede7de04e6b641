"""`user-embed fit|validate|test --config configs/<name>.yaml` through LightningCLI.

The YAML holds ``trainer``, ``model`` (UserEmbedModule arguments) and ``data``
(UserDataModule arguments); any value can be overridden on the command line, e.g.
``--trainer.max_steps 10`` or ``--model.adapter.num_tokens 1``.

Resuming: ``--ckpt_path runs/x/checkpoints/last.ckpt`` continues a killed run where it
stopped. The checkpoint is read with ``weights_only=True`` (nothing is unpickled), and a
checkpoint trained with another ``model`` config is refused with a message that names the
first differing field (LightningCLI would otherwise silently replace your YAML's model
config with the checkpoint's). Config and argument mistakes print one line, no usage dump.

Guards: every ``--config`` file is read defensively first (empty, not a mapping, not UTF-8, an alias
bomb: one line naming the file); the trainer settings are checked against their domains
(:mod:`user_embed.training.trainer_settings`) before the Trainer is built; the export folder is
checked as a safe output before training starts (``--overwrite`` to write into a folder holding
other files); :class:`~user_embed.training.finite_guard.FiniteGuard` stops the fit at a non-finite
loss or gradient, so nothing broken is exported.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.cli import LightningCLI

from user_embed.errors import CheckpointError, ConfigError, UserError
from user_embed.training.finite_guard import FiniteGuard

#: ``--ckpt_path`` values that Lightning resolves itself (not file paths).
SPECIAL_CKPT_PATHS = ("last", "best", "hpc", "registry")
#: Model arguments that may differ between a checkpoint and the resuming config.
RESUMABLE_CHANGES = ("export_dir",)
#: Noise lines of jsonargparse messages (the useful line is the nested error).
_NOISE = ("Does not validate against any of the Union subtypes", "Subtypes:", "Errors:", "Given value",
          "- Expected a <class 'NoneType'>")


class ResumeRandomState(Callback):
    """Saves the global torch random state in every checkpoint and restores it on ``--ckpt_path``.

    Lightning does not checkpoint random states, so after a resume dropout would draw other masks
    than the uninterrupted run. With this (a default callback of `user-embed fit`), the data
    module's resumable loaders (``user_embed/data/sampler.py``) and ``deterministic: true``, a
    run killed and resumed on CPU ends with the same weights as one that never stopped.
    """

    def state_dict(self) -> dict:
        import torch

        state = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        import torch

        if "torch" in state_dict:
            torch.set_rng_state(state_dict["torch"])
        if "cuda" in state_dict and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state_dict["cuda"])


def one_line(message: str) -> str:
    """A jsonargparse error message (many indented lines) as one line, without its union-type noise."""
    lines = [line.strip() for line in str(message).splitlines()]
    kept = [line.removeprefix("- ") for line in lines if line and not line.startswith(_NOISE)]
    return " ".join(kept) or str(message).strip()


def _user_error_in_chain(exc: BaseException) -> UserError | None:
    """The UserError (e.g. a config __post_init__ check) that caused ``exc``, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _flatten(value, prefix: str = "") -> dict:
    """Nested dicts/lists as {"a.b.0.c": leaf} for a readable first difference."""
    if isinstance(value, dict):
        out: dict = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list):
        out = {f"{prefix}.length": len(value)}
        for i, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}.{i}"))
        return out
    return {prefix: value}


def _normalized(model: dict) -> dict:
    """The model config with each part passed through its dataclass (defaults and derived values filled in)."""
    from dataclasses import asdict

    from user_embed.config import AdapterConfig, LLMConfig, LossConfig, OptimConfig, SourceConfig

    out = dict(model)
    try:
        if isinstance(out.get("sources"), list):
            out["sources"] = [asdict(SourceConfig(**s)) if isinstance(s, dict) else s for s in out["sources"]]
        for key, cls in (("adapter", AdapterConfig), ("llm", LLMConfig), ("loss", LossConfig), ("optim", OptimConfig)):
            if isinstance(out.get(key), dict):
                out[key] = asdict(cls(**out[key]))
    except (TypeError, UserError):
        pass  # an invalid value: instantiate_classes reports it with its own message
    return out


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint next to its final path, fsyncs, then renames: a checkpoint is complete or absent.

    The write is :func:`data_pipelines.io.atomic_file`; remote (``://``) paths keep Lightning's fsspec save.

    Lightning's own save writes a temp file in ``$TMPDIR`` and *moves* it: a copy, not an atomic
    rename, when ``$TMPDIR`` is another filesystem (often tmpfs), so a kill mid-copy could leave a
    half-written ``last.ckpt``. The default plugin of `user-embed fit` (``trainer.plugins`` replaces it).
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if "://" in str(path):  # remote storage: Lightning's fsspec path
            return super().save_checkpoint(checkpoint, path, storage_options)
        import torch

        from data_pipelines.io import atomic_file

        with atomic_file(path, "wb") as out:
            torch.save(checkpoint, out)


def config_files(argv: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` values of a command line (``--config=x.yaml`` included)."""
    found = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a in ("--config", "-c")]
    return found + [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]


def check_config_files(argv: list[str]) -> None:
    """Read every ``--config`` file that exists defensively (a path that does not exist is left to jsonargparse,
    which also takes inline YAML there)."""
    from data_pipelines.readers import read_yaml_mapping

    for value in config_files(argv):
        if Path(value).exists():
            read_yaml_mapping(value, "config")


def settings_dict(settings) -> dict:
    """A jsonargparse Namespace (or dict) as a plain dict."""
    if settings is None:
        return {}
    return settings.as_dict() if hasattr(settings, "as_dict") else dict(settings)


def instantiate_checked(cli: LightningCLI, instantiate) -> None:
    """Run ``instantiate`` (LightningCLI's instantiate_classes) with the trainer settings checked first and
    any config problem, ours or Lightning's, raised as one ConfigError."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from user_embed.training.trainer_settings import check_trainer_settings

    subcommand = cli.config.get("subcommand")
    settings = cli.config[subcommand] if subcommand else cli.config
    check_trainer_settings(settings_dict(settings.get("trainer")))
    try:
        instantiate()
    except MisconfigurationException as exc:
        raise ConfigError(f"trainer: {one_line(str(exc))}") from exc
    except (ValueError, TypeError) as exc:
        cause = _user_error_in_chain(exc)
        if cause is not None:
            raise ConfigError(str(cause)) from exc
        raise ConfigError(f"invalid config: {one_line(str(exc))}") from exc


def add_overwrite_argument(parser) -> None:
    parser.add_argument("--overwrite", action="store_true", default=False,
                        help="write the output into a folder that holds other files (only same-named files are "
                             "replaced); without it such a folder is refused")


class UserEmbedCLI(LightningCLI):
    """LightningCLI with one-line config errors, a safe, config-checked ``--ckpt_path`` and a checked export."""

    def add_arguments_to_parser(self, parser) -> None:
        add_overwrite_argument(parser)

    def _model_config(self) -> dict:
        import yaml

        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False, skip_none=False,
                                                 skip_validation=True, format="yaml"))
        return _normalized(dumped[self.config.subcommand].get("model") or {})

    def _parse_ckpt_path(self) -> None:
        subcommand = self.config.get("subcommand")
        settings = self.config[subcommand] if subcommand else None
        ckpt_path = settings.get("ckpt_path") if settings is not None else None
        if not ckpt_path:
            return super()._parse_ckpt_path()
        if "weights_only" in settings and settings.get("weights_only") is None:
            settings["weights_only"] = True  # never unpickle objects from a checkpoint, whatever the torch default
        if str(ckpt_path) in SPECIAL_CKPT_PATHS:
            return super()._parse_ckpt_path()
        path = Path(ckpt_path)
        if path.is_dir():
            raise CheckpointError(f"--ckpt_path {path}: is a folder; give the checkpoint file (e.g. {path}/last.ckpt)")
        if not path.is_file():
            raise CheckpointError(f"--ckpt_path {path}: no such checkpoint file")
        before = self._model_config()
        try:
            super()._parse_ckpt_path()  # torch.load(weights_only=True), then merges the saved model config
        except SystemExit as exc:
            raise CheckpointError(f"--ckpt_path {path}: its saved model config does not parse") from exc
        except Exception as exc:  # UnpicklingError (not weights-only safe), RuntimeError (not a torch file) …
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise CheckpointError(f"--ckpt_path {path}: not a readable, weights-only checkpoint "
                                  f"({type(exc).__name__}: {first})") from exc
        after = self._model_config()
        old, new = _flatten(after), _flatten(before)
        for key in sorted(set(old) | set(new)):
            if key.split(".")[0] in RESUMABLE_CHANGES or old.get(key) == new.get(key):
                continue
            raise CheckpointError(f"--ckpt_path {path}: was trained with model.{key} = {old.get(key)!r}, but "
                                  f"the config gives {new.get(key)!r}; resume with the config it was trained with")
        settings = self.config[subcommand]  # parse_object made a new namespace
        for key in RESUMABLE_CHANGES:  # keep the user's value (e.g. a new export folder)
            if key in before:
                settings["model"][key] = before[key]

    def instantiate_classes(self) -> None:
        instantiate_checked(self, super().instantiate_classes)

    def before_fit(self) -> None:
        """Check the export folder as a safe output before training starts (and let the export overwrite)."""
        from data_pipelines.outputs import check_output_dir
        from user_embed.output_kinds import EMBEDDER

        model, data = self.model, self.datamodule
        model.export_overwrite = bool(self.config.fit.get("overwrite"))
        inputs = [getattr(data, "data_dir", None), self.config.fit.get("ckpt_path"), model.llm_config.name_or_path,
                  *[s.checkpoint for s in model.source_configs], *[s.text_encoder for s in model.source_configs],
                  getattr(data, "text_encoder", None)]
        check_output_dir(model.export_path(), EMBEDDER, inputs=inputs, overwrite=model.export_overwrite,
                         flag="model.export_dir")


def main(argv: list[str], command: str = "fit") -> int:
    os.environ.setdefault("WANDB_MODE", "offline")  # wandb stays offline unless the user opts in
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from jsonargparse import ArgumentError

    from user_embed.training.datamodule import UserDataModule
    from user_embed.training.module import UserEmbedModule

    no_exit = {"exit_on_error": False}
    check_config_files(argv)
    try:
        UserEmbedCLI(UserEmbedModule, UserDataModule, args=[command, *argv], save_config_kwargs={"overwrite": True},
                     seed_everything_default=0, parser_kwargs={**no_exit, command: no_exit},
                     trainer_defaults={"plugins": [{"class_path": f"{__name__}.AtomicCheckpointIO"}],
                                       "callbacks": [ResumeRandomState(), FiniteGuard()]})
    except ArgumentError as exc:
        cause = _user_error_in_chain(exc)
        message = str(cause) if cause else one_line(str(exc))
        if message.startswith("Problems parsing config"):  # a YAML syntax error: say which file
            message = f"{', '.join(config_files(argv)) or 'config'}: {message}"
        raise ConfigError(message) from None
    except ValueError as exc:
        if "val_check_interval" in str(exc):  # Lightning's check of the trainer settings against the data size
            raise ConfigError(f"trainer: {one_line(str(exc))}") from None
        raise
    except SystemExit as exc:  # --help (0) or an error jsonargparse printed itself
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        if code:
            raise ConfigError(f"invalid arguments or config for `user-embed {command}` (see the message above)") from None
        return 0
    return 0
