"""The text baselines' context: a user's events before the cutoff, written as text.

Two ways to pick the events (both as in LaMP's retrieval-augmented baselines):
* ``recent`` — the most recent ``num_events`` events;
* ``bm25`` — the ``num_events`` events whose text best matches the question (BM25 via rank-bm25,
  over the most recent ``pool_size`` events), written in time order.
"""

from __future__ import annotations

import re

import numpy as np
import polars as pl

from user_embed.data.collate import Example
from user_embed.data.history import UserHistories
from user_embed.data.spec import DataSpec

RETRIEVERS = ("recent", "bm25")
_WORD = re.compile(r"\w+")


def bm25_tokens(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, underscore)."""
    return _WORD.findall(text.lower())


class HistoryWriter:
    """Writes "Title (Genre/Genre), rated 4" lines for ``num_events`` events before a question's cutoff."""

    def __init__(self, histories: UserHistories, spec: DataSpec, items: pl.DataFrame, num_events: int = 50,
                 retrieval: str = "recent", pool_size: int = 1000):
        if retrieval not in RETRIEVERS:
            raise ValueError(f"unknown retrieval '{retrieval}'; choose one of {RETRIEVERS}")
        titles = dict(zip(items["item_id"].to_list(), items["title"].to_list()))
        cats = dict(zip(items["item_id"].to_list(), items["categories"].to_list()))
        self.lines = ["", "an unknown item"]  # index 0 = padding, 1 = unknown
        for item in spec.item_ids:
            genres = "/".join(cats.get(item) or [])
            self.lines.append(f"{titles.get(item, item)} ({genres})" if genres else str(titles.get(item, item)))
        self.histories, self.spec, self.num_events = histories, spec, num_events
        self.retrieval, self.pool_size = retrieval, pool_size

    def __call__(self, example: Example) -> str:
        pool = self.num_events if self.retrieval == "recent" else max(self.pool_size, self.num_events)
        window = self.histories.window(example.user_id, example.cutoff, pool)
        if not len(window.items):
            return "This user has no history yet."
        chosen = np.arange(len(window.items))
        if self.retrieval == "bm25" and len(chosen) > self.num_events:
            from rank_bm25 import BM25Okapi

            corpus = [bm25_tokens(self.lines[int(i)]) or ["_"] for i in window.items]
            scores = BM25Okapi(corpus).get_scores(bm25_tokens(example.question))  # (pool,)
            chosen = np.sort(np.argsort(-scores, kind="stable")[: self.num_events])  # best matches, time order
        rows = []
        for j in chosen:
            line = self.lines[int(window.items[j])]
            if window.has_value[j]:
                raw = window.values[j] * self.spec.value_std + self.spec.value_mean
                line += f", rated {raw:g}"
            rows.append(f"- {line}")
        heading = ("This user's most recent items (oldest first):" if self.retrieval == "recent"
                   else "Items from this user's history that match the question (oldest first):")
        return heading + "\n" + "\n".join(rows)
