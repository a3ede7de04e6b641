"""`pplug` adapter: the PPlug baseline (Liu et al., 2024).

Input-aware attention (the question against each source token, e.g. each event's frozen text vector from
the ``text_events`` encoder) gives one user vector → MLP → one user token, followed by one learned,
user-independent instruction token: always K = 2 soft tokens, and always instruction-aware
(``AdapterConfig`` checks both).
"""

from __future__ import annotations

import torch
from torch import nn

from user_embed.adapters.base import BaseAdapter
from user_embed.adapters.registry import register_adapter
from user_embed.config import AdapterConfig
from user_embed.named_categories import Pointer


@register_adapter("pplug")
class PPlugAdapter(BaseAdapter):
    """question-weighted mean of the source tokens (B, D) → MLP → user token; + a shared instruction token."""

    kind = "pplug"

    def __init__(self, source_dims: dict[str, int], llm_dim: int, llm_embed_rms: float, dim: int = 256,
                 question_dim: int | None = None, user_dim: int = 256):
        super().__init__(source_dims, llm_dim, 2, dim, True, question_dim)
        self.to_llm = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, llm_dim))
        self.instruction = nn.Parameter(torch.randn(llm_dim))  # (d_llm,), brought to scale by out_norm
        self._build_output(llm_embed_rms, user_dim)

    @classmethod
    def from_config(cls, config: AdapterConfig, source_dims: dict[str, int], llm_dim: int,
                    llm_embed_rms: float) -> "PPlugAdapter":
        return cls(source_dims, llm_dim, llm_embed_rms, config.dim, llm_dim, config.user_dim)

    def soft_prompt(self, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor,
                    cond: torch.Tensor | None, question_tokens: torch.Tensor | None,
                    question_mask: torch.Tensor | None, pointer: Pointer | None) -> torch.Tensor:
        scores = torch.einsum("bnd,bd->bn", tokens, cond) / tokens.shape[-1] ** 0.5  # (B, N)
        weights = scores.masked_fill(~mask, -1e9).softmax(-1) * mask  # users with no tokens: all zero
        user = torch.einsum("bn,bnd->bd", weights, tokens)  # (B, D)
        instruction = self.instruction.expand(user.shape[0], -1)  # (B, d_llm)
        soft = torch.stack([self.to_llm(user), instruction], 1)  # (B, 2, d_llm)
        return self.scale_output(soft)  # LLM embedding scale
