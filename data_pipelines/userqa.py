"""UserQA builder: questions about each user's history with short, exactly checkable answers.

Works for any ``events`` table whose items carry ``categories`` (schema in
:mod:`data_pipelines.schema`). Per user, events are sorted by (timestamp, item_id); the
cutoff is the timestamp of the event at position ``floor(history_fraction * n)``; history =
events before the cutoff, future = events at/after it. Questions follow UQABench's three
families (tasks in :mod:`data_pipelines.userqa_tasks`)::

    sequence_understanding  recent_category, category_count
    action_prediction       next_category, next_rating (skipped when events have no values)
    interest_perception     longterm_top_category, recent_top_category, interest_shift

Answers come from a stated option list (shuffled), so accuracy is exact. Each category question is also
asked in an open variant (task ``<task>_open``, ``options`` empty): the same answer, no options listed, for
free-text answers (``UserQAConfig.open_questions``). Per task and split,
over-represented answers are downsampled so no answer exceeds ``max_majority_share`` where
the data allows. Splits are user-disjoint, decided by a hash of (seed, user_id), so a user's
split does not depend on the config or on other users. ``texts`` holds one factual,
template-made description of each user's history before the cutoff.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict

import numpy as np
import polars as pl

from data_pipelines.errors import ConfigError
from data_pipelines.report import RowReport
from data_pipelines.schema import SPLITS, validate
from data_pipelines.userqa_config import OPEN_SUFFIX, UserQAConfig  # UserQAConfig re-exported from here
from data_pipelines.userqa_tasks import TASKS, QAContext, plural


# ---------------------------------------------------------------- preparation
# Internally user_id, item_id and category are pl.Enum columns whose categories are the
# sorted ids, so sorting and joining run on integers while sort order stays lexical.
def _encode_items(items: pl.DataFrame) -> pl.DataFrame:
    """Items sorted by id with Enum ids and deduplicated, non-empty Enum categories."""
    cats = pl.col("categories").list.eval(pl.element().filter(pl.element().str.len_chars() > 0))
    items = items.select("item_id", "title", cats.list.unique(maintain_order=True).alias("categories"))
    items = items.sort("item_id")
    vocab = items["categories"].explode().drop_nulls().unique().sort()
    return items.with_columns(
        pl.col("item_id").cast(pl.Enum(items["item_id"])),
        pl.col("categories").cast(pl.List(pl.Enum(vocab))),
    )


def _sort_events(ev: pl.DataFrame) -> pl.DataFrame:
    """Sort by (user_id, timestamp, item_id, value); a packed integer key when timestamps allow.
    ``value`` only breaks ties between repeated events, so the order never depends on input order."""
    if ev.is_empty():
        return ev
    t_min, t_max = ev["timestamp"].min(), ev["timestamp"].max()
    if t_max - t_min < 2**32:
        key = pl.col("user_id").to_physical().cast(pl.UInt64) * pl.lit(2**32, dtype=pl.UInt64) + (
            pl.col("timestamp") - t_min).cast(pl.UInt64)
        return ev.with_columns(key.alias("_key")).sort("_key", "item_id", "value").drop("_key")
    return ev.sort("user_id", "timestamp", "item_id", "value")


def _history_and_future(
    ev: pl.DataFrame, config: UserQAConfig
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, dict[str, int], int]:
    """Eligible users (user_id, cutoff, n_hist), their history (events before the cutoff, with
    pos/rpos), their first event at/after the cutoff, skipped-user counts and the user count."""
    ev = _sort_events(ev)
    # cutoff = timestamp at index floor(history_fraction * n); the epsilon absorbs float error
    index = ((pl.len() * config.history_fraction) + 1e-9).floor().cast(pl.Int64)
    ev = ev.with_columns(
        pl.int_range(pl.len()).over("user_id").alias("pos"),
        pl.len().over("user_id").alias("n"),
        pl.col("timestamp").get(index).over("user_id").alias("cutoff"),
    ).with_columns((pl.col("timestamp") < pl.col("cutoff")).sum().over("user_id").alias("n_hist"))
    per_user = ev.filter(pl.col("pos") == 0).select("user_id", "cutoff", "n", "n_hist")
    few = pl.col("n_hist") < config.min_history
    no_future = pl.col("n_hist") == pl.col("n")
    skipped = {
        "too_few_history": per_user.filter(few).height,
        "no_future": per_user.filter(~few & no_future).height,
    }
    users = per_user.filter(~few & ~no_future).select("user_id", "cutoff", "n_hist")
    ev = ev.filter((pl.col("n_hist") >= config.min_history) & (pl.col("n_hist") < pl.col("n")))
    history = ev.filter(pl.col("pos") < pl.col("n_hist")).with_columns(
        (pl.col("n_hist") - 1 - pl.col("pos")).alias("rpos"))
    first_future = ev.filter(pl.col("pos") == pl.col("n_hist"))
    drop = ["n", "cutoff"]
    return users, history.drop(drop), first_future.drop(*drop, "n_hist", "pos"), skipped, per_user.height


def assign_splits(user_ids: pl.Series, seed: int, fractions: tuple[float, float, float]) -> pl.Series:
    """train/val/test by a hash of (seed, user_id): stable per user, independent of the rest."""
    edges = np.cumsum(fractions)[:-1]
    u = np.array([
        int.from_bytes(hashlib.blake2b(f"{seed}\x00{uid}".encode(), digest_size=8).digest(), "big") / 2**64
        for uid in user_ids.cast(pl.Utf8).to_list()
    ])
    return pl.Series("split", np.array(SPLITS)[np.searchsorted(edges, u, side="right")], dtype=pl.Utf8)


def _category_stats(history: pl.DataFrame, config: UserQAConfig) -> pl.DataFrame:
    exploded = history.select("user_id", "pos", "rpos", "n_hist", pl.col("categories").alias("category"))
    exploded = exploded.explode("category").drop_nulls("category")
    return exploded.group_by("user_id", "category").agg(
        pl.len().alias("n_all"),
        (pl.col("rpos") < config.recent_window).sum().alias("n_recent"),
        (pl.col("rpos") < config.count_window).sum().alias("n_window"),
        (pl.col("pos") >= pl.col("n_hist") // 2).sum().alias("n_new"),
    )


# ---------------------------------------------------------------- assembling questions
def _fill(template: str, values: dict[str, pl.Expr]) -> pl.Expr:
    parts = re.split(r"(\{\w+\})", template)
    exprs = [values[p[1:-1]].cast(pl.Utf8) if p[1:-1] in values and p.startswith("{") else pl.lit(p)
             for p in parts if p]
    return pl.concat_str(exprs)


def _finish(rows: pl.DataFrame, task: str, ctx: QAContext, users: pl.DataFrame) -> pl.DataFrame:
    """Drop duplicate questions, shuffle options, write the question text, add split/cutoff."""
    sorted_options = pl.col("options").list.eval(pl.element().sort())  # faster than list.sort()
    rows = rows.with_columns(sorted_options.alias("_opts"))
    rows = rows.sort("user_id", "replica").unique(
        ["user_id", "answer", "_opts", "subject"], keep="first", maintain_order=True).drop("_opts")
    rows = rows.with_row_index("_row")
    shuffled = rows.select("_row", "options").explode("options")
    shuffled = shuffled.with_columns(pl.Series("_rand", ctx.rng(task, "shuffle").random(shuffled.height)))
    shuffled = shuffled.sort("_row", "_rand").group_by("_row", maintain_order=True).agg("options")
    rows = rows.drop("options").join(shuffled, on="_row").sort("_row")
    spec = TASKS[task]
    fields = {"subject": pl.col("subject"), "window": pl.col("window")}
    body = _fill(spec.template(ctx.config), fields)
    question = pl.concat_str([body, pl.lit(" Options: "), pl.col("options").list.join(", "),
                              pl.lit(". Answer with one option.")])
    open_question = _fill(spec.open_template(ctx.config), fields) if spec.open_template else pl.lit(None, pl.Utf8)
    rows = rows.join(users.select("user_id", "cutoff", "split"), on="user_id", maintain_order="left")
    # user_id stays an Enum (lexical order) until the final table is assembled
    return rows.select(
        "user_id", question.alias("question"), "answer", "options", pl.lit(task).alias("task"),
        pl.lit(spec.family).alias("family"), "cutoff", "split", "replica", open_question.alias("open_question"),
    )


def _open_variant(rows: pl.DataFrame, task: str) -> pl.DataFrame:
    """The open variant of a task's questions: the same users, answers and cutoffs, no options listed."""
    rows = rows.with_columns(pl.col("open_question").alias("question"), pl.lit([], pl.List(pl.Utf8)).alias("options"),
                             pl.lit(task + OPEN_SUFFIX).alias("task"))
    return rows.unique(["user_id", "question", "answer"], keep="first", maintain_order=True)


