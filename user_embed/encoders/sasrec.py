"""`sasrec` encoder: SASRec (Kang & McAuley 2018) — causal self-attention over a user's events.

Event token = item + categories + value + time gap (the shared :class:`EventEmbedding`, built with a
single position row so it carries no order information) + a learned absolute position counted
from the first real event of the window. Each position attends only to itself and earlier real
events, so a state never depends on later events and left padding does not change a user's
states. Blocks are pre-LN with SASRec's point-wise feed-forward (d → d, ReLU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder
from user_embed.encoders.sequence import EventEmbedding


def causal_attention_mask(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) real-event mask → (B, 1, L, L) bool, True = query i may attend key j (j ≤ i, j real).

    Padding queries attend to themselves only, so no row is empty (no NaN); their outputs are discarded.
    """
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()  # (L, L)
    allowed = causal & mask[:, None, None, :]  # (B, 1, L, L)
    self_only = torch.eye(length, dtype=torch.bool, device=mask.device) & ~mask[:, None, :, None]
    return allowed | self_only


def positions_from_start(mask: torch.Tensor) -> torch.Tensor:
    """(B, L) bool → (B, L) long: 0 for the first real event of each row, counting forward (causal)."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


class SASRecBlock(nn.Module):
    """Pre-LN causal multi-head self-attention + point-wise feed-forward, both residual."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attn_norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff_norm = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, length, 3, self.heads, dim // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, d_h)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(batch, length, dim)))  # (B, L, d)
        return x + self.drop(self.ff(self.ff_norm(x)))


@register_encoder("sasrec")
class SASRecEncoder(SourceEncoder):
    """Causal Transformer (SASRec) over event tokens → (B, L, d) states, one per event."""

    kind = "sasrec"
    reads = frozenset({"events"})
    causal = True

    def __init__(self, num_items: int, num_categories: int, dim: int = 64, layers: int = 2, heads: int = 2,
                 max_len: int = 50, dropout: float = 0.1):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.embed = EventEmbedding(num_items, num_categories, dim, max_len=1, dropout=0.0)  # no order info
        self.position = nn.Embedding(max_len, dim)
        nn.init.normal_(self.position.weight, std=0.02)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(SASRecBlock(dim, heads, dropout) for _ in range(layers))
        self.out_norm = nn.LayerNorm(dim)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "SASRecEncoder":
        return cls(spec.num_items, spec.num_categories, config.dim, config.layers, config.heads,
                   config.max_len, config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        inputs = inputs.tail(self.max_len)
        mask = inputs.mask  # (B, L) bool
        x = self.embed(inputs) + self.position(positions_from_start(mask))  # (B, L, d)
        x = self.drop(x)
        attn_mask = causal_attention_mask(mask)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, attn_mask)
        x = self.out_norm(x) * mask.unsqueeze(-1)
        return EncoderOutput(tokens=x, mask=mask)
