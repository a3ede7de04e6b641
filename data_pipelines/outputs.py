"""Safe outputs: every command writes through here, and never deletes or replaces what it did not write.

An :class:`OutputKind` says what an output is (a prepared data folder, an embedder, an evaluation
report, a file of user vectors …) and which command writes it. Every output folder gets a small
marker file (:data:`MARKER_NAME`) naming its kind, the command and the entries it wrote, so a later
run knows what in the folder is its own. Before any work starts, and again just before the final
rename, :func:`check_output_dir` / :func:`check_output_file` refuse with one line (:class:`OutputError`):

* an output that is, contains or lies inside one of the command's inputs (replacing it would delete
  the input);
* a file where a folder is meant, or a folder where a file is meant;
* an existing non-empty folder that is not a previous output of the same kind (another command's
  output, or files the command did not write), and an existing file that is not a previous output of
  the same kind — unless ``overwrite`` (``--overwrite``) is given.

Re-running a command into its own previous output replaces that output atomically (folders written
before markers existed are recognised by their kind's file names). With ``overwrite`` on a folder
holding other files, only the command's own entries are replaced, entry by entry; every other file
stays. :func:`output_directory` and :func:`output_file` wrap the checks around the atomic writers of
:mod:`data_pipelines.atomic`.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from data_pipelines.atomic import atomic_file, current_umask, fsync_folder, replace_path
from data_pipelines.errors import UserError

MARKER_NAME = ".user_embed-output.json"
MARKER_FORMAT = 1


class OutputError(UserError):
    """An output path is unsafe to write: it would replace an input or files the command did not write."""


@dataclass(frozen=True)
class OutputKind:
    """What an output is and which command writes it."""

    name: str
    """Short name recorded in the marker, e.g. ``data`` or ``embedder``."""
    command: str
    """The command that writes it, for messages, e.g. ``user-embed prepare``."""
    folder: bool = True
    """A folder (with a marker) or a single file."""
    signature: tuple[str, ...] = ()
    """Folder kinds: entries every output of this kind holds (recognises outputs written before markers)."""
    members: tuple[str, ...] = ()
    """Folder kinds: glob patterns of the entries an output of this kind may hold."""
    recognize: Callable[[Path], bool] | None = None
    """File kinds: whether an existing file is an earlier output of this kind."""


@dataclass(frozen=True)
class FolderState:
    """What an existing output folder holds, as far as a kind is concerned."""

    state: str
    """``absent``, ``empty``, ``own`` (only a previous output of this kind) or ``foreign``."""
    owned: frozenset[str] = frozenset()
    """Entries a previous run of this kind wrote (replaced or removed by the next run)."""
    reason: str = ""
    """Why a ``foreign`` folder is not this kind's own output."""


def _is_within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def check_inputs(path: str | Path, inputs: Iterable[str | Path | None], flag: str = "--out") -> None:
    """OutputError when ``path`` is, contains or lies inside one of ``inputs`` (inputs that do not exist are skipped)."""
    out = Path(path).resolve()
    for given in inputs:
        if given is None or str(given) == "" or not Path(given).exists():
            continue
        source = Path(given).resolve()
        if out == source:
            relation = "is the input"
        elif _is_within(source, out):
            relation = "contains the input"
        elif source.is_dir() and _is_within(out, source):
            relation = "lies inside the input folder"
        else:
            continue
        raise OutputError(f"{flag} {path}: {relation} {given}; writing there would replace it — choose another {flag}")


def _check_parents(path: Path, flag: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"{flag} {path}: {parent} is a file, not a directory")
            return


def read_marker(folder: Path) -> dict | None:
    """The folder's marker (kind, command, files), or None when there is none or it is unreadable."""
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), list):
        return None
    return marker


