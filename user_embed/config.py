"""Typed configs of the model parts; each field documents itself and is checked in __post_init__.

YAML files (LightningCLI) fill these dataclasses; ``build_*`` functions in the component
modules translate them into objects, so components never read configs themselves.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from user_embed.domains import check_fraction, check_number, check_positive
from user_embed.errors import ConfigError

TRUNCATION_POLICIES = ("recent",)
SOFT_POSITIONS = ("before", "after")


def _path_text(value: object) -> object:
    """A path object as its text (the Python API may pass ``pathlib.Path`` where a config holds a string)."""
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _text(owner: str, **values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, str):
            raise ConfigError(f"{owner}.{name} must be text, got {value!r}")


def _flags(owner: str, **values: object) -> None:
    for name, value in values.items():
        if not isinstance(value, bool):
            raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")


@dataclass
class SourceConfig:
    """One behaviour source and the encoder kind that reads it."""

    kind: str
    """Registered encoder kind (see ``user_embed.encoders.list_encoders()``): sequence | text | tabular | …"""
    name: str = ""
    """Name of this source in logs and checkpoints; defaults to ``kind``."""
    dim: int = 128
    """Width of the encoder's token states ``d_s``."""
    layers: int = 2
    """Transformer layers (sequence encoders)."""
    heads: int = 4
    """Attention heads (sequence encoders, text pooler)."""
    max_len: int = 50
    """Maximum events read per user; longer histories are truncated by ``truncation``."""
    truncation: str = "recent"
    """Truncation policy for long histories: ``recent`` keeps the most recent ``max_len`` events."""
    num_tokens: int = 4
    """Tokens a pooling encoder emits (text encoder's attention pooler)."""
    fields: list[str] | None = None
    """Profile columns of the ``users`` table read by the tabular encoder (None = all)."""
    text_encoder: str = "default"
    """Frozen text encoder for the text source: ``default`` (offline MiniLM), an HF id or a local folder."""
    dropout: float = 0.1
    """Dropout inside the encoder."""
    checkpoint: str | None = None
    """Optional pre-trained encoder weights (safetensors folder) to start from."""
    freeze: bool = False
    """Keep the encoder's weights fixed (e.g. a pre-trained sequence encoder)."""

    def __post_init__(self) -> None:
        if not self.kind or not isinstance(self.kind, str):
            raise ConfigError(f"source.kind is required (e.g. sequence, text, tabular), got {self.kind!r}")
        self.name = self.name or self.kind
        owner = f"source '{self.name}'"
        self.text_encoder, self.checkpoint = _path_text(self.text_encoder), _path_text(self.checkpoint)
        _text(owner, name=self.name, truncation=self.truncation, text_encoder=self.text_encoder)
        _flags(owner, freeze=self.freeze)
        check_positive(owner, integer=True, dim=self.dim, layers=self.layers, heads=self.heads,
                       max_len=self.max_len, num_tokens=self.num_tokens)
        if self.fields is not None and not (isinstance(self.fields, list) and all(isinstance(f, str) for f in self.fields)):
            raise ConfigError(f"{owner}.fields must be a list of column names or null, got {self.fields!r}")
        if self.checkpoint is not None and not isinstance(self.checkpoint, str):
            raise ConfigError(f"{owner}.checkpoint must be a folder path or null, got {self.checkpoint!r}")
        if self.dim % self.heads:
            raise ConfigError(f"source '{self.name}': dim {self.dim} is not divisible by heads {self.heads}")
        if self.truncation not in TRUNCATION_POLICIES:
            raise ConfigError(f"source '{self.name}': unknown truncation '{self.truncation}'; known: {TRUNCATION_POLICIES}")
        check_fraction(f"{owner}.dropout", self.dropout, high_open=True)


@dataclass
class AdapterConfig:
    """How source tokens become ``num_tokens`` soft-prompt vectors and a pooled user vector."""

    kind: str = "resampler"
    """Registered adapter kind (see ``user_embed.adapters.list_adapters()``): ``mlp`` (pooled → K tokens; K=1 is
    the UQABench/E2P baseline), ``resampler`` (K queries cross-attend) or ``pplug`` (the PPlug baseline:
    question-weighted mean of the source tokens → one user token, plus one learned instruction token; needs
    num_tokens: 2 and instruction_aware: true)."""
    num_tokens: int = 8
    """K, the number of soft-prompt vectors given to the LLM."""
    dim: int = 256
    """Internal width of the adapter."""
    layers: int = 2
    """Resampler blocks (cross-attention + self-attention + MLP)."""
    heads: int = 4
    """Attention heads of the resampler."""
    instruction_aware: bool = True
    """Condition the adapter on the question, so one user yields question-specific soft prompts."""
    question_tokens: bool = False
    """Resampler only: the queries also cross-attend to the question's token embeddings (not just their mean),
    so a word of the question (a genre, an item) can pick what the soft prompt carries."""
    named_categories: int = 0
    """Also give the LLM the user's N most frequent item categories as tokens: the LLM's own embedding of the
    category's name plus a learned shift from its statistics (``user_embed/named_categories.py``); 0 = off.
    The soft prompt then has ``num_tokens`` + N vectors."""
    category_pointer: bool = False
    """Resampler only: each soft token also adds a mix of the LLM's embeddings of category names, weighted by
    attention from its query over the categories' statistics (``user_embed/named_categories.py``)."""
    user_dim: int = 256
    """Size of the pooled user vector (used by the contrastive loss and by `user-embed embed`)."""
    dropout: float = 0.0
    """Dropout inside the adapter."""

    def __post_init__(self) -> None:
        # An unknown kind fails where it is looked up (``user_embed.adapters.get_adapter_builder``): this module is
        # the bottom layer and knows no adapter classes.
        _text("adapter", kind=self.kind)
        _flags("adapter", instruction_aware=self.instruction_aware, question_tokens=self.question_tokens,
               category_pointer=self.category_pointer)
        check_number("adapter.named_categories", self.named_categories, low=0, integer=True)
        check_positive("adapter", integer=True, num_tokens=self.num_tokens, dim=self.dim, layers=self.layers,
                       heads=self.heads, user_dim=self.user_dim)
        check_fraction("adapter.dropout", self.dropout, high_open=True)
        if self.dim % self.heads:
            raise ConfigError(f"adapter.dim {self.dim} is not divisible by adapter.heads {self.heads}")
        if self.kind == "pplug" and (self.num_tokens != 2 or not self.instruction_aware):
            raise ConfigError("adapter.kind pplug gives one user token plus one instruction token: it needs "
                              f"num_tokens: 2 and instruction_aware: true (got {self.num_tokens}, {self.instruction_aware})")
        if self.category_pointer and self.kind != "resampler":
            raise ConfigError("adapter.category_pointer needs kind: resampler")
        if self.question_tokens and (self.kind != "resampler" or not self.instruction_aware):
            raise ConfigError("adapter.question_tokens needs kind: resampler and instruction_aware: true")


