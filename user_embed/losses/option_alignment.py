"""Option-alignment loss: the soft prompt should point at the right option in the LLM's own word space.

For a multiple-choice question, each option is represented by the mean of the frozen LLM's input
embeddings of its tokens. The score of option o is the best cosine similarity between any of the K
soft tokens and that option's embedding, times a fixed scale; the loss is the cross-entropy of those
scores against the right option. It needs no LLM forward pass, so it costs almost nothing per step:
the "alignment" phase (``optim.alignment_steps``) trains the embedder with it alone before the joint
phase, and ``loss.option_alignment_weight`` can keep it in the joint objective.

Only the embedder's inputs (the user's history before the question's cutoff and the question) reach
the soft tokens; the right option enters the loss, never the model's inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def option_alignment_scores(soft_prompt: torch.Tensor, option_embeds: torch.Tensor, scale: float) -> torch.Tensor:
    """soft_prompt: (B, K, d); option_embeds: (B, O, d) → (B, O) scores = scale · max_k cos(soft_k, option_o)."""
    cosine = torch.einsum("bkd,bod->bko", F.normalize(soft_prompt.float(), dim=-1),
                          F.normalize(option_embeds.float(), dim=-1))  # (B, K, O)
    return scale * cosine.amax(1)  # (B, O)


def option_alignment_loss(soft_prompt: torch.Tensor, option_embeds: torch.Tensor, option_mask: torch.Tensor,
                          answer_index: torch.Tensor, scale: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy over each question's options → (scalar loss, scalar accuracy of the argmax option).

    option_mask: (B, O) bool, False for padding options; answer_index: (B,) index of the right option.
    """
    scores = option_alignment_scores(soft_prompt, option_embeds, scale)  # (B, O)
    scores = scores.masked_fill(~option_mask, float("-inf"))
    loss = F.cross_entropy(scores, answer_index)
    accuracy = (scores.argmax(-1) == answer_index).float().mean()
    return loss, accuracy
