"""UserEmbedModule: the ONE place where encoders, adapter, frozen LLM and losses meet.

Training step: question → mean LLM token embedding (instruction signal) → embedder → K soft
vectors spliced into the chat prompt → frozen LLM → AR loss on answer tokens; plus
λ · InfoNCE(pooled user vector, text about the user) and, optionally, the option-alignment loss
(soft tokens vs the LLM's embeddings of each option). The first ``optim.alignment_steps`` steps (the
alignment phase) train with the option-alignment loss (+ contrastive) alone and never run the LLM.
Checkpoints hold only what trains (encoders, adapter, contrastive heads, LoRA) — never the frozen LLM.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import lightning as L
import torch

from user_embed.config import AdapterConfig, LLMConfig, LossConfig, OptimConfig, SourceConfig
from user_embed.data.collate import Example, UserBatch
from user_embed.embedder import UserEmbedder
from user_embed.encoders.registry import get_encoder_builder
from user_embed.errors import CheckpointError, ConfigError
from user_embed.eval.choice import (cache_kwargs, output_cache, pick, prefill_shared_prefix, score_options,
                                    shared_prefix_length)
from user_embed.llm.load import load_llm, trainable_state
from user_embed.llm.prompt import PromptBuilder, PromptIds
from user_embed.llm.soft_prompt import IGNORE_INDEX, PromptBatch, collate_prompts, mean_question_embedding, splice_soft_prompt
from user_embed.losses import ContrastiveLoss, answer_loss, option_alignment_loss
from user_embed.named_categories import name_embeddings

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
            adapter: how source tokens become K soft-prompt vectors.
            llm: the frozen LLM (``default`` = offline SmolLM2-135M-Instruct).
            loss: AR + λ·contrastive weights and temperature.
            optim: learning rates and schedule.
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
        self.llm_config = llm or LLMConfig()
        self.loss_config = loss or LossConfig()
        self.optim_config = optim or OptimConfig()
        self.export_dir = export_dir
        self.save_hyperparameters()
        self.strict_loading = False  # checkpoints omit the frozen LLM on purpose
        self.llm = None
        self._option_cache: dict[str, torch.Tensor] = {}  # option text → its mean LLM token embedding
        self.embedder: UserEmbedder | None = None
        self.contrastive: ContrastiveLoss | None = None
        self.tokenizer = None
        self.prompts: PromptBuilder | None = None
        self.llm_info: dict = {}

    # ---- building --------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.embedder is not None:
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        spec = getattr(datamodule, "spec", None)
        if spec is None:
            raise ConfigError("the model needs the data module's DataSpec; run through `user-embed fit` or "
                              "call datamodule.setup() and module.build(spec)")
        self.build(spec, text_dim=_text_dim(datamodule))
        train = (getattr(datamodule, "examples", None) or {}).get("train") or []
        if stage == "fit" and self.optim_config.alignment_steps and train and not any(
                ex.options and ex.answer in ex.options for ex in train):
            raise ConfigError("optim.alignment_steps > 0 needs multiple-choice training questions (options that "
                              "hold the answer); these questions have none: set optim.alignment_steps: 0")

    def build(self, spec, text_dim: int | None = None, embedder: UserEmbedder | None = None) -> "UserEmbedModule":
        """Load the frozen LLM and create (or adopt) the embedder and loss heads."""
        if embedder is not None and embedder.lora:  # the LLM as trained: same LoRA settings, trained weights below
            self.llm_config = dataclasses.replace(self.llm_config, lora=True, **{
                f"lora_{key}": value for key, value in embedder.lora.items()})
        loaded = load_llm(self.llm_config)
        self.llm, self.tokenizer, self.llm_info = loaded.model, loaded.tokenizer, loaded.info
        self.prompts = PromptBuilder(self.tokenizer, self.llm_config.system_prompt,
                                     soft_position=self.llm_config.soft_position)
        for source in self.source_configs:
            if source.kind in ("text", "text_events") and source.text_encoder not in spec.item_vectors and source.text_encoder not in spec.text_dims:
                raise ConfigError(f"source '{source.name}' uses text encoder '{source.text_encoder}', but the data "
                                  f"module computed item vectors for {sorted(spec.item_vectors) or 'none'} "
                                  f"(set data.text_encoder to the same value)")
        if embedder is None:
            embedder = UserEmbedder(self.source_configs, self.adapter_config, spec, self.llm_info)
            _load_encoder_checkpoints(embedder, self.source_configs)
            if embedder.named_categories is not None or embedder.category_pointer is not None:
                # the LLM's own embeddings of the category names
                embedder.set_category_names(name_embeddings(self.tokenizer, self.llm.get_input_embeddings(),
                                                            spec.categories))
        else:
            embedder.check_llm(self.llm_config.name_or_path, self.llm_info["hidden_size"])
            if embedder.lora:
                _load_lora(self.llm, embedder.lora_state)
        self.embedder = embedder
        for source in self.source_configs:
            if source.freeze:
                embedder.encoders[source.name].requires_grad_(False)
        if text_dim and self.loss_config.contrastive_weight > 0:
            c = self.loss_config
            self.contrastive = ContrastiveLoss(self.adapter_config.user_dim, text_dim, c.contrastive_dim,
                                               c.init_temperature, c.max_logit_scale)
        else:  # no contrastive loss: the pooled-vector head gets no gradient (DDP would stop on unused parameters)
            embedder.adapter.user_head.requires_grad_(False)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        if self.llm is not None and not self.llm_config.lora:
            self.llm.eval()  # the frozen LLM never runs dropout
        if self.embedder is not None:
            for source in self.source_configs:
                if source.freeze:
                    self.embedder.encoders[source.name].eval()  # a frozen encoder runs without dropout too
        return self

    # ---- forward pieces ----------------------------------------------------------------------------
    def prompt_batch(self, examples: list[Example], with_answers: bool, method: str = "soft",
                     contexts: list[str] | None = None, padding_side: str = "right") -> PromptBatch:
        """Tokenise examples into a PromptBatch; ``method``: soft | none | text (context given)."""
        k = self.embedder.num_tokens if method == "soft" else 0
        prompts = [self.prompts.build(ex.question, ex.answer if with_answers else None, num_soft=k,
                                      context=contexts[i] if contexts else None) for i, ex in enumerate(examples)]
        return collate_prompts(prompts, self.tokenizer.pad_token_id, padding_side).to(self.device)

    def inputs_embeds(self, batch: UserBatch | None, prompt: PromptBatch):
        """(B, T, d) embeddings with the soft prompt spliced in, and the adapter output (or None)."""
        embeds = self.llm.get_input_embeddings()(prompt.input_ids)  # (B, T, d_llm)
        if not prompt.soft_mask.any():
            return embeds, None
        out = self.embedder_output(batch, prompt)  # soft_prompt: (B, K, d_llm)
        return splice_soft_prompt(embeds, prompt.soft_mask, out.soft_prompt), out

    def embedder_output(self, batch: UserBatch, prompt: PromptBatch):
        """The embedder's output for a batch (soft prompt (B, K, d_llm), pooled user vector); the prompt gives
        the question tokens that an instruction-aware adapter reads. No LLM forward pass."""
        embedding = self.llm.get_input_embeddings()
        question, words = None, {}
        if self.adapter_config.instruction_aware:
            question = mean_question_embedding(embedding, prompt.question_ids, prompt.question_mask)  # (B, d_llm)
        if self.adapter_config.question_tokens:  # (B, Tq, d_llm) token embeddings + (B, Tq) mask
            words = {"question_tokens": embedding(prompt.question_ids), "question_mask": prompt.question_mask}
        if self.embedder.category_pointer is not None:  # the pointer reads the category names in the question
            words["question_texts"] = [ex.question for ex in batch.examples]
        return self.embedder(batch.inputs, question, **words)  # soft_prompt: (B, K, d_llm)

    def losses(self, batch: UserBatch, frozen_prefix: bool | None = None,
               alignment_only: bool = False) -> dict[str, torch.Tensor]:
        """qa_loss (+ option_alignment_loss, + contrastive_loss) and their weighted sum ``loss``.

        ``frozen_prefix`` (default: when the soft prompt sits after the question and no LoRA trains) runs the
        tokens before the soft slot without gradients and continues from their KV cache: same loss, less backward.
        ``alignment_only`` (the alignment phase) skips the LLM: option alignment (+ contrastive) only.
        """
        if frozen_prefix is None:
            frozen_prefix = self.llm_config.soft_position == "after" and not self.llm_config.lora
        if alignment_only:  # the embedder alone: option alignment (+ contrastive), no LLM forward pass
            out = self.embedder_output(batch, self.prompt_batch(batch.examples, with_answers=False))
            losses, total = {}, 0.0
        else:
            if frozen_prefix:
                logits, labels, out = self._answer_logits_after_frozen_prefix(batch)
            else:
                logits, labels, out = self._answer_logits(batch)
            losses = {"qa_loss": answer_loss(logits, labels)}
            total = losses["qa_loss"]
        weight = 1.0 if alignment_only else self.loss_config.option_alignment_weight
        if weight > 0:
            aligned = self.option_alignment(batch.examples, out.soft_prompt)
            if aligned is not None:
                losses["option_alignment_loss"], losses["option_alignment_accuracy"] = aligned
                total = total + weight * aligned[0]
        if self.contrastive is not None and batch.text_vectors is not None:
            losses["contrastive_loss"] = self.contrastive(out.user_vector, batch.text_vectors, batch.user_index)
            total = total + self.loss_config.contrastive_weight * losses["contrastive_loss"]
        losses["loss"] = total
        return losses

    def option_alignment(self, examples: list[Example], soft_prompt: torch.Tensor):
        """(loss, accuracy) of the option-alignment loss over the questions whose options hold their answer;
        None when no question in the batch has such options (e.g. free-text answers)."""
        rows = [i for i, ex in enumerate(examples) if ex.options and ex.answer in ex.options]
        if not rows:
            return None
        vectors = self._option_vectors([o for i in rows for o in examples[i].options])
        width = max(len(examples[i].options) for i in rows)
        option_embeds = soft_prompt.new_zeros(len(rows), width, soft_prompt.shape[-1])  # (R, O, d_llm)
        option_mask = torch.zeros(len(rows), width, dtype=torch.bool, device=soft_prompt.device)  # (R, O)
        for r, i in enumerate(rows):
            options = examples[i].options
            option_embeds[r, : len(options)] = torch.stack([vectors[o] for o in options])
            option_mask[r, : len(options)] = True
        answers = torch.tensor([examples[i].options.index(examples[i].answer) for i in rows],
                               device=soft_prompt.device)  # (R,)
        return option_alignment_loss(soft_prompt[rows], option_embeds, option_mask, answers,
                                     self.loss_config.option_alignment_scale)

    def _option_vectors(self, options: list[str]) -> dict[str, torch.Tensor]:
        """Each option's mean input-token embedding under the frozen LLM, computed once per option text."""
        cache = self._option_cache
        new = sorted({o for o in options if o not in cache})
        if new:
            embedding = self.llm.get_input_embeddings()
            for option, vector in zip(new, name_embeddings(self.tokenizer, embedding, new)):
                cache[option] = vector.to(embedding.weight.device)
        return cache

    def _answer_logits(self, batch: UserBatch):
        """One forward over whole prompts: (B, keep, V) logits, their (B, keep) labels, the adapter output."""
        # Left padding puts every answer at the end, so logits are needed only for the last `keep` positions.
        prompt = self.prompt_batch(batch.examples, with_answers=True, padding_side="left")
        embeds, out = self.inputs_embeds(batch, prompt)
        answer_rows = (prompt.labels != IGNORE_INDEX).any(0)  # (T,)
        length = prompt.labels.shape[1]
        keep = int(length - answer_rows.nonzero()[0, 0]) + 1 if answer_rows.any() else length
        logits = self.llm(inputs_embeds=embeds, attention_mask=prompt.attention_mask,
                          position_ids=prompt.position_ids, logits_to_keep=keep).logits  # (B, keep, V)
        return logits, prompt.labels[:, -logits.shape[1]:], out

    def _answer_logits_after_frozen_prefix(self, batch: UserBatch):
        """The tokens before the soft slot (left-padded) run once without gradients; the rest — soft tokens,
        what follows, the answer (right-padded) — continues from their KV cache with gradients."""
        k = self.embedder.num_tokens
        prompts = [self.prompts.build(ex.question, ex.answer, num_soft=k) for ex in batch.examples]
        heads = [PromptIds(ids=p.ids[: p.soft_start]) for p in prompts]
        tails = [PromptIds(ids=p.ids[p.soft_start:], soft_start=0, num_soft=k,
                           answer_start=p.answer_start - p.soft_start, question_ids=p.question_ids) for p in prompts]
        pad = self.tokenizer.pad_token_id
        head = collate_prompts(heads, pad, "left").to(self.device)  # (B, H)
        tail = collate_prompts(tails, pad, "right").to(self.device)  # (B, T)
        with torch.no_grad():
            cache = output_cache(self.llm(input_ids=head.input_ids, attention_mask=head.attention_mask,
                                          position_ids=head.position_ids, use_cache=True, logits_to_keep=1))
        embeds, out = self.inputs_embeds(batch, tail)  # (B, T, d_llm), soft tokens first
        mask = torch.cat([head.attention_mask, tail.attention_mask], 1)  # (B, H + T)
        positions = tail.position_ids + head.attention_mask.sum(1, keepdim=True)  # continue after each row's head
        logits = self.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                          **cache_kwargs(self.llm, cache)).logits  # (B, T, V)
        return logits, tail.labels, out

    @torch.no_grad()
    def answer_choices(self, batch: UserBatch, method: str = "soft", contexts: list[str] | None = None,
                       min_shared_prefix: int = 64):
        """Pick an option per question by likelihood; returns (predictions, mean prompt tokens).

        Without soft tokens, a prefix that all rows share (≥ ``min_shared_prefix`` tokens, e.g. one user's
        history as text) runs once and the rows continue from its KV cache.
        """
        k = self.embedder.num_tokens if method == "soft" else 0
        prompts = [self.prompts.build(ex.question, None, num_soft=k, context=contexts[i] if contexts else None)
                   for i, ex in enumerate(batch.examples)]
        tokens = sum(len(p.ids) for p in prompts) / len(prompts)
        shared = shared_prefix_length([p.ids for p in prompts]) if not k and len(prompts) > 1 else 0
        past = None
        if shared >= min_shared_prefix:
            past = prefill_shared_prefix(self.llm, prompts[0].ids[:shared], len(prompts), self.device)
            prompts = [PromptIds(ids=p.ids[shared:], question_ids=p.question_ids) for p in prompts]
        prompt = collate_prompts(prompts, self.tokenizer.pad_token_id, "left").to(self.device)
        embeds, _ = self.inputs_embeds(batch, prompt)
        positions = prompt.position_ids + shared if past is not None else prompt.position_ids
        options = [[self.prompts.answer_ids(o) for o in ex.options] for ex in batch.examples]
        scores = score_options(self.llm, embeds, prompt.attention_mask, positions, options,
                               self.tokenizer.pad_token_id, past=past)
        return pick(scores, [ex.options for ex in batch.examples]), tokens

    # ---- Lightning hooks ---------------------------------------------------------------------------
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
        if all(ex.options for ex in batch.examples):  # free-text answers (e.g. UQABench) have no options to pick
            predictions, _ = self.answer_choices(batch)
            accuracy = sum(p == ex.answer for p, ex in zip(predictions, batch.examples)) / len(batch)
            self.log("val/accuracy", accuracy, batch_size=len(batch), prog_bar=True, sync_dist=True)

    def test_step(self, batch: UserBatch, batch_idx: int) -> None:
        if not all(ex.options for ex in batch.examples):  # free-text answers: the answer loss is the measure
            self.log("test/qa_loss", self.losses(batch)["qa_loss"], batch_size=len(batch), sync_dist=True)
            return
        predictions, _ = self.answer_choices(batch)
        accuracy = sum(p == ex.answer for p, ex in zip(predictions, batch.examples)) / len(batch)
        self.log("test/accuracy", accuracy, batch_size=len(batch), sync_dist=True)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch.to(device) if isinstance(batch, UserBatch) else super().transfer_batch_to_device(batch, device, dataloader_idx)

    def configure_optimizers(self):
        o = self.optim_config
        main = [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("llm.")]
        lora = [p for n, p in self.named_parameters() if p.requires_grad and n.startswith("llm.")]
        groups = [{"params": main, "lr": o.lr}]
        if lora:
            groups.append({"params": lora, "lr": o.lora_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches)) if self._trainer is not None else 1000
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: learning_rate_factor(step, total, o))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("llm.") and "lora_" not in k]:
            del state[key]  # the frozen LLM is recorded by id, never copied
        checkpoint["user_embed"] = {"llm": self.llm_info, "spec": self.embedder.spec.to_json()}

    def on_fit_end(self) -> None:
        if self.trainer.is_global_zero:
            path = self.export(self.export_path())
            log.info("saved embedder to %s", path)

    def export(self, path: str | Path) -> Path:
        """Save the embedder (``save_pretrained``), with the LLM's LoRA weights when it trains them."""
        if self.llm_config.lora:
            c = self.llm_config
            self.embedder.lora = {"r": c.lora_r, "alpha": c.lora_alpha, "dropout": c.lora_dropout,
                                  "target_modules": list(c.lora_target_modules)}
            self.embedder.lora_state = trainable_state(self.llm)
        return self.embedder.save_pretrained(path)

    def export_path(self) -> Path:
        if self.export_dir:
            return Path(self.export_dir)
        base = self.trainer.log_dir if self._trainer is not None and self.trainer.log_dir else "."
        return Path(base) / "embedder"


