"""What the embedding benchmark predicts: the users it evaluates, their cutoffs, and the probe targets.

Users come from the UserQA split of ``qa.parquet`` (one cutoff per user: the time of their questions);
the probes are cross-validated over the held-out users (``val`` + ``test``, never trained on), while
mappings that need training pairs (retrieval's linear map, the recommendation scorer) fit on ``train``.

Targets (one label per user, ``None`` where undefined):
* every profile field of ``users.parquet``, generically: a text field is a class label, a numeric field
  is cut into quartile buckets (``age`` → four age buckets); a field with more distinct values than
  :data:`MAX_CLASSES` (e.g. a zip code) is skipped with its reason;
* ``next_top_category``: the most frequent item category among the first :data:`NEXT_EVENTS` events
  after the cutoff (ties: the category that comes first in the item table's category order);
* ``next_above_mean``: whether the first event after the cutoff has a value above the user's mean value
  before it (users without values are left out).
Classes with fewer members than the probe's folds are merged into ``other`` (left out when even together they
are fewer than the folds); a target left with one class
is skipped automatically, or refused when it was asked for by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from data_pipelines.schema import read_table
from user_embed.errors import UserError

MAX_CLASSES = 30
NEXT_EVENTS = 10
HELD_OUT = ("val", "test")
BEHAVIOUR_TARGETS = ("next_top_category", "next_above_mean")


@dataclass
class Target:
    """One probe target: a label per held-out user (None = not defined for that user)."""

    name: str
    labels: list[str | None]
    kind: str  # "binary" | "multiclass"
    source: str  # "profile" | "behaviour"
    instruction: str = ""  # a question about this target, for the question-conditioned vector

    @property
    def classes(self) -> list[str]:
        return sorted({label for label in self.labels if label is not None})


@dataclass
class BenchmarkUsers:
    """Train and held-out users with their cutoffs (the time of their UserQA questions)."""

    train: list[str]
    held_out: list[str]
    cutoffs: dict[str, int]
    split_of: dict[str, str] = field(default_factory=dict)

    @property
    def all(self) -> list[str]:
        return self.train + self.held_out


def benchmark_users(data_dir: str | Path, held_out: tuple[str, ...] = HELD_OUT) -> BenchmarkUsers:
    """The users of the UserQA splits and each one's cutoff, read from ``<data_dir>/qa.parquet``."""
    qa = read_table(Path(data_dir), "qa")
    per_user = qa.group_by("user_id", "split").agg(pl.col("cutoff").min()).sort("user_id")
    unknown = sorted(set(held_out) - set(per_user["split"].unique().to_list()))
    if unknown:
        raise UserError(f"{Path(data_dir) / 'qa.parquet'}: no questions in split(s) {unknown} "
                        f"(splits: {sorted(per_user['split'].unique().to_list())})")
    train = per_user.filter(pl.col("split") == "train")["user_id"].to_list()
    test = per_user.filter(pl.col("split").is_in(list(held_out)))["user_id"].to_list()
    cutoffs = dict(zip(per_user["user_id"].to_list(), per_user["cutoff"].to_list()))
    return BenchmarkUsers(train, test, cutoffs, dict(zip(per_user["user_id"].to_list(), per_user["split"].to_list())))


def profile_targets(users: pl.DataFrame, ids: list[str], folds: int) -> tuple[list[Target], dict[str, str]]:
    """A target per usable profile field of ``users`` for the users ``ids``; skipped fields with reasons."""
    table = dict(zip(users["user_id"].to_list(), users.drop("user_id").to_dicts()))
    targets, skipped = [], {}
    for name, dtype in users.schema.items():
        if name == "user_id":
            continue
        values = [table.get(u, {}).get(name) for u in ids]
        if dtype.is_numeric():
            labels = quartile_labels(values)
        else:
            labels = [None if v is None or str(v) == "" else str(v) for v in values]
            distinct = len({v for v in labels if v is not None})
            if distinct > MAX_CLASSES:
                skipped[name] = f"{distinct} distinct values (more than {MAX_CLASSES}): not a class label"
                continue
        target = usable(Target(name, labels, "multiclass", "profile",
                               f"What is this user's {name.replace('_', ' ')}?"), folds)
        if isinstance(target, str):
            skipped[name] = target
        else:
            targets.append(target)
    return targets, skipped


