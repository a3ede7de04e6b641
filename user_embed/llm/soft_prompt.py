"""Batch prompts and splice soft vectors into ``inputs_embeds``.

Padding side is a choice (left for generation, right or left for training); attention mask,
position ids (counted over real tokens only) and labels (answer tokens only, else -100) are
correct under both. Splicing puts soft vector k of row b at that row's k-th soft position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from user_embed.llm.prompt import PromptIds

IGNORE_INDEX = -100


@dataclass
class PromptBatch:
    input_ids: torch.Tensor  # (B, T) long; soft positions hold a dummy id
    attention_mask: torch.Tensor  # (B, T) long
    position_ids: torch.Tensor  # (B, T) long
    soft_mask: torch.Tensor  # (B, T) bool; exactly K True per row (or none)
    labels: torch.Tensor  # (B, T) long; IGNORE_INDEX except answer tokens
    question_ids: torch.Tensor  # (B, Tq) long
    question_mask: torch.Tensor  # (B, Tq) bool

    def to(self, device) -> "PromptBatch":
        return PromptBatch(**{k: v.to(device) for k, v in self.__dict__.items()})


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) mask → (B, T) position ids 0,1,2… over real tokens (padding gets 0)."""
    mask = attention_mask.long()
    return (mask.cumsum(-1) - 1).clamp(min=0) * mask


def collate_prompts(prompts: list[PromptIds], pad_id: int, padding_side: str = "right") -> PromptBatch:
    """Pad a list of prompts into a :class:`PromptBatch`."""
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    batch, length = len(prompts), max(len(p.ids) for p in prompts)
    q_length = max(1, max(len(p.question_ids) for p in prompts))
    input_ids = torch.full((batch, length), pad_id, dtype=torch.long)
    attention = torch.zeros(batch, length, dtype=torch.long)
    soft = torch.zeros(batch, length, dtype=torch.bool)
    labels = torch.full((batch, length), IGNORE_INDEX, dtype=torch.long)
    question = torch.full((batch, q_length), pad_id, dtype=torch.long)
    question_mask = torch.zeros(batch, q_length, dtype=torch.bool)
    for row, prompt in enumerate(prompts):
        n = len(prompt.ids)
        offset = length - n if padding_side == "left" else 0
        input_ids[row, offset:offset + n] = torch.tensor(prompt.ids)
        attention[row, offset:offset + n] = 1
        if prompt.num_soft:
            soft[row, offset + prompt.soft_start: offset + prompt.soft_start + prompt.num_soft] = True
        if prompt.answer_start >= 0:
            labels[row, offset + prompt.answer_start: offset + n] = input_ids[row, offset + prompt.answer_start: offset + n]
        q = prompt.question_ids
        if q:
            question[row, : len(q)] = torch.tensor(q)
            question_mask[row, : len(q)] = True
    return PromptBatch(input_ids, attention, positions_from_mask(attention), soft, labels, question, question_mask)


def splice_soft_prompt(token_embeds: torch.Tensor, soft_mask: torch.Tensor, soft_prompt: torch.Tensor) -> torch.Tensor:
    """token_embeds: (B, T, d); soft_mask: (B, T) with K True per row; soft_prompt: (B, K, d) → (B, T, d)."""
    if not soft_mask.any():
        return token_embeds
    expected = soft_prompt.shape[0] * soft_prompt.shape[1]
    if int(soft_mask.sum()) != expected:
        raise ValueError(f"soft slots ({int(soft_mask.sum())}) != soft vectors ({expected})")
    # masked_scatter fills True positions in row-major order: row b's k-th slot gets soft_prompt[b, k]
    return token_embeds.masked_scatter(soft_mask.unsqueeze(-1), soft_prompt.to(token_embeds.dtype))


def mean_question_embedding(embedding: torch.nn.Module, question_ids: torch.Tensor,
                            question_mask: torch.Tensor) -> torch.Tensor:
    """Mean of the LLM's input embeddings over question tokens: (B, Tq) → (B, d_llm)."""
    embeds = embedding(question_ids)  # (B, Tq, d)
    weights = question_mask.unsqueeze(-1).to(embeds.dtype)
    return (embeds * weights).sum(1) / weights.sum(1).clamp(min=1.0)
