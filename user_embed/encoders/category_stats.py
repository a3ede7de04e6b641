"""`category_stats` encoder: one token per item category, carrying how often (and how well rated) that
category appears in the user's recent windows.

A frozen LLM cannot count through a learned sequence encoder after a few hundred steps; explicit
category statistics give the adapter the numbers that genre questions ask about ("most frequent
in the last 18", "how many of the last 10", "more or less frequent lately"). Per category c:

* the fraction of events with c in each recency window (last 1, 5, 10, 20, … ``max_len`` events),
  and its gap to the window's most frequent category (0 = c is the top one);
* the fraction in the older and in the newer half of the history;
* the mean (standardised) value of c's events and whether c was seen at all.

Token_c = embedding(c) + MLP(features_c), plus one summary token (history length, value mean and
spread): ``(B, 1 + num_categories, d)``. Items without categories (e.g. LaMP-3's reviews) leave the summary
token alone, ``(B, 1, d)``: a user's rating mean and spread. Reads ``categories``, ``values``, ``has_value``
and ``mask``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder
from user_embed.errors import ConfigError

DEFAULT_WINDOWS = (1, 5, 10, 20)


def recency_windows(max_len: int) -> tuple[int, ...]:
    """The default windows below ``max_len``, then ``max_len`` itself (the whole read history)."""
    return tuple(w for w in DEFAULT_WINDOWS if w < max_len) + (max_len,)


def category_features(inputs: SourceInputs, num_categories: int, windows: tuple[int, ...]) -> torch.Tensor:
    """(B, L) right-aligned histories → (B, C, F) statistics per real category (index 0 dropped)."""
    mask = inputs.mask  # (B, L) bool
    dtype = torch.float32
    onehot = F.one_hot(inputs.categories, num_categories).amax(-2)[..., 1:].to(dtype)  # (B, L, C)
    onehot = onehot * mask.unsqueeze(-1)
    real = mask.to(dtype)  # (B, L)
    recency = (mask.long().flip(-1).cumsum(-1).flip(-1) - 1).clamp(min=0)  # (B, L): 0 = most recent event
    columns = []
    for w in windows:
        in_window = real * (recency < w)  # (B, L)
        frac = torch.einsum("bl,blc->bc", in_window, onehot) / in_window.sum(-1, keepdim=True).clamp(min=1)  # (B, C)
        columns += [frac, frac - frac.amax(-1, keepdim=True)]
    length = real.sum(-1, keepdim=True)  # (B, 1)
    newer = real * (recency < torch.ceil(length / 2))  # (B, L): the newer half
    for half in (real - newer, newer):
        columns.append(torch.einsum("bl,blc->bc", half, onehot) / half.sum(-1, keepdim=True).clamp(min=1))
    valued = onehot * (inputs.has_value.to(dtype) * real).unsqueeze(-1)  # (B, L, C)
    count = valued.sum(1)  # (B, C)
    columns.append(torch.einsum("bl,blc->bc", inputs.values.to(dtype), valued) / count.clamp(min=1))
    columns.append((onehot.sum(1) > 0).to(dtype))
    return torch.stack(columns, -1)  # (B, C, F)


def summary_features(inputs: SourceInputs, max_len: int) -> torch.Tensor:
    """(B, 4): log history length (scaled), share of events with a value, value mean and std."""
    real = inputs.mask.float()  # (B, L)
    valued = real * inputs.has_value.float()
    n = valued.sum(-1).clamp(min=1)  # (B,)
    mean = (inputs.values.float() * valued).sum(-1) / n
    var = (((inputs.values.float() - mean[:, None]) ** 2) * valued).sum(-1) / n
    length = real.sum(-1)
    return torch.stack([torch.log1p(length) / math.log1p(max_len), valued.sum(-1) / length.clamp(min=1),
                        mean, var.sqrt()], -1)


@register_encoder("category_stats")
class CategoryStatsEncoder(SourceEncoder):
    """Category-frequency tokens over recency windows (+ one summary token) → (B, C, d)."""

    kind = "category_stats"
    reads = frozenset({"events"})

    def __init__(self, num_categories: int, dim: int = 64, max_len: int = 50, dropout: float = 0.1):
        super().__init__()
        if num_categories < 1:
            raise ConfigError(f"source kind 'category_stats': num_categories must be >= 1 (index 0 = none), "
                              f"got {num_categories}")
        self.dim, self.max_len, self.num_categories = dim, max_len, num_categories
        self.windows = recency_windows(max_len)
        num_features = 2 * len(self.windows) + 4
        self.category = nn.Parameter(torch.randn(num_categories - 1, dim) * 0.02)  # (C, d), index 0 = none
        self.features = nn.Sequential(nn.Linear(num_features, dim), nn.GELU(), nn.Linear(dim, dim))
        self.summary = nn.Sequential(nn.Linear(4, dim), nn.GELU(), nn.Linear(dim, dim))
        self.norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "CategoryStatsEncoder":
        return cls(spec.num_categories, config.dim, config.max_len, config.dropout)

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        summary = self.summary(summary_features(inputs, self.max_len)).unsqueeze(1)  # (B, 1, d)
        if self.num_categories > 1:  # items have categories: one token each after the summary
            stats = category_features(inputs, self.num_categories, self.windows)  # (B, C, F)
            summary = torch.cat([summary, self.category + self.features(stats)], 1)  # (B, 1 + C, d)
        tokens = self.dropout(self.norm(summary))
        return EncoderOutput(tokens, torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device))
