"""`sequence` encoder: a bidirectional Transformer over a user's event sequence.

Each event token = item-id embedding + mean of its category embeddings + value embedding
+ time-gap-to-cutoff embedding + recency position embedding. Histories longer than
``max_len`` are truncated (most recent kept) by the data pipeline, which reports it.
"""

from __future__ import annotations

import torch
from torch import nn

from user_embed.config import SourceConfig
from user_embed.data.spec import GAP_BUCKETS, DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder


class EventEmbedding(nn.Module):
    """Embeds events (item, categories, value, time gap, recency) into (B, L, d)."""

    def __init__(self, num_items: int, num_categories: int, dim: int, max_len: int, dropout: float):
        super().__init__()
        self.item = nn.Embedding(num_items, dim, padding_idx=0)
        self.category = nn.Embedding(num_categories, dim, padding_idx=0)
        self.value = nn.Linear(1, dim)
        self.no_value = nn.Parameter(torch.zeros(dim))
        self.gap = nn.Embedding(GAP_BUCKETS, dim)
        self.position = nn.Embedding(max_len, dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        for emb in (self.item, self.category, self.gap, self.position):
            nn.init.normal_(emb.weight, std=0.02)

    def forward(self, inputs: SourceInputs) -> torch.Tensor:
        items = inputs.items  # (B, L)
        x = self.item(items)  # (B, L, d)
        if inputs.categories is not None:
            cats = inputs.categories  # (B, L, C)
            count = (cats > 0).sum(-1, keepdim=True).clamp(min=1)  # (B, L, 1)
            x = x + self.category(cats).sum(-2) / count
        if inputs.values is not None:
            has = inputs.has_value.unsqueeze(-1).to(x.dtype)  # (B, L, 1)
            x = x + has * self.value(inputs.values.unsqueeze(-1).to(x.dtype)) + (1 - has) * self.no_value
        if inputs.gaps is not None:
            x = x + self.gap(inputs.gaps.clamp(0, GAP_BUCKETS - 1))
        # recency position: 0 = most recent real event, counted through the mask
        mask = inputs.mask.long()  # (B, L)
        recency = (mask.flip(-1).cumsum(-1).flip(-1) - 1).clamp(min=0)  # (B, L): 0 for the last real event
        x = x + self.position(recency.clamp(max=self.position.num_embeddings - 1))
        return self.dropout(self.norm(x))


@register_encoder("sequence")
class SequenceEncoder(SourceEncoder):
    """Transformer encoder (pre-LN, bidirectional) over event tokens → (B, L, d) states."""

    kind = "sequence"
    reads = frozenset({"events"})

    def __init__(self, num_items: int, num_categories: int, dim: int = 128, layers: int = 2, heads: int = 4,
                 max_len: int = 50, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.max_len = max_len
        self.embed = EventEmbedding(num_items, num_categories, dim, max_len, dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=4 * dim, dropout=dropout,
                                           batch_first=True, norm_first=True, activation="gelu")
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out_norm = nn.LayerNorm(dim)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "SequenceEncoder":
        return cls(spec.num_items, spec.num_categories, config.dim, config.layers, config.heads,
                   config.max_len, config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        mask = inputs.mask  # (B, L) bool
        x = self.embed(inputs)  # (B, L, d)
        # a user with no events still needs one attendable key: let padding attend when a row is empty
        key_padding = ~mask & mask.any(-1, keepdim=True)  # (B, L)
        x = self.transformer(x, src_key_padding_mask=key_padding)  # (B, L, d)
        x = self.out_norm(x) * mask.unsqueeze(-1)
        return EncoderOutput(tokens=x, mask=mask)
