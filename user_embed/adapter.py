"""Adapter: fuse all sources' tokens into K soft-prompt vectors (B, K, d_llm) and a pooled user vector.

Kinds:
* ``mlp`` — masked mean of all source tokens → MLP → K tokens (K=1 is the UQABench/E2P baseline).
* ``resampler`` — K learned queries cross-attend over all source tokens (Perceiver/Q-Former style).
* ``pplug`` — the PPlug baseline (Liu et al., 2024): input-aware attention (the question against each source
  token, e.g. each event's frozen text vector from the ``text_events`` encoder) gives one user vector → MLP →
  one user token, followed by one learned, user-independent instruction token.

Instruction-aware (``question`` given): the question embedding is added to the queries (resampler)
or concatenated to the pooled vector (mlp), so one user yields question-specific soft prompts. With
``question_tokens`` the resampler's queries also cross-attend to the question's token embeddings.

Category pointer (``pointer`` given, resampler): each soft token adds the attention-weighted mix of the
LLM's category-name embeddings, attention from its final query over one key per category (see
``user_embed/named_categories.py``).

Output scale: soft tokens are layer-normalised and multiplied by a learnable scale initialised
to the RMS of the LLM's token embeddings, so they start at the LLM's embedding scale (small,
random, never zero: a zero soft prompt gave NaN gradients).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from user_embed.config import AdapterConfig
from user_embed.encoders.base import EncoderOutput
from user_embed.named_categories import Pointer


@dataclass
class AdapterOutput:
    soft_prompt: torch.Tensor  # (B, K, d_llm)
    user_vector: torch.Tensor  # (B, user_dim), question-independent


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: (B, N, d), mask: (B, N) bool → (B, d); rows without tokens give zeros."""
    weights = mask.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


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
        kv = self.norm_kv(tokens)  # (B, N, D)
        q = self.norm_q(queries)  # (B, K, D)
        queries = queries + self.cross(q, kv, kv, key_padding_mask=key_padding, need_weights=False)[0]
        q = self.norm_self(queries)
        queries = queries + self.self_attn(q, q, q, need_weights=False)[0]
        return queries + self.mlp(self.norm_mlp(queries))  # (B, K, D)


