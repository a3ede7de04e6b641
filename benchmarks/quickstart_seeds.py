"""The main result over seeds: train and evaluate the quickstart for several seeds on the whole test split.

Run from the repository root after ``make demo`` has prepared ``data/ml-100k`` (≈ 10 min per seed on 2 cores)::

    nice .venv/bin/python benchmarks/quickstart_seeds.py --seeds 0 1 2 3 4
    .venv/bin/python benchmarks/quickstart_seeds.py --plot-only      # redraw the PNG from the JSON

Per seed, ``configs/quickstart.yaml`` is trained with ``seed_everything: <seed>`` into ``runs/seeds/seed<seed>``
(the data, its questions and the evaluation subsets stay fixed), then ``user-embed evaluate`` answers the whole test split with the soft prompt: multiple choice, and the open
questions in free text. The baselines do not depend on the seed and run once: ``none`` on every question,
``text`` on the questions of ``--text-max-users`` seeded users. Each seed's soft − ``none`` difference gets a
95 % user-bootstrap interval (``user_embed.eval.paired``). Writes ``benchmarks/results/quickstart_seeds.json``::

    {"seeds": [{"seed": 0, "accuracy": {"soft": {"overall": …, "<family>": …}},
                "paired": {"soft-none": {"<family>"|"overall": {"diff", "low", "high", …}}},
                "free_text": {"soft": {…}}, "fit_s": …, "evaluate_s": …}, …],
     "accuracy": {"none" | "text": {…}}, "free_text": {"none" | "text" | "majority": {…}},
     "summary": {"soft": {"<group>": {"mean", "std", "min", "max"}}, …}, "date", "commit", "config", …}

and ``benchmarks/results/quickstart_seeds.png`` (accuracy per family: baselines, soft mean ± s.d., seeds).
``--reuse`` keeps what a run folder already holds (an embedder, an evaluation), e.g. ``make demo``'s
``runs/quickstart`` copied to ``runs/seeds/seed0`` and its evaluation to ``runs/seeds/baselines`` (the same
config and seed 0); their seconds are then null.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "quickstart_seeds.json"
GROUPS = ("sequence_understanding", "action_prediction", "interest_perception", "overall")


def run(command: list[str], log: Path) -> float:
    """Run a `user-embed` command (output to ``log``); its wall seconds. Fails loudly with the log's tail."""
    start = time.perf_counter()
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:3])} failed (exit {done.returncode}); see {log}:\n"
                         + "\n".join(log.read_text().splitlines()[-15:]))
    return round(time.perf_counter() - start, 1)


