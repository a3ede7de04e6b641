"""PersonalizedLM: the inference model — a user embedder, the frozen LLM it was trained for, its tokenizer
and prompt builder. The one place where embedder and LLM meet; no Lightning on this path.

>>> lm = PersonalizedLM.from_pretrained("runs/quickstart/embedder")          # doctest: +SKIP
>>> users = UserStore.from_folder("data/ml-100k")                           # doctest: +SKIP
>>> lm.embed(users, ["196"]).shape                                          # doctest: +SKIP
torch.Size([1, 256])
>>> lm.generate(users, ["196"], ["Which genre should I watch tonight?"])     # doctest: +SKIP

Methods, every one available for the soft prompt and for the baselines (``method``):
``soft`` (the user's K soft tokens), ``none`` (the question alone), ``text`` (the user's most recent events
written before the question) and ``bm25`` (the events that best match the question, written out).

* :meth:`embed` — the pooled user vector (B, user_dim); :meth:`soft_prompt` — (B, K, d_llm);
* :meth:`generate` / :meth:`generate_results` — answers through the HF or vLLM backend;
* :meth:`score_options` — log-likelihood of each multiple-choice option;
* :meth:`loss` — the training objective for a batch (the recipe in ``user_embed/training`` calls it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from user_embed.config import AdapterConfig, LLMConfig, SourceConfig
from user_embed.data.collate import Example, UserBatch
from user_embed.data.spec import DataSpec
from user_embed.embedder import UserEmbedder
from user_embed.encoders import encoder_reads
from user_embed.errors import ConfigError, UserError
from user_embed.generate import Request, Result, answer_requests
from user_embed.generate.common import PromptEmbeds, SamplingConfig, compat_llm_folder, cut_at_stop
from user_embed.llm.load import LoadedLLM, load_llm
from user_embed.llm.prompt import PromptBuilder, PromptIds
from user_embed.llm.scoring import pick, prefill_shared_prefix, score_options, shared_prefix_length
from user_embed.llm.soft_prompt import PromptBatch, collate_prompts, mean_question_embedding, splice_soft_prompt
from user_embed.losses import ContrastiveLoss
from user_embed.model.objective import joint_loss, option_alignment
from user_embed.model.pairing import check_same_llm, llm_config_for, load_lora, requested_llm
from user_embed.named_categories import name_embeddings
from user_embed.pretrain.checkpoint import load_encoder_checkpoints
from user_embed.store import UserStore

METHODS = ("none", "text", "bm25", "soft")
TEXT_RETRIEVAL = {"text": "recent", "bm25": "bm25"}  # text method → how its events are picked


class PersonalizedLM(nn.Module):
    """A user embedder + the frozen LLM it was trained for (+ its LoRA weights), tokenizer and prompt builder."""

    def __init__(self, embedder: UserEmbedder, llm: nn.Module, tokenizer, prompts: PromptBuilder,
                 trains_llm: bool = False, llm_path: str | None = None, trust_remote_code: bool = False):
        """Prefer :meth:`from_pretrained` (a saved embedder) or :meth:`build` (a new one, for training)."""
        super().__init__()
        self.llm = llm  # registered before the embedder: parameter order llm.*, embedder.*
        self.embedder = embedder
        self.tokenizer = tokenizer
        self.prompts = prompts
        self.trains_llm = trains_llm  # LoRA weights train; otherwise the LLM always runs in eval mode
        self.llm_path, self.trust_remote_code = llm_path, trust_remote_code
        self.option_vector_cache: dict[str, torch.Tensor] = {}  # option text → its mean LLM token embedding
        self._backends: dict[str, object] = {}
        for source in embedder.source_configs:
            if source.freeze:
                embedder.encoders[source.name].requires_grad_(False)

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def build(cls, sources: list[SourceConfig], adapter: AdapterConfig, spec: DataSpec,
              llm: LLMConfig | None = None, dtype: torch.dtype | None = None) -> "PersonalizedLM":
        """A new (untrained) embedder for ``spec``'s vocabularies in front of the frozen LLM ``llm``."""
        llm = llm or LLMConfig()
        loaded = load_llm(llm, dtype)
        for source in sources:
            if "item_texts" in encoder_reads(source.kind) and source.text_encoder not in spec.item_vectors \
                    and source.text_encoder not in spec.text_dims:
                raise ConfigError(f"source '{source.name}' uses text encoder '{source.text_encoder}', but the data "
                                  f"module computed item vectors for {sorted(spec.item_vectors) or 'none'} "
                                  f"(set data.text_encoder to the same value)")
        embedder = UserEmbedder(sources, adapter, spec, loaded.record)
        load_encoder_checkpoints(embedder, sources)
        if embedder.named_categories is not None or embedder.category_pointer is not None:
            # the LLM's own embeddings of the category names
            embedder.set_category_names(name_embeddings(loaded.tokenizer, loaded.model.get_input_embeddings(),
                                                        spec.categories))
        return cls._assemble(embedder, loaded, llm)

    @classmethod
    def from_embedder(cls, embedder: UserEmbedder, llm: LLMConfig, dtype: torch.dtype | None = None,
                      requested: str | None = None) -> "PersonalizedLM":
        """A loaded embedder paired with the LLM of ``llm``; refused when that is not the LLM it was trained for."""
        if embedder.lora and not llm.lora:  # the LLM as trained: same LoRA settings, trained weights below
            llm = dataclasses.replace(llm, lora=True, **{f"lora_{k}": v for k, v in embedder.lora.items()})
        loaded = load_llm(llm, dtype)
        check_same_llm(embedder.llm_record, loaded.record, requested or llm.name_or_path)
        if embedder.lora:
            load_lora(loaded.model, embedder.lora_state)
        return cls._assemble(embedder, loaded, llm)

    @classmethod
    def from_pretrained(cls, embedder_dir: str | Path, llm: str | None = None, device: str | torch.device | None = None,
                        dtype: torch.dtype | None = None, system_prompt: str | None = None,
                        trust_remote_code: bool = False) -> "PersonalizedLM":
        """Load a saved embedder (``save_pretrained`` folder) and the LLM it was trained for.

        Args:
            embedder_dir: folder with ``config.json`` and ``model.safetensors``.
            llm: any HF causal-LM id or folder instead of the recorded one (refused when it is another model).
            device: where to run (default: CUDA when available, else CPU).
            dtype: the LLM's dtype (default float32); the embedder stays float32.
            system_prompt: override the recorded system message.
            trust_remote_code: allow model code from the hub for ``llm``.
        """
        from user_embed.assets import resolve_model

        embedder = UserEmbedder.from_pretrained(embedder_dir)
        recorded = embedder.llm_record
        real = resolve_model(requested_llm(llm, recorded), "llm")
        folder = compat_llm_folder(real)  # the same folder, readable by the older transformers vLLM brings
        config = llm_config_for(embedder, folder, system_prompt, trust_remote_code)
        loaded = load_llm(config, dtype)
        origin = real if loaded.record.origin == folder else loaded.record.origin
        loaded.record = dataclasses.replace(loaded.record, resolved=real, origin=origin)
        check_same_llm(recorded, loaded.record, llm)
        if embedder.lora:
            load_lora(loaded.model, embedder.lora_state)
        lm = cls._assemble(embedder, loaded, config)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        return lm.to(device).eval()

    @classmethod
    def _assemble(cls, embedder: UserEmbedder, loaded: LoadedLLM, llm: LLMConfig) -> "PersonalizedLM":
        prompts = PromptBuilder(loaded.tokenizer, llm.system_prompt, soft_position=llm.soft_position)
        return cls(embedder, loaded.model, loaded.tokenizer, prompts, trains_llm=llm.lora,
                   llm_path=loaded.name_or_path, trust_remote_code=llm.trust_remote_code)

    def train(self, mode: bool = True) -> "PersonalizedLM":
        super().train(mode)
        if not self.trains_llm:
            self.llm.eval()  # the frozen LLM never runs dropout
        for source in self.embedder.source_configs:
            if source.freeze:
                self.embedder.encoders[source.name].eval()  # a frozen encoder runs without dropout too
        return self

    @property
    def device(self) -> torch.device:
        return next(self.embedder.parameters()).device

    @property
    def num_tokens(self) -> int:
        """K, the soft prompt's length."""
        return self.embedder.num_tokens

    @property
    def max_positions(self) -> int:
        """Longest sequence (prompt + answer) the LLM was built for."""
        return int(getattr(self.llm.config, "max_position_embeddings", 0) or 4096)

    @property
    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        extra = getattr(getattr(self.llm, "generation_config", None), "eos_token_id", None)
        ids |= set(extra if isinstance(extra, (list, tuple)) else [extra])
        return sorted(i for i in ids if i is not None)

    # ---- batch-level pieces (training and evaluation) ------------------------------------------
    def prompt_batch(self, examples: list[Example], with_answers: bool, method: str = "soft",
                     contexts: list[str] | None = None, padding_side: str = "right") -> PromptBatch:
        """Tokenise examples into a PromptBatch; ``method``: soft | none | text | bm25 (``contexts`` given)."""
        k = self.num_tokens if method == "soft" else 0
        prompts = [self.prompts.build(ex.question, ex.answer if with_answers else None, num_soft=k,
                                      context=contexts[i] if contexts else None) for i, ex in enumerate(examples)]
        return collate_prompts(prompts, self.tokenizer.pad_token_id, padding_side).to(self.device)

    def inputs_embeds(self, batch: UserBatch | None, prompt: PromptBatch):
        """(B, T, d_llm) embeddings with the soft prompt spliced in, and the adapter output (or None)."""
        embeds = self.llm.get_input_embeddings()(prompt.input_ids)  # (B, T, d_llm)
        if not prompt.soft_mask.any():
            return embeds, None
        out = self.embedder_output(batch, prompt)  # soft_prompt: (B, K, d_llm)
        return splice_soft_prompt(embeds, prompt.soft_mask, out.soft_prompt), out

    def embedder_output(self, batch: UserBatch, prompt: PromptBatch, encoded: dict | None = None):
        """The embedder's output for a batch (soft prompt (B, K, d_llm), pooled user vector); the prompt gives
        the question tokens that an instruction-aware adapter reads; ``encoded``: the batch's
        ``embedder.encode(batch.inputs)`` when already computed. No LLM forward pass."""
        embedding = self.llm.get_input_embeddings()
        dtype = next(self.embedder.parameters()).dtype  # the embedder keeps its own dtype (float32)
        question, words = None, {}
        if self.embedder.adapter_config.instruction_aware:
            question = mean_question_embedding(embedding, prompt.question_ids, prompt.question_mask)  # (B, d_llm)
            question = question.to(dtype)
        if self.embedder.adapter_config.question_tokens:  # (B, Tq, d_llm) token embeddings + (B, Tq) mask
            words = {"question_tokens": embedding(prompt.question_ids).to(dtype), "question_mask": prompt.question_mask}
        if self.embedder.category_pointer is not None:  # the pointer reads the category names in the question
            words["question_texts"] = [ex.question for ex in batch.examples]
        if encoded is not None:
            words["encoded"] = encoded
        return self.embedder(batch.inputs, question, **words)  # soft_prompt: (B, K, d_llm)

    def loss(self, batch: UserBatch, contrastive: ContrastiveLoss | None = None, contrastive_weight: float = 0.0,
             option_alignment_weight: float = 0.0, option_alignment_scale: float = 10.0,
             frozen_prefix: bool | None = None, alignment_only: bool = False) -> dict[str, torch.Tensor]:
        """The training objective for a batch: qa_loss (+ option_alignment_loss, + contrastive_loss) and their
        weighted sum ``loss`` (see :func:`user_embed.model.objective.joint_loss`)."""
        return joint_loss(self, batch, contrastive, contrastive_weight, option_alignment_weight,
                          option_alignment_scale, frozen_prefix, alignment_only)

    def option_alignment(self, examples: list[Example], soft_prompt: torch.Tensor, scale: float = 10.0):
        """(loss, accuracy) of the option-alignment loss, or None (see :func:`user_embed.model.objective`)."""
        return option_alignment(self, examples, soft_prompt, scale)

    @torch.no_grad()
    def option_scores(self, batch: UserBatch, method: str = "soft", contexts: list[str] | None = None,
                      min_shared_prefix: int = 64) -> tuple[list[list[float]], float]:
        """Each option's summed token log-probability per question, and the mean prompt tokens.

        Without soft tokens, a prefix that all rows share (≥ ``min_shared_prefix`` tokens, e.g. one user's
        history as text) runs once and the rows continue from its KV cache.
        """
        k = self.num_tokens if method == "soft" else 0
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
        return scores, tokens

    def answer_choices(self, batch: UserBatch, method: str = "soft", contexts: list[str] | None = None):
        """The most likely option per question, and the mean prompt tokens."""
        scores, tokens = self.option_scores(batch, method, contexts)
        return pick(scores, [ex.options for ex in batch.examples]), tokens

    # ---- user-level API ------------------------------------------------------------------------
    def examples(self, users: UserStore, user_ids: Sequence[str], questions: Sequence[str] | None = None,
                 cutoffs: Sequence[int | None] | None = None, options: Sequence[list[str]] | None = None,
                 require_users: bool = True) -> list[Example]:
        """Checked :class:`Example` s: known users, non-empty text questions, one entry per user id."""
        if isinstance(user_ids, str):
            raise UserError("user_ids must be a list of ids, got one string")
        user_ids = users.require(user_ids) if require_users else [str(u) for u in user_ids]
        for name, values in (("questions", questions), ("cutoffs", cutoffs), ("options", options)):
            if values is not None and len(values) != len(user_ids):
                raise UserError(f"{name}: {len(values)} given for {len(user_ids)} user ids")
        out = []
        for i, user in enumerate(user_ids):
            question = "" if questions is None else questions[i]
            if not isinstance(question, str):
                raise UserError(f"question {i} (user '{user}') is a {type(question).__name__}, not text")
            if questions is not None and not question.strip():
                raise UserError(f"question {i} (user '{user}') is empty")
            choices = list(options[i]) if options is not None else []
            if options is not None and (not choices or not all(isinstance(o, str) and o for o in choices)):
                raise UserError(f"options {i} (user '{user}') must be a non-empty list of non-empty strings")
            out.append(Example(str(user), question.strip(), "", choices,
                               cutoff=cutoffs[i] if cutoffs is not None else None))
        return out

    def batch(self, users: UserStore, examples: list[Example]) -> UserBatch:
        """The examples' histories as model inputs on this model's device."""
        return users.collator(self.embedder.spec, self.embedder.max_len)(examples).to(self.device)

    @torch.no_grad()
    def embed(self, users: UserStore, user_ids: Sequence[str], questions: Sequence[str] | None = None,
              cutoffs: Sequence[int | None] | None = None, batch_size: int = 256) -> torch.Tensor:
        """One vector per user: the pooled, question-independent user vector (N, user_dim) — the contrastive
        space. With ``questions``: the question-conditioned soft prompt averaged over its K tokens (N, d_llm)."""
        if questions is None:
            return self.embedder.embed(users, user_ids, cutoffs, batch_size)
        examples = self.examples(users, user_ids, questions, cutoffs)
        chunks = []
        for start in range(0, len(examples), _positive(batch_size)):
            chunk = examples[start:start + batch_size]
            prompt = self.prompt_batch(chunk, with_answers=False)
            soft = self.embedder_output(self.batch(users, chunk), prompt).soft_prompt  # (b, K, d_llm)
            chunks.append(soft.mean(1).float().cpu())  # (b, d_llm)
        return torch.cat(chunks) if chunks else torch.zeros(0, self.embedder.llm_record.hidden_size)

    @torch.no_grad()
    def soft_prompt(self, users: UserStore, user_ids: Sequence[str], questions: Sequence[str] | None = None,
                    cutoffs: Sequence[int | None] | None = None) -> torch.Tensor:
        """The K soft-prompt vectors per user (N, K, d_llm), for each question (default: no question)."""
        examples = self.examples(users, user_ids, questions, cutoffs)
        if not examples:
            return torch.zeros(0, self.num_tokens, self.embedder.llm_record.hidden_size)
        batch = self.batch(users, examples)
        return self.embedder_output(batch, self.prompt_batch(examples, with_answers=False)).soft_prompt.float().cpu()

    def contexts(self, users: UserStore, examples: list[Example], method: str,
                 history_events: int = 50) -> list[str] | None:
        """The text baselines' context per example (the user's events as text); None for soft and none."""
        _check_method(method)
        if method not in TEXT_RETRIEVAL:
            return None
        writer = users.history_writer(self.embedder.spec, history_events, TEXT_RETRIEVAL[method])
        return [writer(ex) for ex in examples]

    @torch.no_grad()
    def score_options(self, users: UserStore, user_ids: Sequence[str], questions: Sequence[str],
                      options: Sequence[list[str]], method: str = "soft", cutoffs: Sequence[int | None] | None = None,
                      history_events: int = 50, batch_size: int = 16) -> list[list[float]]:
        """Log-likelihood of each option as the answer (sum over its tokens), per question, under ``method``."""
        _check_method(method)
        examples = self.examples(users, user_ids, questions, cutoffs, options, require_users=method != "none")
        contexts = self.contexts(users, examples, method, history_events)
        scores: list[list[float]] = []
        for start in range(0, len(examples), _positive(batch_size)):
            chunk = examples[start:start + batch_size]
            context = contexts[start:start + batch_size] if contexts else None
            part, _ = self.option_scores(self.batch(users, chunk), method, context)
            scores += part
        return scores

    @torch.no_grad()
    def prompt_embeds(self, users: UserStore | None, examples: list[Example], method: str = "soft",
                      contexts: list[str] | None = None) -> PromptEmbeds:
        """Prompts as left-padded embeddings (B, T, d_llm) with the soft prompt spliced in (``soft``)."""
        prompt = self.prompt_batch(examples, with_answers=False, method=method, contexts=contexts,
                                   padding_side="left")
        longest = int(prompt.attention_mask.sum(1).max())
        if longest >= self.max_positions:
            raise ValueError(f"prompt of {longest} tokens does not fit the LLM's {self.max_positions} positions")
        batch = self.batch(users, examples) if method == "soft" else None
        embeds, _ = self.inputs_embeds(batch, prompt)  # (B, T, d_llm)
        return PromptEmbeds(embeds, prompt.attention_mask)

    def generate(self, users: UserStore, user_ids: Sequence[str], questions: Sequence[str], method: str = "soft",
                 backend: str = "hf", sampling: SamplingConfig | None = None, batch_size: int = 8,
                 history_events: int = 50, cutoffs: Sequence[int | None] | None = None) -> list[str]:
        """One answer per (user, question); bad input raises a UserError naming the row."""
        if isinstance(user_ids, str) or isinstance(questions, str):
            raise UserError("user_ids and questions must be lists (one question per user id)")
        for name, values in (("questions", questions), ("cutoffs", cutoffs)):
            if values is not None and len(values) != len(user_ids):
                raise UserError(f"{name}: {len(values)} given for {len(user_ids)} user ids")
        cutoffs = cutoffs if cutoffs is not None else [None] * len(user_ids)
        requests = [Request(u, q, c) for u, q, c in zip(user_ids, questions, cutoffs)]
        results = self.generate_results(users, requests, method, backend, sampling, batch_size,
                                        history_events=history_events)
        for row, result in enumerate(results):
            if result.error:
                raise UserError(f"row {row} (user '{result.user_id}'): {result.error}")
        return [result.answer or "" for result in results]

    def generate_results(self, users: UserStore, requests: Sequence[Request], method: str = "soft",
                         backend: str = "hf", sampling: SamplingConfig | None = None, batch_size: int = 8,
                         progress: bool = False, history_events: int = 50) -> list[Result]:
        """Answers with timing and token counts, in request order; bad requests come back with ``error`` set."""
        _check_method(method)
        return answer_requests(self, users, list(requests), method, backend, sampling or SamplingConfig(),
                               batch_size, progress, history_events)

    def request_error(self, users: UserStore, request: Request, method: str = "soft") -> str | None:
        """Why a request cannot be answered (unknown user, empty or non-text question, too long), or None."""
        if method != "none":
            reason = users.unknown_reason(request.user_id)
            if reason:
                return reason
        if not isinstance(request.question, str):
            return f"question is a {type(request.question).__name__}, not text"
        if not request.question.strip():
            return "empty question"
        prompt = self.prompts.build(request.question.strip(), num_soft=self.num_tokens if method == "soft" else 0)
        if len(prompt.ids) >= self.max_positions:
            return (f"question too long: its prompt is {len(prompt.ids)} tokens (question, chat template and "
                    f"soft prompt) and the LLM has {self.max_positions} positions")
        return None

    def backend(self, name: str):
        """The generation backend ``hf`` or ``vllm`` (built on first use, then reused)."""
        if name not in self._backends:
            if name == "hf":
                from user_embed.generate.hf import HFBackend

                self._backends[name] = HFBackend(self.llm, self.tokenizer, self.eos_ids)
            elif name == "vllm":
                from user_embed.generate.vllm import VLLMBackend

                if self.embedder.lora:
                    raise UserError("this embedder was trained with LoRA on its LLM; the vLLM backend serves the "
                                    "base LLM only, so its answers would differ: use --backend hf")
                dtype = str(next(self.llm.parameters()).dtype).removeprefix("torch.")
                self._backends[name] = VLLMBackend(self.llm_path, dtype, self.max_positions, self.eos_ids,
                                                   self.trust_remote_code)
            else:
                raise UserError(f"unknown backend '{name}'; choose one of hf, vllm")
        return self._backends[name]

    def decode(self, token_ids: list[int], stop: list[str]) -> tuple[str, list[int]]:
        """Answer text and token ids, cut at the first end-of-sequence token and at the first stop string."""
        eos = set(self.eos_ids)
        end = next((i for i, t in enumerate(token_ids) if t in eos), len(token_ids))
        ids = list(token_ids[:end])
        return cut_at_stop(self.tokenizer.decode(ids, skip_special_tokens=True), stop), ids


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise UserError(f"unknown method '{method}'; choose one of {', '.join(METHODS)}")


def _positive(batch_size: int) -> int:
    if batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {batch_size}")
    return batch_size
