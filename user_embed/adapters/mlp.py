"""`mlp` adapter: masked mean of all source tokens → MLP → K tokens (K=1 is the UQABench/E2P baseline).

Instruction-aware: the projected question embedding is concatenated to the pooled vector before the MLP.
"""

from __future__ import annotations

import torch
from torch import nn

from user_embed.adapters.base import BaseAdapter
from user_embed.adapters.registry import register_adapter
from user_embed.config import AdapterConfig
from user_embed.named_categories import Pointer


@register_adapter("mlp")
class MLPAdapter(BaseAdapter):
    """pooled (B, D) [+ question (B, D)] → MLP → (B, K·d_llm) → K soft tokens (B, K, d_llm)."""

    kind = "mlp"

    def __init__(self, source_dims: dict[str, int], llm_dim: int, llm_embed_rms: float, num_tokens: int = 8,
                 dim: int = 256, instruction_aware: bool = True, question_dim: int | None = None,
                 user_dim: int = 256, dropout: float = 0.0):
        super().__init__(source_dims, llm_dim, num_tokens, dim, instruction_aware, question_dim)
        in_dim = dim * (2 if instruction_aware else 1)
        self.mlp = nn.Sequential(nn.Linear(in_dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
        self.to_llm = nn.Linear(dim, num_tokens * llm_dim)
        self._build_output(llm_embed_rms, user_dim)

    @classmethod
    def from_config(cls, config: AdapterConfig, source_dims: dict[str, int], llm_dim: int,
                    llm_embed_rms: float) -> "MLPAdapter":
        return cls(source_dims, llm_dim, llm_embed_rms, config.num_tokens, config.dim, config.instruction_aware,
                   llm_dim, config.user_dim, config.dropout)

    def soft_prompt(self, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor,
                    cond: torch.Tensor | None, question_tokens: torch.Tensor | None,
                    question_mask: torch.Tensor | None, pointer: Pointer | None) -> torch.Tensor:
        hidden = pooled if cond is None else torch.cat([pooled, cond], -1)  # (B, D or 2D)
        soft = self.to_llm(self.mlp(hidden)).view(-1, self.num_tokens, self.llm_dim)  # (B, K, d_llm)
        return self.scale_output(soft)  # LLM embedding scale
