"""A LaMP-3-format rating-prediction set built from MovieLens (real data, available offline).

LaMP-3 asks for a user's 1–5 score of a review given the user's earlier scored reviews. Here
the "review" is a movie: each question is a user's **last** rating (or last
``questions_per_user`` ratings), its profile the user's up to ``profile_size`` ratings before
it, in LaMP-3's own file format so that the LaMP importer, baselines and official metrics run
on it unchanged::

    <out_dir>/train/train_questions.json   [{"id", "input", "profile": [{"id", "text", "score", "date"}]}]
    <out_dir>/train/train_outputs.json     {"task": "LaMP_3", "golds": [{"id", "output"}]}
    <out_dir>/dev/dev_questions.json  …    <out_dir>/test/test_questions.json  …  summary.json

Profile item: ``{"id": movie id, "text": "Toy Story (1995) [Animation, Comedy]", "score": "4",
"date": "1997-10-01"}``; input: ``"What is the score of this movie: <text>? Answer with one of
1, 2, 3, 4, 5."``; output: the rating as text. Users are split user-disjointly
(``fractions`` of train/dev/test, shuffled with ``seed``). The directory is written atomically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import polars as pl

from data_pipelines.outputs import LAMP_FILES, output_directory
from data_pipelines.report import DataError, RowReport

SPLIT_DIRS = ("train", "dev", "test")
QUESTION = "What is the score of this movie: {}? Answer with one of 1, 2, 3, 4, 5."


def movie_text(items: pl.DataFrame) -> pl.DataFrame:
    """items -> (item_id, text) with text = ``"Title (year) [Genre1, Genre2]"``."""
    title = pl.col("title").str.strip_chars()
    if "year" in items.columns:  # add the year unless the title already ends with it
        year = pl.format("({})", pl.col("year"))
        title = (
            pl.when(pl.col("year").is_not_null() & ~title.str.ends_with(year))
            .then(pl.format("{} {}", title, year))
            .otherwise(title)
        )
    genres = pl.col("categories").list.join(", ")
    text = pl.when(pl.col("categories").list.len() > 0).then(pl.format("{} [{}]", title, genres)).otherwise(title)
    return items.select("item_id", text=text)


def _ratings(events: pl.DataFrame, items: pl.DataFrame, report: RowReport) -> pl.DataFrame:
    """Rated events with integer 1..5 values and known items, ordered per user in time."""
    report.read = events.height
    rated = report.drop(events, pl.col("value").is_null(), "no rating value", ["user_id", "item_id"])
    rated = report.drop(
        rated,
        ~pl.col("value").is_between(1, 5) | (pl.col("value") != pl.col("value").round()),
        "rating not an integer 1-5",
        ["user_id", "item_id", "value"],
    )
    texts = movie_text(items)
    rated = report.drop(
        rated, ~pl.col("item_id").is_in(texts["item_id"].implode()), "movie not in items", ["user_id", "item_id"]
    )
    return (
        rated.drop("text", strict=False)
        .join(texts, on="item_id", how="left")
        .sort("user_id", "timestamp", "item_id")
        .with_columns(
            pos=pl.int_range(pl.len()).over("user_id"),
            n=pl.len().over("user_id"),
            score=pl.col("value").cast(pl.Int64).cast(pl.Utf8),
            date=pl.from_epoch("timestamp", time_unit="s").dt.strftime("%Y-%m-%d"),
        )
    )


def _assign_splits(users: pl.Series, fractions: tuple[float, float, float], seed: int) -> pl.DataFrame:
    """user_id -> split dir, user-disjoint, after a seeded shuffle."""
    shuffled = users.sort().sample(fraction=1.0, shuffle=True, seed=seed)
    n = shuffled.len()
    n_train = round(n * fractions[0])
    n_dev = round(n * (fractions[0] + fractions[1])) - n_train
    index = pl.int_range(pl.len())
    return pl.DataFrame({"user_id": shuffled}).with_columns(
        split=pl.when(index < n_train)
        .then(pl.lit("train"))
        .when(index < n_train + n_dev)
        .then(pl.lit("dev"))
        .otherwise(pl.lit("test"))
    )


def _questions(ratings: pl.DataFrame, profile_size: int, questions_per_user: int) -> pl.DataFrame:
    """One row per question: id, input, output, profile (list of LaMP-3 profile structs)."""
    targets = ratings.filter(pl.col("pos") >= pl.max_horizontal(pl.col("n") - questions_per_user, pl.lit(1))).select(
        "user_id", "split", tpos="pos", qid=pl.format("{}_{}", "user_id", "pos"),
        input=pl.format(QUESTION, "text"), output="score",
    )  # fmt: skip
    profile_items = (
        targets.select("qid", "user_id", "tpos")
        .join(ratings.select("user_id", "pos", "item_id", "text", "score", "date"), on="user_id")
        .filter((pl.col("pos") < pl.col("tpos")) & (pl.col("pos") >= pl.col("tpos") - profile_size))
        .sort("qid", "pos")
        .group_by("qid", maintain_order=True)
        .agg(profile=pl.struct(id="item_id", text="text", score="score", date="date"))
    )
    return targets.join(profile_items, on="qid", how="inner").sort("user_id", "tpos")


def build_lamp3_from_movielens(
    events: pl.DataFrame,
    items: pl.DataFrame,
    out_dir: str | Path,
    *,
    seed: int = 0,
    profile_size: int = 50,
    questions_per_user: int = 1,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
    strict: bool = False,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> dict:
    """Write a LaMP-3-format set from schema ``events`` (ratings) and ``items`` (title, genres).

    ``out_dir`` is a safe output (:mod:`data_pipelines.outputs`): a previous LaMP-3 set there is
    replaced, other files are refused unless ``overwrite``, and so is a folder that is, holds or
    lies inside one of ``inputs``.

    Users need at least 2 ratings (one profile item + the rated movie); others are skipped and
    counted. Returns the summary also saved as ``summary.json`` (questions and users per split,
    row accounting).
    """
    if profile_size < 1 or questions_per_user < 1:
        raise DataError("profile_size and questions_per_user must be at least 1")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    rows = RowReport("events", strict=strict, source="events")
    ratings = _ratings(events, items, rows)
    rated_users = ratings["user_id"].n_unique()
    ratings = rows.drop(ratings, pl.col("n") < 2, "user has fewer than 2 ratings", ["user_id", "item_id"])
    kept_users = ratings["user_id"].unique()
    if kept_users.is_empty():
        raise DataError("no user has 2 or more ratings with a 1-5 score; nothing to build")
    ratings = ratings.join(_assign_splits(kept_users, fractions, seed), on="user_id")
    questions = _questions(ratings, profile_size, questions_per_user)

    summary: dict = {
        "task": "LaMP_3",
        "source": "movielens",
        "seed": seed,
        "profile_size": profile_size,
        "questions_per_user": questions_per_user,
        "splits": {},
        "rows": {rows.name: rows.as_dict()},
        "users": {"with ratings": rated_users, "kept": kept_users.len()},
    }
    files: dict[str, object] = {}
    for split in SPLIT_DIRS:
        part = questions.filter(pl.col("split") == split)
        summary["splits"][split] = {"questions": part.height, "users": part["user_id"].n_unique()}
        files[f"{split}/{split}_questions.json"] = part.select(id="qid", input="input", profile="profile").to_dicts()
        files[f"{split}/{split}_outputs.json"] = {
            "task": "LaMP_3",
            "golds": part.select(id="qid", output="output").to_dicts(),
        }
    files["summary.json"] = summary
    _write_atomic(Path(out_dir), files, overwrite, inputs)
    return summary


def _write_atomic(out_dir: Path, files: dict[str, object], overwrite: bool, inputs: Iterable) -> None:
    """Write JSON files into a sibling temp dir, then swap it into place (a checked, safe output)."""
    with output_directory(out_dir.resolve(), LAMP_FILES, inputs=inputs, overwrite=overwrite) as tmp:
        for name, obj in files.items():
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(obj, ensure_ascii=False, indent=1), encoding="utf-8")
