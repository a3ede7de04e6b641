"""`text` encoder: items' texts through a frozen text encoder (cached vectors) + a trainable attention pooler.

The frozen vectors ``(num_items, d_text)`` are computed once per item (see
``user_embed.text_vectors``), kept as a buffer and saved with the embedder, so inference
needs no text model. ``num_tokens`` learned queries attend over the user's history vectors.
"""

from __future__ import annotations

import torch
from torch import nn

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder
from user_embed.errors import ConfigError


def item_text_vectors(config: SourceConfig, spec: DataSpec) -> torch.Tensor:
    """The frozen (num_items, d_text) vectors of ``config.text_encoder``; zeros of the right shape when the spec
    only records their size (a saved embedder: ``load_state_dict`` fills them)."""
    vectors = spec.item_vectors.get(config.text_encoder)
    if vectors is not None:
        return vectors
    if config.text_encoder not in spec.text_dims:
        raise ConfigError(f"source '{config.name}': no item text vectors for text encoder "
                          f"'{config.text_encoder}' (the data module computes them)")
    return torch.zeros(spec.num_items, spec.text_dims[config.text_encoder])


@register_encoder("text")
class TextEncoder(SourceEncoder):
    """Frozen item-text vectors → projection + recency → K-query attention pooling → (B, K, d)."""

    kind = "text"
    reads = frozenset({"events", "item_texts"})

    def __init__(self, item_vectors: torch.Tensor, dim: int = 128, num_tokens: int = 4, heads: int = 4,
                 max_len: int = 50, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.register_buffer("item_vectors", item_vectors.float().clone())  # (num_items, d_text), frozen
        self.project = nn.Sequential(nn.LayerNorm(item_vectors.shape[1]), nn.Linear(item_vectors.shape[1], dim))
        self.position = nn.Embedding(max_len, dim)
        self.queries = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
        self.attention = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        nn.init.normal_(self.position.weight, std=0.02)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "TextEncoder":
        return cls(item_text_vectors(config, spec), config.dim, config.num_tokens, config.heads, config.max_len,
                   config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        mask = inputs.mask  # (B, L)
        x = self.project(self.item_vectors[inputs.items])  # (B, L, d)
        recency = (mask.long().flip(-1).cumsum(-1).flip(-1) - 1).clamp(0, self.position.num_embeddings - 1)
        x = x + self.position(recency)
        queries = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1)  # (B, K, d)
        key_padding = ~mask & mask.any(-1, keepdim=True)  # empty histories attend to padding instead of NaN
        pooled, _ = self.attention(queries, x, x, key_padding_mask=key_padding, need_weights=False)  # (B, K, d)
        has_history = mask.any(-1, keepdim=True)  # (B, 1)
        tokens = self.norm(pooled) * has_history.unsqueeze(-1)
        return EncoderOutput(tokens=tokens, mask=has_history.expand(-1, tokens.shape[1]))
