"""Defensive readers of user files: every way a file can be unusable becomes one :class:`DataError` line.

Each reader names the file (and the line, row or key where known) and says what is wrong: missing,
a folder where a file is meant, empty, not UTF-8 text (with line and column of the first bad byte),
malformed or too deeply nested JSON, a YAML file that is not a mapping or expands beyond reason (an
alias bomb), a parquet file that cannot be read. The command-line readers (``prepare``, ``generate
--input``, ``score``, LaMP files, mapping and config YAML, embedder ``config.json``) go through these
functions, so a new reader gets the same protection by calling them.

Standard library only (polars and yaml are imported on use).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_pipelines.report import DataError

if TYPE_CHECKING:
    import polars as pl

#: JSON/YAML nesting deeper than this is refused (no file of this project nests beyond ~6 levels).
MAX_DEPTH = 100
#: A YAML document whose values, aliases expanded, exceed this count is refused (an alias bomb).
MAX_YAML_VALUES = 200_000


def require_file(path: str | Path, what: str = "input") -> Path:
    """``path`` if it is a non-empty file; DataError saying it is missing, a folder or empty otherwise."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{path}: is a folder; the {what} must be a file")
    if not path.exists():
        raise DataError(f"{path}: {what} file not found")
    if not path.is_file():
        raise DataError(f"{path}: is not a regular file; the {what} must be a file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: {what} file is empty")
    return path


def decode_utf8(raw: bytes, path: str | Path, what: str = "input") -> str:
    """``raw`` as text (a UTF-8 byte-order mark is dropped); DataError naming line and column of a bad byte."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: {what} file is UTF-16/32 text (byte-order mark), not UTF-8; save it as UTF-8")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        column = exc.start - (raw.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataError(f"{path}: {what} file is not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, "
                        f"column {column}); save it as UTF-8") from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise DataError(f"{path}: {what} file holds binary data (a NUL byte in line {line}), not text")
    return text.removeprefix("\ufeff")


def read_text(path: str | Path, what: str = "input") -> str:
    """The file's text after :func:`require_file` and :func:`decode_utf8`."""
    path = require_file(path, what)
    return decode_utf8(path.read_bytes(), path, what)


def nesting_depth(value: Any, limit: int = MAX_DEPTH) -> int:
    """Depth of nested lists/dicts (a scalar is 0), counted without recursion; stops once past ``limit``."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(text: str, path: str | Path, what: str = "input", line: int | None = None) -> Any:
    """Parse one JSON document; DataError with line and column when malformed or nested beyond MAX_DEPTH."""
    where = f"{path}:{line}" if line is not None else str(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        if line is not None:  # one line of a JSON-lines file
            raise DataError(f"{where}: not JSON (column {exc.colno}: {exc.msg})") from None
        at = f"line {exc.lineno}, column {exc.colno}"
        raise DataError(f"{where}: malformed JSON in {what} file ({at}: {exc.msg})") from None
    except RecursionError:
        raise DataError(f"{where}: {what} file nests JSON deeper than Python can read") from None
    if nesting_depth(value) > MAX_DEPTH:
        raise DataError(f"{where}: {what} file nests JSON more than {MAX_DEPTH} levels deep")
    return value


def read_json(path: str | Path, what: str = "input") -> Any:
    """A whole JSON file, read defensively (see :func:`read_text` and :func:`parse_json`)."""
    return parse_json(read_text(path, what), path, what)


def iter_jsonl(path: str | Path, what: str = "input") -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, value, None)`` per non-blank line of a JSON-lines file, or ``(line, None, error)``.

    The file as a whole must be readable text (DataError otherwise); a bad line is that line's error,
    so a batch can report it and go on.
    """
    text = read_text(path, what)
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, parse_json(line, path, what, line=number), None
        except DataError as exc:
            yield number, None, str(exc)


def read_parquet(path: str | Path, what: str = "input") -> pl.DataFrame:
    """A parquet file as a polars frame; DataError for a file that is not (readable) parquet."""
    import polars as pl

    path = require_file(path, what)
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several error kinds for corrupt files
        detail = (str(exc).strip().splitlines() or [""])[0]
        raise DataError(f"{path}: cannot read {what} parquet ({type(exc).__name__}: {detail})") from None


def _yaml_size(value: Any, limit: int) -> int:
    """Values in a loaded YAML document counting every alias expansion; stops once past ``limit``."""
    count, stack = 0, [value]
    while stack and count <= limit:
        item = stack.pop()
        count += 1
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return count


def _yaml_problem(exc: Exception) -> str:
    """A YAML error as "problem at line L, column C; context at line …" (PyYAML's own text spans many lines)."""
    def at(mark) -> str:
        return f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""

    problem = getattr(exc, "problem", None)
    if problem is None:
        return " ".join(str(exc).split())
    text = f"{problem}{at(getattr(exc, 'problem_mark', None))}"
    context = getattr(exc, "context", None)
    if context:
        text += f"; {context}{at(getattr(exc, 'context_mark', None))}"
    return text


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict:
    """A YAML file that must hold a mapping; DataError naming the file and the reason otherwise.

    Refused: missing, a folder, empty (or only comments), not UTF-8, a YAML syntax error (with its
    line), a top level that is not a mapping, nesting beyond MAX_DEPTH, or more than MAX_YAML_VALUES
    values once aliases are expanded.
    """
    import yaml

    text = read_text(path, what)
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise DataError(f"{path}: {what} file is not valid YAML ({_yaml_problem(exc)})") from None
    except RecursionError:
        raise DataError(f"{path}: {what} file nests YAML deeper than Python can read") from None
    if value is None:
        raise DataError(f"{path}: {what} file is empty (no settings, only blank lines or comments)")
    if not isinstance(value, dict):
        raise DataError(f"{path}: {what} file must hold a mapping of keys to values, got a YAML "
                        f"{type(value).__name__} at the top level")
    if _yaml_size(value, MAX_YAML_VALUES) > MAX_YAML_VALUES:  # first: it also bounds a cyclic document
        raise DataError(f"{path}: {what} file expands to more than {MAX_YAML_VALUES:,} values (YAML aliases "
                        "repeated over and over?); refused")
    if nesting_depth(value) > MAX_DEPTH:
        raise DataError(f"{path}: {what} file nests YAML more than {MAX_DEPTH} levels deep")
    return value
