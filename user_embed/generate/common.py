"""What both generation backends share: requests, results, sampling settings, and the Personalizer.

The :class:`Personalizer` loads a trained embedder, the frozen LLM it was trained for and
the users' data once, checks each request (known user, non-empty question), and turns a
batch of requests into prompt embeddings with the soft prompt spliced into the chat
template by :class:`~user_embed.module.UserEmbedModule` — the same prompt builder and the
same placement as in training. The HF backend feeds the left-padded batch to
``model.generate``; the vLLM backend hands each row's real positions over as
``prompt_embeds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from user_embed.assets import resolve_model
from user_embed.errors import CheckpointError, UserError

BACKENDS = ("hf", "vllm")


@dataclass
class Request:
    """One question asked for one user."""

    user_id: str
    question: str


@dataclass
class Result:
    """The answer to one :class:`Request` (or the reason there is none)."""

    user_id: str | None
    question: str | None
    answer: str | None = None
    prompt_tokens: int = 0
    """Positions the LLM read: chat template + K soft vectors + question."""
    output_tokens: int = 0
    """Tokens generated, without the end-of-sequence token."""
    latency_s: float = 0.0
    """Wall time of the batch this request was answered in (embedding + generation)."""
    error: str | None = None
    token_ids: list[int] = field(default_factory=list, repr=False)

    def to_json(self) -> dict:
        return {"user_id": self.user_id, "question": self.question, "answer": self.answer,
                "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
                "latency_s": round(self.latency_s, 4), "error": self.error}


@dataclass
class SamplingConfig:
    """Decoding settings shared by both backends."""

    max_new_tokens: int = 64
    """Most tokens generated per answer."""
    temperature: float = 0.0
    """0 = greedy (deterministic); > 0 samples."""
    top_p: float = 1.0
    """Nucleus sampling mass (with temperature > 0)."""
    seed: int = 0
    """Random seed for sampling."""
    stop: list[str] = field(default_factory=list)
    """Strings that end an answer (not included in it)."""
    ignore_eos: bool = False
    """Generate exactly ``max_new_tokens``: end-of-answer tokens do not stop (throughput benchmarks)."""

    def __post_init__(self) -> None:
        if self.max_new_tokens <= 0:
            raise UserError(f"max_new_tokens must be > 0, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        self.stop = [s for s in (self.stop or []) if s]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class PromptEmbeds:
    """A batch of prompts as embeddings, left-padded."""

    embeds: torch.Tensor  # (B, T, d_llm)
    attention_mask: torch.Tensor  # (B, T) long, 1 = real position

    def rows(self) -> list[torch.Tensor]:
        """Each row's real positions without padding: a list of (L_b, d_llm)."""
        return [self.embeds[b][self.attention_mask[b].bool()] for b in range(self.embeds.shape[0])]

    @property
    def lengths(self) -> list[int]:
        return [int(n) for n in self.attention_mask.sum(1).tolist()]


