"""UQABench accuracy, as the official ``calc_metrics_acc.py`` computes it.

A prediction is correct when it starts with the gold answer (both whitespace-stripped here;
the official script compares the raw strings). Accuracy is reported overall, per family
(sequence understanding, action prediction, interest perception) and per sub-task
(df, mf, ip, ap, li, si, it) as a fraction in [0, 1] (the official script prints percent).
The sub-task of a question comes from its ``task`` field when the golds carry one, else from
the question text by the official substring rules.

Files: golds and predictions are JSON lines (or a JSON list) of objects with any of
``id``, ``question``, ``answer``, ``prediction``, ``task`` — the official generation output
(``{"question", "prediction", "answer"}`` per line) holds both and can be scored alone.
Golds may also be an ``align_data_*.arrow`` file or a ``qa.parquet`` table.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from data_pipelines.report import DataError
from data_pipelines.uqabench import SUB_TASKS, read_align_qa, sub_task_expr
from user_embed.errors import UserError

FIELDS = ("id", "question", "answer", "prediction", "task")


def uqabench_accuracy(tasks: list[str], golds: list[str], preds: list[str]) -> dict:
    """Accuracy overall, per family and per sub-task for aligned lists (tasks are sub-task codes)."""
    if not (len(tasks) == len(golds) == len(preds)):
        raise UserError(f"{len(preds)} predictions, {len(golds)} golds, {len(tasks)} tasks")
    if not golds:
        raise UserError("no examples to score")
    unknown = sorted(set(tasks) - set(SUB_TASKS))
    if unknown:
        raise UserError(f"unknown UQABench sub-task(s) {unknown}; known: {list(SUB_TASKS)}")
    df = pl.DataFrame(
        {"task": tasks, "gold": golds, "pred": preds}, schema=dict.fromkeys(("task", "gold", "pred"), pl.Utf8)
    )
    df = df.with_columns(
        family=pl.col("task").replace_strict(SUB_TASKS),
        correct=pl.col("pred").str.strip_chars().str.starts_with(pl.col("gold").str.strip_chars()),
    )

    def by(column: str, order: list[str]) -> dict:
        rows = df.group_by(column).agg(accuracy=pl.col("correct").mean(), n=pl.len())
        found = {r[column]: {"accuracy": float(r["accuracy"]), "n": int(r["n"])} for r in rows.to_dicts()}
        return {key: found[key] for key in order if key in found}

    return {
        "accuracy": float(df["correct"].mean()),
        "n": df.height,
        "families": by("family", list(dict.fromkeys(SUB_TASKS.values()))),
        "tasks": by("task", list(SUB_TASKS)),
    }


def _records_from_objects(objects: list, path: Path, lines: list[int]) -> pl.DataFrame:
    columns: dict[str, list] = {name: [] for name in ("line", *FIELDS)}
    for obj, line in zip(objects, lines):
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {line}: expected a JSON object, got {type(obj).__name__}")
        columns["line"].append(line)
        for name in FIELDS:
            value = obj.get(name)
            if name == "answer" and isinstance(value, list):  # the official file may hold [answer]
                value = value[0] if value else None
            if value is not None and not isinstance(value, (str, int, float)):
                raise DataError(f"{path}: line {line}: '{name}' must be text, got {value!r}")
            columns[name].append(None if value is None else str(value))
    frame = pl.DataFrame(columns, schema={"line": pl.Int64, **dict.fromkeys(FIELDS, pl.Utf8)})
    return frame.select([c for c in frame.columns if c == "line" or frame[c].null_count() < frame.height])


def read_records(path: str | Path, what: str) -> pl.DataFrame:
    """Read golds or predictions into a frame with ``line`` and whichever of FIELDS the file has."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    suffix = path.suffix.lower()
    if suffix in (".arrow", ".ipc", ".feather"):
        return read_align_qa(path).with_row_index("line").with_columns(pl.col("line").cast(pl.Int64))
    if suffix == ".parquet":
        frame = pl.read_parquet(path).with_row_index("line").with_columns(pl.col("line").cast(pl.Int64))
        return frame.select("line", *[pl.col(c).cast(pl.Utf8) for c in FIELDS if c in frame.columns])
    text = path.read_text(encoding="utf-8")
    if suffix == ".json":
        try:
            objects = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: malformed JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})") from exc
        if not isinstance(objects, list):
            raise DataError(f"{path}: expected a JSON list of objects (or use .jsonl, one object per line)")
        return _records_from_objects(objects, path, list(range(len(objects))))
    objects, lines = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            objects.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number}: malformed JSON ({exc.msg})") from exc
        lines.append(number)
    return _records_from_objects(objects, path, lines)


