"""The user embedding as a representation on ML-100k: probes, user↔text retrieval, recommendation from the vector.

Run from the repository root after ``make demo`` (``runs/quickstart/embedder``), the AR-only ablation
(``user-embed fit --config configs/ablations/ar_only.yaml``) and the SASRec pre-training
(``user-embed pretrain --config configs/pretrain_sasrec.yaml``)::

    nice .venv/bin/python benchmarks/embeddings.py
    .venv/bin/python benchmarks/embeddings.py --reuse        # keep the evaluation already in --runs

One ``user-embed evaluate-embeddings`` benchmarks the joint embedder (``soft``), the AR-only one (``ar_only``:
its user head is never trained, so its pooled features), the pre-trained SASRec user state (``sasrec``) and the
baselines (category histogram, mean text vector, random projection), with the question-conditioned soft
prompt against a generic one. Writes its metrics with date, commit, config and machine to
``benchmarks/results/embeddings.json`` and its plot to ``benchmarks/results/embeddings.png``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "embeddings.json"

from benchmarks.quickstart_seeds import commit, run, user_embed  # noqa: E402  (after the path is set)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/embedder")
    parser.add_argument("--ar-only", default="runs/ablation_ar_only/embedder")
    parser.add_argument("--sasrec", default="runs/pretrain_sasrec/encoder")
    parser.add_argument("--data", default="data/ml-100k")
    parser.add_argument("--runs", default="runs/embeddings")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    from data_pipelines.io import write_json_atomic

    folder = Path(args.runs) / "eval"
    seconds = None
    if not (args.reuse and (folder / "metrics.json").is_file()):
        folder.parent.mkdir(parents=True, exist_ok=True)
        seconds = run(user_embed("evaluate-embeddings", "--checkpoint", args.checkpoint, "--data", args.data,
                                 "--out", str(folder), "--compare", f"ar_only={args.ar_only}",
                                 "--encoder", f"sasrec={args.sasrec}", "--question-vectors", "--overwrite"),
                      folder.parent / "eval.log")
    metrics = json.loads((folder / "metrics.json").read_text())
    result = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
              "config": "configs/quickstart.yaml (soft), configs/ablations/ar_only.yaml, configs/pretrain_sasrec.yaml",
              "data": args.data, "command_s": seconds,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, **metrics}
    out = Path(args.out)
    write_json_atomic(out, result)
    shutil.copyfile(folder / "embeddings.png", out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
