"""`hstu` encoder: HSTU-style (Zhai et al. 2024) — pointwise-normalised causal attention.

Per layer, on X normalised by LayerNorm::

    U, V, Q, K = split(silu(f1(X)))
    A = silu(Q Kᵀ + rab_pos + rab_time) / max_len        (no softmax: pointwise, causal, padding → 0)
    X = X + f2(LayerNorm(A V) ⊙ U)

``rab_pos`` is a learned per-head bias of the relative position i − j (counted from the first real
event), ``rab_time`` a learned per-head bias of the log2-bucketed time between events i and j.
The inputs carry each event's log2-bucketed hours to the prediction time (``gaps``), not raw
timestamps, so the time between two events is approximated from their bucket midpoints —
coarse, but causal and free of padding effects. Plain PyTorch: no fbgemm/Triton kernels, so it
runs on CPU (O(L²) memory per head, like SASRec).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from user_embed.config import SourceConfig
from user_embed.data.spec import GAP_BUCKETS, DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder
from user_embed.encoders.sasrec import positions_from_start
from user_embed.encoders.sequence import EventEmbedding


def relative_time_buckets(gaps: torch.Tensor) -> torch.Tensor:
    """gaps (B, L) log2-hour buckets to the prediction time → (B, L, L) log2 bucket of |t_i − t_j| hours."""
    hours = torch.where(gaps > 0, torch.exp2(gaps.float() + 0.5) - 1.0, torch.zeros_like(gaps, dtype=torch.float32))
    between = (hours[:, :, None] - hours[:, None, :]).abs()  # (B, L, L)
    return torch.floor(torch.log2(between + 1.0)).long().clamp(0, GAP_BUCKETS - 1)


class HSTULayer(nn.Module):
    """One HSTU layer: gated pointwise attention with relative position/time biases, residual."""

    def __init__(self, dim: int, heads: int, max_len: int, dropout: float):
        super().__init__()
        self.heads, self.max_len = heads, max_len
        self.in_norm = nn.LayerNorm(dim)
        self.uvqk = nn.Linear(dim, 4 * dim)
        self.attn_norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)
        self.position_bias = nn.Embedding(max_len, heads)
        self.time_bias = nn.Embedding(GAP_BUCKETS, heads)
        nn.init.zeros_(self.position_bias.weight)
        nn.init.zeros_(self.time_bias.weight)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor, relative_position: torch.Tensor,
                relative_time: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        u, v, q, k = F.silu(self.uvqk(self.in_norm(x))).view(batch, length, 4, self.heads, dim // self.heads).unbind(2)
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, d_h)
        scores = q @ k.transpose(-1, -2)  # (B, H, L, L)
        bias = self.position_bias(relative_position) + self.time_bias(relative_time)  # (B, L, L, H)
        weights = F.silu(scores + bias.permute(0, 3, 1, 2)) / self.max_len  # pointwise, not softmax
        weights = self.drop(weights * allowed)  # causal and padding → 0
        attended = (weights @ v).transpose(1, 2).reshape(batch, length, dim)  # (B, L, d)
        return x + self.out(self.drop(self.attn_norm(attended) * u.reshape(batch, length, dim)))


@register_encoder("hstu")
class HSTUEncoder(SourceEncoder):
    """Causal HSTU-style stack over event tokens → (B, L, d) states, one per event."""

    kind = "hstu"
    reads = frozenset({"events"})
    causal = True

    def __init__(self, num_items: int, num_categories: int, dim: int = 64, layers: int = 2, heads: int = 2,
                 max_len: int = 50, dropout: float = 0.1):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.embed = EventEmbedding(num_items, num_categories, dim, max_len=1, dropout=dropout)
        self.layers = nn.ModuleList(HSTULayer(dim, heads, max_len, dropout) for _ in range(layers))
        self.out_norm = nn.LayerNorm(dim)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "HSTUEncoder":
        return cls(spec.num_items, spec.num_categories, config.dim, config.layers, config.heads,
                   config.max_len, config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        inputs = inputs.tail(self.max_len)
        mask = inputs.mask  # (B, L) bool
        length = mask.shape[1]
        x = self.embed(inputs)  # (B, L, d)
        causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
        allowed = (causal & mask[:, :, None] & mask[:, None, :]).unsqueeze(1).to(x.dtype)  # (B, 1, L, L)
        positions = positions_from_start(mask)  # (B, L)
        relative_position = (positions[:, :, None] - positions[:, None, :]).clamp(0, self.max_len - 1)  # (B, L, L)
        gaps = inputs.gaps if inputs.gaps is not None else torch.zeros_like(positions)
        relative_time = relative_time_buckets(gaps)  # (B, L, L)
        for layer in self.layers:
            x = layer(x, allowed, relative_position, relative_time)
        x = self.out_norm(x) * mask.unsqueeze(-1)
        return EncoderOutput(tokens=x, mask=mask)
