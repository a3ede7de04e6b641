"""NextItemModule: a sequence encoder + next-item head trained with Lightning, evaluated by ranking.

Causal encoders (``encoder.causal``: sasrec, gru4rec, trmpp, hstu) predict the next item at every
position of a window; non-causal ones (the bidirectional ``sequence`` encoder) would see the
answer there, so they predict only after the window's last event (one target per window).
Evaluation ranks the whole catalog for each held-out target from the state of the most recent
event; with ``exclude_seen`` the user's earlier items are removed from the ranking (never the target).
"""

from __future__ import annotations

import math
import time

import lightning as L
import torch

from user_embed.config import SourceConfig
from user_embed.data.spec import UNKNOWN_ITEM, DataSpec
from user_embed.domains import check_number
from user_embed.encoders import build_encoder
from user_embed.errors import ConfigError
from user_embed.pretrain.data import NextItemBatch
from user_embed.pretrain.heads import NextItemHead, resolve_softmax
from user_embed.pretrain.metrics import NDCG_KS, RECALL_KS, ranking_metrics, target_ranks


class NextItemModule(L.LightningModule):
    def __init__(self, encoder: SourceConfig | None = None, softmax: str = "auto",
                 full_softmax_max_items: int = 50_000, num_negatives: int = 1024, max_items: int | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0, warmup_steps: int = 0, exclude_seen: bool = True,
                 recall_ks: tuple[int, ...] = RECALL_KS, ndcg_ks: tuple[int, ...] = NDCG_KS,
                 output_dir: str = "runs/pretrain/encoder"):
        """
        Args:
            encoder: the sequence encoder to pre-train (kind: sasrec | gru4rec | trmpp | hstu | sequence, dims, max_len).
            softmax: ``full`` (all items), ``sampled`` (in-batch + uniform negatives) or ``auto`` (by catalog size).
            full_softmax_max_items: ``auto`` uses full softmax up to this many items.
            num_negatives: uniform negatives per batch for the sampled softmax.
            max_items: size limit of the item embedding table; a larger catalog is refused (None = no limit).
            lr: AdamW learning rate.
            weight_decay: AdamW weight decay.
            warmup_steps: linear warmup steps, then cosine decay to 10 % of ``lr``.
            exclude_seen: remove the user's earlier items from the evaluation ranking.
            recall_ks: cut-offs for Recall@k.
            ndcg_ks: cut-offs for NDCG@k.
            output_dir: where ``run_pretrain`` writes encoder.safetensors + config.json.
        """
        super().__init__()
        self.encoder_config = encoder or SourceConfig(kind="sasrec", name="sequence", dim=64, heads=2)
        if num_negatives <= 0 or full_softmax_max_items <= 0 or (max_items is not None and max_items <= 0):
            raise ConfigError("model.num_negatives, model.full_softmax_max_items and model.max_items must be > 0")
        check_number("model.lr", lr, low=0, low_open=True)
        check_number("model.weight_decay", weight_decay, low=0)
        check_number("model.warmup_steps", warmup_steps, low=0, integer=True)
        resolve_softmax(softmax, 0, full_softmax_max_items)  # checks the name early
        self.softmax, self.full_softmax_max_items, self.num_negatives = softmax, full_softmax_max_items, num_negatives
        self.max_items, self.lr, self.weight_decay, self.warmup_steps = max_items, lr, weight_decay, warmup_steps
        self.exclude_seen, self.recall_ks, self.ndcg_ks = exclude_seen, tuple(recall_ks), tuple(ndcg_ks)
        self.output_dir = output_dir
        self.save_hyperparameters()
        self.spec: DataSpec | None = None
        self.encoder = None
        self.head: NextItemHead | None = None
        self.softmax_mode = ""
        self.train_seconds, self.train_sequences, self._batch_start = 0.0, 0, 0.0

    # ---- building ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.encoder is not None:
            return
        spec = getattr(getattr(self.trainer, "datamodule", None), "spec", None)
        if spec is None:
            raise ConfigError("the model needs the data module's DataSpec; run through `user-embed pretrain` or "
                              "call datamodule.setup() and module.build(datamodule.spec)")
        self.build(spec)

    def build(self, spec: DataSpec) -> "NextItemModule":
        """Create encoder and head for the data's vocabularies; refuse a catalog above ``max_items``."""
        if self.max_items is not None and len(spec.item_ids) > self.max_items:
            raise ConfigError(f"the catalog has {len(spec.item_ids)} items, more than the item embedding table allows "
                              f"(model.max_items = {self.max_items}); raise model.max_items or drop rare items")
        self.spec = spec
        self.encoder = build_encoder(self.encoder_config, spec)
        self.head = NextItemHead(spec.num_items, self.encoder.dim)
        self.softmax_mode = resolve_softmax(self.softmax, len(spec.item_ids), self.full_softmax_max_items)
        return self

    @property
    def causal(self) -> bool:
        return bool(getattr(self.encoder, "causal", False))

    # ---- steps ---------------------------------------------------------------------------------
    def training_step(self, batch: NextItemBatch, batch_idx: int) -> torch.Tensor:
        states = self.encoder(batch.inputs).tokens  # (B, L, d)
        targets = batch.targets[:, -states.shape[1]:]  # (B, L)
        if not self.causal:
            states, targets = states[:, -1:], targets[:, -1:]
        chosen = targets > UNKNOWN_ITEM
        hidden, wanted = states[chosen], targets[chosen]  # (N, d), (N,)
        if self.softmax_mode == "full":
            loss = self.head.full_softmax_loss(hidden, wanted)
        else:
            loss = self.head.sampled_softmax_loss(hidden, wanted, self.num_negatives)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch))
        self.log("train/targets", float(len(wanted)), reduce_fx="sum", batch_size=len(batch))
        return loss

    def rank_targets(self, batch: NextItemBatch) -> torch.Tensor:
        """(B,) rank of each row's last target among all items, predicted from the most recent event."""
        states = self.encoder(batch.inputs).tokens[:, -1]  # (B, d)
        targets = batch.targets[:, -1]  # (B,)
        scores = self.head.score_all(states)  # (B, V)
        if self.exclude_seen and batch.seen is not None:
            seen = torch.zeros_like(scores, dtype=torch.bool)
            seen[batch.seen[0], batch.seen[1]] = True
            seen[torch.arange(len(targets), device=scores.device), targets] = False
            scores = scores.masked_fill(seen, float("-inf"))
        return target_ranks(scores, targets)

    def _evaluate(self, batch: NextItemBatch, stage: str) -> None:
        metrics = ranking_metrics(self.rank_targets(batch), self.recall_ks, self.ndcg_ks)
        for name, value in metrics.items():
            self.log(f"{stage}/{name}", value, batch_size=len(batch), prog_bar=name == "recall@10")

    def validation_step(self, batch: NextItemBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: NextItemBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ---- throughput ----------------------------------------------------------------------------
    def on_train_batch_start(self, batch: NextItemBatch, batch_idx: int) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, outputs, batch: NextItemBatch, batch_idx: int) -> None:
        self.train_seconds += time.perf_counter() - self._batch_start
        self.train_sequences += len(batch)

    # ---- plumbing ------------------------------------------------------------------------------
    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, NextItemBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1000
        warmup = self.warmup_steps

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
