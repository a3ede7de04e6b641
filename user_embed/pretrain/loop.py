"""run_pretrain: fit → test → popularity baseline → save the encoder checkpoint with its report.

The report (also written to ``<output_dir>/metrics.json``) holds the encoder's architecture and
parameter count, the data statistics (users per split, windows, targets, truncation), the
softmax used, validation and test Recall@k / NDCG@k, the same metrics for a most-popular-items
baseline on the same targets, and training throughput (sequences/s, fwd + bwd + step).
"""

from __future__ import annotations

import logging
import math

import lightning as L
import torch

from user_embed.errors import ConfigError
from user_embed.pretrain.checkpoint import save_encoder_checkpoint
from user_embed.pretrain.data import NextItemDataModule
from user_embed.pretrain.metrics import ranking_metrics, target_ranks
from user_embed.pretrain.module import NextItemModule

log = logging.getLogger(__name__)


def run_pretrain(module: NextItemModule, datamodule: NextItemDataModule, trainer: L.Trainer,
                 save: bool = True) -> dict:
    """Train and evaluate ``module`` on ``datamodule``; write the checkpoint to ``module.output_dir``; return the report."""
    source = module.encoder_config
    if datamodule.max_len is None:
        datamodule.max_len = source.max_len
    elif datamodule.max_len != source.max_len:
        raise ConfigError(f"data.max_len {datamodule.max_len} differs from model.encoder.max_len {source.max_len}; "
                          f"leave data.max_len unset to use the encoder's")
    datamodule.setup("fit")
    module.build(datamodule.spec)
    trainer.fit(module, datamodule=datamodule)
    validation = _stage_metrics(trainer.callback_metrics, "val")
    tested = trainer.test(module, datamodule=datamodule, verbose=False)
    test = _stage_metrics(tested[0] if tested else {}, "test")
    report = {
        "encoder": {"kind": source.kind, "dim": source.dim, "layers": source.layers, "heads": source.heads,
                    "max_len": source.max_len, "truncation": source.truncation, "causal": module.causal,
                    "parameters": sum(p.numel() for p in module.encoder.parameters()),
                    "head_parameters": sum(p.numel() for p in module.head.parameters())},
        "softmax": module.softmax_mode,
        "exclude_seen": module.exclude_seen,
        "data": datamodule.stats,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "val": validation,
        "test": test,
        "popularity_test": popularity_metrics(module, datamodule),
        "train_sequences_per_s": module.train_sequences / module.train_seconds if module.train_seconds else math.nan,
        "train_seconds": module.train_seconds,
    }
    if save:
        folder = save_encoder_checkpoint(module.output_dir, module.encoder, source, datamodule.spec, module.head, report,
                                         overwrite=getattr(module, "overwrite", False))
        log.info("saved pre-trained encoder to %s", folder)
    return report


def _stage_metrics(metrics: dict, stage: str) -> dict:
    prefix = f"{stage}/"
    return {k[len(prefix):]: float(v) for k, v in metrics.items() if k.startswith(prefix)}


@torch.no_grad()
def popularity_metrics(module: NextItemModule, datamodule: NextItemDataModule) -> dict:
    """Recall/NDCG of ranking items by training-target frequency, on the same test targets and exclusions."""
    collate = datamodule.train_dataloader().collate_fn
    counts = torch.zeros(datamodule.spec.num_items)
    rows = datamodule.rows["train"]
    for first in range(0, len(rows), 4096):
        targets = collate(list(rows[first:first + 4096])).targets.flatten()
        counts += torch.bincount(targets, minlength=len(counts)).float()
    popularity = torch.log1p(counts)
    popularity[:2] = float("-inf")
    ranks = []
    for batch in datamodule.test_dataloader():
        scores = popularity.expand(len(batch), -1).clone()  # (B, V)
        targets = batch.targets[:, -1]
        if module.exclude_seen and batch.seen is not None:
            seen = torch.zeros_like(scores, dtype=torch.bool)
            seen[batch.seen[0], batch.seen[1]] = True
            seen[torch.arange(len(targets)), targets] = False
            scores = scores.masked_fill(seen, float("-inf"))
        ranks.append(target_ranks(scores, targets))
    return ranking_metrics(torch.cat(ranks), module.recall_ks, module.ndcg_ks)