def _open_summary(rows: pl.DataFrame) -> dict:
    """Rows and majority-answer share per split of an open task (its random accuracy depends on the labels)."""
    out: dict = {"rows": {}, "majority_share": {}}
    for split in (*SPLITS, "all"):
        part = rows if split == "all" else rows.filter(pl.col("split") == split)
        out["rows"][split] = part.height
        if not part.is_empty():
            out["majority_share"][split] = round(part["answer"].value_counts()["count"].max() / part.height, 4)
    return out


def balance_cap(counts: list[int], max_share: float) -> int | None:
    """Largest per-answer cap L with max(min(c, L)) <= max_share * sum(min(c, L)), or None if
    only L = 0 would satisfy it (e.g. a single answer label) or no cap is needed."""
    if not counts or max(counts) <= max_share * sum(counts) + 1e-9:
        return None
    ok = lambda cap: cap <= max_share * sum(min(c, cap) for c in counts) + 1e-9  # noqa: E731
    lo, hi = 0, max(counts)  # ok(lo) holds; the feasible caps form an interval [0, L*]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ok(mid) else (lo, mid - 1)
    return lo or None


def _balance(
    rows: pl.DataFrame, max_share: float, rng: np.random.Generator
) -> tuple[pl.DataFrame, int, bool]:
    """Downsample over-represented answers per split (seeded); returns rows, dropped, balanced."""
    caps, balanced = {}, True
    for (split,), group in rows.group_by(["split"]):
        counts = group["answer"].value_counts()["count"].to_list()
        cap = balance_cap(counts, max_share)
        if cap is None and max(counts) > max_share * sum(counts) + 1e-9:
            balanced = False  # the data does not allow it: keep everything
        caps[split] = cap if cap is not None else max(counts)
    if not caps:
        return rows, 0, True
    cap_df = pl.DataFrame({"split": list(caps), "_cap": list(caps.values())})
    rows = rows.sort("user_id", "replica").with_columns(pl.Series("_rand", rng.random(rows.height)))
    rank = pl.col("_rand").rank("ordinal").over("split", "answer")
    kept = rows.join(cap_df, on="split").filter(rank <= pl.col("_cap")).drop("_cap", "_rand")
    return kept.sort("user_id", "replica"), rows.height - kept.height, balanced


