"""Pooled user vectors for many users (export, plots): one question-independent vector per user."""

from __future__ import annotations

import numpy as np
import torch

from user_embed.data.collate import Collator, Example
from user_embed.embedder import UserEmbedder


@torch.no_grad()
def embed_users(embedder: UserEmbedder, collator: Collator, user_ids: list[str], cutoffs: list[int | None] | None = None,
                batch_size: int = 256) -> np.ndarray:
    """(N, user_dim) float32 vectors; ``cutoffs[i]`` limits user i's history (None = all events)."""
    embedder.eval()
    device = next(embedder.parameters()).device
    cutoffs = cutoffs or [None] * len(user_ids)
    out = []
    for start in range(0, len(user_ids), batch_size):
        chunk = [Example(u, "", "", [], cutoff=c) for u, c in
                 zip(user_ids[start:start + batch_size], cutoffs[start:start + batch_size])]
        batch = collator(chunk).to(device)
        out.append(embedder.user_vectors(batch.inputs).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, embedder.adapter_config.user_dim), np.float32)