class Adapter(nn.Module):
    def __init__(self, source_dims: dict[str, int], llm_dim: int, llm_embed_rms: float, kind: str = "resampler",
                 num_tokens: int = 8, dim: int = 256, layers: int = 2, heads: int = 4,
                 instruction_aware: bool = True, question_dim: int | None = None, user_dim: int = 256,
                 dropout: float = 0.0, question_tokens: bool = False, category_pointer: bool = False):
        super().__init__()
        self.kind, self.num_tokens, self.llm_dim = kind, num_tokens, llm_dim
        self.instruction_aware = instruction_aware
        self.source_names = list(source_dims)
        self.source_proj = nn.ModuleDict({name: nn.Linear(d, dim) for name, d in source_dims.items()})
        self.source_type = nn.Parameter(torch.randn(len(source_dims), dim) * 0.02)
        self.question_proj = nn.Linear(question_dim or llm_dim, dim) if instruction_aware else None
        self.question_tokens = question_tokens
        self.category_pointer = category_pointer and kind == "resampler"
        if question_tokens:  # question words as extra keys, marked by their own type embedding
            self.question_token_proj = nn.Linear(question_dim or llm_dim, dim)
            self.question_type = nn.Parameter(torch.randn(dim) * 0.02)
        if kind == "pplug":
            self.to_llm = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, llm_dim))
            self.instruction = nn.Parameter(torch.randn(llm_dim))  # (d_llm,), brought to scale by out_norm
        elif kind == "resampler":
            self.queries = nn.Parameter(torch.randn(num_tokens, dim) * 0.02)
            self.blocks = nn.ModuleList(ResamplerBlock(dim, heads, dropout) for _ in range(layers))
            self.to_llm = nn.Linear(dim, llm_dim)
            if category_pointer:
                self.pointer_query = nn.Linear(dim, dim)
                self.pointer_gate = nn.Parameter(torch.tensor(1.0))
                self.mention_type = nn.Parameter(torch.randn(dim) * 0.02)  # marks categories the question names
        else:
            in_dim = dim * (2 if instruction_aware else 1)
            self.mlp = nn.Sequential(nn.Linear(in_dim, 2 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * dim, dim))
            self.to_llm = nn.Linear(dim, num_tokens * llm_dim)
        self.out_norm = nn.LayerNorm(llm_dim, elementwise_affine=False)
        self.out_scale = nn.Parameter(torch.tensor(float(llm_embed_rms)))
        self.user_head = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, user_dim))

    @classmethod
    def from_config(cls, config: AdapterConfig, source_dims: dict[str, int], llm_dim: int,
                    llm_embed_rms: float) -> "Adapter":
        return cls(source_dims, llm_dim, llm_embed_rms, config.kind, config.num_tokens, config.dim, config.layers,
                   config.heads, config.instruction_aware, llm_dim, config.user_dim, config.dropout,
                   config.question_tokens, config.category_pointer)

    def fuse(self, sources: dict[str, EncoderOutput]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """All sources' tokens in the adapter width: tokens (B, N, D), mask (B, N), pooled (B, D)."""
        projected, masks = [], []
        for i, name in enumerate(self.source_names):
            out = sources[name]
            projected.append(self.source_proj[name](out.tokens) + self.source_type[i])  # (B, n_s, D)
            masks.append(out.mask)
        tokens = torch.cat(projected, 1)  # (B, N, D)
        mask = torch.cat(masks, 1)  # (B, N)
        return tokens, mask, masked_mean(tokens, mask)

    def user_vector(self, sources: dict[str, EncoderOutput]) -> torch.Tensor:
        """The question-independent pooled user vector (B, user_dim)."""
        return self.user_head(self.fuse(sources)[2])

    def forward(self, sources: dict[str, EncoderOutput], question: torch.Tensor | None = None,
                question_tokens: torch.Tensor | None = None, question_mask: torch.Tensor | None = None,
                pointer: Pointer | None = None) -> AdapterOutput:
        """question: (B, d_q) mean question embedding; question_tokens: (B, Tq, d_q) with mask (B, Tq);
        pointer: category keys, the name embeddings they point at and the categories the question names."""
        tokens, mask, pooled = self.fuse(sources)  # (B, N, D), (B, N), (B, D)
        cond, pointed = None, None
        if self.instruction_aware:
            if question is None:
                raise ValueError("this adapter is instruction-aware: pass the question embedding")
            cond = self.question_proj(question)  # (B, D)
        if self.kind == "resampler":
            queries = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)  # (B, K, D)
            if cond is not None:
                queries = queries + cond.unsqueeze(1)
            if self.question_tokens:
                if question_tokens is None or question_mask is None:
                    raise ValueError("this adapter reads question tokens: pass question_tokens and question_mask")
                words = self.question_token_proj(question_tokens) + self.question_type  # (B, Tq, D)
                tokens, mask = torch.cat([tokens, words], 1), torch.cat([mask, question_mask.bool()], 1)
            if self.category_pointer and pointer is not None and pointer.mentions.shape[1]:
                named, named_mask = pointer.mentioned_keys()  # (B, M, D), (B, M)
                tokens, mask = torch.cat([tokens, named + self.mention_type], 1), torch.cat([mask, named_mask], 1)
            key_padding = ~mask & mask.any(-1, keepdim=True)  # users with no tokens attend to padding, not NaN
            for block in self.blocks:
                queries = block(queries, tokens, key_padding)
            soft = self.to_llm(queries)  # (B, K, d_llm)
            if self.category_pointer:
                pointed = self._point(queries, pointer)  # (B, K, d_llm)
        elif self.kind == "pplug":
            scores = torch.einsum("bnd,bd->bn", tokens, cond) / tokens.shape[-1] ** 0.5  # (B, N)
            weights = scores.masked_fill(~mask, -1e9).softmax(-1) * mask  # users with no tokens: all zero
            user = torch.einsum("bn,bnd->bd", weights, tokens)  # (B, D)
            instruction = self.instruction.expand(user.shape[0], -1)  # (B, d_llm)
            soft = torch.stack([self.to_llm(user), instruction], 1)  # (B, 2, d_llm)
        else:
            hidden = pooled if cond is None else torch.cat([pooled, cond], -1)  # (B, D or 2D)
            soft = self.to_llm(self.mlp(hidden)).view(-1, self.num_tokens, self.llm_dim)  # (B, K, d_llm)
        soft = self.out_norm(soft) * self.out_scale  # LLM embedding scale
        if pointed is not None:
            soft = soft + pointed
        return AdapterOutput(soft_prompt=soft, user_vector=self.user_head(pooled))

    def _point(self, queries: torch.Tensor, pointer: Pointer | None) -> torch.Tensor:
        """(B, K, D) queries → (B, K, d_llm) gated mix of category-name embeddings (named ones, if any)."""
        if pointer is None:
            raise ValueError("this adapter has a category pointer: pass the category keys and names")
        scale = pointer.keys.shape[-1] ** -0.5
        logits = torch.einsum("bkd,bcd->bkc", self.pointer_query(queries), pointer.keys) * scale  # (B, K, C)
        logits = logits.masked_fill(~pointer.allowed().unsqueeze(1), float("-inf"))
        return self.pointer_gate * logits.softmax(-1) @ pointer.names  # (B, K, d_llm)