# ---------------------------------------------------------------- summary and texts
def _task_summary(rows: pl.DataFrame, vocab: pl.DataFrame, category_options: bool) -> dict:
    out: dict = {"rows": {}, "majority_share": {}, "random_accuracy": {}}
    if category_options:
        out["popularity_accuracy"] = {}
    for split in (*SPLITS, "all"):
        part = rows if split == "all" else rows.filter(pl.col("split") == split)
        out["rows"][split] = part.height
        if part.is_empty():
            continue
        out["majority_share"][split] = round(part["answer"].value_counts()["count"].max() / part.height, 4)
        out["random_accuracy"][split] = round(float((1.0 / part["options"].list.len()).mean()), 4)
        if category_options:  # always pick the option most popular across all histories
            opts = part.with_row_index("_row").select("_row", "answer", "options").explode("options")
            opts = opts.with_columns(pl.int_range(pl.len()).over("_row").alias("_idx"))
            weights = vocab.with_columns(pl.col("category").cast(pl.Utf8))
            opts = opts.join(weights, left_on="options", right_on="category", how="left")
            best = opts.sort("_row", pl.col("weight").fill_null(0), "_idx", descending=[False, True, False])
            best = best.unique("_row", keep="first")
            out["popularity_accuracy"][split] = round(float((best["options"] == best["answer"]).mean()), 4)
    return out