def seed_config(base: dict, seed: int, folder: Path) -> Path:
    """The quickstart config with this seed and every output under ``folder``."""
    config = json.loads(json.dumps(base))
    config["seed_everything"] = seed
    trainer = config["trainer"]
    trainer["default_root_dir"] = str(folder)
    for logger in trainer.get("logger") or []:
        logger.setdefault("init_args", {})["save_dir"] = str(folder)
    for callback in trainer.get("callbacks") or []:
        if "dirpath" in callback.get("init_args", {}):
            callback["init_args"]["dirpath"] = str(folder / "checkpoints")
    config["model"]["export_dir"] = str(folder / "embedder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def user_embed(*args: str) -> list[str]:
    return [str(ROOT / ".venv" / "bin" / "user-embed"), *args]


def evaluate(checkpoint: Path, data: Path, out: Path, methods: str, text_users: int,
             reuse: bool = False) -> tuple[dict, list, float | None]:
    """metrics.json and predictions of `user-embed evaluate` into ``out`` (kept as they are with ``reuse``)."""
    if reuse and (out / "metrics.json").is_file():
        seconds = None
    else:
        seconds = run(user_embed("evaluate", "--checkpoint", str(checkpoint), "--data", str(data), "--out", str(out),
                                 "--methods", methods, "--text-max-users", str(text_users), "--no-progress"),
                      out.parent / f"{out.name}.log")
    metrics = json.loads((out / "metrics.json").read_text())
    predictions = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return metrics, predictions, seconds


def summarize(values: list[float]) -> dict:
    return {"mean": round(statistics.fmean(values), 4), "std": round(statistics.stdev(values), 4) if len(values) > 1
            else 0.0, "min": round(min(values), 4), "max": round(max(values), 4)}


def measure(args) -> dict:
    from user_embed.eval.paired import paired_differences

    base = yaml.safe_load(Path(args.config).read_text())
    data = Path(args.data)
    runs = Path(args.runs)
    baseline, none_rows, baseline_s = None, [], 0.0  # the baselines run once, after the first fit
    seeds = []
    for seed in args.seeds:
        folder = runs / f"seed{seed}"
        config = seed_config(base, seed, folder)
        fit_s = None
        if not (args.reuse and (folder / "embedder" / "model.safetensors").is_file()):
            fit_s = run(user_embed("fit", "--config", str(config)), folder / "fit.log")
        if baseline is None:
            baseline, none_rows, baseline_s = evaluate(folder / "embedder", data, runs / "baselines", "none,text",
                                                       args.text_max_users, args.reuse)
        metrics, rows, evaluate_s = evaluate(folder / "embedder", data, folder / "eval", "soft",
                                             args.text_max_users, args.reuse)
        if "soft" not in metrics["accuracy"]:
            raise SystemExit(f"{folder / 'eval'}: no soft-prompt accuracy in its metrics.json")
        by_question = {(r["user_id"], r["question"]): r["soft"] for r in rows}
        joined = [dict(r, soft=by_question[(r["user_id"], r["question"])]) for r in none_rows]
        groups = [g for g in GROUPS if g in metrics["accuracy"]["soft"]]
        entry = {"seed": seed, "accuracy": {"soft": metrics["accuracy"]["soft"]},
                 "paired": paired_differences(joined, "soft", ["none"], groups), "fit_s": fit_s,
                 "evaluate_s": evaluate_s}
        if "free_text" in metrics:
            entry["free_text"] = {"soft": metrics["free_text"]["accuracy"]["soft"],
                                  "parsed": metrics["free_text"]["parsed"]["soft"]}
        seeds.append(entry)
        print(f"seed {seed}: soft {metrics['accuracy']['soft']['overall']:.3f} (fit {fit_s} s, "
              f"evaluate {evaluate_s} s)", file=sys.stderr, flush=True)
    summary = {"soft": {g: summarize([s["accuracy"]["soft"][g] for s in seeds]) for g in GROUPS
                        if all(g in s["accuracy"]["soft"] for s in seeds)},
               "soft-none": {g: summarize([s["paired"]["soft-none"][g]["diff"] for s in seeds]) for g in GROUPS
                             if all(g in s["paired"]["soft-none"] for s in seeds)}}
    if all("free_text" in s for s in seeds):
        summary["free_text_soft"] = {g: summarize([s["free_text"]["soft"][g] for s in seeds]) for g in GROUPS
                                     if all(g in s["free_text"]["soft"] for s in seeds)}
    out = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
           "config": str(Path(args.config)), "data": str(data), "split": baseline["split"],
           "questions": baseline["questions"], "answered": baseline.get("answered", {}),
           "text_max_users": args.text_max_users, "machine": {"cpus": __import__("os").cpu_count(),
                                                              "platform": platform.platform()},
           "seeds": seeds, "accuracy": {m: baseline["accuracy"][m] for m in ("none", "text")},
           "baseline_evaluate_s": baseline_s, "summary": summary}
    if "free_text" in baseline:
        out["free_text"] = {m: baseline["free_text"]["accuracy"][m] for m in ("none", "text", "majority")
                            if m in baseline["free_text"]["accuracy"]}
    return out


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "--no-optional-locks", "diff", "--quiet", "HEAD", "--", "user_embed",
                            "data_pipelines", "configs"], cwd=ROOT).returncode
    return head.stdout.strip() + ("+dirty" if dirty else "")


def plot(result: dict, png: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [g for g in GROUPS if g in result["summary"]["soft"]]
    x = np.arange(len(groups))
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for i, method in enumerate(("none", "text")):
        asked = result.get("answered", {}).get(method, result.get("questions"))
        ax.bar(x + (i - 1) * 0.27, [result["accuracy"][method].get(g, np.nan) for g in groups], 0.27,
               label=f"{method} ({asked} questions)")
    mean = [result["summary"]["soft"][g]["mean"] for g in groups]
    std = [result["summary"]["soft"][g]["std"] for g in groups]
    ax.bar(x + 0.27, mean, 0.27, yerr=std, capsize=3, label=f"soft (mean ± s.d., {len(result['seeds'])} seeds)")
    for seed in result["seeds"]:
        ax.scatter(x + 0.27, [seed["accuracy"]["soft"][g] for g in groups], s=8, color="k", zorder=3)
    ax.set_xticks(x), ax.set_xticklabels([g.replace("_", "\n") for g in groups])
    ax.set_ylim(0, 1), ax.set_ylabel("accuracy"), ax.set_title("UserQA, whole test split (multiple choice)")
    ax.legend(fontsize=8)
    fig.tight_layout(), fig.savefig(png, dpi=120), plt.close(fig)
    return png


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--config", default="configs/quickstart.yaml")
    parser.add_argument("--data", default="data/ml-100k")
    parser.add_argument("--runs", default="runs/seeds")
    parser.add_argument("--text-max-users", type=int, default=30)
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--plot-only", action="store_true")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a seed's embedder and evaluations already under --runs (their seconds are null)")
    args = parser.parse_args()
    from data_pipelines.io import write_json_atomic

    out = Path(args.out)
    result = json.loads(out.read_text()) if args.plot_only else measure(args)
    if not args.plot_only:
        write_json_atomic(out, result)
    print(f"wrote {out} and {plot(result, out.with_suffix('.png'))}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
