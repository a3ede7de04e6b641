"""LaMP benchmark import: ``*_questions.json`` (+ ``*_outputs.json``) -> unified tables.

LaMP (Salemi et al., 2023) gives one profile per question, so each question id is a user:

* ``*_questions.json`` = ``[{"id", "input", "profile": [{"id", <task fields>, "date"?}]}]``
* ``*_outputs.json``   = ``{"task": "LaMP_N", "golds": [{"id", "output"}]}``

Profile items become ``events`` (``user_id`` = question id, ``timestamp`` from ``date`` when
the items carry one, else the item's position in the profile), ``items`` and ``users``;
questions become ``qa`` rows (``family="lamp"``, ``cutoff`` = last profile timestamp + 1),
keeping the raw LaMP question id in an extra ``id`` column. ``write_lamp_submission`` writes
predictions in LaMP's own format so the official evaluation script can read them.

Task names: ``LaMP_1`` … ``LaMP_7``; ``LaMP_2`` is the current movie-tagging task and
``LaMP_2_news`` the first release's news categorisation (its files also say ``"LaMP_2"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import polars as pl

from data_pipelines.errors import UserError
from data_pipelines.generic import ImportResult
from data_pipelines.io import write_json_atomic
from data_pipelines.readers import read_json
from data_pipelines.report import DataError, RowReport
from data_pipelines.schema import SPLITS, validate

MOVIE_TAGS = (
    "sci-fi", "based on a book", "comedy", "action", "twist ending", "dystopia", "dark comedy",
    "classic", "psychology", "fantasy", "romance", "thought-provoking", "social commentary",
    "violence", "true story",
)  # fmt: skip
NEWS_CATEGORIES = (
    "food & drink", "sports", "education", "parents", "religion", "travel", "business", "crime",
    "science & technology", "culture & arts", "entertainment", "politics", "women",
    "style & beauty", "healthy living",
)  # fmt: skip

TaskKind = Literal["classification", "regression", "generation"]


@dataclass(frozen=True)
class LampTask:
    """How one LaMP task's files look and how it is scored."""

    name: str  # our name, e.g. "LaMP_2_news"
    official_name: str  # the "task" value inside LaMP's json files
    kind: TaskKind  # decides the metric: accuracy/F1, MAE/RMSE or ROUGE
    source: str  # events.source for its profile items
    profile_fields: tuple[str, ...]  # required in every profile item besides "id"
    text_fields: tuple[str, ...]  # joined into events.text
    title_field: str  # items.title
    category_field: str | None = None  # items.categories = [value]
    score_field: str | None = None  # events.value
    labels: tuple[str, ...] = ()  # the closed answer set (empty for generation tasks)


LAMP_TASKS: dict[str, LampTask] = {
    t.name: t
    for t in (
        LampTask("LaMP_1", "LaMP_1", "classification", "paper", ("title", "abstract"),
                 ("title", "abstract"), "title", labels=("[1]", "[2]")),
        LampTask("LaMP_2", "LaMP_2", "classification", "movie", ("tag", "description"),
                 ("description",), "description", category_field="tag", labels=MOVIE_TAGS),
        LampTask("LaMP_2_news", "LaMP_2", "classification", "article", ("title", "text", "category"),
                 ("title", "text"), "title", category_field="category", labels=NEWS_CATEGORIES),
        LampTask("LaMP_3", "LaMP_3", "regression", "review", ("text", "score"), ("text",), "text",
                 score_field="score", labels=("1", "2", "3", "4", "5")),
        LampTask("LaMP_4", "LaMP_4", "generation", "article", ("title", "text"), ("title", "text"), "title"),
        LampTask("LaMP_5", "LaMP_5", "generation", "paper", ("title", "abstract"), ("title", "abstract"), "title"),
        LampTask("LaMP_6", "LaMP_6", "generation", "email", ("title", "text"), ("title", "text"), "title"),
        LampTask("LaMP_7", "LaMP_7", "generation", "tweet", ("text",), ("text",), "text"),
    )
}  # fmt: skip

