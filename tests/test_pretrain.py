"""Encoder pre-training: metrics by hand, windows and targets, a planted next-item rule, checkpoints, bad input."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import pytest
import torch

from data_pipelines.io import write_tables
from user_embed.config import AdapterConfig, SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.embedder import UserEmbedder
from user_embed.encoders import build_encoder
from user_embed.errors import CheckpointError, ConfigError
from user_embed.llm.record import LLMRecord
from user_embed.pretrain.checkpoint import load_encoder_checkpoint, load_pretrained_encoder
from user_embed.pretrain.data import NextItemCollator, NextItemDataModule, eval_targets, training_windows
from user_embed.pretrain.heads import NextItemHead, resolve_softmax
from user_embed.pretrain.loop import run_pretrain
from user_embed.pretrain.metrics import ndcg_at_k, ranking_metrics, recall_at_k, target_ranks
from user_embed.pretrain.module import NextItemModule

N_ITEMS = 30


def write_planted_log(folder: Path, n_users: int = 50, length: int = 20, n_items: int = N_ITEMS, seed: int = 0,
                      qa: bool = False) -> Path:
    """Every user walks the catalog in order: the item after m{k} is always m{k+1 mod n}."""
    rng = random.Random(seed)
    events = []
    for u in range(n_users):
        start = rng.randrange(n_items)
        for k in range(length):
            events.append((f"u{u}", 1_000_000 + 3600 * k, "rating", f"m{(start + k) % n_items}", float(rng.randint(1, 5)), None))
    tables = {
        "events": pl.DataFrame(events, schema=["user_id", "timestamp", "source", "item_id", "value", "text"],
                               orient="row", schema_overrides={"text": pl.Utf8}),
        "items": pl.DataFrame({"item_id": [f"m{i}" for i in range(n_items)], "title": [f"movie {i}" for i in range(n_items)],
                               "categories": [[f"g{i % 3}"] for i in range(n_items)]}),
        "users": pl.DataFrame({"user_id": [f"u{u}" for u in range(n_users)], "age": [20 + u for u in range(n_users)]}),
    }
    if qa:
        tables["qa"] = pl.DataFrame({
            "user_id": [f"u{u}" for u in range(n_users)], "question": ["q"] * n_users, "answer": ["a"] * n_users,
            "options": [["a", "b"]] * n_users, "task": ["t"] * n_users, "family": ["interest_perception"] * n_users,
            "cutoff": [2_000_000] * n_users, "split": [("train", "val", "test")[u % 3] for u in range(n_users)]})
    return write_tables(folder, tables, {"planted": True})


def trainer(epochs: int) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                     check_val_every_n_epoch=1000)


# ---- metrics -----------------------------------------------------------------------------------
def test_ranks_recall_and_ndcg_against_hand_worked_values():
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.9],    # target 2 (0.3): 0.5 and 0.9 are higher → rank 2
                           [0.8, 0.2, 0.1, 0.0],    # target 0: first → rank 0
                           [0.4, 0.4, float("-inf"), 0.1]])  # target 1 ties item 0 → tie goes to the target: rank 0
    ranks = target_ranks(scores, torch.tensor([2, 0, 1]))
    assert ranks.tolist() == [2, 0, 0]
    assert recall_at_k(ranks, 1) == pytest.approx(2 / 3)
    assert recall_at_k(ranks, 3) == pytest.approx(1.0)
    assert ndcg_at_k(ranks, 2) == pytest.approx((0 + 1 + 1) / 3)
    assert ndcg_at_k(ranks, 3) == pytest.approx((1 / math.log2(4) + 1 + 1) / 3)  # (0.5 + 1 + 1) / 3
    metrics = ranking_metrics(torch.tensor([0, 4, 9, 19, 25]), recall_ks=(1, 5, 10, 20), ndcg_ks=(5, 10, 20))
    assert metrics["recall@1"] == pytest.approx(0.2)
    assert metrics["recall@5"] == pytest.approx(0.4)
    assert metrics["recall@20"] == pytest.approx(0.8)
    assert metrics["ndcg@10"] == pytest.approx((1 + 1 / math.log2(6) + 1 / math.log2(11)) / 5)
    assert math.isnan(recall_at_k(torch.tensor([], dtype=torch.long), 5))


# ---- windows, targets, collate -------------------------------------------------------------------
def test_training_windows_use_every_event_once_as_a_target():
    rows = training_windows(np.array([0, 7, 9]), np.array([7, 8, 13]), max_len=3)
    # user 0 (7 events) → windows ending at 7 and 4; user 1 (1 event) → none; user 2 (4 events) → one window
    assert rows.tolist() == [[0, 7], [0, 4], [9, 13]]
    targets = sorted(t for start, end in rows for t in range(max(start, end - 4) + 1, end))
    assert targets == [1, 2, 3, 4, 5, 6, 10, 11, 12]


def test_eval_targets_hold_out_the_last_events():
    rows = eval_targets(np.array([0, 10, 11]), np.array([5, 11, 14]), last=2)
    assert rows.tolist() == [[0, 4], [0, 5], [11, 13], [11, 14]]  # user 1 has a single event: nothing to predict from
    assert eval_targets(np.array([0]), np.array([6]), last=2, skip=2).tolist() == [[0, 3], [0, 4]]


def test_collator_builds_shifted_targets_gaps_and_seen_items(tmp_path):
    data = NextItemDataModule(str(write_planted_log(tmp_path / "d", n_users=2, length=6)), split="random",
                              val_fraction=0.0, test_fraction=0.0, max_len=4)
    data.setup()
    log = data.log
    start = int(log.starts[0])
    batch = NextItemCollator(log, data._categories, max_len=4, with_seen=True)([np.array([start, start + 3])])
    items = log.items[start:start + 3]
    assert batch.inputs.items[0].tolist() == [0, 0, items[0], items[1]]  # right-aligned, left-padded
    assert batch.inputs.mask[0].tolist() == [False, False, True, True]
    assert batch.targets[0].tolist() == [0, 0, items[1], items[2]]
    assert batch.inputs.gaps[0].tolist() == [0, 0, 1, 1]  # 2 h and 1 h before the last target: floor(log2(h + 1))
    assert sorted(batch.seen[1].tolist()) == sorted(items[:2].tolist()) and batch.seen[0].tolist() == [0, 0]


def test_leave_last_out_and_qa_splits(tmp_path):
    folder = write_planted_log(tmp_path / "d", n_users=6, length=8, qa=True)
    loo = NextItemDataModule(str(folder), protocol="leave_last_out", eval_last=1, max_len=3)
    loo.setup()
    ends = loo.log.ends
    assert sorted(loo.rows["test"][:, 1].tolist()) == sorted(ends.tolist())  # each user's last event
    assert sorted(loo.rows["val"][:, 1].tolist()) == sorted((ends - 1).tolist())
    assert loo.rows["train"][:, 1].max() <= ends.max() - 2
    qa = NextItemDataModule(str(folder), split="qa", eval_last=2, max_len=3)
    qa.setup()
    assert qa.stats["users_per_split"] == {"train": 2, "val": 2, "test": 2}
    train_users = {int(np.searchsorted(qa.log.starts, s, side="right") - 1) for s in qa.rows["train"][:, 0]}
    test_users = {int(np.searchsorted(qa.log.starts, s, side="right") - 1) for s in qa.rows["test"][:, 0]}
    assert not train_users & test_users and len(qa.rows["test"]) == 4
    truncation = qa.stats["truncation"]
    assert truncation["policy"] == "recent" and truncation["test"] == {"targets_truncated": 4, "events_not_read": 2 * ((6 - 3) + (7 - 3))}


# ---- training --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,softmax", [("sasrec", "full"), ("gru4rec", "sampled"), ("trmpp", "full"), ("hstu", "full")])
def test_planted_next_item_rule_is_learned(tmp_path, kind, softmax):
    torch.manual_seed(0)
    data = NextItemDataModule(str(write_planted_log(tmp_path / "d")), split="random", val_fraction=0.0,
                              test_fraction=0.2, eval_last=3, batch_size=16, seed=0)
    model = NextItemModule(SourceConfig(kind=kind, dim=32, layers=1, heads=2, max_len=8, dropout=0.0),
                           softmax=softmax, num_negatives=8, lr=1e-2, exclude_seen=False,
                           output_dir=str(tmp_path / "encoder"))
    report = run_pretrain(model, data, trainer(epochs=12))
    assert report["softmax"] == softmax
    assert report["test"]["recall@1"] > 0.9, report["test"]
    assert report["popularity_test"]["recall@1"] < 0.3  # the rule, not popularity, explains the targets
    saved = json.loads((tmp_path / "encoder" / "config.json").read_text())
    assert saved["spec"]["item_ids"][:3] == ["m0", "m1", "m10"] and saved["item_vocabulary"]["items"] == N_ITEMS
    assert saved["pretrain"]["test"]["recall@1"] == report["test"]["recall@1"]


def test_softmax_switches_automatically_at_the_threshold():
    assert resolve_softmax("auto", 100, 100) == "full"
    assert resolve_softmax("auto", 101, 100) == "sampled"
    with pytest.raises(ConfigError, match="softmax"):
        resolve_softmax("hierarchical", 10, 100)


def test_sampled_softmax_masks_accidental_hits():
    torch.manual_seed(0)
    head = NextItemHead(num_items=3, dim=4)  # one real item (index 2): every uniform negative is the target itself
    loss = head.sampled_softmax_loss(torch.randn(2, 4), torch.tensor([2, 2]), num_negatives=16)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # all accidental hits masked → only the target remains
    head = NextItemHead(num_items=12, dim=4)
    states, targets = torch.randn(5, 4), torch.tensor([2, 3, 4, 5, 11])
    sampled = head.sampled_softmax_loss(states, targets, num_negatives=4)
    assert torch.isfinite(sampled) and 0 < sampled.item() < head.full_softmax_loss(states, targets).item() + 5


# ---- checkpoints: loading into a UserEmbedder, bad input ------------------------------------------
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Path, DataSpec, Path]:
    root = tmp_path_factory.mktemp("pretrained")
    folder = write_planted_log(root / "d", n_users=12, length=10)
    data = NextItemDataModule(str(folder), split="random", val_fraction=0.0, test_fraction=0.25, batch_size=8)
    model = NextItemModule(SourceConfig(kind="sasrec", name="sequence", dim=16, layers=1, heads=2, max_len=6),
                           output_dir=str(root / "encoder"))
    run_pretrain(model, data, trainer(epochs=1))
    return root / "encoder", data.spec, folder


def test_checkpoint_loads_as_a_user_embedder_source(pretrained):
    checkpoint, spec, _ = pretrained
    encoder, source, saved_spec = load_pretrained_encoder(checkpoint)
    assert saved_spec.item_ids == spec.item_ids and source.kind == "sasrec"
    sources = [SourceConfig(kind="sasrec", name="sequence", dim=16, layers=1, heads=2, max_len=6,
                            checkpoint=str(checkpoint), freeze=True)]
    embedder = UserEmbedder(sources, AdapterConfig(kind="mlp", num_tokens=1, dim=32, heads=2, user_dim=16), spec,
                            LLMRecord(name_or_path="tiny", hidden_size=32, embed_rms=0.02))
    load_encoder_checkpoint(embedder.encoders["sequence"], sources[0], spec)
    for (name, mine), (_, theirs) in zip(embedder.encoders["sequence"].state_dict().items(), encoder.state_dict().items()):
        assert torch.equal(mine, theirs), name


def test_module_loader_refuses_a_mismatched_vocabulary(pretrained):
    """The UserEmbedModule path (`checkpoint:` in a fit config) runs the same vocabulary check."""
    from user_embed.pretrain.checkpoint import load_encoder_checkpoints

    checkpoint, spec, _ = pretrained
    other = DataSpec(item_ids=[f"x{i}" for i in range(N_ITEMS)], categories=spec.categories)
    sources = [SourceConfig(kind="sasrec", name="sequence", dim=16, layers=1, heads=2, max_len=6, checkpoint=str(checkpoint))]
    embedder = UserEmbedder(sources, AdapterConfig(kind="mlp", num_tokens=1, dim=32, heads=2, user_dim=16), other,
                            LLMRecord(name_or_path="tiny", hidden_size=32, embed_rms=0.02))
    with pytest.raises(CheckpointError, match="vocabulary does not match"):
        load_encoder_checkpoints(embedder, sources)


def test_bad_checkpoints_are_refused_with_clear_messages(pretrained, tmp_path):
    checkpoint, spec, _ = pretrained
    source = SourceConfig(kind="sasrec", name="sequence", dim=16, layers=1, heads=2, max_len=6, checkpoint=str(checkpoint))
    encoder = build_encoder(source, spec)
    renamed = DataSpec(item_ids=[*spec.item_ids[:-1], "zzz"], categories=spec.categories)
    with pytest.raises(CheckpointError, match=r"item vocabulary does not match the data: 1 of 30 item ids differ"):
        load_encoder_checkpoint(encoder, source, renamed)
    larger = DataSpec(item_ids=[*spec.item_ids, "new-item"], categories=spec.categories)
    with pytest.raises(CheckpointError, match=r"catalog \(31 items\) is larger than the checkpoint's item embedding table"):
        load_encoder_checkpoint(build_encoder(source, larger), source, larger)
    wider = SourceConfig(kind="sasrec", name="sequence", dim=32, layers=1, heads=2, max_len=6, checkpoint=str(checkpoint))
    with pytest.raises(CheckpointError, match=r"different architecture: dim 16 \(checkpoint\) vs 32"):
        load_encoder_checkpoint(build_encoder(wider, spec), wider, spec)
    other_kind = SourceConfig(kind="gru4rec", name="sequence", dim=16, layers=1, heads=2, max_len=6, checkpoint=str(checkpoint))
    with pytest.raises(CheckpointError, match="kind 'sasrec'"):
        load_encoder_checkpoint(build_encoder(other_kind, spec), other_kind, spec)
    empty = SourceConfig(kind="sasrec", dim=16, layers=1, heads=2, max_len=6, checkpoint=str(tmp_path))
    with pytest.raises(CheckpointError, match="not a pre-trained encoder"):
        load_encoder_checkpoint(encoder, empty, spec)


def test_catalog_larger_than_the_item_table_is_refused(pretrained):
    _, spec, _ = pretrained
    model = NextItemModule(SourceConfig(kind="sasrec", dim=16, heads=2), max_items=N_ITEMS - 1)
    with pytest.raises(ConfigError, match=r"catalog has 30 items, more than the item embedding table allows \(model.max_items = 29\)"):
        model.build(spec)


def test_bad_data_options_are_refused(pretrained, tmp_path):
    _, _, folder = pretrained
    with pytest.raises(ConfigError, match="protocol"):
        NextItemDataModule(str(folder), protocol="random_items")
    no_qa = NextItemDataModule(str(folder), split="qa", max_len=4)
    with pytest.raises(ConfigError, match="qa.parquet not found"):
        no_qa.setup()
    model = NextItemModule(SourceConfig(kind="sasrec", dim=16, heads=2, max_len=6))
    with pytest.raises(ConfigError, match="data.max_len 4 differs"):
        run_pretrain(model, NextItemDataModule(str(folder), max_len=4), trainer(1), save=False)


def test_cli_pretrain_runs_from_a_yaml_config(pretrained, tmp_path, capsys):
    from user_embed.cli import main

    _, _, folder = pretrained
    config = tmp_path / "pretrain.yaml"
    config.write_text(f"""
trainer: {{max_epochs: 1, accelerator: cpu, enable_progress_bar: false, enable_model_summary: false}}
model:
  encoder: {{kind: gru4rec, name: sequence, dim: 16, layers: 1, heads: 2, max_len: 5}}
  output_dir: {tmp_path / 'out'}
data: {{data_dir: {folder}, split: random, val_fraction: 0.0, test_fraction: 0.3, batch_size: 8}}
""")
    assert main(["pretrain", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert summary["encoder"]["kind"] == "gru4rec" and "recall@10" in summary["test"]
    assert summary["truncation"]["policy"] == "recent"
    assert (tmp_path / "out" / "encoder.safetensors").is_file()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test"] == summary["test"]
    assert main(["pretrain", "--config", str(config), "--model.softmax", "nope"]) == 2
    assert "softmax 'nope' is unknown" in capsys.readouterr().err