@dataclass
class LLMConfig:
    """The frozen causal LLM and how the soft prompt enters it."""

    name_or_path: str = "default"
    """``default`` (offline SmolLM2-135M-Instruct), an HF model id, or a local HF folder."""
    revision: str | None = None
    """Model revision (branch, tag or commit) for HF ids."""
    soft_position: str = "before"
    """Where the soft prompt sits in the user message: ``before`` the question ("User profile: <soft>\\n<question>")
    or ``after`` it ("<question>\\nUser profile: <soft>"). With ``after`` (and no LoRA) training runs the question
    without gradients (a KV cache) and back-propagates only through the soft tokens and the answer: faster steps."""
    system_prompt: str | None = ""
    """System message; "" sends an explicit empty one (no template default), None uses the template's default."""
    lora: bool = False
    """Train LoRA adapters on the LLM (peft); off by default — the LLM stays frozen."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    lora_target_modules: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])
    """Module names that get LoRA adapters."""
    trust_remote_code: bool = False
    """Allow model code from the hub; off unless you trust the model."""

    def __post_init__(self) -> None:
        self.name_or_path = _path_text(self.name_or_path)
        _text("llm", name_or_path=self.name_or_path)
        _flags("llm", lora=self.lora, trust_remote_code=self.trust_remote_code)
        check_positive("llm", integer=True, lora_r=self.lora_r)
        check_positive("llm", lora_alpha=self.lora_alpha)
        check_fraction("llm.lora_dropout", self.lora_dropout, high_open=True)
        if self.soft_position not in SOFT_POSITIONS:
            raise ConfigError(f"llm.soft_position must be one of {SOFT_POSITIONS}, got {self.soft_position!r}")


@dataclass
class LossConfig:
    """Joint objective: AR cross-entropy on answer tokens + ``contrastive_weight`` × InfoNCE."""

    contrastive_weight: float = 0.1
    """λ for the user↔text InfoNCE loss; 0 trains on the UserQA loss only."""
    contrastive_dim: int = 128
    """Shared space in which user and text vectors are compared."""
    init_temperature: float = 0.07
    """Initial softmax temperature (learnable)."""
    max_logit_scale: float = 100.0
    """Upper clamp of 1/temperature."""
    option_alignment_weight: float = 0.0
    """Weight of the option-alignment loss in the joint phase (soft tokens vs the LLM's embeddings of each
    multiple-choice option; ``user_embed/losses/option_alignment.py``); 0 = AR (+ contrastive) only."""
    option_alignment_scale: float = 10.0
    """Scale of the cosine similarities that the option-alignment cross-entropy compares."""

    def __post_init__(self) -> None:
        for name in ("contrastive_weight", "option_alignment_weight"):
            check_number(f"loss.{name}", getattr(self, name), low=0)
        check_positive("loss", integer=True, contrastive_dim=self.contrastive_dim)
        check_positive("loss", init_temperature=self.init_temperature, max_logit_scale=self.max_logit_scale,
                       option_alignment_scale=self.option_alignment_scale)


@dataclass
class OptimConfig:
    """AdamW with linear warmup and cosine decay."""

    lr: float = 1e-2
    """Learning rate of adapter and encoders (a first-order lever: 1e-2 ≫ 1e-3 for soft prompts here)."""
    lora_lr: float = 1e-4
    """Learning rate of LoRA weights (when ``llm.lora``)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 10
    """Linear warmup steps."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr`` (cosine decay over the run)."""
    alignment_steps: int = 0
    """The first N optimizer steps train the embedder with the option-alignment loss alone (no LLM forward,
    ≈ 100× cheaper than a joint step); the joint phase follows with its own warmup and cosine schedule.
    They count in ``trainer.max_steps``."""
    alignment_lr: float | None = None
    """Peak learning rate of the alignment phase (default: ``lr``; lower than the joint phase's suits it)."""

    def __post_init__(self) -> None:
        check_positive("optim", lr=self.lr, lora_lr=self.lora_lr)
        if self.alignment_lr is not None:
            check_positive("optim", alignment_lr=self.alignment_lr)
        check_number("optim.weight_decay", self.weight_decay, low=0)
        check_fraction("optim.min_lr_ratio", self.min_lr_ratio)
        for name in ("warmup_steps", "alignment_steps"):
            check_number(f"optim.{name}", getattr(self, name), low=0, integer=True)


def to_dict(config) -> dict:
    """Plain dict of a config dataclass (for JSON)."""
    return asdict(config)
