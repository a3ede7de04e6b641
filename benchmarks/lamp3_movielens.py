"""LaMP-3 on MovieLens-100k: the soft prompt against the LLM baselines, the trivial rules and an SVD reference.

Run from the repository root (≈ 5 min per seed on 2 cores, after ``make assets``)::

    nice .venv/bin/python benchmarks/lamp3_movielens.py --seeds 0 1 2
    .venv/bin/python benchmarks/lamp3_movielens.py --reuse        # keep finished runs, recompute the JSON

It builds the LaMP-3-format set (``prepare lamp3-movielens``: each user's last rating is the question, the
up to 50 ratings before it the profile, users split 80/10/10) and imports it (``prepare lamp``), then

* the LLM baselines once: ``none``, ``text`` and ``bm25`` (the profile's 10 most recent / best-matching
  ratings written out), every rating decoded as the median of the LLM's option distribution;
* per seed: ``configs/lamp3_movielens.yaml`` trained with that seed, evaluated with ``soft`` (median and
  argmax decoding);
* the rules of :mod:`user_embed.eval.ratings` (global, user and item mean, scikit-surprise SVD) on the same
  test questions, fitted on the ratings they may see: the training split and each question's profile; each
  rule answers its prediction rounded to the nearest label (lower MAE than the raw mean; the raw ones are
  in ``mae_unrounded_rules``).

MAE and RMSE are LaMP's official ones (:mod:`user_embed.eval.lamp_metrics`); soft − rule MAE differences
get a 95 % bootstrap interval over questions (each LaMP question is its own user). Writes
``benchmarks/results/lamp3_movielens.json``::

    {"mae": {"<method or rule>": …}, "rmse": {…}, "seeds": [{"seed", "mae": {"soft", "soft_argmax"},
     "paired": {"soft-<rule>": {"diff", "low", "high"}}, "fit_s", "evaluate_s"}],
     "summary": {"soft": {"mean", "std", "min", "max"}, …}, "questions", "date", "commit", "config"}
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.quickstart_seeds import commit, run, seed_config, summarize, user_embed  # noqa: E402

DEFAULT_OUT = ROOT / "benchmarks" / "results" / "lamp3_movielens.json"
RULES = ("global_mean", "user_mean", "item_mean", "svd")


def prepare(files: Path, data: Path, logs: Path) -> None:
    """The LaMP-3 files and their import, unless already there."""
    logs.mkdir(parents=True, exist_ok=True)
    if not (files / "summary.json").is_file():
        run(user_embed("prepare", "lamp3-movielens", "--out", str(files)), logs / "prepare_files.log")
    if not (data / "qa.parquet").is_file():
        run(user_embed("prepare", "lamp", "--task", "LaMP_3", "--dir", str(files), "--out", str(data)),
            logs / "prepare_lamp.log")


def evaluate(checkpoint: Path, data: Path, out: Path, methods: str, decoding: str, reuse: bool
             ) -> tuple[dict, float | None]:
    """metrics.json of `user-embed evaluate --benchmark lamp` (kept as it is with ``reuse``), and its seconds."""
    seconds = None
    if not (reuse and (out / "metrics.json").is_file()):
        seconds = run(user_embed("evaluate", "--benchmark", "lamp", "--checkpoint", str(checkpoint), "--data",
                                 str(data), "--out", str(out), "--methods", methods, "--history-events", "10",
                                 "--rating-decoding", decoding, "--no-progress", "--overwrite"),
                      out.parent / f"{out.name}.log")
    return json.loads((out / "metrics.json").read_text()), seconds


def _questions(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def _golds(path: Path) -> dict[str, str]:
    """{id: output} of a LaMP outputs or submission file."""
    return {str(g["id"]): str(g["output"]) for g in json.loads(path.read_text())["golds"]}


def question_item(text: str) -> str:
    """The movie a question asks about (its text, as in the profiles) from LaMP-3's input."""
    match = re.match(r"What is the score of this movie: (.*)\? Answer with one of", text, re.S)
    return match.group(1) if match else text


def rule_predictions(files: Path, split: str = "test") -> tuple[list[str], list[str], dict[str, list[float]]]:
    """(question ids, golds, {rule: predictions}) on ``split``, fitted on train profiles + answers and the
    evaluated questions' profiles."""
    from user_embed.eval.ratings import RatingQuestion, reference_predictions

    train = []
    golds = _golds(files / "train" / "train_outputs.json")
    for question in _questions(files / "train" / "train_questions.json"):
        user = str(question["id"])
        train += [(user, item["text"], float(item["score"])) for item in question["profile"]]
        train.append((user, question_item(question["input"]), float(golds[user])))
    asked = _questions(files / split / f"{split}_questions.json")
    golds = _golds(files / split / f"{split}_outputs.json")
    questions = [RatingQuestion(str(q["id"]), question_item(q["input"]),
                                tuple((item["text"], float(item["score"])) for item in q["profile"]))
                 for q in asked]
    return [q.user_id for q in questions], [golds[q.user_id] for q in questions], \
        reference_predictions(train, questions)


