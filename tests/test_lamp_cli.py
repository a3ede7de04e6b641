"""The whole LaMP path through the CLI on a tiny model: LaMP-3 files → `prepare lamp` → `fit` →
`evaluate --benchmark lamp` (official metrics + submission files per method) → `score lamp`."""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
import yaml

from data_pipelines.lamp_movielens import build_lamp3_from_movielens
from test_lamp import movielens_tables
from user_embed.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def lamp_files(tmp_path):
    events, items = movielens_tables(n_users=40)
    build_lamp3_from_movielens(events, items, tmp_path / "files", seed=0, profile_size=3)
    return tmp_path / "files"


def test_prepare_lamp_dir_imports_every_split(lamp_files, tmp_path, capsys):
    assert main(["prepare", "lamp", "--task", "LaMP_3", "--dir", str(lamp_files), "--out", str(tmp_path / "d")]) == 0
    qa = pl.read_parquet(tmp_path / "d/qa.parquet")
    counts = {split: 0 for split in ("train", "val", "test")}
    for name, split in (("train", "train"), ("dev", "val"), ("test", "test")):
        counts[split] = len(json.loads((lamp_files / name / f"{name}_questions.json").read_text()))
    assert qa.group_by("split").len().sort("split").rows() == sorted(counts.items())
    assert set(qa["options"].explode().unique().to_list()) == {"1", "2", "3", "4", "5"}
    assert "LaMP_3 questions: read" in capsys.readouterr().out


def test_prepare_lamp_refuses_ids_in_two_splits_and_bad_flags(lamp_files, tmp_path, capsys):
    shutil.copy(lamp_files / "train/train_questions.json", lamp_files / "dev/dev_questions.json")
    shutil.copy(lamp_files / "train/train_outputs.json", lamp_files / "dev/dev_outputs.json")
    assert main(["prepare", "lamp", "--task", "LaMP_3", "--dir", str(lamp_files), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "is in both" in err and "dev_questions.json" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()
    assert main(["prepare", "lamp", "--task", "LaMP_3", "--out", str(tmp_path / "d")]) == 2
    assert "either --dir or --questions" in capsys.readouterr().err
    assert main(["prepare", "lamp", "--task", "LaMP_3", "--dir", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "d")]) == 2
    assert "not a folder" in capsys.readouterr().err


def fit_tiny(data, llm, root):
    runs = root / "runs"
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": 4, "accelerator": "cpu", "devices": 1, "precision": "32-true",
                    "val_check_interval": 2, "check_val_every_n_epoch": None, "limit_val_batches": 1, "num_sanity_val_steps": 0,
                    "log_every_n_steps": 1, "enable_checkpointing": False, "default_root_dir": str(runs),
                    "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger",
                                "init_args": {"save_dir": str(runs), "name": "logs", "version": ""}}]},
        "model": {"sources": [{"kind": "sequence", "name": "ratings", "dim": 32, "layers": 1, "heads": 2,
                               "max_len": 4}],
                  "adapter": {"kind": "resampler", "num_tokens": 2, "dim": 32, "layers": 1, "heads": 2,
                              "user_dim": 16},
                  "llm": {"name_or_path": str(llm)}, "loss": {"contrastive_weight": 0.0},
                  "optim": {"lr": 0.01, "warmup_steps": 1}, "export_dir": str(runs / "embedder")},
        "data": {"data_dir": str(data), "batch_size": 8, "eval_batch_size": 8, "max_history": 4,
                 "item_text_vectors": False, "contrastive_texts": False},
    }
    path = root / "fit.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    assert main(["fit", "--config", str(path)]) == 0
    return runs / "embedder"


def test_lamp3_end_to_end_official_metrics_and_submissions(lamp_files, tmp_path, tiny_llm_dir, capsys):
    data = tmp_path / "data"
    assert main(["prepare", "lamp", "--task", "LaMP_3", "--dir", str(lamp_files), "--out", str(data)]) == 0
    embedder = fit_tiny(data, tiny_llm_dir, tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--benchmark", "lamp", "--checkpoint", str(embedder), "--data", str(data),
                 "--methods", "none,text,bm25,soft", "--history-events", "2", "--out", str(out),
                 "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    lamp = metrics["lamp"]
    assert lamp["task"] == "LaMP_3"
    test_ids = [q["id"] for q in json.loads((lamp_files / "test/test_questions.json").read_text())]
    for method in ("none", "text", "bm25", "soft"):
        assert set(lamp[method]) == {"mae", "rmse"} and 0 <= lamp[method]["mae"] <= lamp[method]["rmse"] <= 4
        submission = json.loads((out / f"{method}_preds.json").read_text())
        assert submission["task"] == "LaMP_3"
        assert sorted(g["id"] for g in submission["golds"]) == sorted(test_ids)
        assert all(g["output"] in {"1", "2", "3", "4", "5"} for g in submission["golds"])
    assert "LaMP_3 (official LaMP metrics)" in (out / "report.md").read_text()
    # the submission file scores the same through `score lamp`
    capsys.readouterr()
    assert main(["score", "lamp", "--task", "LaMP_3", "--golds", str(lamp_files / "test/test_outputs.json"),
                 "--preds", str(out / "soft_preds.json")]) == 0
    scored = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert scored["mae"] == pytest.approx(lamp["soft"]["mae"]) and scored["rmse"] == pytest.approx(lamp["soft"]["rmse"])
    assert lamp["decoding"] == "median" and "median of the option scores" in (out / "report.md").read_text()
    # the mean of the option distribution: a real-valued rating, scored as LaMP scores any number
    mean_out = tmp_path / "eval_mean"
    assert main(["evaluate", "--benchmark", "lamp", "--checkpoint", str(embedder), "--data", str(data),
                 "--methods", "none", "--rating-decoding", "mean", "--out", str(mean_out), "--no-progress"]) == 0
    ratings = [float(g["output"]) for g in json.loads((mean_out / "none_preds.json").read_text())["golds"]]
    assert all(1.0 <= r <= 5.0 for r in ratings) and any(r != round(r) for r in ratings)
    assert json.loads((mean_out / "metrics.json").read_text())["lamp"]["decoding"] == "mean"


def test_evaluate_lamp_refuses_userqa_data_and_generation_tasks(tmp_path, tiny_llm_dir, tiny_data_dir, capsys):
    from user_embed.commands.evaluate import lamp_task_of
    from user_embed.data.collate import Example
    from user_embed.errors import UserError

    embedder = fit_tiny(tiny_data_dir, tiny_llm_dir, tmp_path)
    assert main(["evaluate", "--benchmark", "lamp", "--checkpoint", str(embedder), "--data", str(tiny_data_dir),
                 "--methods", "none", "--out", str(tmp_path / "e"), "--no-progress"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (earlier tests' log handlers may write here too)
    assert "error: unknown LaMP task 'top_genre'" in last
    assert not (tmp_path / "e").exists()
    with pytest.raises(UserError, match="LaMP_7 is a generation task"):
        lamp_task_of([Example("q1", "tweet", "hi", [], "LaMP_7")])
    with pytest.raises(UserError, match="one LaMP task"):
        lamp_task_of([Example("q1", "x", "1", [], "LaMP_3"), Example("q2", "x", "[1]", [], "LaMP_1")])
