"""The server's limits and tuning knobs, one dataclass with a docstring per field."""

from __future__ import annotations

from dataclasses import dataclass

from user_embed.errors import UserError

#: Model ids the server lists in /v1/models and what each personalizes with (see docs/serving.md).
MODELS: dict[str, str] = {
    "user-embed": "soft prompt when the request names a user, else the plain LLM",
    "user-embed-soft": "the user's K soft-prompt vectors (needs `user`)",
    "user-embed-text": "the user's latest events written into the prompt (needs `user`)",
    "user-embed-none": "the plain LLM; `user` is ignored",
}


@dataclass
class ServeSettings:
    """How the server batches, caches and bounds requests."""

    backend: str = "hf"
    """Generation backend: ``hf`` (micro-batched in-process ``generate``) or ``vllm`` (needs vLLM)."""
    api_key: str | None = None
    """When set, every endpoint but /health needs ``Authorization: Bearer <api_key>``."""
    batch_window_ms: float = 10.0
    """How long the first request of a batch waits for others to join it."""
    max_batch_size: int = 8
    """Most requests generated together."""
    cache_size: int = 1024
    """Users whose question-independent encoding is kept (least recently used ones are dropped)."""
    history_events: int = 50
    """Events the ``text`` personalization writes into the prompt."""
    max_body_bytes: int = 1 << 20
    """Largest request body (413 above it)."""
    max_messages: int = 64
    """Most chat messages in one request."""
    max_message_chars: int = 16_000
    """Longest single message content, in characters."""
    max_total_chars: int = 32_000
    """Longest conversation, all message contents together, in characters."""
    max_tokens_limit: int = 1024
    """Largest ``max_tokens`` a request may ask for."""
    default_max_tokens: int = 128
    """``max_tokens`` when a request gives none."""
    max_events_per_request: int = 1000
    """Most events appended by one POST /v1/users/{id}/events."""
    events_dir: str | None = None
    """Folder of the append-only live events log (default: ``<data>/live_events``)."""

    def __post_init__(self) -> None:
        if self.backend not in ("hf", "vllm"):
            raise UserError(f"backend must be hf or vllm, got '{self.backend}'")
        for name in ("max_batch_size", "cache_size", "history_events", "max_body_bytes", "max_messages",
                     "max_message_chars", "max_total_chars", "max_tokens_limit", "default_max_tokens",
                     "max_events_per_request"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.batch_window_ms <= 10_000:
            raise UserError(f"batch_window_ms must be in [0, 10000], got {self.batch_window_ms}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise UserError("default_max_tokens must not exceed max_tokens_limit")
        if self.api_key is not None and not self.api_key.strip():
            raise UserError("api_key is empty")
