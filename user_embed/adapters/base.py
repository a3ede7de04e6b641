"""What every adapter shares: source fusion, question conditioning, output scale and the pooled user vector.

An adapter fuses all sources' tokens into K soft-prompt vectors ``(B, K, d_llm)`` for the frozen LLM and
a pooled, question-independent user vector ``(B, user_dim)``. :class:`BaseAdapter` holds the parts every
kind uses; a kind (one file each: ``mlp``, ``resampler``, ``pplug``) adds its layers and implements
:meth:`BaseAdapter.soft_prompt`.

* Fusion: each source's tokens are projected to the adapter width ``D`` and marked by a learned source
  type embedding, then concatenated: tokens ``(B, N, D)`` with mask ``(B, N)``, and their masked mean.
* Instruction-aware (``question`` given): the question embedding is projected to ``D`` (``cond``, (B, D));
  each kind decides how it conditions on it, so one user yields question-specific soft prompts. With
  ``question_tokens`` the question's token embeddings are projected too (extra keys, marked by their own
  type embedding), for kinds that read them (the resampler).
* Output scale: soft tokens are layer-normalised and multiplied by a learnable scale initialised to the
  RMS of the LLM's token embeddings, so they start at the LLM's embedding scale (small, random, never
  zero: a zero soft prompt gave NaN gradients).
* User vector: the masked mean of the fused tokens → LayerNorm → Linear (``user_head``).

Parameter creation order is part of the format: saved embedders are loaded by parameter name, and a
seeded build must give the same initial weights. A subclass therefore calls ``super().__init__`` (source
and question inputs), creates its own layers, then calls :meth:`BaseAdapter._build_output` (output scale
and user head), in that order.
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
    """What an adapter returns for a batch of users."""

    soft_prompt: torch.Tensor  # (B, K, d_llm)
    user_vector: torch.Tensor  # (B, user_dim), question-independent


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """x: (B, N, d), mask: (B, N) bool → (B, d); rows without tokens give zeros."""
    weights = mask.unsqueeze(-1).to(x.dtype)  # (B, N, 1)
    return (x * weights).sum(1) / weights.sum(1).clamp(min=1.0)


class BaseAdapter(nn.Module):
    """Shared inputs (source projections, source types, question projections) and outputs (scale, user head).

    Subclasses set ``kind``, build their layers between ``super().__init__`` and ``_build_output`` (see the
    module docstring), offer ``from_config`` and implement :meth:`soft_prompt`.
    """

    kind: str = ""
    category_pointer: bool = False  # only the resampler points at category names

    def __init__(self, source_dims: dict[str, int], llm_dim: int, num_tokens: int = 8, dim: int = 256,
                 instruction_aware: bool = True, question_dim: int | None = None, question_tokens: bool = False):
        super().__init__()
        self.num_tokens, self.llm_dim, self.dim = num_tokens, llm_dim, dim
        self.instruction_aware = instruction_aware
        self.source_names = list(source_dims)
        self.source_proj = nn.ModuleDict({name: nn.Linear(d, dim) for name, d in source_dims.items()})
        self.source_type = nn.Parameter(torch.randn(len(source_dims), dim) * 0.02)  # (S, D)
        self.question_proj = nn.Linear(question_dim or llm_dim, dim) if instruction_aware else None
        self.question_tokens = question_tokens
        if question_tokens:  # question words as extra keys, marked by their own type embedding
            self.question_token_proj = nn.Linear(question_dim or llm_dim, dim)
            self.question_type = nn.Parameter(torch.randn(dim) * 0.02)  # (D,)

    def _build_output(self, llm_embed_rms: float, user_dim: int) -> None:
        """Create the output norm and scale and the user head; subclasses call it after their own layers."""
        self.out_norm = nn.LayerNorm(self.llm_dim, elementwise_affine=False)
        self.out_scale = nn.Parameter(torch.tensor(float(llm_embed_rms)))  # () LLM embedding RMS
        self.user_head = nn.Sequential(nn.LayerNorm(self.dim), nn.Linear(self.dim, user_dim))

    @classmethod
    def from_config(cls, config: AdapterConfig, source_dims: dict[str, int], llm_dim: int,
                    llm_embed_rms: float) -> "BaseAdapter":  # pragma: no cover - interface
        """Build the adapter for sources of widths ``source_dims`` and an LLM of width ``llm_dim``."""
        raise NotImplementedError

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

    def condition(self, question: torch.Tensor | None) -> torch.Tensor | None:
        """(B, d_q) mean question embedding → (B, D) conditioning vector; None for a question-blind adapter."""
        if not self.instruction_aware:
            return None
        if question is None:
            raise ValueError("this adapter is instruction-aware: pass the question embedding")
        return self.question_proj(question)  # (B, D)

    def question_words(self, question_tokens: torch.Tensor | None,
                       question_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, Tq, d_q) question token embeddings with mask (B, Tq) → typed keys (B, Tq, D) and bool mask (B, Tq)."""
        if question_tokens is None or question_mask is None:
            raise ValueError("this adapter reads question tokens: pass question_tokens and question_mask")
        return self.question_token_proj(question_tokens) + self.question_type, question_mask.bool()

    def scale_output(self, soft: torch.Tensor) -> torch.Tensor:
        """(B, K, d_llm) raw soft tokens → layer-normalised, at the LLM's embedding scale."""
        return self.out_norm(soft) * self.out_scale

    def forward(self, sources: dict[str, EncoderOutput], question: torch.Tensor | None = None,
                question_tokens: torch.Tensor | None = None, question_mask: torch.Tensor | None = None,
                pointer: Pointer | None = None) -> AdapterOutput:
        """question: (B, d_q) mean question embedding; question_tokens: (B, Tq, d_q) with mask (B, Tq);
        pointer: category keys, the name embeddings they point at and the categories the question names."""
        tokens, mask, pooled = self.fuse(sources)  # (B, N, D), (B, N), (B, D)
        cond = self.condition(question)  # (B, D) or None
        soft = self.soft_prompt(tokens, mask, pooled, cond, question_tokens, question_mask, pointer)
        return AdapterOutput(soft_prompt=soft, user_vector=self.user_head(pooled))

    def soft_prompt(self, tokens: torch.Tensor, mask: torch.Tensor, pooled: torch.Tensor,
                    cond: torch.Tensor | None, question_tokens: torch.Tensor | None,
                    question_mask: torch.Tensor | None,
                    pointer: Pointer | None) -> torch.Tensor:  # pragma: no cover - interface
        """The kind's soft prompt (B, K, d_llm), already through :meth:`scale_output`.

        tokens (B, N, D) and mask (B, N) are the fused source tokens, pooled (B, D) their masked mean,
        cond (B, D) the projected question (None when not instruction-aware); the question tokens and
        the pointer are passed through from :meth:`forward` for kinds that read them.
        """
        raise NotImplementedError
