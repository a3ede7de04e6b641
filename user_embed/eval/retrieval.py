"""User↔text retrieval and recommendation from a user representation.

Retrieval: each held-out user's vector is a query; the candidates are the texts about all held-out users
(``texts.parquet``, embedded by the frozen text encoder); the right text is the user's own. A trained
embedder ranks them in its own contrastive space (:meth:`UserEmbedder.text_similarity`); any other
representation through a linear map to the text vectors fitted on the train users (ridge regression,
scikit-learn), ranked by cosine. Metrics: recall@1/5/10 and MRR, with a user-bootstrap interval on MRR.

Recommendation: a ridge scorer from the representation to the items of the first ``NEXT_EVENTS`` events after
the cutoff, fitted on the train users; held-out users' items already in their history are not ranked.
Metrics: recall@10 and NDCG@10 (binary relevance), next to the popularity ranking in the same protocol.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from user_embed.eval.embedding_targets import NEXT_EVENTS
from user_embed.eval.probes import BOOTSTRAP

RIDGE_ALPHA = 10.0


def retrieval_metrics(similarity: np.ndarray, seed: int = 0) -> dict:
    """similarity (N, N): query i's right candidate is i → recall@1/5/10, MRR and MRR's 95 % interval."""
    right = similarity[np.arange(len(similarity)), np.arange(len(similarity))][:, None]  # (N, 1)
    ranks = (similarity > right).sum(1) + 1  # (N,) 1 = first; ties count in the query's favour
    out = {f"recall@{k}": round(float((ranks <= k).mean()), 4) for k in (1, 5, 10)}
    reciprocal = 1.0 / ranks
    rng = np.random.default_rng(seed)
    draws = [reciprocal[rng.integers(0, len(ranks), len(ranks))].mean() for _ in range(BOOTSTRAP)]
    low, high = np.percentile(draws, [2.5, 97.5])
    return {**out, "mrr": round(float(reciprocal.mean()), 4), "mrr_low": round(float(low), 4),
            "mrr_high": round(float(high), 4), "candidates": int(len(ranks)), "chance_mrr":
            round(float(np.mean(1.0 / np.arange(1, len(ranks) + 1))), 4)}


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N, d) × (M, d) → (N, M) cosine similarities."""
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return a @ b.T


def linear_map(train_x: np.ndarray, train_y: np.ndarray, alpha: float = RIDGE_ALPHA):
    """A fitted scikit-learn ``StandardScaler → Ridge`` from representations to targets (multi-output)."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(train_x, train_y)


def mapped_retrieval(train_x: np.ndarray, train_texts: np.ndarray, test_x: np.ndarray,
                     test_texts: np.ndarray, seed: int = 0) -> dict:
    """Retrieval through a ridge map from the representation to the text vectors, fitted on train users."""
    predicted = linear_map(train_x, train_texts).predict(test_x)  # (N, d_text)
    return retrieval_metrics(cosine(predicted, test_texts), seed)


def next_items(events: pl.DataFrame, ids: list[str], cutoffs: dict[str, int],
               item_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(N, n_items) 0/1 items of the first NEXT_EVENTS events after each cutoff, and (N, n_items) 0/1 items seen
    before it."""
    column = {item: i for i, item in enumerate(item_ids)}
    row = {u: i for i, u in enumerate(ids)}
    frame = events.join(pl.DataFrame({"user_id": ids, "cutoff": [cutoffs[u] for u in ids]}), on="user_id")
    after = (frame.filter(pl.col("timestamp") >= pl.col("cutoff")).sort("user_id", "timestamp", maintain_order=True)
             .group_by("user_id", maintain_order=True).head(NEXT_EVENTS))
    before = frame.filter(pl.col("timestamp") < pl.col("cutoff"))
    future, seen = np.zeros((len(ids), len(item_ids)), np.float32), np.zeros((len(ids), len(item_ids)), bool)
    for table, out in ((after, future), (before, seen)):
        for user, item in zip(table["user_id"].to_list(), table["item_id"].to_list()):
            if item in column:
                out[row[user], column[item]] = 1
    return future, seen


def ranking_metrics(scores: np.ndarray, future: np.ndarray, seen: np.ndarray, k: int = 10) -> dict:
    """scores, future (N, n_items), seen (N, n_items) bool → recall@k and NDCG@k over users with future items."""
    users = future.sum(1) > 0
    scores = np.where(seen, -np.inf, scores)[users]
    future = future[users]
    top = np.argsort(-scores, axis=1)[:, :k]  # (n, k)
    hits = np.take_along_axis(future, top, 1)  # (n, k)
    recall = hits.sum(1) / np.minimum(future.sum(1), k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.array([discounts[: int(min(n, k))].sum() for n in future.sum(1)])
    ndcg = (hits * discounts).sum(1) / ideal
    return {f"recall@{k}": round(float(recall.mean()), 4), f"ndcg@{k}": round(float(ndcg.mean()), 4),
            "users": int(users.sum())}


def recommendation(train_x: np.ndarray, train_future: np.ndarray, test_x: np.ndarray, test_future: np.ndarray,
                   test_seen: np.ndarray) -> dict:
    """recall@10 / NDCG@10 of a ridge scorer from the representation to next items, fitted on train users."""
    scores = linear_map(train_x, train_future).predict(test_x)  # (N, n_items)
    return ranking_metrics(scores, test_future, test_seen)
