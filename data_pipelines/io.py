"""Atomic output: a data directory appears complete or not at all (temp dir, then rename)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
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
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes a private folder; outputs are shared
    try:
        for name, df in tables.items():
            df.write_parquet(tmp / f"{name}.parquet")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        if out_dir.exists():
            if not overwrite:
                raise FileExistsError(f"{out_dir}: already exists")
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