class Personalizer:
    """A trained embedder + its frozen LLM + the users' data, loaded once; see the module docstring."""

    def __init__(self, checkpoint: str | Path, data_dir: str | Path, llm: str | None = None,
                 device: str | torch.device = "cpu", system_prompt: str | None = None):
        """
        Args:
            checkpoint: folder written by ``UserEmbedder.save_pretrained`` (e.g. ``runs/quickstart/embedder``).
            data_dir: prepared data folder holding the users' events/users/items tables.
            llm: the LLM to pair with (default: the one recorded in the checkpoint); refused when the
                embedder was trained for another one.
            device: where the LLM and embedder run (HF backend).
            system_prompt: system message; default: the one recorded in the checkpoint, else "" (training default).
        """
        from user_embed.config import LLMConfig, LossConfig
        from user_embed.llm.load import recorded_prompt_format
        from user_embed.data.datamodule import UserDataModule
        from user_embed.embedder import UserEmbedder
        from user_embed.module import UserEmbedModule

        self.checkpoint = Path(checkpoint)
        if not self.checkpoint.is_dir():
            raise CheckpointError(f"--checkpoint {self.checkpoint}: no such embedder folder")
        embedder = UserEmbedder.from_pretrained(self.checkpoint)
        recorded = embedder.llm_info
        requested = _requested_llm(llm, recorded)
        prompt_format = recorded_prompt_format(recorded)
        if system_prompt is not None:
            prompt_format["system_prompt"] = system_prompt
        self.data_dir = Path(data_dir)
        if not self.data_dir.is_dir():
            raise UserError(f"--data {self.data_dir}: no such data folder (build it with `user-embed prepare …`)")
        text_encoders = [s.text_encoder for s in embedder.source_configs if s.kind == "text"]
        datamodule = UserDataModule(str(self.data_dir), max_history=embedder.max_len, contrastive_texts=False,
                                    item_text_vectors=bool(text_encoders),
                                    text_encoder=text_encoders[0] if text_encoders else "default")
        datamodule.use_spec(embedder.spec)
        datamodule.setup()
        self.collator = datamodule.collator
        self.tables = datamodule.tables
        users = set(self.tables["users"]["user_id"].cast(str).to_list())
        self.known_users = users | set(self.collator.histories.offsets)

        real = resolve_model(requested, "llm")
        folder = compat_llm_folder(real)  # the same folder, readable by the older transformers vLLM brings
        module = UserEmbedModule(sources=embedder.source_configs, adapter=embedder.adapter_config,
                                 llm=LLMConfig(name_or_path=folder, revision=recorded.get("revision"), **prompt_format),
                                 loss=LossConfig(contrastive_weight=0.0))
        module.build(embedder.spec, embedder=embedder)  # refuses another hidden size
        loaded = dict(module.llm_info, resolved=real)
        if loaded.get("origin") == folder:
            loaded["origin"] = real
        _check_same_llm(recorded, loaded, llm)
        self.module = module.to(device).eval()
        self.llm_path = folder
        self.tokenizer = module.tokenizer
        self._engines: dict = {}  # backend caches (the vLLM engine)

    @property
    def device(self) -> torch.device:
        return self.module.device

    @property
    def eos_ids(self) -> list[int]:
        ids = {self.tokenizer.eos_token_id}
        generation = getattr(self.module.llm, "generation_config", None)
        extra = getattr(generation, "eos_token_id", None)
        ids |= set(extra if isinstance(extra, (list, tuple)) else [extra])
        return sorted(i for i in ids if i is not None)

    def check(self, request: Request) -> str | None:
        """The reason a request cannot be answered, or None."""
        if request.user_id is None or str(request.user_id).strip() == "":
            return "missing user_id"
        if str(request.user_id) not in self.known_users:
            return f"unknown user '{request.user_id}' (not in {self.data_dir}/users.parquet or events.parquet)"
        if request.question is None or not str(request.question).strip():
            return "empty question"
        prompt = self.module.prompts.build(str(request.question).strip(), num_soft=self.module.embedder.num_tokens)
        if len(prompt.ids) >= self.max_positions:
            return (f"question too long: its prompt is {len(prompt.ids)} tokens (question, chat template and "
                    f"soft prompt) and the LLM has {self.max_positions} positions")
        return None

    @torch.no_grad()
    def embed(self, requests: list[Request]) -> PromptEmbeds:
        """Soft prompts for the requests' users, spliced into their chat prompts: left-padded (B, T, d)."""
        from user_embed.data.collate import Example

        examples = [Example(str(r.user_id), str(r.question).strip(), "", []) for r in requests]
        batch = self.collator(examples).to(self.device)  # histories up to now (no cutoff)
        prompt = self.module.prompt_batch(examples, with_answers=False, padding_side="left")
        self._check_length(prompt.attention_mask)
        embeds, _ = self.module.inputs_embeds(batch, prompt)  # (B, T, d_llm)
        return PromptEmbeds(embeds, prompt.attention_mask)

    @property
    def max_positions(self) -> int:
        """Longest sequence (prompt + answer) the LLM was built for."""
        return int(getattr(self.module.llm.config, "max_position_embeddings", 0) or 4096)

    def _check_length(self, attention_mask: torch.Tensor) -> None:
        longest = int(attention_mask.sum(1).max())
        if longest >= self.max_positions:
            raise ValueError(f"prompt of {longest} tokens does not fit the LLM's {self.max_positions} positions")

    def text_embeds(self, questions: list[str], contexts: list[str]) -> PromptEmbeds:
        """Baseline prompts (no soft prompt): ``context`` as text before each question, left-padded."""
        from user_embed.data.collate import Example

        examples = [Example("", q, "", []) for q in questions]
        prompt = self.module.prompt_batch(examples, with_answers=False, method="text", contexts=contexts,
                                          padding_side="left")
        with torch.no_grad():
            self._check_length(prompt.attention_mask)
            embeds = self.module.llm.get_input_embeddings()(prompt.input_ids)  # (B, T, d_llm)
        return PromptEmbeds(embeds, prompt.attention_mask)

    def decode(self, token_ids: list[int], stop: list[str]) -> tuple[str, list[int]]:
        """Answer text and token ids, cut at the first end-of-sequence token and at the first stop string."""
        eos = set(self.eos_ids)
        end = next((i for i, t in enumerate(token_ids) if t in eos), len(token_ids))
        ids = list(token_ids[:end])
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return cut_at_stop(text, stop), ids


