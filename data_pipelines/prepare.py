"""Turn an import into a finished data directory: UserQA questions, parquet tables, ``summary.json``.

``summary.json`` holds the row count of each table (``counts``), the row accounting of each
input table (``rows``: read, kept, dropped by reason), the UserQA summary (``qa``: counts
per task and split, from :func:`data_pipelines.userqa.build_userqa`), where the data came
from (``source``) and notes. The directory is written atomically by
:func:`data_pipelines.io.write_tables`: a failed run leaves no half-written directory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from data_pipelines.generic import ImportResult
from data_pipelines.io import write_tables

Report = Callable[[str], object]


def prepare(
    result: ImportResult,
    out_dir: str | Path,
    *,
    seed: int = 0,
    build_qa: bool = True,
    report_to: Report = print,
    qa_config=None,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
) -> Path:
    """Build UserQA (unless ``build_qa`` is False), write all tables to ``out_dir``, print the report.

    Returns the written directory. An existing ``out_dir`` is replaced only once everything
    is written, and only when it is a previous data folder (or ``overwrite``: then only its
    same-named files); nothing is written when any step fails. ``inputs`` (the imported files or
    folders) must not be, hold or contain ``out_dir``.
    """
    tables = dict(result.tables)
    for report in result.reports:
        report_to(report.line())
    for note in result.notes:
        report_to(f"note: {note}")
    qa_summary = None
    if build_qa:
        from data_pipelines.userqa import build_userqa  # heavy-ish and optional: import on use

        qa, texts, qa_summary = build_userqa(tables["events"], tables["items"], seed=seed, config=qa_config)
        tables["qa"], tables["texts"] = qa, texts
    summary = {
        "counts": {name: df.height for name, df in tables.items()},
        "rows": {report.name: report.as_dict() for report in result.reports},
        "qa": qa_summary,
        "seed": seed,
        "source": result.info,
        "notes": list(result.notes),
    }
    written = write_tables(out_dir, tables, summary, overwrite=overwrite, inputs=inputs)
    counts = ", ".join(f"{name} {n:,}" for name, n in summary["counts"].items())
    report_to(f"wrote {written}: {counts}")
    return written


def prepare_movielens_100k(
    out_dir: str | Path,
    seed: int = 0,
    *,
    source: str | Path,
    strict: bool = False,
    build_qa: bool = True,
    report_to: Report = print,
    overwrite: bool = False,
) -> Path:
    """Import the MovieLens-100k folder ``source`` and :func:`prepare` it with movie wording.

    ``source`` is given by the caller (`user-embed prepare movielens-100k` passes the offline
    copy from :func:`user_embed.assets.movielens_100k_dir`); this package fetches nothing.
    """
    from data_pipelines.movielens import import_movielens

    return prepare(import_movielens(source, strict=strict), out_dir, seed=seed, build_qa=build_qa, report_to=report_to,
                   qa_config=movielens_qa_config(), overwrite=overwrite, inputs=[source])


def movielens_qa_config():
    """UserQA wording for movie data: "movie", "genre", "watched"."""
    from data_pipelines.userqa import UserQAConfig

    return UserQAConfig(item_noun="movie", category_noun="genre", action_verb="watched")
