"""Autoregressive UserQA loss.

``answer_loss(logits, labels)`` is the mean token cross-entropy of predicting token t+1 from
positions ≤ t, counted only where ``labels`` is not -100 — i.e. on answer tokens (and the end
token), never on the question, the chat template, the soft prompt or padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from user_embed.llm.soft_prompt import IGNORE_INDEX


def answer_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """logits: (B, T, V); labels: (B, T) with IGNORE_INDEX outside answers → scalar mean loss."""
    shifted_logits = logits[:, :-1].float()  # (B, T-1, V): position t predicts token t+1
    shifted_labels = labels[:, 1:]  # (B, T-1)
    if not (shifted_labels != IGNORE_INDEX).any():
        raise ValueError("no answer tokens in the batch: every label is masked")
    return F.cross_entropy(shifted_logits.reshape(-1, shifted_logits.shape[-1]), shifted_labels.reshape(-1),
                           ignore_index=IGNORE_INDEX)