def _texts(users: pl.DataFrame, history: pl.DataFrame, stats: pl.DataFrame, items: pl.DataFrame,
           config: UserQAConfig) -> pl.DataFrame:
    item_p = config.item_noun_plural or plural(config.item_noun)
    cat_p = config.category_noun_plural or plural(config.category_noun)
    month = lambda c: pl.from_epoch(pl.col(c), time_unit="s").dt.strftime("%Y-%m")  # noqa: E731
    base = history.group_by("user_id").agg(
        pl.len().alias("n"),
        pl.col("timestamp").min().alias("first"),
        pl.col("timestamp").max().alias("last"),
        pl.col("value").mean().alias("mean"),
    )
    top = (
        stats.sort("user_id", "n_all", "category", descending=[False, True, False])
        .group_by("user_id", maintain_order=True).head(config.text_top_categories)
        .group_by("user_id").agg(
            pl.format("{} ({})", pl.col("category").cast(pl.Utf8), "n_all").str.join(", ").alias("top"))
    )
    cats = pl.col("categories").cast(pl.List(pl.Utf8)).list.join("/")
    recent = (
        history.filter(pl.col("rpos") < config.text_recent_items)
        .join(items.select("item_id", "title"), on="item_id").sort("user_id", "rpos")
        .with_columns(pl.when(pl.col("categories").list.len() > 0)
                      .then(pl.format("{} ({})", "title", cats)).otherwise(pl.col("title")).alias("piece"))
        .group_by("user_id", maintain_order=True).agg(pl.col("piece").str.join(", ").alias("recent"))
    )
    df = users.select("user_id").join(base, on="user_id", how="left").join(top, on="user_id", how="left")
    df = df.join(recent, on="user_id", how="left")
    verb = config.action_verb[:1].upper() + config.action_verb[1:]
    noun = pl.when(pl.col("n") == 1).then(pl.lit(config.item_noun)).otherwise(pl.lit(item_p))
    text = pl.concat_str(
        [
            pl.format(f"{verb} {{}} {{}} between {{}} and {{}}", "n", noun, month("first"), month("last")),
            pl.format(f"; mean {config.value_noun} {{}}", pl.col("mean").round(1)),
            pl.lit("."),
            pl.format(f" Top {cat_p}: {{}}.", "top"),
            pl.format(" Most recent first: {}.", "recent"),
        ],
        ignore_nulls=True,
    )
    return df.sort("user_id").select(pl.col("user_id").cast(pl.Utf8), text.alias("text"))


