"""`trmpp` encoder: Trm++ — a modern causal Transformer (RoPE, RMSNorm, SwiGLU, no biases).

The "Transformer++" recipe of recent LLMs applied to event sequences, as in UQABench's
encoder comparison: pre-RMSNorm blocks, rotary position embeddings on queries and keys
(positions counted from the first real event, so only relative order matters), and a SwiGLU
feed-forward of width ≈ 8/3·d. Event tokens come from the shared :class:`EventEmbedding`
(one position row only: order comes from RoPE). Attention is causal and ignores padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder
from user_embed.encoders.sasrec import causal_attention_mask, positions_from_start
from user_embed.encoders.sequence import EventEmbedding
from user_embed.errors import ConfigError


def rotary(x: torch.Tensor, positions: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotate ``x`` (B, H, L, d_h) by angles ``positions`` (B, L) × frequencies (rotate-half RoPE)."""
    half = x.shape[-1] // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) / half)  # (d_h/2,)
    angles = positions.to(torch.float32)[:, None, :, None] * freqs  # (B, 1, L, d_h/2)
    cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SwiGLU(nn.Module):
    """w2(silu(w1 x) ⊙ w3 x) with hidden width ≈ 8/3·d rounded up to a multiple of 16."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        hidden = -(-int(8 * dim / 3) // 16) * 16
        self.w1, self.w3 = nn.Linear(dim, hidden, bias=False), nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(self.drop(F.silu(self.w1(x)) * self.w3(x)))


class TrmppBlock(nn.Module):
    """RMSNorm → causal attention with RoPE → residual; RMSNorm → SwiGLU → residual."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.attn_norm, self.ff_norm = nn.RMSNorm(dim), nn.RMSNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.ff = SwiGLU(dim, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        q, k, v = self.qkv(self.attn_norm(x)).view(batch, length, 3, self.heads, dim // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, d_h)
        q, k = rotary(q, positions), rotary(k, positions)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                  dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.out(attended.transpose(1, 2).reshape(batch, length, dim)))  # (B, L, d)
        return x + self.drop(self.ff(self.ff_norm(x)))


@register_encoder("trmpp")
class TrmppEncoder(SourceEncoder):
    """Causal Trm++ (RoPE, RMSNorm, SwiGLU) over event tokens → (B, L, d) states, one per event."""

    kind = "trmpp"
    reads = frozenset({"events"})
    causal = True

    def __init__(self, num_items: int, num_categories: int, dim: int = 64, layers: int = 2, heads: int = 2,
                 max_len: int = 50, dropout: float = 0.1):
        super().__init__()
        if (dim // heads) % 2:
            raise ConfigError(f"trmpp: head width dim/heads = {dim // heads} must be even for rotary embeddings")
        self.dim, self.max_len = dim, max_len
        self.embed = EventEmbedding(num_items, num_categories, dim, max_len=1, dropout=dropout)
        self.blocks = nn.ModuleList(TrmppBlock(dim, heads, dropout) for _ in range(layers))
        self.out_norm = nn.RMSNorm(dim)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "TrmppEncoder":
        return cls(spec.num_items, spec.num_categories, config.dim, config.layers, config.heads,
                   config.max_len, config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        inputs = inputs.tail(self.max_len)
        mask = inputs.mask  # (B, L) bool
        x = self.embed(inputs)  # (B, L, d)
        attn_mask, positions = causal_attention_mask(mask), positions_from_start(mask)
        for block in self.blocks:
            x = block(x, attn_mask, positions)
        x = self.out_norm(x) * mask.unsqueeze(-1)
        return EncoderOutput(tokens=x, mask=mask)
