"""What both generation backends share: requests, results, sampling settings and prompt embeddings.

The inference model (:class:`~user_embed.model.PersonalizedLM`) turns a batch of requests into
left-padded prompt embeddings with the soft prompt spliced into the chat template — the same prompt
builder and placement as in training. The HF backend feeds the padded batch to ``model.generate``; the
vLLM backend hands each row's real positions over as ``prompt_embeds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from user_embed.errors import UserError

BACKENDS = ("hf", "vllm")


@dataclass
class Request:
    """One question asked for one user."""

    user_id: str
    question: str
    cutoff: int | None = None
    """Only the user's events before this Unix time are read (default: all)."""


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
