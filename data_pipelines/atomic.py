"""Atomic file writes, the primitive under every output: a file appears complete or not at all.

:func:`atomic_file` writes a temp file in the target's folder, flushes and fsyncs it, then
renames it over the target (:func:`os.replace`); on any error the temp file is removed and an
existing target is left as it was. :mod:`data_pipelines.io` (the helpers on top of it) and
:mod:`data_pipelines.outputs` (safe output folders and files) build on this module, which
imports nothing from the project. Standard library only.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any


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


def fsync_folder(folder: Path) -> None:
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
    fsync_folder(path.parent)


def replace_path(source: Path, target: Path) -> None:
    """Move ``source`` to ``target`` in one rename; an existing ``target`` (file or folder) is moved aside
    first and removed after, so a reader sees the old entry or the new one, never neither."""
    if not target.exists() and not target.is_symlink():
        os.replace(source, target)
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)
    os.replace(source, target)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)
