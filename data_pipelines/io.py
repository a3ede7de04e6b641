"""Atomic output, in one place: a file or a data directory appears complete or not at all.

Files: :func:`atomic_file` (from :mod:`data_pipelines.atomic`) writes a temp file in the target's
folder, flushes and fsyncs it, then renames it over the target (:func:`os.replace`); on any error
the temp file is removed and an existing target is left as it was. :func:`write_text_atomic`,
:func:`write_json_atomic`, :func:`write_jsonl_atomic` and :func:`write_parquet_atomic` are thin
helpers on top of it.
Directories: :func:`atomic_directory` builds a temp folder beside the target and renames it
into place; :func:`write_tables` writes a whole data directory (a safe output, see
:mod:`data_pipelines.outputs`).

Importing this module is cheap (standard library only; polars is imported on use).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from data_pipelines.atomic import atomic_file, current_umask, fsync_folder, replace_path

__all__ = ["atomic_directory", "atomic_file", "current_umask", "write_json_atomic", "write_jsonl_atomic",
           "write_parquet_atomic", "write_tables", "write_text_atomic"]

if TYPE_CHECKING:
    import polars as pl


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as out:
        out.write(text)
    return Path(path)


def write_json_atomic(path: str | Path, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON (non-JSON values as ``str``) to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as out:
        json.dump(obj, out, indent=indent, default=str)
    return Path(path)


def write_jsonl_atomic(path: str | Path, records: Iterable[Any]) -> Path:
    """Write one JSON object per line (UTF-8, not ASCII-escaped) to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as out:
        for record in records:
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return Path(path)


def write_parquet_atomic(path: str | Path, frame: pl.DataFrame) -> Path:
    """Write a polars frame as parquet to ``path`` atomically; returns ``path``."""
    with atomic_file(path, "wb") as out:
        frame.write_parquet(out)
    return Path(path)


@contextmanager
def atomic_directory(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success it replaces ``final`` in one rename, on error it is removed.

    A reader never sees a half-written ``final``: it is either the old folder or the new one. Low level: it
    replaces ``final`` whole, whatever it holds — commands write through
    :func:`data_pipelines.outputs.output_directory`, which refuses to replace files they did not write.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes a private folder; outputs are shared
    try:
        yield tmp
        if final.exists():
            if not overwrite:
                raise FileExistsError(f"{final}: already exists")
        replace_path(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_folder(final.parent)


def write_tables(out_dir: str | Path, tables: dict[str, pl.DataFrame], summary: dict, *, overwrite: bool = False,
                 inputs: Iterable[str | Path | None] = ()) -> Path:
    """Validate and write ``<out_dir>/<name>.parquet`` for each table plus ``summary.json``.

    Everything is written to a sibling temp dir first and renamed into place, so an
    interrupted or failed run never leaves a half-written ``out_dir``. The folder is a safe
    output (:func:`data_pipelines.outputs.output_directory`): a previous data folder is replaced,
    anything else there is refused unless ``overwrite``, and so is an ``out_dir`` that is, holds
    or lies inside one of ``inputs``.
    """
    from data_pipelines.outputs import DATA, output_directory
    from data_pipelines.schema import validate

    out_dir = Path(out_dir).resolve()
    for name, df in tables.items():
        validate(name, df)
    with output_directory(out_dir, DATA, inputs=inputs, overwrite=overwrite) as tmp:
        for name, df in tables.items():
            df.write_parquet(tmp / f"{name}.parquet")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return out_dir