def inspect_folder(path: str | Path, kind: OutputKind, flag: str = "--out") -> FolderState:
    """How an existing ``path`` relates to ``kind``; OutputError when it is a file."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return FolderState("absent")
    if not path.is_dir():
        raise OutputError(f"{flag} {path}: exists and is not a directory (it is a file; a folder is written here)")
    entries = {p.name for p in path.iterdir()}
    if not entries:
        return FolderState("empty")
    marker = read_marker(path) if MARKER_NAME in entries else None
    if marker is not None:
        if marker.get("kind") != kind.name:
            return FolderState("foreign", reason=f"is an output of `{marker.get('written_by', 'another command')}` "
                                                 f"({marker.get('kind')!r}), not of `{kind.command}`")
        owned = frozenset(str(f) for f in marker["files"]) & entries
        extra = sorted(entries - owned - {MARKER_NAME})
        if extra:
            return FolderState("foreign", owned, f"holds {len(extra)} entries `{kind.command}` did not write "
                                                 f"(e.g. {extra[0]!r})")
        return FolderState("own", owned)
    legacy = entries - {MARKER_NAME}
    if (kind.signature and all(name in legacy for name in kind.signature)
            and all(any(fnmatch.fnmatchcase(name, p) for p in kind.members) for name in legacy)):
        return FolderState("own", frozenset(legacy))  # written by this kind before markers existed
    example = sorted(legacy)[0]
    return FolderState("foreign", reason=f"is not empty and is not an output of `{kind.command}` "
                                         f"(it holds {len(legacy)} entries, e.g. {example!r})")


def _refuse(path: Path, flag: str, reason: str) -> OutputError:
    return OutputError(f"{flag} {path}: {reason}; refusing to replace files it did not write — choose another "
                       f"{flag}, or pass --overwrite (replaces only same-named files, keeps the rest)")


def check_output_dir(path: str | Path, kind: OutputKind, *, inputs: Iterable[str | Path | None] = (),
                     overwrite: bool = False, flag: str = "--out") -> FolderState:
    """Raise OutputError unless ``kind`` may be written as the folder ``path``; returns what is there now."""
    path = Path(path)
    check_inputs(path, inputs, flag)
    _check_parents(path, flag)
    state = inspect_folder(path, kind, flag)
    if state.state == "foreign" and not overwrite:
        raise _refuse(path, flag, state.reason)
    return state


def check_output_file(path: str | Path, kind: OutputKind, *, inputs: Iterable[str | Path | None] = (),
                      overwrite: bool = False, flag: str = "--out") -> None:
    """Raise OutputError unless ``kind`` may be written as the file ``path``."""
    path = Path(path)
    check_inputs(path, inputs, flag)
    _check_parents(path, flag)
    if path.is_dir():
        raise OutputError(f"{flag} {path}: is a folder; give the path of the file to write")
    if path.exists() and not overwrite:
        if not path.is_file():
            raise OutputError(f"{flag} {path}: exists and is not a regular file")
        if kind.recognize is None or not kind.recognize(path):
            raise _refuse(path, flag, f"exists and is not an earlier output of `{kind.command}`")


def _write_marker(folder: Path, kind: OutputKind, files: list[str]) -> None:
    marker = {"written_by": kind.command, "kind": kind.name, "files": files, "format": MARKER_FORMAT}
    (folder / MARKER_NAME).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _replace_entry(source: Path, target: Path) -> None:
    """Move ``source`` to ``target``; an existing ``target`` (file or folder) is replaced."""
    replace_path(source, target)


def _merge(tmp: Path, final: Path, owned: frozenset[str], written: list[str]) -> None:
    """``--overwrite`` into a folder with other files: replace same-named entries, drop stale own ones, keep the rest."""
    for name in [*written, MARKER_NAME]:
        _replace_entry(tmp / name, final / name)
    for name in owned - set(written) - {MARKER_NAME}:
        _remove(final / name)


@contextmanager
def output_directory(path: str | Path, kind: OutputKind, *, inputs: Iterable[str | Path | None] = (),
                     overwrite: bool = False, flag: str = "--out") -> Iterator[Path]:
    """Yield a temp folder to fill; on success it becomes ``path`` (checked before and again at the end).

    ``path`` absent, empty or a previous output of ``kind``: one atomic rename (the old output is
    replaced as a whole). ``overwrite`` and other files there: entries are moved in one by one and
    the other files stay. On any error the temp folder is removed and ``path`` is untouched.
    """
    final = Path(path)
    inputs = list(inputs)
    check_output_dir(final, kind, inputs=inputs, overwrite=overwrite, flag=flag)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))
    tmp.chmod(0o777 & ~current_umask())  # mkdtemp makes a private folder; outputs are shared
    try:
        yield tmp
        written = sorted(p.name for p in tmp.iterdir() if p.name != MARKER_NAME)
        _write_marker(tmp, kind, written)
        state = check_output_dir(final, kind, inputs=inputs, overwrite=overwrite, flag=flag)
        if state.state in ("absent", "empty"):
            os.replace(tmp, final)  # a rename onto an empty folder replaces it
        elif state.state == "own":
            _replace_entry(tmp, final)
        else:
            _merge(tmp, final, state.owned, written)
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_folder(final.parent)


@contextmanager
def output_file(path: str | Path, kind: OutputKind, mode: str = "w", *, inputs: Iterable[str | Path | None] = (),
                overwrite: bool = False, flag: str = "--out") -> Iterator[IO[Any]]:
    """:func:`data_pipelines.atomic.atomic_file` for ``path``, checked before writing and again before the rename."""
    inputs = list(inputs)
    check_output_file(path, kind, inputs=inputs, overwrite=overwrite, flag=flag)
    with atomic_file(path, mode) as handle:
        yield handle
        check_output_file(path, kind, inputs=inputs, overwrite=overwrite, flag=flag)


# --------------------------------------------------------------------------- recognisers of file kinds


def parquet_with_columns(*columns: str) -> Callable[[Path], bool]:
    """A recogniser: the file is parquet and its schema has ``columns``."""

    def recognize(path: Path) -> bool:
        import polars as pl

        try:
            schema = pl.read_parquet_schema(path)
        except Exception:  # not parquet at all
            return False
        return all(c in schema for c in columns)

    return recognize


def jsonl_with_keys(*keys: str) -> Callable[[Path], bool]:
    """A recogniser: the file's first line is a JSON object with ``keys``."""

    def recognize(path: Path) -> bool:
        try:
            with open(path, "rb") as handle:
                first = handle.readline(1 << 20)
            record = json.loads(first.decode("utf-8"))
        except (OSError, ValueError, RecursionError):
            return False
        return isinstance(record, dict) and all(k in record for k in keys)

    return recognize


#: Kinds written by the data pipelines themselves.
DATA = OutputKind("data", "user-embed prepare", signature=("summary.json",), members=("*.parquet", "summary.json"))
LAMP_FILES = OutputKind("lamp-files", "user-embed prepare lamp3-movielens", signature=("summary.json",),
                        members=("summary.json", "train", "dev", "val", "test"))
