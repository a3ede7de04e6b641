"""Noise robustness on ML-100k: UserQA accuracy as a share of each test user's history is replaced by noise.

Run from the repository root after ``make demo`` (``runs/quickstart/embedder``) and the not-instruction-aware
ablation (``runs/ablation_not_instruction_aware/embedder``) have been trained::

    nice .venv/bin/python benchmarks/noise.py                 # shares 0, 0.1, 0.3, 0.5 (replace mode)
    .venv/bin/python benchmarks/noise.py --reuse              # keep the evaluation already in --runs
    .venv/bin/python benchmarks/noise.py --plot-only          # redraw the PNG from the JSON

One ``user-embed evaluate --noise …`` answers the whole test split (multiple choice; the open questions are
skipped under ``--noise``) at every share with ``none``, ``text`` (the questions of ``--text-max-users`` seeded
users) and ``soft`` of ``--checkpoint``, plus ``soft`` of ``--compare-checkpoint`` as method
``soft_not_instruction_aware`` (``--compare-name``). Writes ``benchmarks/results/noise.json``::

    {"accuracy": {"<method>": {"<share>": {"overall": …, "<family>": …}}},
     "margin_over_none": {"<method>": {"<share>": {"overall": …, "<family>": …}}},
     "retained_margin": {"<method>": (m − none at 0.3) / (m − none at 0), or null},
     "events_changed": {"<share>": n}, "answered": {"<method>": questions}, "paired": {…},
     "date", "commit", "config", "machine", "seconds", "evaluate_s"}

and ``benchmarks/results/noise.png`` (overall accuracy vs share, one line per method). ``text`` answers only its
seeded users' questions, so its margin over ``none`` (answered on every question) mixes two question sets; the
paired soft − text differences in ``paired`` are over common questions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "noise.json"
RETAINED_AT = "0.3"

from benchmarks.quickstart_seeds import commit, run, user_embed  # noqa: E402  (after the path is set)


def margins(accuracy: dict[str, dict[str, dict[str, float]]], base: str = "none") -> dict:
    """{method: {share: {group: accuracy − base's accuracy}}} for every method but ``base`` (groups both have)."""
    out = {}
    for method, by_share in accuracy.items():
        if method == base:
            continue
        out[method] = {share: {g: round(table[g] - accuracy[base][share][g], 4) for g in table
                               if g in accuracy[base].get(share, {})}
                       for share, table in by_share.items() if share in accuracy[base]}
    return out


def retained_margin(margin: dict[str, dict[str, float]], share: str = RETAINED_AT, clean: str = "0",
                    group: str = "overall") -> float | None:
    """(margin at ``share``) / (margin at ``clean``) for one method's margins; None without both or at a margin
    ≤ 0 on clean data (nothing to retain)."""
    if share not in margin or clean not in margin or group not in margin[share] or group not in margin[clean]:
        return None
    if margin[clean][group] <= 0:
        return None
    return round(margin[share][group] / margin[clean][group], 4)


def summarize(noise: dict) -> dict:
    """The JSON's results from metrics.json's ``noise`` block."""
    margin = margins(noise["accuracy"])
    return {"mode": noise["mode"], "noise_seed": noise["seed"], "shares": noise["shares"],
            "accuracy": noise["accuracy"], "margin_over_none": margin,
            "retained_margin": {m: retained_margin(v) for m, v in margin.items()},
            "retained_margin_at": RETAINED_AT, "events_changed": noise["events_changed"],
            "answered": noise["answered"], "paired": noise.get("paired", {}), "share_seconds": noise["seconds"]}


def measure(args) -> dict:
    out = Path(args.runs) / "eval"
    if args.reuse and (out / "metrics.json").is_file():
        evaluate_s = None
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        evaluate_s = run(user_embed("evaluate", "--checkpoint", args.checkpoint, "--data", args.data, "--out", str(out),
                                    "--methods", "none,text,soft", "--text-max-users", str(args.text_max_users),
                                    *(["--max-users", str(args.max_users)] if getattr(args, "max_users", None) else []),
                                    "--noise", args.shares, "--noise-seed", str(args.noise_seed),
                                    "--noise-mode", args.mode, "--compare-checkpoint", args.compare_checkpoint,
                                    "--compare-name", args.compare_name, "--no-free-text", "--no-progress",
                                    "--overwrite"),
                         out.parent / "eval.log")
    metrics = json.loads((out / "metrics.json").read_text())
    if "noise" not in metrics:
        raise SystemExit(f"{out / 'metrics.json'} has no noise block (written without --noise?); rerun without --reuse")
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
            "config": {"checkpoint": args.checkpoint, "compare_checkpoint": args.compare_checkpoint,
                       "compare_name": args.compare_name, "data": args.data, "split": metrics["split"],
                       "text_max_users": args.text_max_users, "max_users": getattr(args, "max_users", None),
                       "evaluation": str(out)},
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
            "questions": metrics["questions"], **summarize(metrics["noise"]), "evaluate_s": evaluate_s}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="runs/quickstart/embedder")
    parser.add_argument("--compare-checkpoint", default="runs/ablation_not_instruction_aware/embedder")
    parser.add_argument("--compare-name", default="soft_not_instruction_aware")
    parser.add_argument("--data", default="data/ml-100k")
    parser.add_argument("--shares", default="0,0.1,0.3,0.5")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--mode", default="replace", choices=["replace", "insert"])
    parser.add_argument("--text-max-users", type=int, default=30)
    parser.add_argument("--max-users", type=int, default=None,
                        help="evaluate the questions of this many seeded test users (default: the whole test split)")
    parser.add_argument("--runs", default="runs/noise", help="where the evaluation folder (eval/) goes")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the evaluation folder already under --runs (its seconds are then null)")
    args = parser.parse_args()
    from data_pipelines.io import write_json_atomic
    from user_embed.eval.noise_sweep import plot_noise

    out = Path(args.out)
    start = time.perf_counter()
    result = json.loads(out.read_text()) if args.plot_only else measure(args)
    if not args.plot_only:
        result["seconds"] = round(time.perf_counter() - start, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(out, result)
    png = plot_noise({"accuracy": result["accuracy"], "shares": result["shares"], "mode": result["mode"],
                      "seed": result["noise_seed"]}, out.with_suffix(".png"))
    print(json.dumps({"accuracy_overall": {m: {s: t["overall"] for s, t in v.items()}
                                           for m, v in result["accuracy"].items()},
                      "retained_margin": result["retained_margin"]}, indent=1))
    print(f"wrote {out} and {png}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
