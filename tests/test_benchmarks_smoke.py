"""Smoke test of ``benchmarks/pipeline.py``: a tiny run end to end, both sides, and the JSON it writes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "pipeline.py"
N_EVENTS = 20_000


def test_pipeline_benchmark_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--events", str(N_EVENTS), "--skip-prepare", "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())

    for key in ("n_events", "ours_seconds", "pandas_seconds", "speedup_vs_pandas", "speedup_vs_pandas_cpu",
                "peak_rss_gb", "pandas_peak_rss_gb", "steps_seconds", "steps_cpu_seconds", "targets",
                "counts", "counts_agree", "prepare_movielens_100k", "machine", "data"):  # fmt: skip
        assert key in result, key
    assert result["n_events"] == N_EVENTS
    assert result["ours_seconds"] > 0 and result["pandas_seconds"] > 0
    # the totals in the JSON are rounded to 0.01 s, the speedup is computed before rounding
    assert result["speedup_vs_pandas"] == pytest.approx(result["pandas_seconds"] / result["ours_seconds"], rel=0.05)
    assert 0 < result["peak_rss_gb"] < 4
    assert set(result["steps_seconds"]["ours"]) == {"import", "sequences", "userqa", "total"}
    assert set(result["steps_seconds"]["pandas"]) == {"read", "clean", "sequences", "userqa", "total"}
    assert result["prepare_movielens_100k"] == {"skipped": True}
    assert {"cpu", "cpu_count", "memory_gb", "polars", "pandas"} <= set(result["machine"])

    # both sides read every generated row, drop the same dirty rows and ask the same users
    assert all(entry["equal"] for entry in result["counts_agree"].values()), result["counts_agree"]
    ours = result["counts"]["ours"]
    assert ours["events_read"] == N_EVENTS
    assert ours["events_kept"] < N_EVENTS  # the generator injects dirty rows
    assert any("duplicate" in reason for reason in ours["dropped"])
    assert ours["eligible_users"] > 0 and ours["qa_rows"] > 0
    assert result["counts"]["pandas"]["qa_rows"] > 0
