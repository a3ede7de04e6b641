"""Reproducibility: one seed fixes the UserQA build (splits, options), initialisation, batching, and so the
training losses and metrics; on CPU the same seed gives identical numbers, another seed gives others.

The pipeline runs end to end through the CLI on a small synthetic shop log: ``prepare events``
(UserQA) → ``fit`` (tiny Llama, 6 steps, validation) → ``evaluate``.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import lightning.pytorch  # noqa: F401  (import before any capsys test: its log handler keeps that stderr)
import polars as pl
import pytest
import torch
import yaml
from safetensors.torch import load_file

from user_embed.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GENRES = ["drama", "comedy", "action", "horror", "romance"]


def write_log(root: Path, n_users: int = 40, n_events: int = 20) -> tuple[Path, Path]:
    rng = random.Random(0)
    root.mkdir(parents=True, exist_ok=True)
    items = root / "items.csv"
    items.write_text("sku,name,genres\n" + "".join(
        f"i{i},movie {i},{GENRES[i % 5]}|{GENRES[(i * 3) % 5]}\n" for i in range(30)))
    rows = ["uid,sku,ts,stars"]
    for u in range(n_users):
        for t in range(n_events):
            item = rng.choice([i for i in range(30) if i % 5 == u % 5]) if rng.random() < 0.7 else rng.randrange(30)
            rows.append(f"u{u},i{item},{1_600_000_000 + 3600 * t + u},{rng.randint(1, 5)}")
    events = root / "events.csv"
    events.write_text("\n".join(rows) + "\n")
    return events, items


def prepare(root: Path, events: Path, items: Path, seed: int, out: str) -> Path:
    argv = ["prepare", "events", "--events", str(events), "--items", str(items), "--user-col", "uid",
            "--item-col", "sku", "--time-col", "ts", "--value-col", "stars", "--title-col", "name",
            "--category-col", "genres", "--category-sep", "|", "--seed", str(seed), "--out", str(root / out)]
    assert main(argv) == 0
    return root / out


def fit(root: Path, llm: Path, data: Path, seed: int, name: str) -> Path:
    runs = root / name
    config = {
        "seed_everything": seed,
        "trainer": {"max_steps": 6, "accelerator": "cpu", "devices": 1, "deterministic": True,
                    "log_every_n_steps": 1, "val_check_interval": 3, "limit_val_batches": 2,
                    "num_sanity_val_steps": 0, "enable_progress_bar": False, "enable_model_summary": False,
                    "enable_checkpointing": False, "default_root_dir": str(runs),
                    "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                "init_args": {"save_dir": str(runs), "name": "logs", "version": ""}}]},
        "model": {"sources": [{"kind": "sequence", "name": "ratings", "dim": 32, "layers": 1, "heads": 2,
                               "max_len": 12},
                              {"kind": "tabular", "name": "profile", "dim": 16, "heads": 2}],
                  "adapter": {"kind": "resampler", "num_tokens": 2, "dim": 32, "layers": 1, "heads": 2,
                              "user_dim": 16},
                  "llm": {"name_or_path": str(llm)}, "loss": {"contrastive_weight": 0.0},
                  "optim": {"lr": 0.01, "warmup_steps": 2}, "export_dir": str(runs / "embedder")},
        "data": {"data_dir": str(data), "batch_size": 8, "eval_batch_size": 8, "max_history": 12,
                 "item_text_vectors": False, "contrastive_texts": False, "seed": seed},
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["fit", "--config", str(path)]) == 0
    return runs


def logged(runs: Path) -> dict[tuple[int, str], float]:
    with open(runs / "logs" / "metrics.csv") as f:
        return {(int(r["step"]), k): float(v) for r in csv.DictReader(f) for k, v in r.items()
                if k not in ("epoch", "step") and v}


def weights(runs: Path) -> dict[str, torch.Tensor]:
    return load_file(runs / "embedder" / "model.safetensors")


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def evaluate(runs: Path, data: Path, seed: int, out: str) -> dict:
    argv = ["evaluate", "--checkpoint", str(runs / "embedder"), "--data", str(data), "--methods", "none,soft",
            "--max-per-task", "3", "--seed", str(seed), "--out", str(runs / out), "--no-progress"]
    assert main(argv) == 0
    return json.loads((runs / out / "metrics.json").read_text())


def test_same_seed_same_everything_other_seed_other_numbers(tmp_path, tiny_llm_dir, capsys):
    events, items = write_log(tmp_path / "raw")

    # UserQA: splits, options and questions are a function of the seed
    first, again, other = (prepare(tmp_path, events, items, seed, out)
                           for seed, out in ((0, "d0"), (0, "d0-again"), (1, "d1")))
    for table in ("qa", "texts", "events", "items", "users"):
        assert pl.read_parquet(first / f"{table}.parquet").equals(pl.read_parquet(again / f"{table}.parquet")), table
    qa0, qa1 = pl.read_parquet(first / "qa.parquet"), pl.read_parquet(other / "qa.parquet")
    assert qa0.height > 20
    assert not qa0.equals(qa1)  # another seed: other splits / options

    # training: initialisation, batching and dropout follow the seed
    run_a = fit(tmp_path, tiny_llm_dir, first, seed=0, name="a")
    run_b = fit(tmp_path, tiny_llm_dir, first, seed=0, name="b")
    run_c = fit(tmp_path, tiny_llm_dir, first, seed=1, name="c")
    log_a, log_b, log_c = logged(run_a), logged(run_b), logged(run_c)
    losses = {k: v for k, v in log_a.items() if k[1] == "train/loss"}
    assert len(losses) == 6 and any(k[1] == "val/accuracy" for k in log_a)
    assert log_a == log_b  # every training loss and validation metric, bit for bit
    assert same_weights(weights(run_a), weights(run_b))
    assert {k: log_c[k] for k in losses} != losses
    assert not same_weights(weights(run_a), weights(run_c))

    # evaluation: the seeded question subsets and the metrics
    metrics_1 = evaluate(run_a, first, seed=0, out="eval1")
    metrics_2 = evaluate(run_b, first, seed=0, out="eval2")
    assert metrics_1["accuracy"] == metrics_2["accuracy"]
    assert metrics_1["questions"] == metrics_2["questions"]
    predictions = [(run / out / "predictions.jsonl").read_text() for run, out in ((run_a, "eval1"), (run_b, "eval2"))]
    assert predictions[0] == predictions[1]


def test_torch_threads_callback_pins_the_cpu_thread_count():
    """CPU results depend on the thread count; the quickstart pins it with this callback."""
    import torch

    from user_embed.errors import ConfigError
    from user_embed.training.threads import TorchThreads

    before = torch.get_num_threads()
    try:
        callback = TorchThreads(1)
        assert torch.get_num_threads() == 1
        torch.set_num_threads(2)
        callback.setup(None, None, "fit")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ConfigError, match="num_threads"):
            TorchThreads(bad)
