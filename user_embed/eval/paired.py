"""Paired comparison of two methods on the same questions: the accuracy difference and its bootstrap interval.

Questions of one user are not independent (one history answers them all), so the interval comes from
a cluster bootstrap: users are resampled with replacement, each bringing all of its questions, and the
difference of the two methods' accuracies is recomputed on every resample. Both methods always see the
same resampled questions, which removes the question-difficulty noise that separate intervals would
double-count. The seed is fixed, so a report is reproducible.
"""

from __future__ import annotations

import numpy as np


def cluster_bootstrap_diff(users: list[str], hits_a: list[bool], hits_b: list[bool], reps: int = 2000,
                           seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Accuracy of A minus accuracy of B over aligned questions, with a percentile interval over users.

    Returns ``{"diff", "low", "high", "questions", "users"}``; the interval is ``level`` wide.
    """
    return cluster_bootstrap_mean_diff(users, hits_a, hits_b, reps, seed, level)


def cluster_bootstrap_mean_diff(users: list[str], values_a: list[float], values_b: list[float], reps: int = 2000,
                                seed: int = 0, level: float = 0.95) -> dict[str, float]:
    """Mean of A minus mean of B over aligned per-question values (hits, absolute errors …), with a percentile
    interval from resampling users. Returns ``{"diff", "low", "high", "questions", "users"}``."""
    if not (len(users) == len(values_a) == len(values_b)) or not users:
        raise ValueError("users and both value lists must be non-empty and aligned")
    ids, cluster = np.unique(np.asarray(users), return_inverse=True)  # (Q,) user index per question
    delta = np.asarray(values_a, dtype=float) - np.asarray(values_b, dtype=float)  # (Q,)
    sums = np.bincount(cluster, weights=delta, minlength=len(ids))  # (U,) per-user sum of differences
    counts = np.bincount(cluster, minlength=len(ids)).astype(float)  # (U,) questions per user
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(ids), size=(reps, len(ids)))  # (R, U) resampled users
    resampled = sums[draws].sum(1) / counts[draws].sum(1)  # (R,)
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return {"diff": round(float(delta.mean()), 4), "low": round(float(low), 4), "high": round(float(high), 4),
            "questions": int(len(delta)), "users": int(len(ids))}


def paired_differences(predictions: list[dict], method: str, baselines: list[str], groups: list[str]
                       ) -> dict[str, dict[str, dict[str, float]]]:
    """``{"<method>-<base>": {"<group>": cluster_bootstrap_diff(...)}}`` for ``overall`` and each family in
    ``groups``; ``predictions`` are the evaluation's per-question rows (user_id, family, answer, methods), and
    each difference is over the questions that both methods answered (a method's entry is None elsewhere)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for base in baselines:
        table = {}
        for group in groups:
            rows = [r for r in predictions if (group == "overall" or r["family"] == group)
                    and r.get(method) is not None and r.get(base) is not None]
            if rows:
                table[group] = cluster_bootstrap_diff([r["user_id"] for r in rows],
                                                      [r[method] == r["answer"] for r in rows],
                                                      [r[base] == r["answer"] for r in rows])
        out[f"{method}-{base}"] = table
    return out
