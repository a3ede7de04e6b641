"""`tabular` encoder: categorical and numeric profile fields (age, gender, occupation …) → one token each."""

from __future__ import annotations

import torch
from torch import nn

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder


@register_encoder("tabular")
class TabularEncoder(SourceEncoder):
    """Field token = value embedding (categorical) or value·w + b (numeric) + a field embedding → (B, F+G, d)."""

    kind = "tabular"
    reads = frozenset({"profile"})

    def __init__(self, cat_vocab_sizes: list[int], num_fields: int, dim: int = 128, dropout: float = 0.1):
        super().__init__()
        self.dim = dim
        self.categorical = nn.ModuleList(nn.Embedding(size + 1, dim, padding_idx=0) for size in cat_vocab_sizes)
        self.numeric = nn.Linear(1, dim)
        self.missing_numeric = nn.Parameter(torch.zeros(dim))
        self.field = nn.Embedding(max(1, len(cat_vocab_sizes) + num_fields), dim)
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.num_cat, self.num_num = len(cat_vocab_sizes), num_fields
        for emb in [*self.categorical, self.field]:
            nn.init.normal_(emb.weight, std=0.02)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "TabularEncoder":
        sizes = [len(v) for v in spec.profile_cat_fields.values()]
        return cls(sizes, len(spec.profile_num_fields), config.dim, config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        batch = inputs.batch_size
        tokens, masks = [], []
        if self.num_cat:
            cat = inputs.profile_cat  # (B, F)
            tokens.append(torch.stack([emb(cat[:, i]) for i, emb in enumerate(self.categorical)], 1))  # (B, F, d)
            masks.append(cat > 0)
        if self.num_num:
            num = inputs.profile_num.unsqueeze(-1)  # (B, G, 1)
            present = inputs.profile_num_mask.unsqueeze(-1).to(num.dtype)  # (B, G, 1)
            tokens.append(present * self.numeric(num) + (1 - present) * self.missing_numeric)  # (B, G, d)
            masks.append(inputs.profile_num_mask)
        if not tokens:  # no profile fields in the data: one empty token
            device = self.field.weight.device
            return EncoderOutput(torch.zeros(batch, 1, self.dim, device=device),
                                 torch.zeros(batch, 1, dtype=torch.bool, device=device))
        x = torch.cat(tokens, 1)  # (B, F+G, d)
        x = x + self.field.weight[: x.shape[1]]
        return EncoderOutput(tokens=self.dropout(self.norm(x)), mask=torch.cat(masks, 1))
