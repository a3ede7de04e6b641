"""Atomic output, in one place: a file or a data directory appears complete or not at all.

Files: :func:`atomic_file` writes a temp file in the target's folder, flushes and fsyncs it,
then renames it over the target (:func:`os.replace`); on any error the temp file is removed
and an existing target is left as it was. :func:`write_text_atomic`, :func:`write_json_atomic`,
:func:`write_jsonl_atomic` and :func:`write_parquet_atomic` are thin helpers on top of it.
Directories: :func:`atomic_directory` builds a temp folder beside the target and renames it
into place; :func:`write_tables` writes a whole data directory with it.

Importing this module is cheap (standard library only; polars is imported on use).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import polars as pl


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible: ``os.umask`` has to set it to read it)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (best effort: not every platform can open a folder)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextmanager
def atomic_file(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Yield an open temp file beside ``path``; on success it replaces ``path`` in one rename.

    The temp file (``.<name>.<random>.tmp`` in the same folder, so the rename never crosses a
    filesystem) is flushed and fsynced before the rename and gets the usual file mode
    (``0o666 & ~umask``; ``mkstemp`` makes it 0600). On any error, including KeyboardInterrupt,
    the temp file is removed and an existing ``path`` is untouched. ``mode`` is ``"w"`` (text,
    ``encoding``) or ``"wb"`` (bytes; ``encoding`` is ignored).
    """
    if mode not in ("w", "wt", "wb"):
        raise ValueError(f"atomic_file: mode must be 'w', 'wt' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        binary = "b" in mode
        with os.fdopen(handle, mode, encoding=None if binary else encoding) as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


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

    A reader never sees a half-written ``final``: it is either the old folder or the new one.
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
            old = final.with_name(f".{final.name}.old-{os.getpid()}")
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_folder(final.parent)


def write_tables(out_dir: str | Path, tables: dict[str, pl.DataFrame], summary: dict, overwrite: bool = True) -> Path:
    """Validate and write ``<out_dir>/<name>.parquet`` for each table plus ``summary.json``.

    Everything is written to a sibling temp dir first and renamed into place, so an
    interrupted or failed run never leaves a half-written ``out_dir``.
    """
    from data_pipelines.schema import validate

    out_dir = Path(out_dir).resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir}: exists and is not a directory")
    for name, df in tables.items():
        validate(name, df)
    with atomic_directory(out_dir, overwrite=overwrite) as tmp:
        for name, df in tables.items():
            df.write_parquet(tmp / f"{name}.parquet")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return out_dir
