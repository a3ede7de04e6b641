"""Symmetric InfoNCE between pooled user vectors and embeddings of text about the same users.

Spec (CLIP/open_clip ClipLoss style): project both sides to ``dim`` and L2-normalise; logits
``s · u_i · t_j`` with a learnable scale ``s = 1/τ`` clamped to ``max_logit_scale``; the loss
is the mean of cross-entropy over rows (user→text) and over columns (text→user), where the
positive of row i is column i. Under DDP the texts and users of all ranks are gathered (with
gradients to the local part), so every rank sees every other rank's negatives. Pairs that
belong to the same user (a user asked several questions in one batch) are not negatives:
their logits are masked out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0 (gradients flow to the local slice)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return x
    if torch.distributed.get_world_size() == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()), 0)


class ContrastiveLoss(nn.Module):
    """InfoNCE(user_vectors (B, d_u), text_vectors (B, d_t), user_ids (B,)) → scalar."""

    def __init__(self, user_dim: int, text_dim: int, dim: int = 128, init_temperature: float = 0.07,
                 max_logit_scale: float = 100.0):
        super().__init__()
        self.user_proj = nn.Linear(user_dim, dim)
        self.text_proj = nn.Linear(text_dim, dim)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))
        self.max_log_scale = math.log(max_logit_scale)
        self.last_batch_size = 0  # how many pairs the last call compared (all ranks), for tests/logging

    def scale(self) -> torch.Tensor:
        return self.logit_scale.clamp(max=self.max_log_scale).exp()

    def forward(self, user_vectors: torch.Tensor, text_vectors: torch.Tensor, user_ids: torch.Tensor) -> torch.Tensor:
        users = F.normalize(self.user_proj(user_vectors), dim=-1)  # (B, dim)
        texts = F.normalize(self.text_proj(text_vectors), dim=-1)  # (B, dim)
        all_users, all_texts, all_ids = gather_with_grad(users), gather_with_grad(texts), gather_with_grad(user_ids)
        self.last_batch_size = all_users.shape[0]
        return info_nce(all_users, all_texts, all_ids, self.scale())


def info_nce(users: torch.Tensor, texts: torch.Tensor, user_ids: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """users, texts: (N, d) normalised; user_ids: (N,) → symmetric cross-entropy with same-user negatives masked."""
    logits = scale * users @ texts.T  # (N, N)
    same_user = user_ids[:, None] == user_ids[None, :]  # (N, N)
    eye = torch.eye(len(users), dtype=torch.bool, device=users.device)
    logits = logits.masked_fill(same_user & ~eye, float("-inf"))
    target = torch.arange(len(users), device=users.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