_TASK_NAME = re.compile(r"^lamp[-_ ]?([1-7])(?:[-_ ]?(news|n))?$", re.IGNORECASE)


def resolve_task(name: str) -> LampTask:
    """The task for ``name`` ("LaMP_3", "LaMP-3", "lamp3", "LaMP_2_news" …); UserError if unknown."""
    match = _TASK_NAME.match(str(name).strip())
    key = None
    if match:
        key = f"LaMP_{match.group(1)}" + ("_news" if match.group(2) else "")
    if key not in LAMP_TASKS:
        raise UserError(f"unknown LaMP task '{name}'; known: {', '.join(LAMP_TASKS)}")
    return LAMP_TASKS[key]


def load_json(path: str | Path, what: str):
    """Parse a json file defensively (:func:`data_pipelines.readers.read_json`): DataError naming the file, and
    line and column, when it is missing, a folder, empty, not UTF-8, malformed or nested beyond reason."""
    return read_json(path, what)


def _first_where(df: pl.DataFrame, bad: pl.Expr, column: str = "qid") -> str | None:
    hit = df.filter(bad.fill_null(True)).head(1)
    return None if hit.is_empty() else str(hit[column][0])


def _read_questions(path: Path) -> pl.DataFrame:
    """Questions file -> one row per question: qid, input, profile (list of structs)."""
    raw = load_json(path, "questions")
    if not isinstance(raw, list) or not all(isinstance(q, dict) for q in raw):
        raise DataError(f"{path}: expected a JSON list of questions {{id, input, profile}}")
    if not raw:
        raise DataError(f"{path}: no questions")
    try:
        df = pl.from_dicts(raw, infer_schema_length=None, strict=False)
    except Exception as exc:  # polars raises several kinds for inconsistent nesting
        raise DataError(f"{path}: questions do not have a consistent structure ({exc})") from exc
    for column in ("id", "input"):
        if column not in df.columns:
            raise DataError(f"{path}: questions lack the field '{column}' (have: {df.columns})")
    if "profile" not in df.columns:
        raise DataError(f"{path}: question '{df['id'][0]}' has no profile")
    if df["id"].dtype.is_integer():  # LaMP ids are strings; accept integer ids too
        df = df.with_columns(pl.col("id").cast(pl.Utf8))
    df = df.select(pl.col("id").alias("qid"), "input", "profile").with_row_index("position")
    if df["qid"].dtype != pl.Utf8 or df["input"].dtype != pl.Utf8:
        got = f"{df['qid'].dtype}, {df['input'].dtype}"
        raise DataError(f"{path}: question 'id' and 'input' must be strings (got {got})")
    if (row := _first_where(df, pl.col("qid").is_null(), "position")) is not None:
        raise DataError(f"{path}: question at index {row} has no id")
    if (qid := _first_where(df, pl.col("qid").is_duplicated())) is not None:
        raise DataError(f"{path}: duplicate question id '{qid}'")
    if (qid := _first_where(df, pl.col("input").is_null())) is not None:
        raise DataError(f"{path}: question '{qid}' has no input")
    profile_type = df["profile"].dtype
    if profile_type == pl.List(pl.Null):
        raise DataError(f"{path}: question '{df['qid'][0]}' has no profile")
    if not (isinstance(profile_type, pl.List) and isinstance(profile_type.inner, pl.Struct)):
        raise DataError(f"{path}: 'profile' must be a list of objects (got {profile_type})")
    if (qid := _first_where(df, pl.col("profile").list.len() == 0)) is not None:
        raise DataError(f"{path}: question '{qid}' has no profile")
    return df


