"""UserQA questions of a ``qa`` table as :class:`~user_embed.data.collate.Example` s, per split.

Evaluation subsets are seeded: ``max_eval_users`` keeps that many val/test users (each with all their
questions, so a text baseline can share one history prefix per user) and ``max_eval_per_task`` that many
val/test questions per task. Training questions are never subsampled.
"""

from __future__ import annotations

import polars as pl

from data_pipelines.schema import SPLITS
from data_pipelines.userqa_config import OPEN_SUFFIX
from user_embed.data.collate import Example
from user_embed.errors import ConfigError


def questions_by_split(qa: pl.DataFrame, tasks: list[str] | None = None, max_eval_per_task: int | None = None,
                       max_eval_users: int | None = None, seed: int = 0, source: str = "qa.parquet",
                       categories: list[str] | None = None) -> dict[str, list[Example]]:
    """{split: [Example]} for train, val and test; ``tasks`` keeps only those tasks (unknown ones refused).

    UserQA's open questions (task ``<task>_open``, no options) get candidate labels: ``categories`` (every item
    category) and every answer of their task in ``qa``."""
    if tasks:
        known = sorted(qa["task"].unique().to_list())
        unknown = sorted(set(tasks) - set(known))
        if unknown:
            raise ConfigError(f"data.tasks: {unknown} not in {source} (has: {known})")
        qa = qa.filter(pl.col("task").is_in(tasks))
    uid = {u: i for i, u in enumerate(sorted(qa["user_id"].unique().to_list()))}  # same user → same uid
    candidates = open_candidates(qa, categories or [])
    out: dict[str, list[Example]] = {}
    for split in SPLITS:
        part = qa.filter(pl.col("split") == split)
        if split != "train" and max_eval_users:
            users = part["user_id"].unique().sort().shuffle(seed=seed).head(max_eval_users)
            part = part.filter(pl.col("user_id").is_in(users.implode()))
        if split != "train" and max_eval_per_task:
            part = (part.with_columns(pl.int_range(pl.len()).shuffle(seed=seed).over("task").alias("_r"))
                    .filter(pl.col("_r") < max_eval_per_task).drop("_r"))
        out[split] = [Example(r["user_id"], r["question"], r["answer"], list(r["options"]), r["task"], r["family"],
                              r["cutoff"], uid[r["user_id"]], [] if r["options"] else candidates.get(r["task"], []))
                      for r in part.iter_rows(named=True)]
    return out


def open_candidates(qa: pl.DataFrame, categories: list[str]) -> dict[str, list[str]]:
    """{task: sorted candidate labels} for UserQA's open variants (tasks ``<task>_open``): the categories and the
    task's answers. Other free-text tasks (LaMP, UQABench) have no candidate set."""
    open_rows = qa.filter(pl.col("task").str.ends_with(OPEN_SUFFIX) & (pl.col("options").list.len() == 0))
    answers = open_rows.group_by("task").agg(pl.col("answer").unique())
    return {task: sorted(set(categories) | {a for a in labels if a}) for task, labels in answers.iter_rows()}
