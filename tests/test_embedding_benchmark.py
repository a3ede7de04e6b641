"""The embedding benchmark: targets, probes, retrieval and ranking metrics, the trained user head and its
contrastive space in the saved embedder, and `user-embed evaluate-embeddings` end to end on the tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import yaml

from conftest import write_tiny_dataset
from test_fit_cli import write_config
from user_embed.cli import main
from user_embed.embedder import UserEmbedder
from user_embed.eval.embedding_targets import Target, quartile_labels, usable
from user_embed.eval.probes import probe
from user_embed.eval.representations import last_real_token
from user_embed.eval.retrieval import ranking_metrics, retrieval_metrics
from user_embed.store import UserStore

pytestmark = pytest.mark.usefixtures("one_torch_thread", "user_embed_home")
CUTOFF = 1_000_000 + 3600 * 8  # 8 events before, 4 after, for every user of the tiny data


# ---- pure parts -----------------------------------------------------------------------------
def test_retrieval_metrics_rank_the_right_candidate():
    perfect = retrieval_metrics(np.eye(20))
    assert perfect["recall@1"] == perfect["mrr"] == 1.0
    worst = retrieval_metrics(-np.eye(20))  # the right text is always ranked last
    assert worst["recall@10"] == 0.0 and worst["mrr"] == pytest.approx(1 / 20, abs=1e-4)
    assert worst["chance_mrr"] < perfect["mrr"]


def test_ranking_metrics_skip_seen_items_and_users_without_future():
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    future = np.array([[0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32)
    seen = np.array([[True, False, False, False], [False, False, False, False]])
    out = ranking_metrics(scores, future, seen, k=1)  # item 0 is seen, so item 1 comes first
    assert out == {"recall@1": 1.0, "ndcg@1": 1.0, "users": 1}
    assert ranking_metrics(scores, future, np.zeros_like(seen), k=1)["recall@1"] == 0.0


def test_last_real_token_handles_left_padding_and_empty_rows():
    tokens = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)  # (B=2, n=3, d=2)
    mask = torch.tensor([[False, True, True], [False, False, False]])
    assert last_real_token(tokens, mask).tolist() == [[4.0, 5.0], [0.0, 0.0]]


def test_quartiles_and_rare_classes():
    labels = quartile_labels([18, 25, 30, 40, 60, None, 22, 35])
    assert labels[5] is None and len({x for x in labels if x}) == 4
    merged = usable(Target("job", ["a"] * 6 + ["b"] * 6 + ["c", "d"], "multiclass", "profile"), folds=3)
    assert isinstance(merged, Target) and merged.labels[-2:] == [None, None]  # 2 rare users: fewer than 3 folds
    assert "one class" in usable(Target("x", ["a"] * 10 + ["b"], "multiclass", "profile"), folds=3)


def test_probe_separates_informative_from_noise_features():
    rng = np.random.default_rng(0)
    labels = ["yes", "no"] * 30
    signal = np.array([[1.0] if x == "yes" else [-1.0] for x in labels]) + rng.normal(0, 0.3, (60, 1))
    target = Target("t", labels, "binary", "behaviour")
    good, noise = probe(signal, target, folds=3), probe(rng.normal(size=(60, 4)), target, folds=3)
    assert good["score"] > 0.95 and good["low"] > 0.85
    assert noise["score"] < 0.75 and noise["low"] < 0.5 < noise["high"]


# ---- trained head and contrastive space --------------------------------------------------------
@pytest.fixture(scope="module")
def benchmark_data(tmp_path_factory) -> Path:
    folder = write_tiny_dataset(tmp_path_factory.mktemp("bench") / "data", n_users=48)
    qa = pl.read_parquet(folder / "qa.parquet").with_columns(pl.lit(CUTOFF, dtype=pl.Int64).alias("cutoff"))
    qa.write_parquet(folder / "qa.parquet")
    return folder


def fit(tmp_path: Path, llm: Path, text: Path, data: Path, contrastive: float) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = write_config(tmp_path, llm, text, data)
    config = yaml.safe_load(path.read_text())
    config["model"]["loss"]["contrastive_weight"] = contrastive
    path.write_text(yaml.safe_dump(config))
    assert main(["fit", "--config", str(path)]) == 0
    return tmp_path / "runs" / "embedder"


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_llm_dir, tiny_text_encoder_dir, benchmark_data) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("fits")
    return {name: fit(base / name, tiny_llm_dir, tiny_text_encoder_dir, benchmark_data, weight)
            for name, weight in (("joint", 0.1), ("ar_only", 0.0))}


def test_exported_embedder_keeps_its_contrastive_space(trained, tiny_text_encoder_dir, benchmark_data):
    embedder = UserEmbedder.from_pretrained(trained["joint"])
    config = json.loads((trained["joint"] / "config.json").read_text())
    assert config["user_head_trained"] is True
    assert config["text_space"] == {"text_encoder": str(tiny_text_encoder_dir), "text_dim": 32, "dim": 8}
    store = UserStore.from_folder(benchmark_data)
    users = embedder.embed(store, ["u40", "u41"])  # (2, user_dim)
    similarity = embedder.text_similarity(users, torch.randn(3, 32))
    assert similarity.shape == (2, 3) and similarity.abs().max() <= 1.0 + 1e-5
    ar_only = UserEmbedder.from_pretrained(trained["ar_only"])
    assert ar_only.user_head_trained is False and ar_only.text_space is None
    with pytest.warns(UserWarning, match="never trained"):
        ar_only.embed(store, ["u40"])
    assert ar_only.embed(store, ["u40"], vector="fused").shape == (1, ar_only.adapter.dim)


def test_embed_refuses_an_untrained_head_in_one_line(trained, benchmark_data, tmp_path, capsys):
    out = tmp_path / "users.parquet"
    assert main(["embed", "--checkpoint", str(trained["ar_only"]), "--data", str(benchmark_data),
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "never trained" in err and "--vector fused" in err and not out.exists()
    assert main(["embed", "--checkpoint", str(trained["ar_only"]), "--data", str(benchmark_data),
                 "--out", str(out), "--vector", "fused"]) == 0
    assert pl.read_parquet(out).height == 48


# ---- the command ------------------------------------------------------------------------------
def test_evaluate_embeddings_end_to_end(trained, benchmark_data, tmp_path, capsys):
    out = tmp_path / "embeddings"
    code = main(["evaluate-embeddings", "--checkpoint", str(trained["joint"]), "--data", str(benchmark_data),
                 "--out", str(out), "--compare", f"ar_only={trained['ar_only']}", "--folds", "3",
                 "--question-vectors"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["users"] == {"train": 32, "held_out": 16, "held_out_splits": ["val", "test"]}
    assert set(metrics["representations"]) == {"soft", "ar_only", "category_histogram", "mean_text_vector",
                                               "random_projection"}
    assert "pooled" in metrics["representations"]["ar_only"]["what"]
    assert {"gender", "next_top_category"} <= set(metrics["probes"])
    for by_rep in metrics["probes"].values():
        for m in by_rep.values():
            assert 0.0 <= m["low"] <= m["score"] <= m["high"] <= 1.0 or np.isnan(m["low"])
    # every user prefers one genre and has a text naming it: the histogram finds it
    assert metrics["probes"]["next_top_category"]["category_histogram"]["score"] > 0.8
    assert metrics["retrieval"]["soft"]["protocol"] == "the embedder's contrastive space"
    assert "linear map" not in metrics["retrieval"]["ar_only"] and "ridge" in metrics["retrieval"]["ar_only"]["protocol"]
    assert metrics["retrieval"]["soft"]["candidates"] == 16
    assert {"popularity", "soft", "ar_only"} <= set(metrics["recommendation"])
    assert set(metrics["instruction_aware"]["next_above_mean"]) >= {"question", "generic", "instruction"}
    assert metrics["skipped_targets"] == {} or all(isinstance(v, str) for v in metrics["skipped_targets"].values())
    report = (out / "report.md").read_text()
    assert "## Linear probes" in report and "## User↔text retrieval" in report
    assert (out / "embeddings.png").stat().st_size > 0


@pytest.mark.parametrize("extra,message", [
    (["--targets", "shoe_size"], "no target 'shoe_size'"),
    (["--compare", "broken"], "expected NAME=PATH"),
    (["--folds", "1"], "--folds must be at least 2"),
])
def test_evaluate_embeddings_bad_input_is_one_line(trained, benchmark_data, tmp_path, capsys, extra, message):
    code = main(["evaluate-embeddings", "--checkpoint", str(trained["joint"]), "--data", str(benchmark_data),
                 "--out", str(tmp_path / "out"), "--no-baselines", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err
    assert not (tmp_path / "out").exists()


def test_one_class_target_and_untrained_main_embedder_are_refused(trained, benchmark_data, tmp_path, capsys):
    users = pl.read_parquet(benchmark_data / "users.parquet")
    one_class = tmp_path / "data"
    one_class.mkdir()
    for table in ("events", "items", "qa", "texts"):
        pl.read_parquet(benchmark_data / f"{table}.parquet").write_parquet(one_class / f"{table}.parquet")
    users.with_columns(pl.lit("F").alias("gender")).write_parquet(one_class / "users.parquet")
    code = main(["evaluate-embeddings", "--checkpoint", str(trained["joint"]), "--data", str(one_class),
                 "--out", str(tmp_path / "a"), "--targets", "gender", "--no-baselines"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "'gender' cannot be probed: one class" in err
    code = main(["evaluate-embeddings", "--checkpoint", str(trained["ar_only"]), "--data", str(benchmark_data),
                 "--out", str(tmp_path / "b")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "never trained" in err and len(err.splitlines()) == 1