def _profile_items(task: LampTask, path: Path, questions: pl.DataFrame) -> pl.DataFrame:
    """One row per profile item: qid, pos (index in the profile), id, task fields, timestamp."""
    items = (
        questions.select("qid", "profile")
        .with_columns(pos=pl.int_ranges(pl.col("profile").list.len()))
        .explode("profile", "pos")
        .unnest("profile")
    )
    for name in ("id", *task.profile_fields):
        if name not in items.columns:
            have = [c for c in items.columns if c not in ("qid", "pos")]
            raise DataError(
                f"{path}: {task.name} profile items need the field '{name}' (have: {have}); is --task right?"
            )
        if isinstance(items[name].dtype, (pl.List, pl.Struct, pl.Array)):
            raise DataError(f"{path}: profile field '{name}' must be text, got {items[name].dtype}")
        items = items.with_columns(pl.col(name).cast(pl.Utf8))
        bad = items.filter(pl.col(name).is_null()).head(1)
        if not bad.is_empty():
            raise DataError(f"{path}: question '{bad['qid'][0]}', profile item {bad['pos'][0]} has no '{name}'")
    items = items.with_columns(timestamp=_timestamps(path, items))
    if task.score_field:
        items = items.with_columns(value=pl.col(task.score_field).str.strip_chars().cast(pl.Float64, strict=False))
        bad = items.filter(pl.col("value").is_null()).head(1)
        if not bad.is_empty():
            raise DataError(
                f"{path}: question '{bad['qid'][0]}', profile item '{bad['id'][0]}': "
                f"score '{bad[task.score_field][0]}' is not a number"
            )
    return items


def _timestamps(path: Path, items: pl.DataFrame) -> pl.Series:
    """Unix seconds from ``date`` (YYYY, YYYY-MM, YYYY-MM-DD[ HH:MM:SS]); position if no dates."""
    if "date" not in items.columns or items["date"].null_count() == items.height:
        return items["pos"].cast(pl.Int64)
    if isinstance(items["date"].dtype, (pl.List, pl.Struct, pl.Array)):
        raise DataError(f"{path}: profile field 'date' must be text, got {items['date'].dtype}")
    day = pl.col("date").cast(pl.Utf8).str.strip_chars()
    as_datetime = pl.coalesce(
        day.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us"),
        day.str.to_datetime("%Y-%m-%dT%H:%M:%S", strict=False, time_unit="us"),
        day.str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
        (day + "-01").str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
        (day + "-01-01").str.to_date("%Y-%m-%d", strict=False).cast(pl.Datetime("us")),
    )
    parsed = items.select("qid", "id", "date", ts=as_datetime.dt.epoch("s"))
    bad = parsed.filter(pl.col("ts").is_null()).head(1)
    if not bad.is_empty():
        raise DataError(
            f"{path}: question '{bad['qid'][0]}', profile item '{bad['id'][0]}': "
            f"date {bad['date'][0]!r} is missing or not YYYY[-MM[-DD]]"
        )
    return parsed["ts"]


def _read_golds(task: LampTask, path: Path, question_ids: pl.Series) -> pl.DataFrame:
    """Outputs file -> qid, answer; checks task name, ids and (closed tasks) the label set."""
    golds = read_lamp_outputs(task, path)
    unknown = golds.filter(~pl.col("qid").is_in(question_ids.implode()))["qid"].to_list()
    if unknown:
        raise DataError(f"{path}: {len(unknown)} output id(s) match no question, e.g. {unknown[:5]}")
    missing = question_ids.filter(~question_ids.is_in(golds["qid"].implode())).to_list()
    if missing:
        raise DataError(f"{path}: {len(missing)} question(s) have no output, e.g. {missing[:5]}")
    return golds


