"""UserStore: users' events, items and profiles, from a prepared folder or from in-memory frames.

It is the one place that turns histories into model inputs: :meth:`UserStore.collator` builds the
collate function (padded history tensors, profile fields, optional text vectors) for an embedder's
vocabularies (its :class:`~user_embed.data.spec.DataSpec`), and :meth:`UserStore.history_writer` writes a
user's events as text for the text baselines. Events at or after the store's ``cutoff`` (Unix seconds)
are never read, and the time from each event to the cutoff is what the encoders see for questions without
a cutoff of their own (a question may carry its own, earlier cutoff).

Frames follow the schema of ``data_pipelines/schema.py``. ``from_frames`` is lenient where nothing is
lost: integer ids become strings, integer or datetime timestamps become Int64 Unix seconds, integer values
become floats, and the optional columns (events: ``source``, ``value``, ``text``; items: ``title``,
``categories``) are filled in when absent. Anything else that does not fit is refused with one line
naming the frame, column and row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from data_pipelines.schema import SchemaError, find_problems, read_table
from user_embed.errors import UserError

if TYPE_CHECKING:
    import numpy as np

    from user_embed.data.collate import Collator
    from user_embed.data.history import UserHistories
    from user_embed.data.spec import DataSpec
    from user_embed.eval.history_text import HistoryWriter


class UserStore:
    """Events, items and (optional) profiles of users, ready to become model inputs for any embedder."""

    def __init__(self, events: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame | None = None,
                 texts: pl.DataFrame | None = None, cutoff: int | None = None, origin: str = "frames"):
        """Use :meth:`from_folder` or :meth:`from_frames`; the frames here are already in the schema."""
        if cutoff is not None:
            if isinstance(cutoff, bool) or not isinstance(cutoff, int):
                raise UserError(f"cutoff must be an integer Unix time in seconds, got {cutoff!r}")
            events = events.filter(pl.col("timestamp") < cutoff)
        self.events, self.items, self.texts = events, items, texts
        self.users = users if users is not None else pl.DataFrame({"user_id": []}, schema={"user_id": pl.Utf8})
        self.cutoff, self.origin = cutoff, origin
        self._user_ids = set(self.users["user_id"].to_list()) | set(events["user_id"].unique().to_list())
        self._histories: dict[int, tuple[DataSpec, UserHistories]] = {}
        self._collators: dict[tuple[int, int], Collator] = {}

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_folder(cls, path: str | Path, cutoff: int | None = None) -> "UserStore":
        """A folder written by ``user-embed prepare`` (events, items, users[, texts] parquet; qa is not read)."""
        folder = Path(path)
        if not folder.is_dir():
            kind = "a file, not a data folder" if folder.exists() else "no such data folder"
            raise UserError(f"{folder}: {kind} (it needs events.parquet, items.parquet and users.parquet; "
                            "build one with `user-embed prepare …`)")
        return cls(read_table(folder, "events"), read_table(folder, "items"), read_table(folder, "users"),
                   read_table(folder, "texts", required=False), cutoff, origin=str(folder))

    @classmethod
    def from_frames(cls, events: Any, items: Any, users: Any | None = None, cutoff: int | None = None) -> "UserStore":
        """In-memory polars or pandas frames: events (user_id, item_id, timestamp[, value, source, text]),
        items (item_id[, title, categories]) and optional users (user_id + profile fields)."""
        events = _conform("events", _polars("events", events), _EVENT_DEFAULTS)
        items = _conform("items", _polars("items", items), _ITEM_DEFAULTS)
        users = _conform("users", _polars("users", users), {}) if users is not None else None
        return cls(events, items, users, cutoff=cutoff, origin="frames")

    # ---- users ---------------------------------------------------------------------------------
    @property
    def user_ids(self) -> list[str]:
        """Every known user: in the users table or with at least one event, sorted."""
        return sorted(self._user_ids)

    def __contains__(self, user_id: object) -> bool:
        return isinstance(user_id, str) and user_id in self._user_ids

    def __len__(self) -> int:
        return len(self._user_ids)

    def unknown_reason(self, user_id: object) -> str | None:
        """Why ``user_id`` cannot be embedded (missing, wrong type, unknown), or None. Integer ids are read as
        their decimal strings (ids are strings in the schema)."""
        if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
            return "missing user_id"
        if isinstance(user_id, int) and not isinstance(user_id, bool):
            user_id = str(user_id)
        if not isinstance(user_id, str):
            return f"user id {user_id!r} is a {type(user_id).__name__}; user ids are strings"
        if user_id not in self._user_ids:
            return f"unknown user '{user_id}' (not in the users or events of {self.origin})"
        return None

    def require(self, user_ids: Sequence[object]) -> list[str]:
        """The ids as strings; one UserError naming the first unknown or malformed id."""
        if isinstance(user_ids, str):
            raise UserError("user_ids must be a list of ids, got one string")
        for user_id in user_ids:
            reason = self.unknown_reason(user_id)
            if reason:
                raise UserError(reason)
        return [str(user_id) for user_id in user_ids]

    # ---- model inputs --------------------------------------------------------------------------
    def histories(self, spec: DataSpec) -> UserHistories:
        """Sorted per-user event arrays indexed by ``spec``'s item vocabulary (built once per spec)."""
        from user_embed.data.history import UserHistories

        cached = self._histories.get(id(spec))
        if cached is None:
            cached = self._histories[id(spec)] = (spec, UserHistories(self.events, spec))
        return cached[1]

    def collator(self, spec: DataSpec, max_len: int,
                 user_text_vectors: dict[str, np.ndarray] | None = None) -> Collator:
        """The collate function: examples → :class:`~user_embed.data.collate.UserBatch` for ``spec``."""
        from user_embed.data.collate import Collator
        from user_embed.data.history import category_table
        from user_embed.data.profiles import ProfileTable

        key = (id(spec), max_len)
        if user_text_vectors is None and key in self._collators:
            return self._collators[key]
        collator = Collator(self.histories(spec), category_table(spec, self.items), max_len,
                            ProfileTable(self.users, spec), user_text_vectors, default_cutoff=self.cutoff)
        if user_text_vectors is None:
            self._collators[key] = collator
        return collator

    def history_writer(self, spec: DataSpec, num_events: int = 50, retrieval: str = "recent") -> HistoryWriter:
        """Writes a user's events before a cutoff as text (``recent`` or ``bm25`` retrieval)."""
        from user_embed.eval.history_text import HistoryWriter

        return HistoryWriter(self.histories(spec), spec, self.items, num_events, retrieval)

    def profile(self, field: str) -> dict[str, object]:
        """{user_id: value} of one profile column of the users table."""
        if field not in self.users.columns:
            raise UserError(f"profile field '{field}' is not a column of the users table ({self.users.columns})")
        frame = self.users.select("user_id", field).to_dict(as_series=False)
        return dict(zip(frame["user_id"], frame[field]))