def learning_rate_factor(step: int, total: int, optim: OptimConfig) -> float:
    """Multiplier of ``optim.lr`` at ``step`` of ``total``: the alignment phase (``optim.alignment_steps``, if any;
    peak ``optim.alignment_lr``), then the joint phase (peak ``optim.lr``), each with its own linear warmup and
    cosine decay to ``min_lr_ratio`` of its peak."""
    if step < optim.alignment_steps:
        length, peak = optim.alignment_steps, (optim.alignment_lr or optim.lr) / optim.lr
    else:
        step, length, peak = step - optim.alignment_steps, total - optim.alignment_steps, 1.0
    if step < optim.warmup_steps:
        return peak * (step + 1) / (optim.warmup_steps + 1)
    progress = min(1.0, (step - optim.warmup_steps) / max(1, length - optim.warmup_steps))
    return peak * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def _load_lora(llm, state: dict[str, torch.Tensor]) -> None:
    """Put an exported embedder's LoRA weights into the freshly wrapped LLM; every tensor must find its place."""
    expected = trainable_state(llm)
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing or not state:
        raise CheckpointError(f"the embedder's LoRA weights do not fit this LLM (unknown {unknown[:2]}, "
                              f"missing {missing[:2]})")
    llm.load_state_dict(state, strict=False)


def _text_dim(datamodule) -> int | None:
    collator = getattr(datamodule, "collator", None)
    vectors = getattr(collator, "user_text_vectors", None)
    return len(next(iter(vectors.values()))) if vectors else None


def _load_encoder_checkpoints(embedder: UserEmbedder, sources: list[SourceConfig]) -> None:
    """Start encoders from pre-trained weights where a source names a checkpoint folder (`user-embed pretrain`).

    The checkpoint's architecture (kind, dim, layers, heads, max_len) and item/category vocabularies
    must match this source and the data; otherwise a CheckpointError says what differs.
    """
    from user_embed.pretrain.checkpoint import load_encoder_checkpoint

    for source in sources:
        if source.checkpoint:
            load_encoder_checkpoint(embedder.encoders[source.name], source, embedder.spec)