def read_lamp_outputs(task: LampTask | str, path: str | Path, what: str = "outputs") -> pl.DataFrame:
    """Read ``{"task", "golds": [{"id", "output"}]}`` -> frame (qid, answer).

    The ``task`` inside must be the task's official name; ids must be unique; for closed
    tasks (LaMP-1/2/3) each output, whitespace-stripped, must be one of the task's labels.
    """
    task = resolve_task(task) if isinstance(task, str) else task
    path = Path(path)
    raw = load_json(path, what)
    if not isinstance(raw, dict) or not isinstance(raw.get("golds"), list):
        raise DataError(f'{path}: expected {{"task": "{task.official_name}", "golds": [{{"id", "output"}}]}}')
    named = raw.get("task")
    if named is not None and resolve_task_or_none(named) not in (task.name, task.official_name):
        raise DataError(f"{path}: file is for task '{named}', not {task.name}")
    entries = raw["golds"]
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or "id" not in entry or "output" not in entry:
            raise DataError(f'{path}: golds[{index}] must be an object with "id" and "output"')
        if entry["output"] is None or isinstance(entry["output"], (list, dict)):
            raise DataError(f"{path}: id '{entry['id']}': output must be text, got {entry['output']!r}")
    frame = pl.DataFrame(
        {"qid": [str(e["id"]) for e in entries], "answer": [str(e["output"]) for e in entries]},
        schema={"qid": pl.Utf8, "answer": pl.Utf8},
    )
    if (qid := _first_where(frame, pl.col("qid").is_duplicated())) is not None:
        raise DataError(f"{path}: duplicate id '{qid}'")
    if task.labels:
        frame = frame.with_columns(pl.col("answer").str.strip_chars())
        bad = frame.filter(~pl.col("answer").is_in(list(task.labels))).head(1)
        if not bad.is_empty():
            raise DataError(
                f"{path}: id '{bad['qid'][0]}': gold '{bad['answer'][0]}' is not a {task.name} label "
                f"({', '.join(task.labels)})"
            )
    return frame


def resolve_task_or_none(name: object) -> str | None:
    """Normalised task name or None (used to compare the ``task`` field inside files)."""
    try:
        return resolve_task(str(name)).name
    except UserError:
        return None


def import_lamp(
    task: str,
    questions_path: str | Path,
    outputs_path: str | Path | None = None,
    *,
    split: str = "test",
) -> ImportResult:
    """Read one LaMP questions file (+ its outputs file) into ``events``, ``items``, ``users``, ``qa``.

    ``split`` is the qa split (``train``, ``val``/``dev``, ``test``). Without an outputs file
    the answers are "" (unlabelled). Any malformed input raises :class:`DataError` naming the
    file and question id; nothing is written here (see ``data_pipelines.io.write_tables``).
    """
    spec = resolve_task(task)
    split = "val" if split == "dev" else split
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use one of {SPLITS} (or 'dev')")
    questions_path = Path(questions_path)
    questions = _read_questions(questions_path)
    profile = _profile_items(spec, questions_path, questions)

    text = pl.concat_str([pl.col(f) for f in spec.text_fields], separator=" ", ignore_nulls=True)
    events = profile.select(
        user_id=pl.col("qid"),
        timestamp=pl.col("timestamp").cast(pl.Int64),
        source=pl.lit(spec.source),
        item_id=pl.col("id"),
        value=pl.col("value") if spec.score_field else pl.lit(None, dtype=pl.Float64),
        text=text,
    ).sort("user_id", "timestamp", maintain_order=True)
    categories = (
        pl.concat_list(pl.col(spec.category_field).str.strip_chars())
        if spec.category_field
        else pl.lit([], dtype=pl.List(pl.Utf8))
    )
    items = profile.select(item_id=pl.col("id"), title=pl.col(spec.title_field), categories=categories).unique(
        "item_id", keep="first", maintain_order=True
    )
    users = questions.select(user_id=pl.col("qid"))

    if outputs_path is None:
        answers = questions.select("qid", answer=pl.lit(""))
    else:
        answers = _read_golds(spec, Path(outputs_path), questions["qid"])
    cutoffs = profile.group_by("qid").agg(cutoff=pl.col("timestamp").max() + 1)
    qa = (
        questions.select("qid", "input", "position")
        .join(answers, on="qid", how="left")
        .join(cutoffs, on="qid", how="left")
        .sort("position")
        .select(
            user_id=pl.col("qid"),
            question=pl.col("input"),
            answer=pl.col("answer"),
            options=pl.lit(list(spec.labels), dtype=pl.List(pl.Utf8)),
            task=pl.lit(spec.name),
            family=pl.lit("lamp"),
            cutoff=pl.col("cutoff").cast(pl.Int64),
            split=pl.lit(split),
            id=pl.col("qid"),
        )
    )
    tables = {"events": events, "items": items, "users": users, "qa": qa}
    for name, table in tables.items():
        validate(name, table)
    reports = [
        RowReport(f"{spec.name} questions", read=questions.height, source=str(questions_path)),
        RowReport(f"{spec.name} profile items", read=profile.height, source=str(questions_path)),
    ]
    info = {
        "dataset": "lamp",
        "task": spec.name,
        "questions": str(questions_path),
        "outputs": None if outputs_path is None else str(outputs_path),
        "split": split,
    }
    notes = [] if outputs_path is not None else ['no outputs file: qa.answer is "" (unlabelled questions)']
    return ImportResult(tables, reports, info=info, notes=notes)


