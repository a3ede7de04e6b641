"""Per-user event histories as flat sorted arrays, sliced by cutoff in O(log n).

``UserHistories.window(user, cutoff, max_len)`` returns the user's events with
timestamp < cutoff, most recent ``max_len`` of them (the "recent" truncation policy), and
whether anything was truncated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from user_embed.data.spec import PAD, UNKNOWN_ITEM, DataSpec


@dataclass
class Window:
    items: np.ndarray  # (n,) item indices
    values: np.ndarray  # (n,) standardised values (0 where missing)
    has_value: np.ndarray  # (n,) bool
    timestamps: np.ndarray  # (n,) int64
    truncated: int  # events dropped by the truncation policy


class UserHistories:
    def __init__(self, events: pl.DataFrame, spec: DataSpec):
        item_index = {item: i + 2 for i, item in enumerate(spec.item_ids)}
        frame = events.select("user_id", "timestamp", "item_id", "value").sort(["user_id", "timestamp", "item_id"])
        self.unknown_item_events = 0
        items = frame["item_id"].replace_strict(item_index, default=UNKNOWN_ITEM, return_dtype=pl.Int64).to_numpy()
        self.unknown_item_events = int((items == UNKNOWN_ITEM).sum())
        values = frame["value"].cast(pl.Float64)
        self.has_value = values.is_not_null().to_numpy() & np.isfinite(values.fill_null(0).to_numpy())
        self.values = np.where(self.has_value, (values.fill_null(0).to_numpy() - spec.value_mean) / spec.value_std, 0.0)
        self.items = items
        self.timestamps = frame["timestamp"].to_numpy()
        users = frame["user_id"].to_numpy()
        boundaries = np.flatnonzero(users[1:] != users[:-1]) + 1 if len(users) else np.array([], dtype=int)
        starts = np.concatenate([[0], boundaries]) if len(users) else np.array([], dtype=int)
        ends = np.concatenate([boundaries, [len(users)]]) if len(users) else np.array([], dtype=int)
        self.offsets = {str(users[s]): (int(s), int(e)) for s, e in zip(starts, ends)}

    def __contains__(self, user_id: str) -> bool:
        return user_id in self.offsets

    def window(self, user_id: str, cutoff: int | None, max_len: int) -> Window:
        start, end = self.offsets.get(user_id, (0, 0))
        if cutoff is not None and end > start:
            end = start + int(np.searchsorted(self.timestamps[start:end], cutoff, side="left"))
        first = max(start, end - max_len)
        sl = slice(first, end)
        return Window(self.items[sl], self.values[sl], self.has_value[sl], self.timestamps[sl], truncated=first - start)


def category_table(spec: DataSpec, items: pl.DataFrame) -> np.ndarray:
    """(num_items, C) category indices per item index (0 = none)."""
    cat_index = {c: i + 1 for i, c in enumerate(spec.categories)}
    table = np.full((spec.num_items, spec.max_categories), PAD, dtype=np.int64)
    cats = dict(zip(items["item_id"].to_list(), items["categories"].to_list()))
    for i, item in enumerate(spec.item_ids):
        known = [cat_index[c] for c in (cats.get(item) or []) if c in cat_index][: spec.max_categories]
        table[i + 2, : len(known)] = known
    return table
