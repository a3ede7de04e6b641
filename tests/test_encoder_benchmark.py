"""``benchmarks/encoders.py``: the align stage's derived configs and the scaling plot with UserQA accuracy."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def _benchmark():
    spec = importlib.util.spec_from_file_location("encoders_benchmark", ROOT / "benchmarks" / "encoders.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_align_config_moves_the_run_and_overrides_the_source(tmp_path: Path) -> None:
    bench = _benchmark()
    run = tmp_path / "align_scaling" / "sasrec_max_len200"
    path = bench._align_config("sasrec", run, 7, {"max_len": 200, "checkpoint": "ckpt/encoder"})
    config = yaml.safe_load(path.read_text())
    shipped = yaml.safe_load((ROOT / "configs" / "align_sasrec.yaml").read_text())

    assert config["trainer"]["max_steps"] == 7
    assert config["trainer"]["default_root_dir"] == str(run)
    assert config["model"]["export_dir"] == str(run / "embedder")
    assert all(logger["init_args"]["save_dir"] == str(run) for logger in config["trainer"]["logger"])
    source = config["model"]["sources"][0]
    assert source["max_len"] == 200 and source["checkpoint"] == "ckpt/encoder"
    assert config["data"]["max_history"] == 200  # the data must hold as many events as the encoder reads
    assert {k: v for k, v in source.items() if k not in ("max_len", "checkpoint")} == {
        k: v for k, v in shipped["model"]["sources"][0].items() if k not in ("max_len", "checkpoint")}


def test_scaling_plot_draws_the_userqa_row(tmp_path: Path) -> None:
    bench = _benchmark()
    points, userqa = [], []
    for axis, values in bench.SCALING.items():
        for i, value in enumerate(values):
            points.append({"axis": axis, "value": value, "recall@10": 0.08 + 0.01 * i, "parameters": 100_000})
            row = {"overall": 0.5 + 0.01 * i, "questions": 210} if i else "fit failed (exit 1)"
            userqa.append({"axis": axis, "value": value, "userqa": row})
    result = {"comparison": {"meta": {"epochs": 3, "eval_targets": {"test": 510}, "popularity_test": {"recall@10": 0.07}}},
              "scaling": {"points": points}, "userqa": {"steps": 40, "none": {"overall": 0.49}, "scaling": userqa}}

    assert [p[0] for p in bench._userqa_points(result, "dim")] == [64, 128]  # a failed run is left out
    png = tmp_path / "scaling.png"
    bench.plot(result, png)
    assert png.stat().st_size > 10_000


def test_align_reuses_a_saved_run_only_when_its_settings_match(tmp_path: Path) -> None:
    import argparse

    bench = _benchmark()
    encoder, run = tmp_path / "encoder", tmp_path / "run"
    encoder.mkdir()
    (encoder / "encoder.safetensors").write_bytes(b"")
    run.mkdir()
    row = {"overall": 0.55, "questions": 210, "steps": 40, "max_per_task": 30}
    (run / "align_row.json").write_text(json.dumps(row))

    args = argparse.Namespace(reuse=True, steps=40, max_per_task=30)
    assert bench._align_one("sasrec", "sasrec", encoder, run, args) == row
    assert bench._align_one("sasrec", "sasrec", tmp_path / "missing", run, args).startswith("not run")


def test_soft_minus_none_pairs_the_same_questions(tmp_path: Path) -> None:
    bench = _benchmark()
    soft_run, none_run = tmp_path / "soft", tmp_path / "none"
    questions = [("u1", "t", "q1", "a"), ("u1", "t", "q2", "b"), ("u2", "t", "q1", "a"), ("u3", "t", "q1", "a")]
    for run, column, answers in [(soft_run, "soft", ["a", "b", "a", "x"]), (none_run, "none", ["x", "b", "x", "x"])]:
        (run / "eval").mkdir(parents=True)
        lines = [json.dumps({"user_id": u, "task": t, "question": q, "family": "f", "answer": gold, column: answer})
                 for (u, t, q, gold), answer in zip(questions, answers)]
        (run / "eval" / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    result = bench._minus_none(soft_run, none_run)
    assert result["diff"] == 0.5 and result["questions"] == 4 and result["users"] == 3  # 3/4 right vs 1/4
    assert result["low"] <= 0.5 <= result["high"]
    assert bench._minus_none(tmp_path / "missing", none_run) is None