_EVENT_DEFAULTS = {"source": pl.lit("event", pl.Utf8), "value": pl.lit(None, pl.Float64),
                   "text": pl.lit(None, pl.Utf8)}
_ITEM_DEFAULTS = {"title": pl.col("item_id"), "categories": pl.lit([], pl.List(pl.Utf8))}


def _polars(name: str, frame: Any) -> pl.DataFrame:
    """A polars DataFrame from a polars or pandas frame."""
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if isinstance(frame, pl.DataFrame):
        return frame
    if type(frame).__module__.startswith("pandas"):
        try:
            return pl.from_pandas(frame)
        except Exception as exc:
            raise SchemaError(f"{name} frame: cannot convert from pandas ({type(exc).__name__}: {exc})") from exc
    raise SchemaError(f"{name} frame: expected a polars or pandas DataFrame, got {type(frame).__name__}")


def _conform(name: str, frame: pl.DataFrame, defaults: dict[str, pl.Expr]) -> pl.DataFrame:
    """Lossless casts and optional columns, then the schema check (one line naming frame, column, row)."""
    frame = frame.with_columns(**{c: e for c, e in defaults.items() if c not in frame.columns})
    casts = []
    for column in ("user_id", "item_id"):
        if column in frame.columns and frame[column].dtype.is_integer():
            casts.append(pl.col(column).cast(pl.Utf8))
    if "timestamp" in frame.columns:
        dtype = frame["timestamp"].dtype
        if dtype.is_integer() and dtype != pl.Int64:
            casts.append(pl.col("timestamp").cast(pl.Int64))
        elif isinstance(dtype, pl.Datetime):
            casts.append(pl.col("timestamp").dt.epoch("s"))
    if "value" in frame.columns and (frame["value"].dtype.is_integer() or frame["value"].dtype == pl.Float32):
        casts.append(pl.col("value").cast(pl.Float64))
    if casts:
        frame = frame.with_columns(casts)
    problems = find_problems(name, frame)
    if problems:
        raise SchemaError(f"{name} frame: {problems[0]}")
    return frame
