"""`user-embed fit --config <yaml>` through the real CLI entry point on the tiny model and data:
it trains, exports the embedder, writes a `last.ckpt` without frozen-LLM weights, resumes from
it with `--ckpt_path`, and refuses an unknown encoder kind with one line and exit status 2.
"""

from __future__ import annotations

from pathlib import Path

import lightning  # noqa: F401  (imported here, not first inside a capsys test: its log handler keeps the stream)
import pytest
import torch
import yaml

from data_pipelines.outputs import MARKER_NAME
from user_embed.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread", "user_embed_home")


def write_config(tmp_path: Path, llm_dir: Path, text_dir: Path, data_dir: Path, kind: str = "sequence") -> Path:
    runs = tmp_path / "runs"
    config = {
        "seed_everything": 0,
        "trainer": {
            "max_steps": 3, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 1,
            "val_check_interval": 3, "limit_val_batches": 1, "num_sanity_val_steps": 0,
            "enable_progress_bar": False, "enable_model_summary": False, "default_root_dir": str(runs),
            "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                        "init_args": {"save_dir": str(runs), "name": "logs"}}],
            "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                           "init_args": {"dirpath": str(runs / "checkpoints"), "save_last": True,
                                         "every_n_train_steps": 1, "save_top_k": -1}}],
        },
        "model": {
            "sources": [
                {"kind": kind, "name": "ratings", "dim": 16, "heads": 2, "layers": 1, "max_len": 12},
                {"kind": "text", "name": "titles", "dim": 16, "heads": 2, "num_tokens": 2, "max_len": 12,
                 "text_encoder": str(text_dir)},
                {"kind": "tabular", "name": "profile", "dim": 8, "heads": 2},
            ],
            "adapter": {"kind": "resampler", "num_tokens": 2, "dim": 16, "layers": 1, "heads": 2, "user_dim": 8},
            "llm": {"name_or_path": str(llm_dir)},
            "loss": {"contrastive_weight": 0.1, "contrastive_dim": 8},
            "optim": {"lr": 0.01, "warmup_steps": 1},
            "export_dir": str(runs / "embedder"),
        },
        "data": {"data_dir": str(data_dir), "batch_size": 4, "eval_batch_size": 4, "max_history": 12,
                 "text_encoder": str(text_dir)},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)  # our own file: hyperparameters are dataclasses


def test_fit_writes_embedder_and_llm_free_checkpoint_then_resumes(tmp_path, tiny_llm_dir, tiny_text_encoder_dir,
                                                                   tiny_data_dir, capsys):
    config = write_config(tmp_path, tiny_llm_dir, tiny_text_encoder_dir, tiny_data_dir)
    runs = tmp_path / "runs"
    assert main(["fit", "--config", str(config)]) == 0, capsys.readouterr().err

    assert sorted(p.name for p in (runs / "embedder").iterdir()) == [MARKER_NAME, "README.md", "config.json",
                                                                     "model.safetensors"]
    last = runs / "checkpoints" / "last.ckpt"
    checkpoint = load_checkpoint(last)
    state = checkpoint["state_dict"]
    assert checkpoint["global_step"] == 3
    assert not [k for k in state if k.startswith("model.llm.")]  # the frozen LLM is recorded by path, never copied
    assert any(k.startswith("model.embedder.encoders.ratings.") for k in state)
    assert any(k.startswith("contrastive.") for k in state)
    assert checkpoint["user_embed"]["llm"]["hidden_size"] == 64
    assert checkpoint["user_embed"]["llm"]["resolved"] == str(tiny_llm_dir)
    first_run_steps = sorted(p.name for p in (runs / "checkpoints").glob("*step=*.ckpt"))
    assert len(first_run_steps) == 3

    # resume: continues from step 3 with the optimizer and schedule state of the checkpoint
    code = main(["fit", "--config", str(config), "--ckpt_path", str(last), "--trainer.max_steps", "5"])
    assert code == 0, capsys.readouterr().err
    resumed = load_checkpoint(last)
    assert resumed["global_step"] == 5
    adam_steps = {float(s["step"]) for s in resumed["optimizer_states"][0]["state"].values()}
    assert adam_steps == {5.0}  # 3 restored + 2 new; a fresh start would say 2
    assert resumed["lr_schedulers"][0]["last_epoch"] == 5
    assert not [k for k in resumed["state_dict"] if k.startswith("llm.")]
    new = sorted(set(p.name for p in (runs / "checkpoints").glob("*step=*.ckpt")) - set(first_run_steps))
    assert len(new) == 2 and all("step=4" in n or "step=5" in n for n in new)
    changed = [k for k in state if not torch.equal(state[k], resumed["state_dict"][k])]
    assert changed  # the two extra steps trained the embedder further


def test_unknown_encoder_kind_exits_2_with_one_line(tmp_path, tiny_llm_dir, tiny_text_encoder_dir, tiny_data_dir,
                                                    capsys):
    config = write_config(tmp_path, tiny_llm_dir, tiny_text_encoder_dir, tiny_data_dir, kind="graph")
    assert main(["fit", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("user-embed fit: error:")]
    assert len(errors) == 1, err
    assert "'graph'" in errors[0] and "sequence" in errors[0]
    assert "Traceback" not in err, err
    assert not (tmp_path / "runs" / "checkpoints").exists()  # refused before any training step