# ---------------------------------------------------------------- entry point
def build_userqa(
    events: pl.DataFrame, items: pl.DataFrame, *, seed: int = 0, config: UserQAConfig | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, dict]:
    """Build the ``qa`` and ``texts`` tables and a summary (the ``qa_summary`` of summary.json).

    ``events`` and ``items`` must match the schema; events whose item is not in ``items`` are
    dropped and counted. Deterministic for a given seed.
    """
    config = UserQAConfig() if config is None else config
    if not isinstance(config, UserQAConfig):
        raise ConfigError(f"config must be a UserQAConfig, got {type(config).__name__}")
    if not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    validate("events", events)
    validate("items", items)
    items = _encode_items(items)
    report = RowReport("events", read=events.height)
    ev = events.select("user_id", "timestamp", "item_id", "value").with_columns(
        pl.col("item_id").cast(items["item_id"].dtype, strict=False).alias("_item"))
    ev = report.drop(ev, pl.col("_item").is_null(), "item_id not in items table", ["user_id", "item_id"])
    ev = ev.select(pl.col("user_id").cast(pl.Enum(ev["user_id"].unique().sort())), "timestamp",
                   pl.col("_item").alias("item_id"), "value")
    has_values = ev["value"].null_count() < ev.height

    users, history, first_future, skipped, n_users = _history_and_future(ev, config)
    users = users.with_columns(assign_splits(users["user_id"], seed, config.split_fractions))
    history = history.with_columns(items["categories"].gather(history["item_id"].to_physical()))
    first_future = first_future.with_columns(
        items["title"].gather(first_future["item_id"].to_physical()),
        items["categories"].gather(first_future["item_id"].to_physical()),
    )
    stats = _category_stats(history, config)
    category_type = items["categories"].dtype.inner
    popularity = stats.group_by("category").agg(pl.col("n_all").sum())
    vocab = pl.DataFrame({"category": pl.Series(category_type.categories).cast(category_type)})
    vocab = vocab.join(popularity, on="category", how="left").select(
        "category", (pl.col("n_all").fill_null(0) + 1).cast(pl.Float64).alias("weight")).sort("category")
    ctx = QAContext(users.select("user_id", "n_hist"), history, first_future, stats, vocab, config, seed)

    task_summaries: dict[str, dict] = {}
    tables = []
    for task, spec in TASKS.items():
        entry: dict = {"family": spec.family}
        count = config.tasks.get(task, 0)
        skip = ("disabled in config" if count == 0 else
                "events have no values" if task == "next_rating" and not has_values else
                "items have no categories" if task != "next_rating" and vocab.is_empty() else None)
        if skip:
            entry["skipped"] = skip
            entry["rows"] = {s: 0 for s in (*SPLITS, "all")}
            task_summaries[task] = entry
            continue
        result = spec.build(ctx, task, count)
        rows = _finish(result.rows, task, ctx, users)
        rows, dropped, balanced = _balance(rows, config.max_majority_share, ctx.rng(task, "balance"))
        entry.update(_task_summary(rows, vocab, spec.category_options))
        entry.update(users_asked=rows["user_id"].n_unique(), not_asked=result.not_asked,
                     dropped_for_balance=dropped, balanced=balanced)
        task_summaries[task] = entry
        if config.open_questions and spec.open_template is not None:
            open_rows = _open_variant(rows, task)
            task_summaries[task + OPEN_SUFFIX] = {"family": spec.family, "open_variant_of": task, "balanced": balanced,
                                                  **_open_summary(open_rows)}
            tables.append(open_rows.drop("open_question"))
        tables.append(rows.drop("open_question"))

    qa = pl.concat(tables) if tables else None
    order = {name: i for i, name in enumerate(TASKS)}
    order |= {name + OPEN_SUFFIX: len(TASKS) + i for i, name in enumerate(TASKS)}
    if qa is None or qa.is_empty():
        qa = pl.DataFrame(schema={"user_id": pl.Utf8, "question": pl.Utf8, "answer": pl.Utf8,
                                  "options": pl.List(pl.Utf8), "task": pl.Utf8, "family": pl.Utf8,
                                  "cutoff": pl.Int64, "split": pl.Utf8})
    else:
        qa = qa.with_columns(pl.col("task").replace_strict(order, return_dtype=pl.Int64).alias("_t"))
        qa = qa.sort("user_id", "_t", "replica").drop("_t", "replica")
        qa = qa.with_columns(pl.col("user_id").cast(pl.Utf8))
    texts = _texts(users, history, stats, items, config)
    summary = {
        "seed": seed,
        "events": report.as_dict(),
        "users": {"in_events": n_users, "eligible": users.height, "skipped": skipped},
        "split_users": {s: int((users["split"] == s).sum()) for s in SPLITS},
        "rows": qa.height,
        "tasks": task_summaries,
        "config": asdict(config),
    }
    return validate("qa", qa), validate("texts", texts), summary