def cut_at_stop(text: str, stop: list[str]) -> str:
    """``text`` up to (not including) the earliest stop string."""
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


def compat_llm_folder(path: str) -> str:
    """``path``, or where transformers < 5 cannot read its tokenizer, a linked copy that it can read.

    transformers 5 saves ``"tokenizer_class": "TokenizersBackend"``, a class older releases
    (vLLM pins transformers < 5.20) do not know; the copy links every file and names
    ``PreTrainedTokenizerFast`` instead, which reads the same ``tokenizer.json``.
    """
    import hashlib
    import json
    import tempfile

    import transformers

    source = Path(path)
    config = source / "tokenizer_config.json"
    if int(transformers.__version__.split(".")[0]) >= 5 or not config.is_file():
        return path
    settings = json.loads(config.read_text())
    if settings.get("tokenizer_class") != "TokenizersBackend":
        return path
    digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
    target = Path(tempfile.gettempdir()) / "user_embed-llm-compat" / digest
    target.mkdir(parents=True, exist_ok=True)
    for item in source.iterdir():
        link = target / item.name
        if item.name != config.name and not link.exists():
            link.symlink_to(item.resolve())
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    (target / config.name).write_text(json.dumps(settings, indent=2))
    return str(target)


def _requested_llm(llm: str | None, recorded: dict) -> str:
    """The LLM to load: the recorded one unless the user named another (ids of the recorded one map to it)."""
    recorded_names = {recorded.get("name_or_path"), recorded.get("origin"), recorded.get("resolved")}
    if llm is None or llm in recorded_names:
        resolved = recorded.get("resolved")
        if recorded.get("name_or_path") in (None, "default") or not (resolved and Path(resolved).is_dir()):
            return recorded.get("name_or_path") or "default"
        return resolved
    return llm


def _check_same_llm(recorded: dict, loaded: dict, requested: str | None) -> None:
    """Refuse an LLM other than the one the embedder was trained for (hidden size is checked by build)."""
    same = (recorded.get("origin") == loaded.get("origin") or recorded.get("resolved") == loaded.get("resolved"))
    if recorded.get("model_type") and loaded.get("model_type") and recorded["model_type"] != loaded["model_type"]:
        same = False
    if not same:
        trained = recorded.get("origin") or recorded.get("name_or_path")
        raise CheckpointError(f"embedder was trained for LLM '{trained}', not '{requested or loaded.get('origin')}' "
                              f"(omit --llm to use the recorded one)")
