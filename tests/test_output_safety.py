"""Safe outputs (data_pipelines/outputs.py): what a re-run replaces, what --overwrite keeps, what is refused.

The refusals themselves (and that a refused command leaves every file byte-identical) are cases of
tests/test_bad_input.py; here: re-running a command into its own output works, with or without a
marker (folders written before markers existed), ``overwrite`` replaces only same-named entries and
keeps the user's files, a previous output's stale entries go, and a crash leaves the old output.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from data_pipelines.io import write_tables
from data_pipelines.outputs import (
    DATA,
    MARKER_NAME,
    OutputError,
    OutputKind,
    check_inputs,
    check_output_file,
    inspect_folder,
    jsonl_with_keys,
    output_directory,
    output_file,
)

KIND = OutputKind("report", "user-embed report", signature=("report.md",), members=("report.md", "*.png"))
TABLES = {"events": pl.DataFrame({"user_id": ["u"], "timestamp": [1], "source": ["s"], "item_id": ["i"],
                                  "value": [1.0], "text": [None]}, schema_overrides={"text": pl.Utf8}),
          "items": pl.DataFrame({"item_id": ["i"], "title": ["t"], "categories": [["c"]]}),
          "users": pl.DataFrame({"user_id": ["u"]})}


def write_report(folder: Path, files: dict[str, str], **options) -> Path:
    with output_directory(folder, KIND, **options) as tmp:
        for name, text in files.items():
            (tmp / name).write_text(text)
    return folder


def listing(folder: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in folder.iterdir() if p.is_file()}


def test_a_new_folder_gets_a_marker_naming_kind_command_and_files(tmp_path):
    folder = write_report(tmp_path / "out", {"report.md": "one", "plot.png": "png"})
    marker = json.loads((folder / MARKER_NAME).read_text())
    assert marker == {"written_by": "user-embed report", "kind": "report", "files": ["plot.png", "report.md"],
                      "format": 1}
    assert inspect_folder(folder, KIND).state == "own"


def test_rerun_replaces_its_own_output_whole(tmp_path):
    folder = write_report(tmp_path / "out", {"report.md": "one", "plot.png": "png"})
    write_report(folder, {"report.md": "two"})
    assert listing(folder) == {"report.md": "two", MARKER_NAME: listing(folder)[MARKER_NAME]}  # the stale plot went
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temp or old folder left


def test_rerun_into_an_output_written_before_markers(tmp_path):
    legacy = tmp_path / "data"
    legacy.mkdir()
    for name in ("events.parquet", "items.parquet", "users.parquet", "summary.json"):
        (legacy / name).write_text("old")
    assert inspect_folder(legacy, DATA).state == "own"  # recognised by its file names
    write_tables(legacy, TABLES, {"new": True})
    assert json.loads((legacy / "summary.json").read_text()) == {"new": True}
    assert (legacy / MARKER_NAME).is_file()


def test_an_unrelated_file_beside_old_outputs_makes_the_folder_foreign(tmp_path):
    folder = write_report(tmp_path / "out", {"report.md": "one"})
    (folder / "notes.txt").write_text("mine")
    state = inspect_folder(folder, KIND)
    assert state.state == "foreign" and "notes.txt" in state.reason
    with pytest.raises(OutputError, match="--overwrite"):
        write_report(folder, {"report.md": "two"})
    assert listing(folder)["report.md"] == "one" and listing(folder)["notes.txt"] == "mine"


def test_overwrite_replaces_only_its_own_entries_and_keeps_the_users_files(tmp_path):
    folder = write_report(tmp_path / "out", {"report.md": "one", "old.png": "stale"})
    (folder / "notes.txt").write_text("mine")
    (folder / "sub").mkdir()
    (folder / "sub" / "keep.csv").write_text("a,b")
    write_report(folder, {"report.md": "two", "new.png": "fresh"}, overwrite=True)
    files = listing(folder)
    assert files["report.md"] == "two" and files["new.png"] == "fresh" and files["notes.txt"] == "mine"
    assert "old.png" not in files  # written by the previous run (the marker says so): removed
    assert (folder / "sub" / "keep.csv").read_text() == "a,b"
    assert json.loads(files[MARKER_NAME])["files"] == ["new.png", "report.md"]  # claims only its own
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_overwrite_into_a_folder_of_another_kind_keeps_that_kinds_files(tmp_path):
    other = OutputKind("other", "user-embed other", signature=("x.txt",), members=("x.txt",))
    with output_directory(tmp_path / "out", other) as tmp:
        (tmp / "x.txt").write_text("theirs")
    with pytest.raises(OutputError, match="user-embed other"):
        write_report(tmp_path / "out", {"report.md": "mine"})
    write_report(tmp_path / "out", {"report.md": "mine"}, overwrite=True)
    assert listing(tmp_path / "out")["x.txt"] == "theirs"


def test_a_failed_write_leaves_the_old_output(tmp_path):
    folder = write_report(tmp_path / "out", {"report.md": "one"})
    with pytest.raises(RuntimeError, match="boom"):
        with output_directory(folder, KIND) as tmp:
            (tmp / "report.md").write_text("half")
            raise RuntimeError("boom")
    assert listing(folder)["report.md"] == "one"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_folder_that_changed_during_the_run_is_checked_again_at_the_end(tmp_path):
    with pytest.raises(OutputError, match="notes.txt"):
        with output_directory(tmp_path / "out", KIND) as tmp:
            (tmp / "report.md").write_text("new")
            (tmp_path / "out").mkdir()
            (tmp_path / "out" / "notes.txt").write_text("written meanwhile")
    assert listing(tmp_path / "out") == {"notes.txt": "written meanwhile"}


def test_inputs_are_never_an_output(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "events.csv").write_text("x")
    for out, relation in ((data, "is the input"), (tmp_path, "contains the input"),
                          (data / "out", "lies inside the input folder")):
        with pytest.raises(OutputError, match=relation):
            check_inputs(out, [data])
    check_inputs(tmp_path / "elsewhere", [data, None, tmp_path / "missing"])  # unrelated, or inputs not there


def test_file_outputs_replace_only_their_own_kind(tmp_path):
    kind = OutputKind("answers", "user-embed generate", folder=False, recognize=jsonl_with_keys("row", "answer"))
    target = tmp_path / "answers.jsonl"
    with output_file(target, kind) as handle:
        handle.write(json.dumps({"row": 1, "answer": "a"}) + "\n")
    with output_file(target, kind) as handle:  # its own earlier output: replaced
        handle.write(json.dumps({"row": 1, "answer": "b"}) + "\n")
    assert json.loads(target.read_text())["answer"] == "b"
    target.write_text("my diary\n")
    with pytest.raises(OutputError, match="not an earlier output of `user-embed generate`"):
        check_output_file(target, kind)
    with output_file(target, kind, overwrite=True) as handle:
        handle.write(json.dumps({"row": 1, "answer": "c"}) + "\n")
    assert json.loads(target.read_text())["answer"] == "c"
    with pytest.raises(OutputError, match="is a folder"):
        check_output_file(tmp_path, kind)


def test_prepare_cli_reruns_into_its_own_output_and_overwrite_keeps_user_files(tmp_path, capsys):
    from user_embed.cli import main

    events = tmp_path / "events.csv"
    events.write_text("uid,sku,ts\nu1,i1,1000\nu1,i2,1001\nu2,i1,1002\n")
    argv = ["prepare", "events", "--events", str(events), "--user-col", "uid", "--item-col", "sku",
            "--time-col", "ts", "--no-qa", "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    assert main(argv) == 0, capsys.readouterr().err  # the same command again, into its own output
    (tmp_path / "out" / "notes.txt").write_text("mine")
    assert main(argv) == 2 and "--overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"
    assert pl.read_parquet(tmp_path / "out" / "events.parquet").height == 3
