"""The `text` baseline's context: a user's most recent events before the cutoff, written as text."""

from __future__ import annotations

import polars as pl

from user_embed.data.collate import Example
from user_embed.data.history import UserHistories
from user_embed.data.spec import DataSpec


class HistoryWriter:
    """Writes "Title (Genre/Genre), rated 4" lines for the last ``num_events`` events before a question's cutoff."""

    def __init__(self, histories: UserHistories, spec: DataSpec, items: pl.DataFrame, num_events: int = 50):
        titles = dict(zip(items["item_id"].to_list(), items["title"].to_list()))
        cats = dict(zip(items["item_id"].to_list(), items["categories"].to_list()))
        self.lines = ["", "an unknown item"]  # index 0 = padding, 1 = unknown
        for item in spec.item_ids:
            genres = "/".join(cats.get(item) or [])
            self.lines.append(f"{titles.get(item, item)} ({genres})" if genres else str(titles.get(item, item)))
        self.histories, self.spec, self.num_events = histories, spec, num_events

    def __call__(self, example: Example) -> str:
        window = self.histories.window(example.user_id, example.cutoff, self.num_events)
        if not len(window.items):
            return "This user has no history yet."
        rows = []
        for item, value, has in zip(window.items, window.values, window.has_value):
            line = self.lines[int(item)]
            if has:
                raw = value * self.spec.value_std + self.spec.value_mean
                line += f", rated {raw:g}"
            rows.append(f"- {line}")
        return "This user's most recent items (oldest first):\n" + "\n".join(rows)
