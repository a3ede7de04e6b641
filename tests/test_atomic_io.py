"""data_pipelines.io: atomic_file and its helpers (a file is the old one or the new one, never half)."""

from __future__ import annotations

import json
import os
import stat

import polars as pl
import pytest

from data_pipelines.io import (atomic_file, current_umask, write_json_atomic, write_jsonl_atomic, write_parquet_atomic,
                               write_text_atomic)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_existing_file_survives_a_failing_write(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_file(target) as out:
            out.write("half of the new conte")
            raise RuntimeError("boom")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]  # no temp file left


def test_interrupt_leaves_no_file(tmp_path):
    target = tmp_path / "sub" / "new.bin"
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(target, "wb") as out:
            out.write(b"\x00" * 10)
            raise KeyboardInterrupt
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_mode_is_the_usual_one_not_0600(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "a.txt", "x")
        assert _mode(path) == 0o644
        os.umask(0o002)
        assert current_umask() == 0o002
        path = write_text_atomic(tmp_path / "b.txt", "y")
        assert _mode(path) == 0o664
    finally:
        os.umask(old)


def test_replaces_and_roundtrips(tmp_path):
    with atomic_file(tmp_path / "t.txt") as out:
        out.write("héllo")
    assert (tmp_path / "t.txt").read_text(encoding="utf-8") == "héllo"
    assert write_text_atomic(tmp_path / "t.txt", "second") == tmp_path / "t.txt"
    assert (tmp_path / "t.txt").read_text() == "second"

    write_json_atomic(tmp_path / "j.json", {"a": 1, "p": tmp_path})
    assert json.loads((tmp_path / "j.json").read_text()) == {"a": 1, "p": str(tmp_path)}

    write_jsonl_atomic(tmp_path / "r.jsonl", ({"i": i, "s": "é"} for i in range(3)))
    lines = (tmp_path / "r.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"i": i, "s": "é"} for i in range(3)] and "é" in lines[0]

    frame = pl.DataFrame({"user_id": ["u1", "u2"], "embedding": [[0.5, 1.0], [2.0, 3.0]]})
    write_parquet_atomic(tmp_path / "f.parquet", frame)
    assert pl.read_parquet(tmp_path / "f.parquet").equals(frame)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.parquet", "j.json", "r.jsonl", "t.txt"]


def test_rejects_read_and_append_modes(tmp_path):
    for mode in ("r", "a", "w+", "ab"):
        with pytest.raises(ValueError, match="mode"):
            with atomic_file(tmp_path / "x", mode):
                pass
    assert list(tmp_path.iterdir()) == []
