"""The one table format every stage reads: ``events``, ``items``, ``users``, ``qa``, ``texts``.

All tables are parquet files in one directory (``<dir>/<table>.parquet``). Ids are strings,
timestamps are integer Unix seconds. ``validate()`` checks a table against its spec and
raises :class:`SchemaError` naming the table, the column and the first offending row.

Extra columns are allowed everywhere (``users`` profile fields, ``items`` categorical
fields, ``item_relations`` knowledge-graph links); the required ones below must be present
with the stated types.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl

from data_pipelines.errors import UserError

#: Required columns per table: name -> (dtype, nullable).
TABLES: dict[str, dict[str, tuple[pl.DataType, bool]]] = {
    # One row per user action: a rating, click, purchase, post ...
    "events": {
        "user_id": (pl.Utf8, False),
        "timestamp": (pl.Int64, False),  # Unix seconds
        "source": (pl.Utf8, False),  # kind of event, e.g. "rating", "click", "post"
        "item_id": (pl.Utf8, False),
        "value": (pl.Float64, True),  # e.g. the rating; null when the event has none
        "text": (pl.Utf8, True),  # optional free text written/read by the user
    },
    # One row per item; `categories` holds the item's categorical values (e.g. genres).
    "items": {
        "item_id": (pl.Utf8, False),
        "title": (pl.Utf8, False),
        "categories": (pl.List(pl.Utf8), False),
    },
    # One row per user; any further columns are profile fields (categorical or numeric).
    "users": {
        "user_id": (pl.Utf8, False),
    },
    # UserQA: one question about one user, answered with one of `options`
    # (`options` empty = free-text answer; `answer` "" = gold unknown).
    "qa": {
        "user_id": (pl.Utf8, False),
        "question": (pl.Utf8, False),
        "answer": (pl.Utf8, False),
        "options": (pl.List(pl.Utf8), False),
        "task": (pl.Utf8, False),
        "family": (pl.Utf8, False),
        "cutoff": (pl.Int64, False),  # only events with timestamp < cutoff are input
        "split": (pl.Utf8, False),  # train | val | test
    },
    # A text about the user (for the contrastive user<->text loss).
    "texts": {
        "user_id": (pl.Utf8, False),
        "text": (pl.Utf8, False),
    },
    # Optional knowledge-graph links of items: (item, relation, entity).
    "item_relations": {
        "item_id": (pl.Utf8, False),
        "relation": (pl.Utf8, False),
        "entity": (pl.Utf8, False),
    },
}

REQUIRED_TABLES = ("events", "items", "users")
SPLITS = ("train", "val", "test")
FAMILIES = ("sequence_understanding", "action_prediction", "interest_perception")


class SchemaError(UserError):
    """A table does not match the schema; the message names table, column and row."""


@dataclass(frozen=True)
class ColumnProblem:
    table: str
    column: str
    row: int | None
    reason: str

    def __str__(self) -> str:
        where = f"table '{self.table}', column '{self.column}'"
        if self.row is not None:
            where += f", row {self.row}"
        return f"{where}: {self.reason}"


def _first_row(mask: pl.Series) -> int | None:
    idx = mask.arg_true()
    return int(idx[0]) if len(idx) else None


def find_problems(table: str, df: pl.DataFrame) -> list[ColumnProblem]:
    """All schema problems of ``df`` as table ``table`` (empty list when valid)."""
    if table not in TABLES:
        return [ColumnProblem(table, "-", None, f"unknown table; known: {sorted(TABLES)}")]
    problems: list[ColumnProblem] = []
    for column, (dtype, nullable) in TABLES[table].items():
        if column not in df.columns:
            problems.append(
                ColumnProblem(table, column, None, f"missing column (have: {df.columns})")
            )
            continue
        series = df[column]
        if series.dtype != dtype:
            problems.append(
                ColumnProblem(table, column, None, f"has type {series.dtype}, expected {dtype}")
            )
            continue
        if not nullable and series.null_count():
            row = _first_row(series.is_null())
            problems.append(ColumnProblem(table, column, row, "null value in a required column"))
    if problems:
        return problems
    if table == "qa":
        bad = ~df["split"].is_in(SPLITS)
        if bad.any():
            row = _first_row(bad)
            problems.append(
                ColumnProblem(table, "split", row, f"'{df['split'][row]}' is not one of {SPLITS}")
            )
        # Free-text tasks (LaMP-4..7, UQABench) have no options; unlabelled questions
        # (e.g. LaMP test questions without an outputs file) have answer "".
        in_options = pl.Series(
            [
                not options or answer == "" or answer in options
                for answer, options in zip(df["answer"].to_list(), df["options"].to_list())
            ],
            dtype=pl.Boolean,
        )
        if len(df) and not in_options.all():
            row = _first_row(~in_options)
            problems.append(
                ColumnProblem(table, "answer", row, f"answer '{df['answer'][row]}' is not among the options")
            )
    key = {"items": ["item_id"], "users": ["user_id"]}.get(table)
    if key and len(df):
        dup = df.select(pl.struct(key).is_duplicated()).to_series()
        if dup.any():
            row = _first_row(dup)
            problems.append(ColumnProblem(table, key[0], row, f"duplicate id '{df[key[0]][row]}'"))
    return problems


def validate(table: str, df: pl.DataFrame) -> pl.DataFrame:
    """Return ``df`` unchanged if it matches the schema of ``table``; raise SchemaError otherwise."""
    problems = find_problems(table, df)
    if problems:
        raise SchemaError(str(problems[0]))
    return df


def table_path(directory: str | Path, table: str) -> Path:
    return Path(directory) / f"{table}.parquet"


def read_table(directory: str | Path, table: str, required: bool = True) -> pl.DataFrame | None:
    """Read and validate ``<directory>/<table>.parquet``; None if optional and absent."""
    path = table_path(directory, table)
    if not path.exists():
        if required:
            raise SchemaError(
                f"{path}: missing table '{table}' (run `user-embed prepare …` to build the data directory)"
            )
        return None
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error kinds for corrupt files
        raise SchemaError(f"{path}: cannot read parquet ({exc.__class__.__name__}: {exc})") from exc
    problems = find_problems(table, df)
    if problems:
        raise SchemaError(f"{path}: {problems[0]}")
    return df


def empty_table(table: str) -> pl.DataFrame:
    """An empty frame with the required columns of ``table``."""
    return pl.DataFrame(schema={c: t for c, (t, _) in TABLES[table].items()})
