"""UserQA task generators: one function per task, each returning candidate questions.

Every generator takes a :class:`QAContext` (per-user history before the cutoff, the first
event at/after it, per-(user, category) counts) and returns a :class:`TaskResult`: a frame
with columns ``user_id, replica, answer, options, subject, window`` (options unshuffled;
``subject``/``window`` fill the question template) plus the number of users not asked, by
reason. Past-facing tasks read only ``history``/``stats``; future-facing tasks read only
``first_future`` for their answer.

Randomness comes from numpy generators seeded by (seed, task, stage) and applied to rows in
a fixed sort order, so results are identical across runs and do not depend on polars hashing.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import polars as pl

from data_pipelines.userqa_config import TASK_NAMES, UserQAConfig, bucket_bounds

KEYS = ["user_id", "replica"]  # one candidate question = one (user, replica)


@dataclass
class QAContext:
    """Everything a task may read; all frames hold eligible users only.

    ``user_id``, ``item_id`` and ``category`` are pl.Enum columns whose categories are the
    sorted ids, so integer-speed sorts and joins keep lexical (input-order-free) order.
    """

    users: pl.DataFrame  # user_id, n_hist
    history: pl.DataFrame  # user_id, pos, rpos (0 = most recent), timestamp, item_id, value, categories
    first_future: pl.DataFrame  # user_id, item_id, value, title, categories (first event at/after cutoff)
    stats: pl.DataFrame  # user_id, category, n_all, n_recent, n_window, n_new (history counts)
    vocab: pl.DataFrame  # category, weight (= history popularity + 1), sorted by category
    config: UserQAConfig
    seed: int

    def rng(self, task: str, stage: str) -> np.random.Generator:
        entropy = [self.seed & 0xFFFFFFFFFFFFFFFF, zlib.crc32(task.encode()), zlib.crc32(stage.encode())]
        return np.random.default_rng(entropy)


@dataclass
class TaskResult:
    rows: pl.DataFrame  # user_id, replica, answer, options, subject, window
    not_asked: dict[str, int] = field(default_factory=dict)


class _Funnel:
    """Counts users lost at each filtering step of a task, by reason."""

    def __init__(self, n_users: int) -> None:
        self.n = n_users
        self.lost: dict[str, int] = {}

    def keep(self, df: pl.DataFrame, reason: str) -> pl.DataFrame:
        n = df["user_id"].n_unique()
        if n < self.n:
            self.lost[reason] = self.lost.get(reason, 0) + self.n - n
        self.n = n
        return df


# ---------------------------------------------------------------- random helpers
def add_rand(df: pl.DataFrame, rng: np.random.Generator, by: list[str]) -> pl.DataFrame:
    """Sort by ``by`` (a unique key) and add a uniform ``_rand`` column."""
    df = df.sort(by)
    return df.with_columns(pl.Series("_rand", rng.random(df.height)))


def pick_random(df: pl.DataFrame, keys: list[str], candidate: str, rng: np.random.Generator) -> pl.DataFrame:
    """One uniformly random row per ``keys`` group; (keys, candidate) must be unique."""
    df = add_rand(df, rng, [*keys, candidate]).sort([*keys, "_rand"])
    return df.unique(keys, keep="first", maintain_order=True).drop("_rand")


def sample_excluding(
    keys_df: pl.DataFrame, excluded: pl.DataFrame, k: int, vocab: pl.DataFrame, rng: np.random.Generator
) -> pl.DataFrame:
    """Per row of ``keys_df`` (unique KEYS): ``k`` distinct vocab categories the user does not
    have in ``excluded`` (user_id, category), drawn without replacement with probability
    proportional to ``vocab.weight``. If ``keys_df`` has a ``_min_weight`` column, only
    categories with a larger weight are allowed. Returns KEYS + ``distractors``; rows with
    fewer than ``k`` allowed categories are left out.

    Draws with replacement and rejects excluded/duplicate picks (sequential weighted
    sampling); the few rows still short after three rounds get an exact weighted ordering of
    all allowed categories (Efraimidis-Spirakis keys), in chunks that bound memory.
    """
    list_type = pl.List(vocab.schema["category"])
    schema = {**{c: keys_df.schema[c] for c in KEYS}, "distractors": list_type}
    if k <= 0:
        return keys_df.select(KEYS).with_columns(pl.lit([], dtype=list_type).alias("distractors"))
    cats = vocab["category"]
    weights = vocab["weight"].to_numpy().astype(np.float64)
    probs = weights / weights.sum()
    min_weight = "_min_weight" in keys_df.columns
    remaining = keys_df.select(*KEYS, *(["_min_weight"] if min_weight else [])).sort(KEYS)
    if min_weight:  # nothing is more popular than the most popular category
        remaining = remaining.filter(pl.col("_min_weight") < weights.max())
    found: list[pl.DataFrame] = []
    draws = 2 * k + 4
    for _ in range(3):
        if remaining.is_empty():
            break
        h = remaining.height
        drawn = rng.choice(len(cats), size=h * draws, p=probs)
        picks = remaining.select(pl.all().gather(np.repeat(np.arange(h), draws))).with_columns(
            pl.Series("_order", np.tile(np.arange(draws), h)),
            cats.gather(drawn).alias("category"),
            pl.Series("weight", weights[drawn]),
        )
        if min_weight:
            picks = picks.filter(pl.col("weight") > pl.col("_min_weight"))
        picks = picks.join(excluded, on=["user_id", "category"], how="anti").sort([*KEYS, "_order"])
        picks = picks.unique([*KEYS, "category"], keep="first", maintain_order=True)
        got = (
            picks.group_by(KEYS, maintain_order=True)
            .agg(pl.col("category").head(k).alias("distractors"))
            .filter(pl.col("distractors").list.len() == k)
        )
        found.append(got)
        remaining = remaining.join(got.select(KEYS), on=KEYS, how="anti").sort(KEYS)
        draws *= 4
    chunk_rows = max(1, 2_000_000 // len(cats))
    for start in range(0, remaining.height, chunk_rows):
        chunk = remaining.slice(start, chunk_rows)
        if min_weight:
            allowed = chunk.join_where(vocab, pl.col("weight") > pl.col("_min_weight"))
        else:
            allowed = chunk.join(vocab, how="cross")
        allowed = allowed.join(excluded, on=["user_id", "category"], how="anti").sort([*KEYS, "category"])
        u = rng.random(allowed.height)
        allowed = allowed.with_columns((pl.Series(-np.log1p(-u)) / pl.col("weight")).alias("_key"))
        found.append(
            allowed.sort([*KEYS, "_key"])
            .group_by(KEYS, maintain_order=True)
            .agg(pl.col("category").head(k).alias("distractors"))
            .filter(pl.col("distractors").list.len() == k)
        )
    return pl.concat(found).sort(KEYS) if found else pl.DataFrame(schema=schema)


def with_replicas(users: pl.DataFrame, replicas: int) -> pl.DataFrame:
    return users.select("user_id").join(
        pl.DataFrame({"replica": list(range(replicas))}, schema={"replica": pl.Int64}), how="cross"
    )


def choose_distractors(
    ctx: QAContext, task: str, answers: pl.DataFrame, excluded: pl.DataFrame
) -> pl.DataFrame:
    """``num_options - 1`` distractors per question (KEYS + ``distractors``), see sample_excluding.

    For a seeded half of the questions the first distractor is drawn among categories more
    popular overall than the answer (when the user has any such allowed category), so that
    "always pick the most popular option" stays closer to chance.
    """
    k = ctx.config.num_options - 1
    rng = ctx.rng(task, "distractors")
    answers = add_rand(answers.select(*KEYS, "category"), rng, KEYS)
    hard = answers.filter(pl.col("_rand") < 0.5).join(ctx.vocab, on="category").select(
        *KEYS, pl.col("weight").alias("_min_weight"))
    first = sample_excluding(hard, excluded, 1, ctx.vocab, rng).select(
        *KEYS, pl.col("distractors").list.first().alias("_first"))
    normal = sample_excluding(answers, excluded, k, ctx.vocab, rng)
    rest = (
        normal.explode("distractors")
        .with_columns(pl.int_range(pl.len()).over(KEYS).alias("_i"))
        .join(first, on=KEYS, how="left")
        .filter(pl.col("_first").is_null() | (pl.col("distractors") != pl.col("_first")))
        .sort([*KEYS, "_i"])
        .group_by(KEYS, maintain_order=True)
        .agg(pl.col("distractors").alias("_rest"))
    )
    out = normal.select(KEYS).join(first, on=KEYS, how="left").join(rest, on=KEYS, how="left")
    rest_list = pl.col("_rest").fill_null(pl.lit([], dtype=pl.List(ctx.vocab.schema["category"])))
    picked = pl.when(pl.col("_first").is_null()).then(rest_list.list.head(k)).otherwise(
        pl.concat_list([pl.col("_first"), rest_list.list.head(k - 1)]))
    out = out.select(*KEYS, picked.alias("distractors")).filter(pl.col("distractors").list.len() == k)
    return out.sort(KEYS)


def _rows(df: pl.DataFrame, answer: pl.Expr, options: pl.Expr, subject: pl.Expr | None = None,
          window: pl.Expr | None = None) -> pl.DataFrame:
    return df.select(
        "user_id",
        pl.col("replica").cast(pl.Int64),
        answer.cast(pl.Utf8).alias("answer"),
        options.cast(pl.List(pl.Utf8)).alias("options"),
        (subject if subject is not None else pl.lit(None)).cast(pl.Utf8).alias("subject"),
        (window if window is not None else pl.lit(None)).cast(pl.Int64).alias("window"),
    )


def _label_list(labels: tuple[str, ...] | list[str]) -> pl.Expr:
    return pl.concat_list([pl.lit(label, dtype=pl.Utf8) for label in labels])


# ---------------------------------------------------------------- tasks
def _item_category(ctx: QAContext, task: str, replicas: int, item: pl.DataFrame, no_cat: str) -> TaskResult:
    """Answer: a random category of ``item`` (one row per user); distractors: categories it lacks."""
    funnel = _Funnel(ctx.users.height)
    cats = item.select("user_id", pl.col("categories").alias("category")).explode("category").drop_nulls()
    cats = funnel.keep(cats, no_cat)
    q = with_replicas(ctx.users, replicas).join(cats, on="user_id")
    answers = pick_random(q, KEYS, "category", ctx.rng(task, "answer"))
    distractors = choose_distractors(ctx, task, answers, cats)
    out = funnel.keep(answers.join(distractors, on=KEYS), "too few other categories")
    rows = _rows(out, pl.col("category"), pl.concat_list([pl.col("category"), pl.col("distractors")]))
    return TaskResult(rows, funnel.lost)


def recent_category(ctx: QAContext, task: str, replicas: int) -> TaskResult:
    last = ctx.history.filter(pl.col("rpos") == 0)
    return _item_category(ctx, task, replicas, last, "most recent item has no categories")


def next_category(ctx: QAContext, task: str, replicas: int) -> TaskResult:
    return _item_category(ctx, task, replicas, ctx.first_future, "next item has no categories")


def category_count(ctx: QAContext, task: str, replicas: int) -> TaskResult:
    """How many of the last W history items have category C, answered with a count bucket.

    The target bucket is drawn per question with weight 1 / (number of users for whom the
    bucket is possible), so answers spread over the buckets; C is then a random category of
    the user in that bucket (for the zero bucket: a category absent from the window, drawn by
    popularity).
    """
    cfg = ctx.config
    window, labels = cfg.count_window, list(cfg.count_buckets)
    funnel = _Funnel(ctx.users.height)
    users = funnel.keep(ctx.users.filter(pl.col("n_hist") >= window), f"history shorter than {window}")
    bucket = pl.lit(None, dtype=pl.Utf8)
    for label, (lo, hi) in reversed(list(zip(labels, bucket_bounds(cfg.count_buckets)))):
        bucket = pl.when(pl.col("count").is_between(lo, hi)).then(pl.lit(label)).otherwise(bucket)
    present = (
        ctx.stats.filter(pl.col("n_window") > 0)
        .join(users, on="user_id", how="semi")
        .select("user_id", "category", pl.col("n_window").alias("count"))
        .with_columns(bucket.alias("bucket"))
    )
    n_present = present.group_by("user_id").agg(pl.len().alias("_n"))
    has_absent = (
        users.select("user_id")
        .join(n_present, on="user_id", how="left")
        .filter(pl.col("_n").fill_null(0) < ctx.vocab.height)
        .select("user_id")
    )
    available = pl.concat(
        [present.select("user_id", "bucket"), has_absent.with_columns(pl.lit(labels[0]).alias("bucket"))]
    ).unique()
    weight = 1.0 / pl.len().over("bucket")
    targets = with_replicas(users, replicas).join(available, on="user_id")
    targets = add_rand(targets, ctx.rng(task, "bucket"), [*KEYS, "bucket"])
    targets = (
        targets.with_columns((-(1.0 - pl.col("_rand")).log() / weight).alias("_key"))
        .sort([*KEYS, "_key"])
        .unique(KEYS, keep="first", maintain_order=True)
        .drop("_rand", "_key")
    )
    to_absent = (pl.col("bucket") == labels[0]) & pl.col("user_id").is_in(has_absent["user_id"].implode())
    zero = targets.filter(to_absent)
    zero = zero.join(
        sample_excluding(zero, present.select("user_id", "category"), 1, ctx.vocab, ctx.rng(task, "absent")),
        on=KEYS,
    ).select(*KEYS, "bucket", pl.col("distractors").list.first().alias("category"))
    nonzero = targets.filter(~to_absent).join(present.drop("count"), on=["user_id", "bucket"])
    nonzero = pick_random(nonzero, KEYS, "category", ctx.rng(task, "category"))
    out = funnel.keep(pl.concat([zero, nonzero.select(zero.columns)]), "no category to ask about")
    rows = _rows(out, pl.col("bucket"), _label_list(labels), pl.col("category"), pl.lit(window))
    return TaskResult(rows, funnel.lost)


def next_rating(ctx: QAContext, task: str, replicas: int) -> TaskResult:
    """High (value >= config.high_rating) or low value of the first future event."""
    funnel = _Funnel(ctx.users.height)
    nxt = funnel.keep(ctx.first_future.filter(pl.col("value").is_not_null()), "next event has no value")
    nxt = nxt.with_columns(pl.lit(0, dtype=pl.Int64).alias("replica"))  # the question is fixed: ask once
    high = pl.when(pl.col("value") >= ctx.config.high_rating).then(pl.lit("high")).otherwise(pl.lit("low"))
    return TaskResult(_rows(nxt, high, _label_list(["high", "low"]), pl.col("title")), funnel.lost)


def _top_category(
    ctx: QAContext, task: str, replicas: int, count_col: str, window: pl.Expr | None
) -> TaskResult:
    """Most frequent category by ``count_col`` vs categories with at most ratio x its count."""
    funnel = _Funnel(ctx.users.height)
    counts = ctx.stats.filter(pl.col(count_col) > 0).select(
        "user_id", "category", pl.col(count_col).alias("count"))
    counts = funnel.keep(counts, "no categories in history").with_columns(
        pl.col("count").max().over("user_id").alias("top")
    )
    tops = counts.filter(pl.col("count") == pl.col("top"))
    tops = with_replicas(ctx.users, replicas).join(tops, on="user_id")
    answers = pick_random(tops, KEYS, "category", ctx.rng(task, "answer"))
    too_close = counts.filter(pl.col("count") > ctx.config.distractor_max_ratio * pl.col("top"))
    distractors = choose_distractors(ctx, task, answers, too_close.select("user_id", "category"))
    out = funnel.keep(answers.join(distractors, on=KEYS), "too few clearly less frequent categories")
    out = out.join(ctx.users, on="user_id")
    rows = _rows(out, pl.col("category"), pl.concat_list([pl.col("category"), pl.col("distractors")]),
                 window=window)
    return TaskResult(rows, funnel.lost)


def longterm_top_category(ctx: QAContext, task: str, replicas: int) -> TaskResult:
    return _top_category(ctx, task, replicas, "n_all", None)


def recent_top_category(ctx: QAContext, task: str, replicas: int) -> TaskResult:
    window = pl.min_horizontal(pl.col("n_hist"), pl.lit(ctx.config.recent_window))
    return _top_category(ctx, task, replicas, "n_recent", window)


def interest_shift(ctx: QAContext, task: str, replicas: int) -> TaskResult:
    """Category whose share changed most between older and newer half: "more" or "less"."""
    funnel = _Funnel(ctx.users.height)
    n_old = pl.col("n_hist") // 2
    change = pl.col("n_new") / (pl.col("n_hist") - n_old) - (pl.col("n_all") - pl.col("n_new")) / n_old
    users = funnel.keep(ctx.users.filter(pl.col("n_hist") >= 2), "history shorter than 2")
    shifts = ctx.stats.join(users, on="user_id").with_columns(change.alias("change"))
    shifts = shifts.filter(pl.col("change").abs() > ctx.config.min_shift)
    shifts = funnel.keep(shifts, f"no share change above {ctx.config.min_shift}")
    shifts = shifts.filter(pl.col("change").abs() == pl.col("change").abs().max().over("user_id"))
    q = with_replicas(ctx.users, replicas).join(shifts, on="user_id")
    out = pick_random(q, KEYS, "category", ctx.rng(task, "category"))
    answer = pl.when(pl.col("change") > 0).then(pl.lit("more")).otherwise(pl.lit("less"))
    return TaskResult(_rows(out, answer, _label_list(["more", "less"]), pl.col("category")), funnel.lost)


# ---------------------------------------------------------------- registry
def plural(word: str) -> str:
    if word.endswith("y") and word[-2:-1] not in tuple("aeiou"):
        return word[:-1] + "ies"
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    return word + "s"


@dataclass(frozen=True)
class TaskSpec:
    family: str
    build: Callable[[QAContext, str, int], TaskResult]
    template: Callable[[UserQAConfig], str]  # placeholders: {subject}, {window}
    category_options: bool  # options are categories (vs a fixed label set)
    open_template: Callable[[UserQAConfig], str] | None = None  # the open variant: no options, any category


def _nouns(c: UserQAConfig) -> tuple[str, str, str, str, str]:
    return (c.item_noun, c.item_noun_plural or plural(c.item_noun), c.category_noun,
            c.category_noun_plural or plural(c.category_noun), c.action_verb)


def _t_recent(c: UserQAConfig) -> str:
    n, _, _, cs, v = _nouns(c)
    return f"Which of these {cs} does the most recent {n} this user {v} have?"


def _t_count(c: UserQAConfig) -> str:
    _, ns, cat, _, v = _nouns(c)
    return f"How many of the last {{window}} {ns} this user {v} have the {cat} {{subject}}?"


def _t_next_cat(c: UserQAConfig) -> str:
    n, _, _, cs, _ = _nouns(c)
    return f"Which of these {cs} does this user's next {n} have?"


def _t_recent_open(c: UserQAConfig) -> str:
    n, _, cat, _, v = _nouns(c)
    return f"Which {cat} does the most recent {n} this user {v} have? Answer with one {cat}."


def _t_next_cat_open(c: UserQAConfig) -> str:
    n, _, cat, _, _ = _nouns(c)
    return f"Which {cat} does this user's next {n} have? Answer with one {cat}."


def _t_next_rating(c: UserQAConfig) -> str:
    n = c.item_noun
    return (f'This user\'s next {n} is "{{subject}}". Will this user give it a high {c.value_noun} '
            f"({c.high_rating:g} or more) or a low one?")


def _t_longterm(c: UserQAConfig) -> str:
    _, _, _, cs, v = _nouns(c)
    return f"Which of these {cs} has this user {v} most overall?"


def _t_longterm_open(c: UserQAConfig) -> str:
    _, _, cat, _, v = _nouns(c)
    return f"Which {cat} has this user {v} most overall? Answer with one {cat}."


def _t_recent_top_open(c: UserQAConfig) -> str:
    _, ns, cat, _, v = _nouns(c)
    return f"Which {cat} is most frequent among the last {{window}} {ns} this user {v}? Answer with one {cat}."


def _t_recent_top(c: UserQAConfig) -> str:
    _, ns, _, cs, v = _nouns(c)
    return f"Which of these {cs} is most frequent among the last {{window}} {ns} this user {v}?"


def _t_shift(c: UserQAConfig) -> str:
    cat = c.category_noun
    return (f"Comparing the older and the newer half of this user's history, is the {cat} {{subject}} "
            f"more or less frequent in the newer half?")


TASKS: dict[str, TaskSpec] = {
    "recent_category": TaskSpec("sequence_understanding", recent_category, _t_recent, True, _t_recent_open),
    "category_count": TaskSpec("sequence_understanding", category_count, _t_count, False),
    "next_category": TaskSpec("action_prediction", next_category, _t_next_cat, True, _t_next_cat_open),
    "next_rating": TaskSpec("action_prediction", next_rating, _t_next_rating, False),
    "longterm_top_category": TaskSpec("interest_perception", longterm_top_category, _t_longterm, True,
                                      _t_longterm_open),
    "recent_top_category": TaskSpec("interest_perception", recent_top_category, _t_recent_top, True,
                                    _t_recent_top_open),
    "interest_shift": TaskSpec("interest_perception", interest_shift, _t_shift, False),
}
if tuple(TASKS) != TASK_NAMES:  # the config validates task names against TASK_NAMES
    raise ImportError(f"userqa_tasks.TASKS {list(TASKS)} != userqa_config.TASK_NAMES {list(TASK_NAMES)}")