def _require(frame: pl.DataFrame, column: str, path: Path, what: str) -> None:
    if column not in frame.columns:
        raise DataError(f"{path}: {what} need a '{column}' field (have: {[c for c in frame.columns if c != 'line']})")
    bad = frame.filter(pl.col(column).is_null()).head(1)
    if not bad.is_empty():
        raise DataError(f"{path}: line {bad['line'][0]}: no '{column}'")


def _align(golds: pl.DataFrame, preds: pl.DataFrame, golds_path: Path, preds_path: Path) -> pl.DataFrame:
    """Pair gold and prediction records by id when both have ids, else by position."""
    if "id" in golds.columns and "id" in preds.columns:
        for frame, path in ((golds, golds_path), (preds, preds_path)):
            _require(frame, "id", path, "records")
            dup = frame.filter(pl.col("id").is_duplicated()).head(1)
            if not dup.is_empty():
                raise DataError(f"{path}: line {dup['line'][0]}: duplicate id '{dup['id'][0]}'")
        missing = golds.filter(~pl.col("id").is_in(preds["id"].implode()))["id"].to_list()
        if missing:
            raise DataError(f"{preds_path}: no prediction for {len(missing)} id(s), e.g. {missing[:5]}")
        extra = preds.filter(~pl.col("id").is_in(golds["id"].implode()))["id"].to_list()
        if extra:
            raise DataError(f"{preds_path}: {len(extra)} prediction id(s) are not in the golds, e.g. {extra[:5]}")
        return golds.join(preds.select("id", "prediction"), on="id", how="left", maintain_order="left")
    if golds.height != preds.height:
        raise DataError(
            f"{preds_path}: {preds.height} predictions for {golds.height} golds and no 'id' fields to match them"
        )
    pred_question = pl.col("question") if "question" in preds.columns else pl.lit(None, pl.Utf8)
    paired = pl.concat([golds, preds.select("prediction", pred_question=pred_question)], how="horizontal")
    if "question" in golds.columns:
        other = pl.col("pred_question").is_not_null() & (pl.col("pred_question") != pl.col("question"))
        bad = paired.filter(other).head(1)
        if not bad.is_empty():
            line = bad["line"][0]
            raise DataError(f"{preds_path}: the prediction paired with gold line {line} is for another question")
    return paired


def score_uqabench(golds_path: str | Path, preds_path: str | Path | None = None) -> dict:
    """Score UQABench predictions; with no ``preds_path`` the golds file must hold predictions too."""
    golds_path = Path(golds_path)
    golds = read_records(golds_path, "golds")
    _require(golds, "answer", golds_path, "golds")
    if preds_path is None:
        _require(golds, "prediction", golds_path, "records scored without --preds")
        paired = golds
    else:
        preds_path = Path(preds_path)
        preds = read_records(preds_path, "predictions")
        _require(preds, "prediction", preds_path, "predictions")
        paired = _align(golds.drop("prediction", strict=False), preds, golds_path, preds_path)
    by_rule = sub_task_expr(pl.col("question")) if "question" in paired.columns else pl.lit(None, pl.Utf8)
    given = pl.col("task") if "task" in paired.columns else pl.lit(None, pl.Utf8)
    paired = paired.with_columns(sub_task=pl.when(given.is_in(list(SUB_TASKS))).then(given).otherwise(by_rule))
    bad = paired.filter(pl.col("sub_task").is_null()).head(1)
    if not bad.is_empty():
        question = bad["question"][0] if "question" in bad.columns else None
        raise DataError(
            f"{golds_path}: line {bad['line'][0]}: no UQABench sub-task (df, mf, ip, ap, li, si, it) "
            f"for question {question!r}; give a 'task' field"
        )
    return uqabench_accuracy(paired["sub_task"].to_list(), paired["answer"].to_list(), paired["prediction"].to_list())
