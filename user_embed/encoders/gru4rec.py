"""`gru4rec` encoder: GRU4Rec (Hidalgo et al. 2016) — a recurrent network over a user's events.

Event token = item + categories + value + time gap (the shared :class:`EventEmbedding`, one
position row only: order comes from the recurrence). Histories arrive left-padded; the GRU
runs over the real events only (packed sequences), so padding never enters the hidden state
and each state depends only on the events up to it (causal).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder
from user_embed.encoders.sequence import EventEmbedding


@register_encoder("gru4rec")
class GRU4RecEncoder(SourceEncoder):
    """Multi-layer GRU over event tokens → (B, L, d) states, one per event (``heads`` is unused)."""

    kind = "gru4rec"
    reads = frozenset({"events"})
    causal = True

    def __init__(self, num_items: int, num_categories: int, dim: int = 64, layers: int = 1, max_len: int = 50,
                 dropout: float = 0.1):
        super().__init__()
        self.dim, self.max_len = dim, max_len
        self.embed = EventEmbedding(num_items, num_categories, dim, max_len=1, dropout=dropout)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out_norm = nn.LayerNorm(dim)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "GRU4RecEncoder":
        return cls(spec.num_items, spec.num_categories, config.dim, config.layers, config.max_len, config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        inputs = inputs.tail(self.max_len)
        mask = inputs.mask  # (B, L) bool, real events right-aligned
        x = self.embed(inputs)  # (B, L, d)
        batch, length, dim = x.shape
        # move real events to the front (left-aligned, time order kept) so they can be packed
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # (B, L)
        gather = order.unsqueeze(-1).expand(-1, -1, dim)  # (B, L, d)
        lengths = mask.sum(-1).clamp(min=1).cpu()  # (B,); empty rows run one step and are masked below
        packed = pack_padded_sequence(torch.gather(x, 1, gather), lengths, batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = pad_packed_sequence(states, batch_first=True, total_length=length)  # (B, L, d) left-aligned
        states = torch.zeros_like(states).scatter(1, gather, states)  # back to right-aligned positions
        tokens = self.out_norm(states) * mask.unsqueeze(-1)
        return EncoderOutput(tokens=tokens, mask=mask)