def write_lamp_submission(task: str, preds: dict[str, str], path: str | Path) -> Path:
    """Write predictions as LaMP's ``{"task": "LaMP_N", "golds": [{"id", "output"}]}``, atomically."""
    spec = resolve_task(task)
    bad = [k for k, v in preds.items() if not isinstance(v, str)]
    if bad:
        raise UserError(f"prediction for id '{bad[0]}' is not text: {preds[bad[0]]!r}")
    golds = [{"id": str(qid), "output": output} for qid, output in preds.items()]
    write_json_atomic(path, {"task": spec.official_name, "golds": golds})
    return Path(path)


#: LaMP's own folder layout (and the one ``build_lamp3_from_movielens`` writes): split folder → qa split.
LAMP_SPLIT_DIRS = {"train": "train", "dev": "val", "test": "test"}


def find_lamp_files(folder: str | Path) -> dict[str, tuple[Path, Path | None]]:
    """``{split: (questions, outputs or None)}`` from ``<folder>/{train,dev,test}/<name>_questions.json``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (expected train/, dev/ and/or test/ with *_questions.json)")
    found: dict[str, tuple[Path, Path | None]] = {}
    for name, split in LAMP_SPLIT_DIRS.items():
        questions = sorted((folder / name).glob("*questions.json"))
        if len(questions) > 1:
            raise DataError(f"{folder / name}: several *questions.json files ({', '.join(q.name for q in questions)})")
        if questions:
            outputs = questions[0].with_name(questions[0].name.replace("questions", "outputs"))
            found[split] = (questions[0], outputs if outputs.is_file() else None)
    if not found:
        raise DataError(f"{folder}: no train/, dev/ or test/ folder with a *_questions.json file")
    return found


def import_lamp_splits(task: str, files: dict[str, tuple[str | Path, str | Path | None]]) -> ImportResult:
    """Import several splits of one task (``{split: (questions, outputs or None)}``) into one set of tables.

    Question ids are users, so an id that appears in two splits is refused (naming both files).
    """
    parts = {split: import_lamp(task, q, o, split=split) for split, (q, o) in files.items()}
    seen: dict[str, str] = {}
    for split, part in parts.items():
        for qid in part.tables["users"]["user_id"].to_list():
            if qid in seen:
                raise DataError(f"question id '{qid}' is in both {seen[qid]} and {files[split][0]}; "
                                "LaMP ids must be unique across splits")
            seen[qid] = str(files[split][0])
    tables = {
        name: pl.concat([p.tables[name] for p in parts.values()], how="vertical_relaxed")
        for name in ("events", "users", "qa")
    }
    tables["items"] = pl.concat([p.tables["items"] for p in parts.values()], how="vertical_relaxed").unique(
        "item_id", keep="first", maintain_order=True)
    info = {"dataset": "lamp", "task": resolve_task(task).name,
            "splits": {split: p.info for split, p in parts.items()}}
    return ImportResult(tables, [r for p in parts.values() for r in p.reports], info=info,
                        notes=[n for p in parts.values() for n in p.notes])
