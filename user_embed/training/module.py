"""UserEmbedModule: the training recipe — Lightning hooks, optimizer, schedule and logging over the inference
model (:class:`~user_embed.model.PersonalizedLM`), whose ``loss`` it calls.

Joint objective: autoregressive loss on UserQA answer tokens + λ · InfoNCE(pooled user vector, text about the
user) and, optionally, the option-alignment loss. The first ``optim.alignment_steps`` steps (the alignment
phase) train with the option-alignment loss (+ contrastive) alone and never run the LLM. Checkpoints hold
only what trains (encoders, adapter, contrastive heads, LoRA) — never the frozen LLM.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import torch

from user_embed.adapters import get_adapter_builder
from user_embed.config import AdapterConfig, LLMConfig, LossConfig, OptimConfig, SourceConfig
from user_embed.data.collate import UserBatch
from user_embed.embedder import UserEmbedder
from user_embed.encoders.registry import get_encoder_builder
from user_embed.errors import ConfigError
from user_embed.llm.load import trainable_state
from user_embed.losses import ContrastiveLoss
from user_embed.model import PersonalizedLM
from user_embed.training.schedule import learning_rate_factor

log = logging.getLogger(__name__)


def default_sources() -> list[SourceConfig]:
    return [SourceConfig(kind="sequence"), SourceConfig(kind="tabular", dim=64, layers=1)]


class UserEmbedModule(L.LightningModule):
    def __init__(self, sources: list[SourceConfig] | None = None, adapter: AdapterConfig | None = None,
                 llm: LLMConfig | None = None, loss: LossConfig | None = None, optim: OptimConfig | None = None,
                 export_dir: str | None = None):
        """
        Args:
            sources: behaviour sources and their encoder kinds (see ``user_embed.encoders.list_encoders()``).
            adapter: how source tokens become K soft-prompt vectors (see ``user_embed.adapters.list_adapters()``).
            llm: the frozen LLM (``default`` = offline SmolLM2-135M-Instruct).
            loss: AR + λ·contrastive (+ option alignment) weights and temperature.
            optim: learning rates, schedule and the alignment phase.
            export_dir: where ``save_pretrained`` writes the embedder after fit (default: <log dir>/embedder).
        """
        super().__init__()
        self.source_configs = sources or default_sources()
        names = [s.name for s in self.source_configs]
        if len(set(names)) != len(names):
            raise ConfigError(f"source names must be unique, got {names}")
        for source in self.source_configs:
            get_encoder_builder(source.kind)  # unknown kinds fail here, before data or LLM load
        self.adapter_config = adapter or AdapterConfig()
        get_adapter_builder(self.adapter_config.kind)
        self.llm_config = llm or LLMConfig()
        self.loss_config = loss or LossConfig()
        self.optim_config = optim or OptimConfig()
        self.export_dir = export_dir
        self.export_overwrite = False  # `user-embed fit --overwrite`: export into a folder holding other files
        self.save_hyperparameters()
        self.strict_loading = False  # checkpoints omit the frozen LLM on purpose
        self.model: PersonalizedLM | None = None
        self.contrastive: ContrastiveLoss | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.model is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        spec = getattr(datamodule, "spec", None)
        if spec is None:
            raise ConfigError("the model needs the data module's DataSpec; run through `user-embed fit` or "
                              "call datamodule.setup() and module.build(spec)")
        self.build(spec, text_dim=datamodule.text_dim)
        train = (getattr(datamodule, "examples", None) or {}).get("train") or []
        if stage == "fit" and self.optim_config.alignment_steps and train and not any(
                ex.answer in ex.choices for ex in train):
            raise ConfigError("optim.alignment_steps > 0 needs multiple-choice training questions (options that "
                              "hold the answer); these questions have none: set optim.alignment_steps: 0")

    def build(self, spec, text_dim: int | None = None, embedder: UserEmbedder | None = None) -> UserEmbedModule:
        """The inference model (a new embedder for ``spec``, or ``embedder``) and the contrastive heads."""
        if embedder is None:
            self.model = PersonalizedLM.build(self.source_configs, self.adapter_config, spec, self.llm_config)
        else:
            self.model = PersonalizedLM.from_embedder(embedder, self.llm_config)
        if text_dim and self.loss_config.contrastive_weight > 0:
            c = self.loss_config
            self.contrastive = ContrastiveLoss(self.adapter_config.user_dim, text_dim, c.contrastive_dim,
                                               c.init_temperature, c.max_logit_scale)
        else:  # no contrastive loss: the pooled-vector head gets no gradient (DDP would stop on unused parameters)
            self.model.embedder.adapter.user_head.requires_grad_(False)
        return self

    @property
    def embedder(self) -> UserEmbedder:
        return self.model.embedder

    def losses(self, batch: UserBatch, frozen_prefix: bool | None = None,
               alignment_only: bool = False) -> dict[str, torch.Tensor]:
        """The inference model's loss with this recipe's weights (see ``PersonalizedLM.loss``)."""
        c = self.loss_config
        return self.model.loss(batch, self.contrastive, c.contrastive_weight, c.option_alignment_weight,
                               c.option_alignment_scale, frozen_prefix=frozen_prefix, alignment_only=alignment_only)

    def in_alignment_phase(self) -> bool:
        return self.global_step < self.optim_config.alignment_steps

    def training_step(self, batch: UserBatch, batch_idx: int) -> torch.Tensor | None:
        losses = self.losses(batch, alignment_only=self.in_alignment_phase())
        if not torch.is_tensor(losses["loss"]):  # an alignment step on a batch with no multiple-choice question
            return None  # and no contrastive text: nothing to learn from, Lightning skips the step
        size = len(batch)
        for name, value in losses.items():
            self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=size)
        if self.contrastive is not None:
            self.log("train/temperature", 1.0 / self.contrastive.scale(), batch_size=size)
        if batch.truncated:
            self.log("train/truncated_events", float(batch.truncated), reduce_fx="sum", batch_size=size)
        return losses["loss"]

    def validation_step(self, batch: UserBatch, batch_idx: int) -> None:
        losses = self.losses(batch)
        self.log("val/qa_loss", losses["qa_loss"], batch_size=len(batch), sync_dist=True)
        choice = self._multiple_choice(batch)  # free-text answers (open questions, UQABench) have no options
        if choice is not None:
            self.log("val/accuracy", self._accuracy(choice), batch_size=len(choice), prog_bar=True, sync_dist=True)

    def test_step(self, batch: UserBatch, batch_idx: int) -> None:
        choice = self._multiple_choice(batch)
        if choice is None or len(choice) < len(batch):  # free-text answers: the answer loss is the measure
            self.log("test/qa_loss", self.losses(batch)["qa_loss"], batch_size=len(batch), sync_dist=True)
        if choice is not None:
            self.log("test/accuracy", self._accuracy(choice), batch_size=len(choice), sync_dist=True)

    @staticmethod
    def _multiple_choice(batch: UserBatch) -> UserBatch | None:
        rows = [i for i, ex in enumerate(batch.examples) if ex.options]
        return None if not rows else batch if len(rows) == len(batch) else batch.select(rows)

    def _accuracy(self, batch: UserBatch) -> float:
        predictions, _ = self.model.answer_choices(batch)
        return sum(p == ex.answer for p, ex in zip(predictions, batch.examples)) / len(batch)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        if isinstance(batch, UserBatch):
            return batch.to(device)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self):
        o = self.optim_config
        trainable = [(n, p) for n, p in self.named_parameters() if p.requires_grad]
        groups = [{"params": [p for n, p in trainable if not n.startswith("model.llm.")], "lr": o.lr}]
        lora = [p for n, p in trainable if n.startswith("model.llm.")]
        if lora:
            groups.append({"params": lora, "lr": o.lora_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1000
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, total, o))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("model.llm.") and "lora_" not in k]:
            del state[key]  # the frozen LLM is recorded by id, never copied
        checkpoint["user_embed"] = {"llm": self.embedder.llm_record.to_json(), "spec": self.embedder.spec.to_json()}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            log.info("saved embedder to %s", self.export(self.export_path()))

    def export(self, path: str | Path) -> Path:
        """Save the embedder (``save_pretrained``), with the LLM's LoRA weights when it trains them."""
        if self.model.trains_llm:
            if self.llm_config.lora:
                c = self.llm_config
                self.embedder.lora = {"r": c.lora_r, "alpha": c.lora_alpha, "dropout": c.lora_dropout,
                                      "target_modules": list(c.lora_target_modules)}
            self.embedder.lora_state = trainable_state(self.model.llm)
        self.embedder.user_head_trained = self.contrastive is not None  # else the head is its random init
        if self.contrastive is not None:
            datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
            self.embedder.attach_text_space(self.contrastive, getattr(datamodule, "text_encoder", "default"))
        return self.embedder.save_pretrained(path, overwrite=self.export_overwrite)

    def export_path(self) -> Path:
        if self.export_dir:
            return Path(self.export_dir)
        base = self.trainer.log_dir if self._trainer is not None and self.trainer.log_dir else "."
        return Path(base) / "embedder"
