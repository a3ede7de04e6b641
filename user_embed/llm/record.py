"""LLMRecord: what an embedder remembers of the frozen LLM it was trained for, and of its prompt format.

Saved as the ``"llm"`` entry of every embedder's ``config.json``. Loading an embedder reads it to
pick the LLM (unless another one is named) and to build prompts exactly as in training; the
hidden size and model type are checked against the LLM it is paired with.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from user_embed.config import SOFT_POSITIONS
from user_embed.errors import CheckpointError


@dataclass
class LLMRecord:
    """The frozen LLM an embedder was trained for (never its weights) and the prompt format it used."""

    name_or_path: str
    """As configured: ``default``, an HF id or a local folder."""
    hidden_size: int
    """Width of the LLM's input embeddings ``d_llm`` (the soft prompt's width)."""
    embed_rms: float
    """RMS of the LLM's input-embedding matrix; the soft prompt starts at this scale."""
    resolved: str | None = None
    """The folder (or id) it was loaded from."""
    origin: str | None = None
    """The upstream model id (from the assets cache's ``origin.json``), else ``name_or_path``."""
    revision: str | None = None
    """Branch, tag or commit of an HF id."""
    model_type: str | None = None
    """``config.model_type`` of the LLM (``llama``, ``qwen2``, …)."""
    system_prompt: str | None = ""
    """System message of the chat prompt ("" = an explicit empty one; None = the template's default)."""
    soft_position: str = "before"
    """Where the soft prompt sits in the user message: ``before`` or ``after`` the question."""

    def __post_init__(self) -> None:
        if not isinstance(self.hidden_size, int) or isinstance(self.hidden_size, bool) or self.hidden_size <= 0:
            raise CheckpointError(f"llm.hidden_size must be a positive integer, got {self.hidden_size!r}")
        if self.soft_position not in SOFT_POSITIONS:
            raise CheckpointError(f"llm.soft_position must be one of {SOFT_POSITIONS}, got {self.soft_position!r}")

    @property
    def label(self) -> str:
        """A name for messages: the upstream id when known."""
        return self.origin or self.name_or_path

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "LLMRecord":
        """From a saved ``config.json`` entry; unknown keys are ignored, the prompt fields default as trained."""
        if not isinstance(data, dict):
            raise CheckpointError(f"the 'llm' entry must be an object, got {type(data).__name__}")
        missing = [k for k in ("name_or_path", "hidden_size", "embed_rms") if k not in data]
        if missing:
            raise CheckpointError(f"the 'llm' entry lacks {missing}")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
