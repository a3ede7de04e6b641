"""Import any event log (CSV, TSV or parquet) into the unified tables with a column mapping.

A :class:`ColumnMapping` says which columns hold the user, item, time, value, text and
source of each event, and which columns of an optional items file hold title and
categories. It can be written in YAML (keys = the field names below)::

    user_col: customer
    item_col: sku
    time_col: ts            # Unix seconds, milliseconds (detected by size) or date strings
    value_col: price
    item_title_col: name    # in the items file
    category_col: tags
    category_sep: "|"

:func:`import_events` reads the files and :func:`build_tables` turns raw frames into the
``events`` / ``items`` / ``users`` tables. ``build_tables`` is shared with the MovieLens
importer, so both drop and count rows by the same rules (see its docstring).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from data_pipelines.report import DataError, RowReport

DELIMITERS = (",", "\t", ";", "|")
#: Event times later than now + this are dropped as "in the future" (clock skew allowance).
FUTURE_SLACK_S = 86_400
PARQUET_SUFFIXES = (".parquet", ".pq")
TAB_SUFFIXES = (".tsv", ".tab")


@dataclass
class ImportResult:
    """Tables in the unified schema plus the row accounting of each input table."""

    tables: dict[str, pl.DataFrame]
    """``events``, ``items``, ``users`` and, where the source has a knowledge graph, ``item_relations``."""
    reports: list[RowReport]
    """One report per input table (``events``, ``items``, ``users`` …): rows read, kept, dropped by reason."""
    info: dict = field(default_factory=dict)
    """Where the data came from (dataset, layout, files); saved in ``summary.json``."""
    notes: list[str] = field(default_factory=list)
    """Things the user should know that are not dropped rows (e.g. users added without a profile)."""


@dataclass
class ColumnMapping:
    """Which columns of the input files hold which fields of the unified tables."""

    user_col: str
    """Events file: the user id column."""
    item_col: str
    """Events file: the item id column."""
    time_col: str
    """Events file: the event time (Unix seconds, milliseconds/micro/nanoseconds detected by size, or dates)."""
    value_col: str | None = None
    """Events file: a numeric value (rating, price, dwell time); rows where it is missing are dropped."""
    text_col: str | None = None
    """Events file: free text of the event (a review, a query, a post)."""
    source_col: str | None = None
    """Events file: the kind of event per row (click, purchase …); overrides ``source``."""
    source: str = "event"
    """The kind of every event when there is no ``source_col``."""
    item_title_col: str | None = None
    """Items file (or the events file when there is no items file): the item title."""
    category_col: str | None = None
    """Items file (or the events file when there is no items file): the item's categories."""
    category_sep: str | None = None
    """Separator between several categories in one ``category_col`` cell (e.g. ``"|"``); None = one value."""
    time_format: str | None = None
    """strftime format of date strings in ``time_col`` (e.g. ``"%d/%m/%Y %H:%M"``); None = infer."""
    items_item_col: str | None = None
    """Items file: the item id column (default: ``item_col``)."""
    users_user_col: str | None = None
    """Users file: the user id column (default: ``user_col``); its other columns become profile fields."""
    delimiter: str | None = None
    """Field delimiter of CSV files; None = detect among ``, \\t ; |``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("user_col", "item_col", "time_col", "source") and not (isinstance(value, str) and value):
                raise DataError(f"column mapping: '{f.name}' must be a non-empty string (got {value!r})")
            if value is not None and not isinstance(value, str):
                raise DataError(f"column mapping: '{f.name}' must be a string (got {value!r})")
        if self.delimiter in ("\\t", "tab"):  # as typed on a command line or in single-quoted YAML
            self.delimiter = "\t"
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise DataError(f"column mapping: 'delimiter' must be one character (got {self.delimiter!r})")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: dict, source: str = "column mapping") -> ColumnMapping:
        """Build from a dict; unknown keys and missing required keys raise DataError naming ``source``."""
        known = cls.field_names()
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise DataError(f"{source}: unknown mapping name '{unknown[0]}' (known: {', '.join(known)})")
        missing = [k for k in ("user_col", "item_col", "time_col") if values.get(k) is None]
        if missing:
            raise DataError(f"{source}: '{missing[0]}' is required (name the column that holds it)")
        try:
            return cls(**{k: v for k, v in values.items() if v is not None})
        except DataError as exc:
            raise DataError(f"{source}: {str(exc).removeprefix('column mapping: ')}") from None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: str | None) -> ColumnMapping:
        """Read a YAML mapping; ``overrides`` that are not None replace its values (CLI flags)."""
        values = read_mapping_yaml(path)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(values, source=str(path))


def read_mapping_yaml(path: str | Path) -> dict:
    """The key/value pairs of a YAML mapping file (DataError when missing, empty, not YAML or not a mapping;
    see :func:`data_pipelines.readers.read_yaml_mapping`)."""
    from data_pipelines.readers import read_yaml_mapping

    return {str(k): v for k, v in read_yaml_mapping(path, "mapping").items()}


# --------------------------------------------------------------------------- reading files


def decode_text(path: Path) -> bytes:
    """The file as UTF-8 bytes; files that are not valid UTF-8 are read as latin-1 (old MovieLens)."""
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
        return raw
    except UnicodeDecodeError:
        return raw.decode("latin-1").encode("utf-8")


def sniff_delimiter(path: Path) -> str:
    """The delimiter among ``, \\t ; |`` that splits the first lines into the most, equally many fields."""
    with open(path, "rb") as f:
        head = f.read(65536).decode("utf-8", errors="replace")
    lines = head.splitlines()
    if len(lines) > 1 and not head.endswith(("\n", "\r")):
        lines = lines[:-1]  # the last line may be cut off
    lines = [line for line in lines[:50] if line.strip()]
    best, best_fields = ",", 1
    for delimiter in DELIMITERS:
        counts = [len(row) for row in csv.reader(lines, delimiter=delimiter)]
        if counts and len(set(counts)) == 1 and counts[0] > best_fields:
            best, best_fields = delimiter, counts[0]
    if best_fields == 1:  # ragged everywhere: fall back to the header
        for delimiter in DELIMITERS:
            n = len(next(csv.reader(lines[:1], delimiter=delimiter), []))
            if n > best_fields:
                best, best_fields = delimiter, n
    return best


def read_frame(path: str | Path, *, role: str, needed: list[str], delimiter: str | None = None) -> pl.DataFrame:
    """Read a CSV/TSV (all columns as strings) or parquet file and check that ``needed`` columns exist.

    ``role`` (``events``, ``items``, ``users``) appears in error messages.
    """
    from data_pipelines.readers import read_parquet, require_file

    path = require_file(path, role)  # missing, a folder or empty: one line saying which
    if path.suffix.lower() in PARQUET_SUFFIXES:
        df = read_parquet(path, role)
        separator = None
    else:
        separator = delimiter or ("\t" if path.suffix.lower() in TAB_SUFFIXES else sniff_delimiter(path))
        df = _read_csv(path, separator, role)
    missing = [c for c in needed if c not in df.columns]
    if missing:
        if separator is not None and df.width == 1:
            raise DataError(
                f"{path}: found one column {df.columns[0]!r} with delimiter {separator!r}; "
                f"wrong delimiter? (pass --delimiter / 'delimiter:'; {role} column {missing[0]!r} not found)"
            )
        raise DataError(f"{path}: {role} column {missing[0]!r} not found (columns: {', '.join(df.columns)})")
    return df


def refuse_non_text(path: Path, role: str) -> None:
    """DataError when ``path`` is not 8-bit text (NUL bytes: binary, compressed or UTF-16/32 files)."""
    with open(path, "rb") as f:
        head = f.read(65536)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        found = "is UTF-16/32 text (byte-order mark)"
    elif b"\x00" in head:
        line = head[: head.find(b"\x00")].count(b"\n") + 1
        found = f"holds binary data (a NUL byte in line {line})"
    else:
        return
    raise DataError(f"{path}: {role} file {found}, not UTF-8 or latin-1 text "
                    "(save it as UTF-8 CSV/TSV, or pass a .parquet file)")


def _read_csv(path: Path, separator: str, role: str) -> pl.DataFrame:
    refuse_non_text(path, role)

    def read(source) -> pl.DataFrame:
        return pl.read_csv(source, separator=separator, infer_schema=False, raise_if_empty=False)

    try:
        try:
            return read(path)
        except pl.exceptions.ComputeError as exc:
            if "utf-8" not in str(exc).lower():
                raise
            return read(io.BytesIO(decode_text(path)))
    except pl.exceptions.PolarsError as exc:
        message = str(exc).splitlines()[0]
        raise DataError(f"{path}: cannot read {role} file with delimiter {separator!r} ({message})") from None


# --------------------------------------------------------------------------- column conversion

_INTEGER_TEXT = re.compile(r"^-?(0|[1-9][0-9]*)$")


def _where(file: str, column: str) -> str:
    return f"{file}: column {column!r}"


def _first_unparsed(raw: pl.Series, parsed: pl.Series) -> tuple[int, object]:
    row = int((raw.is_not_null() & parsed.is_null()).arg_true()[0])
    return row, raw[row]


def to_id(series: pl.Series, *, file: str, column: str) -> pl.Series:
    """Ids as trimmed strings (empty → null); integral floats lose their ``.0``."""
    dtype = series.dtype
    if dtype == pl.Utf8:
        return series.str.strip_chars().replace("", None)
    if dtype in (pl.Categorical,) or isinstance(dtype, pl.Enum):
        return to_id(series.cast(pl.Utf8), file=file, column=column)
    if dtype.is_integer():
        return series.cast(pl.Utf8)
    if dtype.is_float():
        finite = series.filter(series.is_finite())
        if (finite == finite.floor()).all():
            return series.set(~series.is_finite().fill_null(False), None).cast(pl.Int64, strict=False).cast(pl.Utf8)
        return series.cast(pl.Utf8)
    raise DataError(f"{_where(file, column)} has type {dtype}; ids must be strings or integers")


def to_seconds(series: pl.Series, *, file: str, column: str, time_format: str | None = None) -> pl.Series:
    """Event times as Int64 Unix seconds; values that are not a time become null.

    Accepts datetimes, integer or float Unix times (seconds, or milli/micro/nanoseconds
    detected by the median magnitude), numeric strings, and date strings (``time_format``
    or inferred). A column where no value is a time raises DataError (wrong column?).
    """
    dtype = series.dtype
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return series.cast(pl.Datetime("us")).dt.epoch("s") if dtype == pl.Date else series.dt.epoch("s")
    if dtype == pl.Utf8:
        text = series.str.strip_chars()
        if time_format is not None:
            parsed = text.str.strptime(pl.Datetime, time_format, strict=False).dt.epoch("s")
        else:
            numbers = _numbers(text)
            present = text.len() - text.null_count()
            if present == 0 or 2 * (numbers.len() - numbers.null_count()) > present:
                parsed = _scale_unix(numbers)
            else:
                try:
                    parsed = text.str.to_datetime(strict=False).dt.epoch("s")
                except pl.exceptions.PolarsError:
                    parsed = pl.Series(series.name, [None] * len(series), dtype=pl.Int64)
    elif dtype.is_numeric():
        parsed = _scale_unix(_numbers(series))
    else:
        raise DataError(f"{_where(file, column)} has type {dtype}; expected Unix times or date strings")
    if series.null_count() < len(series) and parsed.null_count() == len(parsed):
        row, value = _first_unparsed(series, parsed)
        how = f"dates in format {time_format!r}" if time_format else "Unix seconds/milliseconds or dates"
        raise DataError(f"{_where(file, column)}, row {row}: {value!r} is not a time; no value is ({how} expected)")
    return parsed.alias(series.name)


def _numbers(series: pl.Series) -> pl.Series:
    """Integer part of numeric values (exact for integers); non-numbers and non-finite → null."""
    if series.dtype.is_integer():
        return series.cast(pl.Int64)
    ints = series.cast(pl.Int64, strict=False) if series.dtype == pl.Utf8 else None
    floats = series.cast(pl.Float64, strict=False)
    floats = floats.set(~floats.is_finite().fill_null(False), None).floor().cast(pl.Int64, strict=False)
    return floats if ints is None else ints.fill_null(floats)


def _scale_unix(ints: pl.Series) -> pl.Series:
    """Seconds from seconds/ms/µs/ns, decided by the median magnitude of the column."""
    magnitude = ints.abs().median()
    if magnitude is None or magnitude < 1e11:
        return ints
    divisor = 1_000_000_000 if magnitude >= 1e17 else 1_000_000 if magnitude >= 1e14 else 1_000
    return ints // divisor


def to_float(series: pl.Series, *, file: str, column: str) -> pl.Series:
    """Values as Float64 (non-numbers → null; NaN/inf kept for the caller to count)."""
    dtype = series.dtype
    if dtype == pl.Utf8:
        parsed = series.str.strip_chars().cast(pl.Float64, strict=False)
    elif dtype.is_numeric() or dtype == pl.Boolean:
        parsed = series.cast(pl.Float64)
    else:
        raise DataError(f"{_where(file, column)} has type {dtype}; expected numbers")
    if series.null_count() < len(series) and parsed.null_count() == len(parsed):
        row, value = _first_unparsed(series, parsed)
        raise DataError(f"{_where(file, column)}, row {row}: {value!r} is not a number; no value is (wrong column?)")
    return parsed


def to_text(series: pl.Series, *, file: str, column: str) -> pl.Series:
    """Free text / titles as Utf8 (numbers become their text; nested types raise DataError)."""
    dtype = series.dtype
    if dtype == pl.Utf8:
        return series
    if dtype.is_numeric() or dtype in (pl.Boolean, pl.Categorical, pl.Null) or isinstance(dtype, pl.Enum):
        return series.cast(pl.Utf8)
    raise DataError(f"{_where(file, column)} has type {dtype}; expected text")


def to_categories(series: pl.Series, *, sep: str | None, file: str, column: str) -> pl.Series:
    """A List(Utf8) of trimmed, non-empty categories per row (``sep`` splits one cell into several)."""
    if isinstance(series.dtype, pl.List):
        values = series.cast(pl.List(pl.Utf8))
    elif series.dtype == pl.Utf8 or series.dtype.is_numeric() or series.dtype == pl.Categorical:
        text = series.cast(pl.Utf8)
        values = text.str.split(sep) if sep else pl.DataFrame({"c": text}).select(pl.concat_list("c")).to_series()
    else:
        raise DataError(f"{_where(file, column)} has type {series.dtype}; expected text or a list of text")
    frame = pl.DataFrame({"c": values})
    out = frame.select(
        pl.col("c")
        .list.eval(pl.element().str.strip_chars().filter(pl.element().str.strip_chars().str.len_chars() > 0))
        .fill_null([])
    )
    return out.to_series().alias(series.name)


def infer_profile_types(users: pl.DataFrame, *, skip: tuple[str, ...] = ("user_id",)) -> pl.DataFrame:
    """Turn text profile columns into Int64/Float64 where every value is a number (``"01234"`` stays text)."""
    casts = []
    for name in users.columns:
        column = users[name]
        if name in skip or column.dtype != pl.Utf8:
            continue
        present = column.drop_nulls().str.strip_chars()
        if not len(present):
            continue
        if present.str.contains(r"^-?0[0-9]").any():  # codes like zip "01234" stay text
            continue
        if present.str.contains(_INTEGER_TEXT.pattern).all():
            casts.append(pl.col(name).str.strip_chars().cast(pl.Int64, strict=False))
        elif present.cast(pl.Float64, strict=False).null_count() == 0:
            casts.append(pl.col(name).str.strip_chars().cast(pl.Float64, strict=False))
    return users.with_columns(casts) if casts else users


# --------------------------------------------------------------------------- the shared accounting


def build_tables(
    events: pl.DataFrame,
    *,
    events_file: str,
    items: pl.DataFrame | None = None,
    items_file: str = "",
    users: pl.DataFrame | None = None,
    users_file: str = "",
    labels: dict[str, str] | None = None,
    time_format: str | None = None,
    has_value: bool = True,
    value_range: tuple[float, float] | None = None,
    strict: bool = False,
) -> ImportResult:
    """Clean raw frames into the ``events`` / ``items`` / ``users`` tables, counting every dropped row.

    ``events`` has columns ``user_id``, ``item_id``, ``timestamp`` and optionally ``value``,
    ``text``, ``source`` in any type (converted here). ``items`` has ``item_id`` and
    optionally ``title`` (missing → the id) and ``categories`` (List(Utf8)). ``users`` has
    ``user_id`` and profile columns. ``labels`` maps these names to the input's own column
    names for error messages. Rows are dropped and counted, in this order, for: missing
    user/item id, missing or unparseable timestamp, a negative timestamp (before 1970) or one
    more than a day in the future (a unit or clock mistake), missing, non-numeric or non-finite
    value (when ``has_value``), a value outside ``value_range`` (e.g. MovieLens ratings), a
    duplicate (user, item, source, timestamp) event (the first is kept), an item that is not in
    the items table (when one is given); items and users with
    a missing or duplicate id; users left with no events. Without an items table, items are
    built from the event item ids (title = id, no categories). Users that have events but no
    row in the users table are added with empty profile fields (and a note).
    With ``strict=True`` the first droppable row of a table raises DataError naming it.
    """
    labels = {name: name for name in ("user_id", "item_id", "timestamp", "value", "text", "source")} | (labels or {})
    report_events = RowReport("events", read=events.height, strict=strict, source=events_file)
    reports = [report_events]
    notes: list[str] = []

    events = _convert_events(events, events_file, labels, time_format, has_value)
    if items is not None:
        report_items = RowReport("items", read=items.height, strict=strict, source=items_file)
        reports.append(report_items)
        items = _clean_items(items, items_file, report_items)
    time_label, value_label = labels["timestamp"], labels["value"]
    checks = [
        (pl.col("user_id").is_null(), f"missing user id ({labels['user_id']})"),
        (pl.col("item_id").is_null(), f"missing item id ({labels['item_id']})"),
        (pl.col("timestamp_raw").is_null(), f"missing timestamp ({time_label})"),
        (pl.col("timestamp").is_null(), f"timestamp not a number or date ({time_label})"),
        (pl.col("timestamp") < 0, f"timestamp before 1970 ({time_label})"),
        (pl.col("timestamp") > int(time.time()) + FUTURE_SLACK_S, f"timestamp in the future ({time_label})"),
    ]
    if has_value:
        checks += [
            (pl.col("value_raw").is_null(), f"missing value ({value_label})"),
            (pl.col("value").is_null(), f"value not a number ({value_label})"),
            (~pl.col("value").is_finite(), f"value not finite ({value_label})"),
        ]
        if value_range is not None:
            low, high = value_range
            outside = ~pl.col("value").is_between(low, high)
            checks.append((outside, f"value outside [{low:g}, {high:g}] ({value_label})"))
    checks.append(
        (
            Repeated(("user_id", "item_id", "source", "timestamp")),
            "duplicate event (same user, item, source and timestamp)",
        )
    )
    if items is not None:
        checks.append((~pl.col("item_id").is_in(items["item_id"].implode()), "item not in the items table"))
    shown = ["user_id", "item_id", "timestamp_raw"] + (["value_raw"] if has_value else [])
    events = drop_checked(report_events, events, checks, shown)

    if events.height == 0:
        raise DataError(f"{events_file}: no usable events ({report_events.line()})")
    events = events.select(
        pl.col("user_id"),
        pl.col("timestamp").cast(pl.Int64),
        pl.col("source"),
        pl.col("item_id"),
        pl.col("value").cast(pl.Float64),
        pl.col("text").cast(pl.Utf8),
    )
    events = events.sort(_user_order(events), "timestamp", maintain_order=True)
    if items is None:
        items = events.select(pl.col("item_id").unique(maintain_order=True)).with_columns(
            title=pl.col("item_id"), categories=pl.lit([], dtype=pl.List(pl.Utf8))
        )

    event_users = events.select(pl.col("user_id").unique(maintain_order=True))
    if users is not None:
        report_users = RowReport("users", read=users.height, strict=strict, source=users_file)
        reports.append(report_users)
        users = _clean_users(users, users_file, report_users, event_users["user_id"])
        missing = event_users.filter(~pl.col("user_id").is_in(users["user_id"].implode()))
        if missing.height:
            notes.append(
                f"{users_file}: {missing.height:,} users with events have no row here; "
                "added with empty profile fields"
            )
            users = pl.concat([users, missing], how="diagonal_relaxed")
    else:
        users = event_users
    return ImportResult(tables={"events": events, "items": items, "users": users}, reports=reports, notes=notes)


@dataclass(frozen=True)
class Repeated:
    """A check for :func:`drop_checked`: rows whose ``columns`` repeat an earlier row's (the first is kept).

    Same result as ``~pl.struct(columns).is_first_distinct()`` with a fraction of its memory
    on millions of string keys: rows are hashed first, and full keys are compared only among
    the few rows whose hashes collide.
    """

    columns: tuple[str, ...]

    def __call__(self, frame: pl.DataFrame) -> pl.Series:
        candidates = frame.select(pl.struct(self.columns).hash().is_duplicated()).to_series()
        flags = pl.repeat(False, frame.height, dtype=pl.Boolean, eager=True)
        if candidates.any():
            repeats = frame.filter(candidates).select(~pl.struct(self.columns).is_first_distinct()).to_series()
            flags = flags.scatter(candidates.arg_true().filter(repeats), True)
        return flags


Check = tuple[pl.Expr | Repeated, str]


def _flags(df: pl.DataFrame, bad: pl.Expr | Repeated, keep: pl.Series | None = None) -> pl.Series:
    """Evaluate one check on the rows ``keep`` selects (all when None), reading only the columns it needs."""
    columns = list(bad.columns) if isinstance(bad, Repeated) else list(dict.fromkeys(bad.meta.root_names()))
    part = df.select(columns or df.columns[:1])
    if keep is not None:
        part = part.filter(keep)
    if isinstance(bad, Repeated):
        return bad(part)
    return part.with_columns(bad.fill_null(True).alias("__bad"))["__bad"]


def drop_checked(report: RowReport, df: pl.DataFrame, checks: list[Check], shown: list[str]) -> pl.DataFrame:
    """Drop the rows each ``(bad, reason)`` flags, in order, counting them under ``reason``.

    Each check sees only the rows kept by the checks before it (so the duplicate check runs
    after bad rows are gone), exactly as if ``report.drop`` ran once per check; but each is
    evaluated once, on the columns it reads of the rows still kept, and ``df`` is filtered
    once at the end, so memory stays near one extra copy of ``df`` on tens of millions of
    rows. In strict mode every check is evaluated on all rows and the one that flags the
    earliest row raises (through ``report.drop``), naming that row.
    """
    if not df.height or not checks:
        return df
    if report.strict:
        first: tuple[int, pl.Series, str] | None = None
        for bad, reason in checks:
            flags = _flags(df, bad)
            if flags.any() and (first is None or flags.arg_max() < first[0]):
                first = (int(flags.arg_max()), flags, reason)
        return df if first is None else report.drop(df, first[1], first[2], shown)  # raises
    keep: pl.Series | None = None  # rows still kept; None = all
    for bad, reason in checks:
        flags = _flags(df, bad, keep)
        n = int(flags.sum())
        if not n:
            continue
        report.dropped[reason] = report.dropped.get(reason, 0) + n
        kept_rows = pl.int_range(df.height, dtype=pl.UInt32, eager=True) if keep is None else keep.arg_true()
        keep = pl.repeat(True, df.height, dtype=pl.Boolean, eager=True) if keep is None else keep
        keep = keep.scatter(kept_rows.filter(flags), False)
    return df if keep is None else df.filter(keep)


def _user_order(events: pl.DataFrame) -> pl.Expr:
    """Sort key for users: numerically when every id is an integer ("2" before "10"), else as text."""
    as_int = pl.col("user_id").cast(pl.Int64, strict=False)
    all_int = events.select(as_int.null_count() == 0).item()
    return as_int if all_int else pl.col("user_id")


def _convert_events(
    events: pl.DataFrame, file: str, labels: dict[str, str], time_format: str | None, has_value: bool
) -> pl.DataFrame:
    for required in ("user_id", "item_id", "timestamp"):
        if required not in events.columns:
            raise DataError(f"{file}: no column for {required}")
    n = events.height
    raw_time = events["timestamp"]
    raw_value = events["value"] if has_value and "value" in events.columns else pl.Series([None] * n, dtype=pl.Utf8)
    columns = {
        "user_id": to_id(events["user_id"], file=file, column=labels["user_id"]),
        "item_id": to_id(events["item_id"], file=file, column=labels["item_id"]),
        "timestamp": to_seconds(raw_time, file=file, column=labels["timestamp"], time_format=time_format),
        "value": (
            to_float(raw_value, file=file, column=labels["value"])
            if has_value
            else pl.Series([None] * n, dtype=pl.Float64)
        ),
        "text": (
            to_text(events["text"], file=file, column=labels["text"])
            if "text" in events.columns
            else pl.Series([None] * n, dtype=pl.Utf8)
        ),
        "source": to_id(events["source"], file=file, column=labels["source"]),
        "timestamp_raw": raw_time,
        "value_raw": raw_value,
    }
    return pl.DataFrame({name: series.alias(name) for name, series in columns.items()})


def _clean_items(items: pl.DataFrame, file: str, report: RowReport) -> pl.DataFrame:
    items = items.with_columns(to_id(items["item_id"], file=file, column="item_id").alias("item_id"))
    if "title" not in items.columns:
        items = items.with_columns(title=pl.col("item_id"))
    if "categories" not in items.columns:
        items = items.with_columns(categories=pl.lit([], dtype=pl.List(pl.Utf8)))
    items = items.with_columns(
        pl.col("title").cast(pl.Utf8).str.strip_chars().replace("", None).fill_null(pl.col("item_id")),
        pl.col("categories").fill_null([]),
    )
    checks = [
        (pl.col("item_id").is_null(), "missing item id"),
        (~pl.col("item_id").is_first_distinct(), "duplicate item id (first kept)"),
    ]
    items = drop_checked(report, items, checks, ["item_id", "title"])
    rest = [c for c in items.columns if c not in ("item_id", "title", "categories")]
    return items.select("item_id", "title", "categories", *rest)


def _clean_users(users: pl.DataFrame, file: str, report: RowReport, event_users: pl.Series) -> pl.DataFrame:
    users = users.with_columns(to_id(users["user_id"], file=file, column="user_id").alias("user_id"))
    checks = [
        (pl.col("user_id").is_null(), "missing user id"),
        (~pl.col("user_id").is_first_distinct(), "duplicate user id (first kept)"),
        (~pl.col("user_id").is_in(event_users.implode()), "user has no events"),
    ]
    users = drop_checked(report, users, checks, ["user_id"])
    return users.select("user_id", *[c for c in users.columns if c != "user_id"])


# --------------------------------------------------------------------------- the generic importer


def import_events(
    events_path: str | Path,
    mapping: ColumnMapping,
    *,
    items_path: str | Path | None = None,
    users_path: str | Path | None = None,
    strict: bool = False,
) -> ImportResult:
    """Import an event log (+ optional items and users files) with ``mapping``; see :func:`build_tables`."""
    events_file = str(events_path)
    event_cols = {
        "user_id": mapping.user_col,
        "item_id": mapping.item_col,
        "timestamp": mapping.time_col,
        "value": mapping.value_col,
        "text": mapping.text_col,
        "source": mapping.source_col,
    }
    item_cols = {"title": mapping.item_title_col, "categories": mapping.category_col}
    from_events = {k: v for k, v in item_cols.items() if v is not None} if items_path is None else {}
    needed = [c for c in event_cols.values() if c is not None] + list(from_events.values())
    raw = read_frame(events_path, role="events", needed=needed, delimiter=mapping.delimiter)
    events = raw.select(pl.col(col).alias(name) for name, col in event_cols.items() if col is not None)
    if mapping.source_col is None:
        events = events.with_columns(source=pl.lit(mapping.source))
    else:
        kinds = to_text(events["source"], file=events_file, column=mapping.source_col)
        events = events.with_columns(kinds.fill_null(mapping.source).alias("source"))
    labels = {name: col for name, col in event_cols.items() if col is not None}

    items = None
    if items_path is not None:
        item_id_col = mapping.items_item_col or mapping.item_col
        columns = {"item_id": item_id_col} | {k: v for k, v in item_cols.items() if v is not None}
        raw_items = read_frame(items_path, role="items", needed=list(columns.values()), delimiter=mapping.delimiter)
        items = _items_frame(raw_items, columns, mapping.category_sep, str(items_path))
    elif from_events:
        columns = {"item_id": mapping.item_col} | from_events
        items = _items_frame(raw, columns, mapping.category_sep, events_file)
        items = (
            items.filter(pl.col("item_id").is_not_null())
            .group_by("item_id", maintain_order=True)
            .agg(pl.all().drop_nulls().first())
        )

    users = None
    if users_path is not None:
        user_id_col = mapping.users_user_col or mapping.user_col
        raw_users = read_frame(users_path, role="users", needed=[user_id_col], delimiter=mapping.delimiter)
        users = infer_profile_types(raw_users.rename({user_id_col: "user_id"}))

    result = build_tables(
        events,
        events_file=events_file,
        items=items,
        items_file=str(items_path or events_file),
        users=users,
        users_file=str(users_path or ""),
        labels=labels,
        time_format=mapping.time_format,
        has_value=mapping.value_col is not None,
        strict=strict,
    )
    if items_path is None and from_events:  # items came from the events file: count them, don't report as read
        result.reports = [r for r in result.reports if r.name != "items"]
    result.info = {
        "dataset": "events",
        "files": {"events": events_file, "items": str(items_path or ""), "users": str(users_path or "")},
        "mapping": dataclasses.asdict(mapping),
    }
    return result


def _items_frame(raw: pl.DataFrame, columns: dict[str, str], sep: str | None, file: str) -> pl.DataFrame:
    items = raw.select(pl.col(col).alias(name) for name, col in columns.items())
    if "categories" in items.columns:
        categories = to_categories(items["categories"], sep=sep, file=file, column=columns["categories"])
        items = items.with_columns(categories.alias("categories"))
    if "title" in items.columns:
        items = items.with_columns(to_text(items["title"], file=file, column=columns["title"]).alias("title"))
    return items
