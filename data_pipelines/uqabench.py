"""UQABench import: its Arrow IPC files -> unified tables.

UQABench (Liu et al., 2025; github.com/ming429778/UQABench) ships Taobao behaviour sequences
as Arrow IPC files, one user sequence per row:

* ``pretrain_data_{train,eval}.arrow`` — sequences only;
* ``align_data_{train,eval}.arrow`` — the same columns plus ``text``, a chat JSON
  ``[{"role": "user", "content": question}, {"role": "assistant", "content": answer}]``.

Sequence columns are lists over the user's items, each element a list of ids (the official
collator reads ``item[0]``): ``uni_seq_{item,cate,brand,shop,seller}_id`` (all required),
plus optional BPE token columns such as ``uni_seq_title_bpe_token_ids`` (per item a list of
Qwen2 token ids). A ``user_id`` column is used when present, else ``<file stem>:<row>``.

Output: ``events`` (source ``"behaviour"``, timestamp = position in the sequence, since the
files carry no times), ``items`` (categories ``["cate:…", "brand:…", "shop:…", "seller:…"]``;
title "" — titles exist only as BPE ids, kept in ``title_token_ids``), ``users`` and, for files
with ``text``, ``qa`` (task = sub-task code found from the question with the official rules,
family = its group; ``cutoff`` = sequence length; ``id`` = ``<file stem>:<row>``). Questions
matching no official rule keep task/family ``"other"``.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from data_pipelines.generic import ImportResult
from data_pipelines.report import DataError, RowReport
from data_pipelines.schema import SPLITS, validate

ID_COLUMNS = {
    "item": "uni_seq_item_id",
    "cate": "uni_seq_cate_id",
    "brand": "uni_seq_brand_id",
    "shop": "uni_seq_shop_id",
    "seller": "uni_seq_seller_id",
}
TITLE_TOKENS = "uni_seq_title_bpe_token_ids"

#: sub-task code -> family (the three groups of the UQABench paper)
SUB_TASKS: dict[str, str] = {
    "df": "sequence_understanding",
    "mf": "sequence_understanding",
    "ip": "action_prediction",
    "ap": "action_prediction",
    "li": "interest_perception",
    "si": "interest_perception",
    "it": "interest_perception",
}
#: The official ``calc_metrics_acc.py`` rules, checked in this order (ip before ap matters).
QUESTION_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("df", ("次浏览的商品的", "次（从1开始计数）浏览的")),
    ("mf", ("长度是多少？", "的商品有多少个")),
    ("ip", ("下一个可能点击的商品的标题是什么",)),
    ("ap", ("用户下一个可能点击的商品的",)),
    ("li", ("用户最感兴趣的3个",)),
    ("si", ("用户近期最感兴趣的",)),
    ("it", ("偏好的转移路径是什么",)),
)
OTHER = "other"


def sub_task_of(question: str) -> str | None:
    """The UQABench sub-task code of ``question`` by the official substring rules, or None."""
    for code, markers in QUESTION_RULES:
        if any(marker in question for marker in markers):
            return code
    return None


def sub_task_expr(question: pl.Expr) -> pl.Expr:
    """Polars version of :func:`sub_task_of` (null where no rule matches)."""
    expr = pl.lit(None, dtype=pl.Utf8)
    for code, markers in reversed(QUESTION_RULES):
        hit = pl.any_horizontal([question.str.contains(m, literal=True) for m in markers])
        expr = pl.when(hit).then(pl.lit(code)).otherwise(expr)
    return expr


def split_of(path: Path, default: str) -> str:
    """``train``/``val``/``test`` from a file name like ``align_data_eval.arrow``."""
    stem = path.stem.lower()
    for marker, split in (("train", "train"), ("eval", "test"), ("test", "test"), ("val", "val"), ("dev", "val")):
        if stem.endswith(marker):
            return split
    return default


def read_arrow(path: str | Path, need_text: bool = False) -> pl.DataFrame:
    """Read one UQABench Arrow file; DataError naming file and column if a required one is missing."""
    from data_pipelines.readers import require_file

    path = require_file(path, "UQABench Arrow")  # missing, a folder or empty
    try:
        df = pl.read_ipc(path)
    except Exception as exc:  # polars raises several kinds for non-Arrow input
        raise DataError(f"{path}: not an Arrow IPC file ({exc.__class__.__name__}: {exc})") from exc
    required = list(ID_COLUMNS.values()) + (["text"] if need_text else [])
    for column in required:
        if column not in df.columns:
            raise DataError(f"{path}: missing required column '{column}' (have: {df.columns})")
    for column in ID_COLUMNS.values():
        if not isinstance(df[column].dtype, pl.List):
            raise DataError(f"{path}: column '{column}' must be a list column, got {df[column].dtype}")
    if "text" in df.columns and df["text"].dtype != pl.Utf8:
        raise DataError(f"{path}: column 'text' must be a string column, got {df['text'].dtype}")
    return df


def _ids(column: str, dtype: pl.DataType) -> pl.Expr:
    """Per item the first id (the official collator's ``item[0]``), as a string."""
    inner = dtype.inner if isinstance(dtype, pl.List) else None
    element = pl.element().list.first() if isinstance(inner, pl.List) else pl.element()
    return pl.col(column).list.eval(element.cast(pl.Utf8))


def _user_ids(df: pl.DataFrame, path: Path) -> pl.Expr:
    if "user_id" in df.columns:
        return pl.col("user_id").cast(pl.Utf8)
    return pl.format("{}:{}", pl.lit(path.stem), pl.col("row"))


def parse_chat(df: pl.DataFrame, path: Path) -> pl.DataFrame:
    """``text`` chat JSON -> ``question`` (first user turn) and ``answer`` (first assistant turn)."""
    chat_type = pl.List(pl.Struct({"role": pl.Utf8, "content": pl.Utf8}))
    try:
        chats = df.select(chat=pl.col("text").str.json_decode(dtype=chat_type))
    except Exception:
        for row, text in enumerate(df["text"].to_list()):
            try:
                json.loads(text)
            except (TypeError, json.JSONDecodeError) as exc:
                raise DataError(f"{path}: row {row}, column 'text': not chat JSON ({exc})") from exc
        raise DataError(f"{path}: column 'text' must hold [{{'role', 'content'}}, …] chat messages") from None

    def turn(role: str) -> pl.Expr:
        return pl.col("chat").list.eval(pl.element().filter(pl.element().struct.field("role") == role)).list.first()

    turns = chats.select(
        question=turn("user").struct.field("content"), answer=turn("assistant").struct.field("content")
    )
    for column in ("question", "answer"):
        bad = turns[column].is_null()
        if bad.any():
            row = int(bad.arg_true()[0])
            role = "user" if column == "question" else "assistant"
            raise DataError(f"{path}: row {row}, column 'text': the chat has no {role} turn")
    return turns


def read_align_qa(path: str | Path) -> pl.DataFrame:
    """The questions of an ``align_data_*.arrow`` file: id, question, answer, task (null = no rule)."""
    path = Path(path)
    df = read_arrow(path, need_text=True)
    turns = parse_chat(df, path)
    return turns.with_row_index("row").select(
        id=pl.format("{}:{}", pl.lit(path.stem), pl.col("row")),
        question="question",
        answer="answer",
        task=sub_task_expr(pl.col("question")),
    )


def _import_file(path: Path, split: str, strict: bool) -> tuple[dict[str, pl.DataFrame], list[RowReport]]:
    df = read_arrow(path)
    df = df.with_row_index("row").with_columns(user_id=_user_ids(df, path))
    ids = {kind: _ids(column, df[column].dtype) for kind, column in ID_COLUMNS.items()}
    seqs = df.select("row", "user_id", **ids)
    has_titles = TITLE_TOKENS in df.columns and df[TITLE_TOKENS].dtype == pl.List(pl.List(pl.Int64))
    if has_titles:
        seqs = seqs.with_columns(df[TITLE_TOKENS].alias("title_token_ids"))
    seq_columns = list(ID_COLUMNS) + (["title_token_ids"] if has_titles else [])
    lengths = seqs.select([pl.col(c).list.len().alias(c) for c in seq_columns])
    for column in seq_columns[1:]:
        bad = (lengths[column] != lengths["item"]).fill_null(True)
        if bad.any():
            row = int(bad.arg_true()[0])
            name = ID_COLUMNS.get(column, TITLE_TOKENS)
            raise DataError(
                f"{path}: row {row}: column '{name}' has {lengths[column][row]} items, "
                f"'{ID_COLUMNS['item']}' has {lengths['item'][row]}"
            )

    report = RowReport(f"{path.name} sequence items", strict=strict, source=str(path))
    flat = (
        seqs.with_columns(timestamp=pl.int_ranges(pl.col("item").list.len()))
        .explode([*seq_columns, "timestamp"])
        .filter(pl.col("timestamp").is_not_null())  # empty sequences
    )
    report.read = flat.height
    flat = report.drop(flat, pl.col("item").is_null(), "empty item id", ["row", "timestamp"])
    events = flat.select(
        "user_id",
        timestamp=pl.col("timestamp").cast(pl.Int64),
        source=pl.lit("behaviour"),
        item_id="item",
        value=pl.lit(None, dtype=pl.Float64),
        text=pl.lit(None, dtype=pl.Utf8),
    )
    categories = pl.concat_list(
        [pl.format(f"{kind}:{{}}", pl.col(kind).fill_null("")) for kind in ("cate", "brand", "shop", "seller")]
    )
    item_columns = {"item_id": pl.col("item"), "title": pl.lit(""), "categories": categories}
    if has_titles:
        item_columns["title_token_ids"] = pl.col("title_token_ids")
    items = flat.select(**item_columns).unique("item_id", keep="first", maintain_order=True)
    users = seqs.select("user_id").unique(maintain_order=True)
    tables = {"events": events, "items": items, "users": users}

    if "text" in df.columns:
        turns = parse_chat(df, path)
        task = sub_task_expr(pl.col("question"))
        rows = seqs.select("row", "user_id", n=pl.col("item").list.len())
        tables["qa"] = pl.concat([rows, turns], how="horizontal").select(
            "user_id",
            "question",
            "answer",
            options=pl.lit([], dtype=pl.List(pl.Utf8)),
            task=task.fill_null(OTHER),
            family=task.fill_null(OTHER).replace_strict(SUB_TASKS, default=OTHER, return_dtype=pl.Utf8),
            cutoff=pl.col("n").cast(pl.Int64),
            split=pl.lit(split),
            id=pl.format("{}:{}", pl.lit(path.stem), pl.col("row")),
        )
    return tables, [report]


def import_uqabench(paths: list[str | Path] | str | Path, *, split: str = "test", strict: bool = False) -> ImportResult:
    """Read UQABench Arrow files (pretrain and/or align) into the unified tables.

    ``split`` is used for files whose name does not say it (``*_train`` -> train,
    ``*_eval``/``*_test`` -> test, ``*_val``/``*_dev`` -> val). Events of several files are
    concatenated; items and users are de-duplicated (first occurrence wins).
    """
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; use one of {SPLITS}")
    paths = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not paths:
        raise DataError("no UQABench files given")
    parts: dict[str, list[pl.DataFrame]] = {}
    reports: list[RowReport] = []
    for path in paths:
        tables, file_reports = _import_file(path, split_of(path, split), strict)
        reports += file_reports
        for name, table in tables.items():
            parts.setdefault(name, []).append(table)
    tables = {name: pl.concat(frames, how="diagonal_relaxed") for name, frames in parts.items()}
    # rows of one user (user_id column) repeat the same sequence once per question
    tables["events"] = tables["events"].unique(["user_id", "timestamp", "item_id"], maintain_order=True)
    tables["items"] = tables["items"].unique("item_id", keep="first", maintain_order=True)
    tables["users"] = tables["users"].unique("user_id", keep="first", maintain_order=True)
    for name, table in tables.items():
        validate(name, table)
    notes = []
    if "qa" in tables and (others := int((tables["qa"]["task"] == OTHER).sum())):
        notes.append(f"{others} question(s) match no UQABench sub-task rule; kept with task '{OTHER}'")
    info = {"dataset": "uqabench", "files": [str(p) for p in paths]}
    return ImportResult(tables, reports, info=info, notes=notes)