def quartile_labels(values: list[object]) -> list[str | None]:
    """Numeric values → quartile bucket names such as ``"[18, 25)"`` (None stays None)."""
    known = np.array([float(v) for v in values if v is not None and np.isfinite(float(v))])
    if len(known) == 0:
        return [None] * len(values)
    edges = np.unique(np.quantile(known, [0.25, 0.5, 0.75]))
    bounds = [-np.inf, *edges, np.inf]
    names = [f"[{_num(lo)}, {_num(hi)})" for lo, hi in zip(bounds[:-1], bounds[1:])]
    out: list[str | None] = []
    for v in values:
        if v is None or not np.isfinite(float(v)):
            out.append(None)
        else:
            out.append(names[int(np.searchsorted(edges, float(v), side="right"))])
    return out


def _num(x: float) -> str:
    return "-inf" if x == -np.inf else "inf" if x == np.inf else f"{x:g}"


def behaviour_targets(events: pl.DataFrame, items: pl.DataFrame, ids: list[str], cutoffs: dict[str, int],
                      folds: int, noun: str = "item") -> tuple[list[Target], dict[str, str]]:
    """``next_top_category`` and ``next_above_mean`` for the users ``ids`` (see the module docstring)."""
    frame = events.filter(pl.col("user_id").is_in(ids)).join(
        pl.DataFrame({"user_id": list(cutoffs), "cutoff": list(cutoffs.values())}), on="user_id")
    before = frame.filter(pl.col("timestamp") < pl.col("cutoff"))
    after = frame.filter(pl.col("timestamp") >= pl.col("cutoff")).sort("user_id", "timestamp", maintain_order=True)
    order = {c: i for i, c in enumerate(dict.fromkeys(c for cs in items["categories"].to_list() for c in (cs or [])))}
    first = after.group_by("user_id", maintain_order=True).head(NEXT_EVENTS).join(
        items.select("item_id", "categories"), on="item_id", how="left")
    counts: dict[str, dict[str, int]] = {}
    for user, categories in zip(first["user_id"].to_list(), first["categories"].to_list()):
        mine = counts.setdefault(user, {})
        for c in categories or []:
            mine[c] = mine.get(c, 0) + 1
    top = {u: min(c, key=lambda k: (-c[k], order.get(k, len(order)))) for u, c in counts.items() if c}
    mean_before = dict(before.filter(pl.col("value").is_not_null()).group_by("user_id")
                       .agg(pl.col("value").mean()).iter_rows())
    next_value = dict(after.filter(pl.col("value").is_not_null()).group_by("user_id", maintain_order=True)
                      .agg(pl.col("value").first()).iter_rows())
    above = {u: ("yes" if next_value[u] > mean_before[u] else "no") for u in next_value if u in mean_before}
    candidates = [
        Target("next_top_category", [top.get(u) for u in ids], "multiclass", "behaviour",
               f"Which category will most of this user's next {noun}s have?"),
        Target("next_above_mean", [above.get(u) for u in ids], "binary", "behaviour",
               f"Will this user rate the next {noun} above their average?"),
    ]
    targets, skipped = [], {}
    for target in candidates:
        checked = usable(target, folds)
        if isinstance(checked, str):
            skipped[target.name] = checked
        else:
            targets.append(checked)
    return targets, skipped


def usable(target: Target, folds: int) -> Target | str:
    """The target with rare classes merged into ``other`` (fewer than ``folds`` members), or why it is unusable."""
    labels = [label for label in target.labels if label is not None]
    if len(labels) < 2 * folds:
        return f"defined for {len(labels)} users (needs at least {2 * folds})"
    counts = {c: labels.count(c) for c in set(labels)}
    rare = {c for c, n in counts.items() if n < folds}
    merged = [None if label is None else ("other" if label in rare else label) for label in target.labels]
    if 0 < merged.count("other") < folds and "other" not in counts:  # too few even together: left out
        merged = [None if label == "other" else label for label in merged]
    kept = {label for label in merged if label is not None}
    if len(kept) < 2:
        only = ", ".join(sorted(counts, key=counts.get, reverse=True)[:3])
        return f"one class after merging classes with fewer than {folds} users ({only})"
    kind = "binary" if len(kept) == 2 else "multiclass"
    return Target(target.name, merged, kind, target.source, target.instruction)


def select_targets(targets: list[Target], skipped: dict[str, str], names: list[str] | None,
                   where: str) -> list[Target]:
    """The targets asked for by name (all usable ones without ``names``); UserError naming a missing one."""
    if not names:
        return targets
    by_name = {t.name: t for t in targets}
    for name in names:
        if name in skipped:
            raise UserError(f"--targets: {name!r} cannot be probed: {skipped[name]}")
        if name not in by_name:
            raise UserError(f"--targets: no target {name!r} in {where} (profile fields and behaviour targets: "
                            f"{', '.join(sorted([*by_name, *skipped]))})")
    return [by_name[n] for n in names]