def measure(args: argparse.Namespace) -> dict:
    from user_embed.eval.lamp_metrics import absolute_errors, rating_metrics
    from user_embed.eval.paired import cluster_bootstrap_mean_diff

    files, data, runs = Path(args.files), Path(args.data), Path(args.runs)
    prepare(files, data, runs)
    ids, golds, rules = rule_predictions(files)
    labels = {rule: [str(min(5, max(1, round(p)))) for p in rules[rule]] for rule in RULES}  # answers are labels
    scores = {rule: rating_metrics(labels[rule], golds) for rule in RULES}
    errors = {rule: absolute_errors(labels[rule], golds) for rule in RULES}
    continuous = {rule: round(rating_metrics([str(p) for p in rules[rule]], golds)["mae"], 4) for rule in RULES}
    base = yaml.safe_load(Path(args.config).read_text())
    seeds, baseline_s = [], None
    for seed in args.seeds:
        folder = runs / f"seed{seed}"
        config = seed_config(base, seed, folder)
        fit_s = None
        if not (args.reuse and (folder / "embedder" / "model.safetensors").is_file()):
            fit_s = run(user_embed("fit", "--config", str(config), "--overwrite"), folder / "fit.log")
        if baseline_s is None and "none" not in scores:
            metrics, baseline_s = evaluate(folder / "embedder", data, runs / "baselines", "none,text,bm25",
                                           "median", args.reuse)
            for method in ("none", "text", "bm25"):
                preds = _golds(runs / "baselines" / f"{method}_preds.json")
                scores[method] = metrics["lamp"][method]
                errors[method] = absolute_errors([preds[q] for q in ids], golds)
        entry = {"seed": seed, "mae": {}, "rmse": {}, "fit_s": fit_s}
        timings = []
        for decoding, name in (("median", "soft"), ("argmax", "soft_argmax")):
            metrics, seconds = evaluate(folder / "embedder", data, folder / f"eval_{decoding}", "soft", decoding,
                                        args.reuse)
            entry["mae"][name], entry["rmse"][name] = metrics["lamp"]["soft"]["mae"], metrics["lamp"]["soft"]["rmse"]
            timings.append(seconds)
        entry["evaluate_s"] = None if None in timings else round(sum(timings), 1)  # None: a reused evaluation
        preds = _golds(folder / "eval_median" / "soft_preds.json")
        soft = absolute_errors([preds[q] for q in ids], golds)
        entry["paired"] = {f"soft-{other}": cluster_bootstrap_mean_diff(ids, soft, errors[other])
                           for other in (*RULES, "none", "text", "bm25") if other in errors}
        seeds.append(entry)
        print(f"seed {seed}: soft MAE {entry['mae']['soft']:.3f} (argmax {entry['mae']['soft_argmax']:.3f}); "
              f"user mean {scores['user_mean']['mae']:.3f}", file=sys.stderr, flush=True)
    summary = {name: summarize([s["mae"][name] for s in seeds]) for name in ("soft", "soft_argmax")}
    return {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "commit": commit(),
            "config": args.config, "data": str(data), "split": "test", "questions": len(ids),
            "history_events": 10, "decoding": "median",
            "machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform()},
            "mae": {name: round(value["mae"], 4) for name, value in scores.items()},
            "rmse": {name: round(value["rmse"], 4) for name, value in scores.items()},
            "mae_unrounded_rules": continuous, "baseline_evaluate_s": baseline_s, "seeds": seeds, "summary": summary}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--config", default="configs/lamp3_movielens.yaml")
    parser.add_argument("--files", default="data/lamp3-movielens-files")
    parser.add_argument("--data", default="data/lamp3-movielens")
    parser.add_argument("--runs", default="runs/lamp3-seeds")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--reuse", action="store_true", help="keep the embedders and evaluations already written")
    args = parser.parse_args()
    result = measure(args)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}: soft MAE {result['summary']['soft']['mean']:.3f} ± {result['summary']['soft']['std']:.3f}"
          f" vs user mean {result['mae']['user_mean']:.3f}, item mean {result['mae']['item_mean']:.3f}, "
          f"SVD {result['mae']['svd']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
