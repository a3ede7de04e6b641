"""docs/serving.md quotes the committed load test: its speed table and ratios are those of
benchmarks/results/serve.json, and the JSON has the fields the load test promises."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("p50_ttft_s", "p95_latency_s", "output_tokens_per_s", "errors")


def test_the_speed_table_matches_the_committed_json():
    report = json.loads((ROOT / "benchmarks/results/serve.json").read_text())
    assert {"date", "commit", "machine", "config", "concurrency"} <= set(report)
    assert (ROOT / "benchmarks/results/serve.png").is_file()
    rows = re.findall(r"^\| (\d+) \| (soft|text) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+) \| [\d.]+ \| (\d+) \|$",
                      (ROOT / "docs/serving.md").read_text(), re.M)
    assert {(c, m) for c, m, *_ in rows} == {(c, m) for c in report["concurrency"] for m in ("soft", "text")}
    for concurrency, method, ttft, p95, speed, errors in rows:
        measured = report["concurrency"][concurrency][method]
        assert set(FIELDS) <= set(measured)
        assert ttft == f"{measured['p50_ttft_s']:.2f}" and p95 == f"{measured['p95_latency_s']:.2f}"
        assert speed == f"{measured['output_tokens_per_s']:.1f}" and int(errors) == measured["errors"]
    ratios = report["concurrency"]["8"]["ratios"]
    text = (ROOT / "docs/serving.md").read_text()
    assert f"{ratios['ttft_text_over_soft_p50']:.0f}× sooner" in text
    assert f"{ratios['throughput_soft_over_text']:.1f}× its" in text
