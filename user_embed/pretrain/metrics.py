"""Ranking metrics of next-item prediction: the target's rank among all items, Recall@k, NDCG@k.

One held-out target per row. The rank is the number of candidate items scored strictly higher
than the target (0 = the target is first); ties are resolved in the target's favour. With one
relevant item, Recall@k (= HitRate@k) is ``rank < k`` and NDCG@k is ``1 / log2(rank + 2)`` when
``rank < k``, else 0 (the ideal DCG is 1).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

RECALL_KS = (1, 5, 10, 20)
NDCG_KS = (5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores (N, V) over all items (-inf = excluded), targets (N,) item index → (N,) long rank of each target."""
    target_scores = scores.gather(1, targets[:, None])  # (N, 1)
    return (scores > target_scores).sum(1)


def recall_at_k(ranks: torch.Tensor, k: int) -> float:
    """Fraction of rows whose target is in the top ``k``."""
    return float((ranks < k).float().mean()) if len(ranks) else math.nan


def ndcg_at_k(ranks: torch.Tensor, k: int) -> float:
    """Mean NDCG@k with one relevant item per row: 1/log2(rank+2) inside the top ``k``, else 0."""
    if not len(ranks):
        return math.nan
    gains = 1.0 / torch.log2(ranks.double() + 2.0)
    return float(torch.where(ranks < k, gains, torch.zeros_like(gains)).mean())


def ranking_metrics(ranks: torch.Tensor, recall_ks: Iterable[int] = RECALL_KS,
                    ndcg_ks: Iterable[int] = NDCG_KS) -> dict[str, float]:
    """``{"recall@k": …, "ndcg@k": …}`` for the given cut-offs."""
    out = {f"recall@{k}": recall_at_k(ranks, k) for k in recall_ks}
    out.update({f"ndcg@{k}": ndcg_at_k(ranks, k) for k in ndcg_ks})
    return out
