"""LiveUsers: a data folder's users plus the events received since, as model inputs for the server.

The folder's own files are read once and never written. Events posted to the server are checked against
the schema (integer Unix-second timestamps, known items, numeric values), written to the append-only
:class:`~user_embed.serving.event_log.EventLog` and then laid over the folder's histories: a user with live
events gets a history of its own (the folder's events + the live ones, re-sorted), everyone else reads the
folder's histories unchanged, so an append costs one user's events, not a rebuild. A new user id becomes
known with its first event. ``version(user)`` increases with every append, which keys the encoding cache.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from user_embed.data.collate import Collator
from user_embed.data.history import UserHistories, Window, category_table
from user_embed.data.profiles import ProfileTable
from user_embed.data.spec import DataSpec
from user_embed.eval.history_text import HistoryWriter
from user_embed.serving.errors import APIError
from user_embed.serving.event_log import EventLog
from user_embed.serving.schemas import EventIn
from user_embed.store import UserStore

HISTORY_COLUMNS = {"user_id": pl.Utf8, "timestamp": pl.Int64, "item_id": pl.Utf8, "value": pl.Float64}
FUTURE_SLACK_S = 86_400  # timestamps up to a day ahead of the server's clock are accepted


class LiveHistories:
    """UserHistories' ``window`` over the folder's histories, with per-user replacements for live users."""

    def __init__(self, base: UserHistories):
        self.base = base
        self.overlay: dict[str, UserHistories] = {}

    def __contains__(self, user_id: str) -> bool:
        return user_id in self.overlay or user_id in self.base

    def window(self, user_id: str, cutoff: int | None, max_len: int) -> Window:
        return self.overlay.get(user_id, self.base).window(user_id, cutoff, max_len)


class LiveUsers:
    """The users of a UserStore plus the events of an EventLog, for one embedder's vocabularies (``spec``)."""

    def __init__(self, store: UserStore, spec: DataSpec, log: EventLog | None = None):
        self.store, self.spec, self.log = store, spec, log
        self.items = set(store.items["item_id"].to_list())
        self.histories = LiveHistories(store.histories(spec))
        self.live: dict[str, list[dict]] = {}  # user → events received over HTTP (all records)
        self.versions: dict[str, int] = {}
        self._known = set(store.user_ids)
        self._collators: dict[int, Collator] = {}
        self._writers: dict[int, HistoryWriter] = {}
        if log is not None:
            for record in log.read():
                self.apply(str(record["user_id"]), record["events"])

    @classmethod
    def from_folder(cls, folder: str | Path, spec: DataSpec, events_dir: str | Path | None = None) -> "LiveUsers":
        """The prepared data folder ``folder`` and its live events log (default ``<folder>/live_events``)."""
        store = UserStore.from_folder(folder)
        return cls(store, spec, EventLog(events_dir or Path(folder) / "live_events"))

    # ---- users ---------------------------------------------------------------------------------
    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and user_id in self._known

    def __len__(self) -> int:
        return len(self._known)

    def unknown_reason(self, user_id: str) -> str | None:
        if not user_id.strip():
            return "user is empty"
        if user_id not in self._known:
            return (f"unknown user '{user_id}' (not in the users or events of {self.store.origin}, "
                    "nor in the live events)")
        return None

    def version(self, user_id: str) -> int:
        """How many appends the user has had (0 for none)."""
        return self.versions.get(user_id, 0)

    # ---- events --------------------------------------------------------------------------------
    def check(self, events: list[EventIn], now: float | None = None) -> list[dict]:
        """Events as schema rows; an APIError (422) names the first bad row and field. Nothing is written."""
        limit = int(now if now is not None else time.time()) + FUTURE_SLACK_S
        rows = []
        for i, event in enumerate(events):
            where = f"events[{i}]"
            if event.timestamp < 0:
                raise APIError(422, f"{where}.timestamp: {event.timestamp} is negative; timestamps are Unix seconds",
                               f"{where}.timestamp")
            if event.timestamp > limit:
                raise APIError(422, f"{where}.timestamp: {event.timestamp} is in the future (milliseconds? "
                                    "timestamps are Unix seconds)", f"{where}.timestamp")
            item = str(event.item_id)
            if item not in self.items:
                raise APIError(422, f"{where}.item_id: unknown item '{item}' (not in the items table of "
                                    f"{self.store.origin})", f"{where}.item_id")
            rows.append({"timestamp": event.timestamp, "source": event.source, "item_id": item,
                         "value": None if event.value is None else float(event.value), "text": event.text})
        return rows

    def record(self, user_id: str, rows: list[dict]) -> None:
        """Append checked rows to the durable log (before :meth:`apply`; thread-safe)."""
        if self.log is not None:
            self.log.append(user_id, rows)

    def apply(self, user_id: str, rows: list[dict]) -> None:
        """Lay the rows over the user's history (call from the one thread that reads histories)."""
        self.live.setdefault(user_id, []).extend(rows)
        base = self.store.events.filter(pl.col("user_id") == user_id).select(list(HISTORY_COLUMNS))
        live = pl.DataFrame([{"user_id": user_id, **{k: r[k] for k in ("timestamp", "item_id", "value")}}
                             for r in self.live[user_id]], schema=HISTORY_COLUMNS)
        self.histories.overlay[user_id] = UserHistories(pl.concat([base.cast(HISTORY_COLUMNS), live]), self.spec)
        self._known.add(user_id)
        self.versions[user_id] = self.version(user_id) + 1

    # ---- model inputs --------------------------------------------------------------------------
    def collator(self, max_len: int) -> Collator:
        """Examples → padded history tensors (live events included), built once per ``max_len``."""
        if max_len not in self._collators:
            self._collators[max_len] = Collator(self.histories, category_table(self.spec, self.store.items), max_len,
                                                ProfileTable(self.store.users, self.spec), None,
                                                default_cutoff=self.store.cutoff)
        return self._collators[max_len]

    def history_writer(self, num_events: int) -> HistoryWriter:
        """Writes a user's latest ``num_events`` events as text (live events included)."""
        if num_events not in self._writers:
            self._writers[num_events] = HistoryWriter(self.histories, self.spec, self.store.items, num_events)
        return self._writers[num_events]
