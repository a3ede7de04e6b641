"""Atomic output: a data directory appears complete or not at all (temp dir, then rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from data_pipelines.schema import validate


def write_json_atomic(path: str | Path, obj) -> None:
    """Write JSON to ``path`` via a temp file in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp folder beside ``final``; on success it replaces ``final`` in one rename, on error it is removed.

    A reader never sees a half-written ``final``: it is either the old folder or the new one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes a private folder; outputs are shared
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


def write_tables(out_dir: str | Path, tables: dict[str, pl.DataFrame], summary: dict, overwrite: bool = True) -> Path:
    """Validate and write ``<out_dir>/<name>.parquet`` for each table plus ``summary.json``.

    Everything is written to a sibling temp dir first and renamed into place, so an
    interrupted or failed run never leaves a half-written ``out_dir``.
    """
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
