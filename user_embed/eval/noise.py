"""Noisy copies of an events table: some of each evaluated user's history before their cutoff is fake.

:func:`noisy_events` perturbs, for each user in ``cutoffs``, only the events with ``timestamp < cutoff``:

* ``replace`` — ``round(share · n)`` of the user's ``n`` pre-cutoff events (chosen at random) get another item;
* ``insert`` — ``round(share · n / (1 − share))`` new events are added at random times within the user's
  pre-cutoff time span (so that ``share`` of the result's pre-cutoff events are fake).

Fake items are drawn by popularity (event counts over the whole events table; in ``replace`` never the item the
event had), fake values from the user's own pre-cutoff values (the whole table's when the user has none), and fake
events carry no ``text``. Events at or after a cutoff, and users not in ``cutoffs``, are never changed. Each user
draws from their own generator, seeded by (seed, share, user id), so a user's noise does not depend on which other
users are perturbed. Everything happens in memory: :func:`noisy_store` wraps the result in a
:class:`~user_embed.store.UserStore` like the clean one.
"""

from __future__ import annotations

import hashlib

import numpy as np
import polars as pl

from user_embed.errors import UserError
from user_embed.store import UserStore

MODES = ("replace", "insert")


def user_rng(seed: int, share: float, user_id: str) -> np.random.Generator:
    """The generator of one user's noise: a function of (seed, share, user id) only."""
    digest = int.from_bytes(hashlib.sha256(user_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([seed & 0xFFFFFFFFFFFFFFFF, int(round(share * 1_000_000)), digest])


def check_noise(share: float, seed: int, mode: str) -> None:
    """UserError for a share outside [0, 1), a non-integer seed or an unknown mode."""
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 <= share < 1:
        raise UserError(f"noise share must be a number in [0, 1), got {share!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise UserError(f"noise seed must be an integer, got {seed!r}")
    if mode not in MODES:
        raise UserError(f"noise mode must be one of {', '.join(MODES)}, got {mode!r}")


def noisy_events(events: pl.DataFrame, cutoffs: dict[str, int | None], share: float, seed: int = 0,
                 mode: str = "replace") -> tuple[pl.DataFrame, int]:
    """(the perturbed copy of ``events``, how many events were replaced or inserted); ``share`` 0 → ``events``.

    ``events``: the schema's events table (user_id, timestamp, item_id, value[, source, text]); ``cutoffs``:
    {user id: the cutoff before which their history is perturbed (None: all of it)}. The result has the same
    columns and dtypes; in ``replace`` mode the same rows in the same order, in ``insert`` mode the new rows
    appended at the end (histories are sorted by time when read)."""
    check_noise(share, seed, mode)
    if share == 0 or not cutoffs or events.is_empty():
        return events, 0
    popularity = events["item_id"].value_counts(sort=True)  # (item_id, count) over the whole table
    pop_items = popularity["item_id"].to_numpy()
    pop_p = popularity["count"].to_numpy().astype(np.float64)
    pop_p /= pop_p.sum()
    global_values = events["value"].cast(pl.Float64).drop_nulls().drop_nans().to_numpy()
    bound = np.iinfo(np.int64).max
    limits = pl.DataFrame({"user_id": list(cutoffs), "_cutoff": [bound if c is None else int(c)
                                                                  for c in cutoffs.values()]},
                          schema={"user_id": pl.Utf8, "_cutoff": pl.Int64})
    before = (events.with_row_index("_row").join(limits, on="user_id", how="inner")
              .filter(pl.col("timestamp") < pl.col("_cutoff"))
              .sort("user_id", "_row").select("_row", "user_id", "timestamp", "item_id", "value", "source"))
    if before.is_empty():
        return events, 0
    users = before["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    ends = np.r_[starts[1:], len(users)]
    columns = {name: before[name].to_numpy() for name in ("_row", "timestamp", "item_id", "source")}
    columns["value"] = before["value"].cast(pl.Float64).fill_null(np.nan).to_numpy()  # null → NaN
    picks = []  # per user: (rows or timestamps, items, values, sources)
    for start, end in zip(starts, ends):  # a loop over users; the work inside is numpy on the user's slice
        user = {name: column[start:end] for name, column in columns.items()}
        rng = user_rng(seed, share, str(users[start]))
        picks.append(_replace(user, rng, share, pop_items, pop_p, global_values) if mode == "replace"
                     else _insert(user, rng, share, pop_items, pop_p, global_values))
    changed = sum(len(p[1]) for p in picks)
    if changed == 0:
        return events, 0
    where = np.concatenate([p[0] for p in picks])
    items = np.concatenate([p[1] for p in picks]).astype(object)
    values = np.concatenate([p[2] for p in picks]).astype(np.float64)
    value_dtype = events.schema["value"]
    if mode == "replace":
        out = events.with_columns(
            events["item_id"].scatter(where, items).alias("item_id"),
            events["value"].cast(pl.Float64).scatter(where, pl.Series(values, nan_to_null=True))
            .cast(value_dtype).alias("value"),
            *([events["text"].scatter(where, None).alias("text")] if "text" in events.columns else []))
        return out, changed
    added = pl.DataFrame({"user_id": np.concatenate([np.full(len(p[1]), users[s], dtype=object)
                                                     for p, s in zip(picks, starts)]),
                          "timestamp": where, "item_id": items, "value": values,
                          "source": np.concatenate([p[3] for p in picks]).astype(object)},
                         schema_overrides={"user_id": pl.Utf8, "item_id": pl.Utf8, "source": pl.Utf8},
                         nan_to_null=True)
    added = added.with_columns(pl.col("timestamp").cast(events.schema["timestamp"]),
                               pl.col("value").cast(value_dtype))
    missing = [pl.lit(None, events.schema[c]).alias(c) for c in events.columns if c not in added.columns]
    added = added.with_columns(missing).select(events.columns).cast(dict(events.schema))
    return pl.concat([events, added], how="vertical"), changed


def _fake_values(user_values: np.ndarray, global_values: np.ndarray, count: int,
                 rng: np.random.Generator) -> np.ndarray:
    """(count,) float values drawn from the user's own non-null values, else the table's; NaN (null) if none."""
    own = user_values[~np.isnan(user_values)]  # (m,) the user's non-null values
    pool = own if len(own) else global_values.astype(np.float64)
    if len(pool) == 0:
        return np.full(count, np.nan)
    return rng.choice(pool, size=count)


def _replace(user: dict[str, np.ndarray], rng: np.random.Generator, share: float, pop_items: np.ndarray,
             pop_p: np.ndarray, global_values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(rows, new items, new values, sources) for round(share · n) of the user's n events, each a new item."""
    n = len(user["_row"])
    count = int(round(share * n))
    chosen = np.sort(rng.choice(n, size=count, replace=False)) if count else np.array([], dtype=np.int64)
    old = user["item_id"][chosen]
    items = rng.choice(pop_items, size=count, p=pop_p)
    for _ in range(100):  # redraw the draws that hit the event's own item (rejection: popularity without it)
        same = np.flatnonzero(items == old)
        if len(same) == 0 or len(pop_items) < 2:
            break
        items[same] = rng.choice(pop_items, size=len(same), p=pop_p)
    values = _fake_values(user["value"], global_values, count, rng)
    return user["_row"][chosen], items, values, user["source"][chosen]


def _insert(user: dict[str, np.ndarray], rng: np.random.Generator, share: float, pop_items: np.ndarray,
            pop_p: np.ndarray, global_values: np.ndarray) -> tuple[np.ndarray, ...]:
    """(timestamps, items, values, sources) of round(share · n / (1 − share)) new events within the user's span."""
    n = len(user["_row"])
    count = int(round(share * n / (1 - share)))
    first, last = int(user["timestamp"].min()), int(user["timestamp"].max())
    timestamps = rng.integers(first, last, size=count, endpoint=True, dtype=np.int64)
    items = rng.choice(pop_items, size=count, p=pop_p)
    values = _fake_values(user["value"], global_values, count, rng)
    sources = user["source"][rng.integers(0, n, size=count)]  # a source the user's events have
    return timestamps, items, values, sources


def noisy_store(store: UserStore, cutoffs: dict[str, int | None], share: float, seed: int = 0,
                mode: str = "replace") -> tuple[UserStore, int]:
    """(a UserStore like ``store`` over :func:`noisy_events` of its events, events changed); share 0 → ``store``."""
    events, changed = noisy_events(store.events, cutoffs, share, seed, mode)
    if changed == 0:
        return store, 0
    return UserStore(events, store.items, store.users, store.texts, store.cutoff,
                     origin=f"{store.origin} (noise {mode} {share:g}, seed {seed})"), changed
