"""`resampler` adapter: K learned queries cross-attend over all source tokens (Perceiver/Q-Former style).

Instruction-aware: the projected question embedding is added to every query. With ``question_tokens`` the
queries also cross-attend to the question's token embeddings (extra keys next to the source tokens), so a
word of the question (a genre, an item) can pick what the soft prompt carries.

Category pointer (``category_pointer``, ``pointer`` given): each soft token adds the attention-weighted mix
of the LLM's category-name embeddings, attention from its final query over one key per category (see
``user_embed/named_categories.py``). The keys of the categories the question names are also read by the
queries, marked by a learned mention type embedding.
"""

from __future__ import annotations

import torch
from torch import nn

from user_embed.adapters.base import BaseAdapter
from user_embed.adapters.registry import register_adapter
from user_embed.config import AdapterConfig
from user_embed.named_categories import Pointer


class ResamplerBlock(nn.Module):
    """Queries cross-attend to the source tokens, then self-attend, then an MLP (all pre-LN, residual)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.cross = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_self = nn.LayerNorm(dim)
        self.self_attn = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, queries: torch.Tensor, tokens: torch.Tensor, key_padding: torch.Tensor) -> torch.Tensor:
        """queries (B, K, D), tokens (B, N, D), key_padding (B, N) bool (True = ignore) → (B, K, D)."""
        kv = self.norm_kv(tokens)  # (B, N, D)
        q = self.norm_q(queries)  # (B, K, D)
        queries = queries + self.cross(q, kv, kv, key_padding_mask=key_padding, need_weights=False)[0]
        q = self.norm_self(queries)
        queries = queries + self.self_attn(q, q, q, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))  # (B, K, D)


@register_adapter("resampler")
class ResamplerAdapter(BaseAdapter):
    """K queries (+ question) → ``layers`` × :class:`ResamplerBlock` over the source tokens → K soft tokens."""

    kind = "resampler"

    def __init__(self, source_dims: dict[str, int], llm_dim: int, llm_embed_rms: float, num_tokens: int = 8,
                 dim: int = 256, layers: int = 2, heads: int = 4, instruction_aware: bool = True,
                 question_dim: int | None = None, user_dim: int = 256, dropout: float = 0.0,
                 question_tokens: bool = False, category_pointer: bool = False):
        super().__init__(source_dims, llm_dim, num_tokens, dim, instruction_aware, question_dim, question_tokens)
        self.category_pointer = category_pointer
        self.queries = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)  # (K, D)
        self.blocks = nn.ModuleList(ResamplerBlock(dim, heads, dropout) for _ in range(layers))
        self.to_llm = nn.Linear(dim, llm_dim)
        if category_pointer:
            self.pointer_query = nn.Linear(dim, dim)
            self.pointer_gate = nn.Parameter(torch.tensor(1.0))
            self.mention_type = nn.Parameter(torch.randn(dim) * 0.02)  # (D,) marks categories the question names
        self._build_output(llm_embed_rms, user_dim)

    @classmethod
    def from_config(cls, config: AdapterConfig, source_dims: dict[str, int], llm_dim: int,
                    llm_embed_rms: float) -> "ResamplerAdapter":
        return cls(source_dims, llm_dim, llm_embed_rms, config.num_tokens, config.dim, config.layers, config.heads,
                   config.instruction_aware, llm_dim, config.user_dim, config.dropout, config.question_tokens,
                   config.category_pointer)

    def soft_prompt(self, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor,
                    cond: torch.Tensor | None, question_tokens: torch.Tensor | None,
                    question_mask: torch.Tensor | None, pointer: Pointer | None) -> torch.Tensor:
        queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, K, D)
        if cond is not None:
            queries = queries + cond.unsqueeze(1)
        if self.question_tokens:
            words, words_mask = self.question_words(question_tokens, question_mask)  # (B, Tq, D), (B, Tq)
            tokens, mask = torch.cat([tokens, words], 1), torch.cat([mask, words_mask], 1)
        if self.category_pointer and pointer is not None and pointer.mentions.shape[1]:
            named, named_mask = pointer.mentioned_keys()  # (B, M, D), (B, M)
            tokens, mask = torch.cat([tokens, named + self.mention_type], 1), torch.cat([mask, named_mask], 1)
        key_padding = ~mask & mask.any(-1, keepdim=True)  # users with no tokens attend to padding, not NaN
        for block in self.blocks:
            queries = block(queries, tokens, key_padding)  # (B, K, D)
        soft = self.scale_output(self.to_llm(queries))  # (B, K, d_llm) at the LLM embedding scale
        if self.category_pointer:
            soft = soft + self._point(queries, pointer)  # (B, K, d_llm)
        return soft

    def _point(self, queries: torch.Tensor, pointer: Pointer | None) -> torch.Tensor:
        """(B, K, D) queries → (B, K, d_llm) gated mix of category-name embeddings (named ones, if any)."""
        if pointer is None:
            raise ValueError("this adapter has a category pointer: pass the category keys and names")
        scale = pointer.keys.shape[-1] ** -0.5
        logits = torch.einsum("bkd,bcd->bkc", self.pointer_query(queries), pointer.keys) * scale  # (B, K, C)
        logits = logits.masked_fill(~pointer.allowed().unsqueeze(1), float("-inf"))
        return self.pointer_gate * logits.softmax(-1) @ pointer.names  # (B, K, d_llm)
