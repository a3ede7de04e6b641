"""`user-embed evaluate --checkpoint EMBEDDER --data DIR --out DIR`: soft prompts vs baselines on the same LLM.

Methods: ``none`` (question only), ``text`` (most recent events as text), ``bm25`` (the events that best
match the question, as text) and ``soft`` (the embedder's soft prompt); answers are the options the LLM
finds most likely. Writes ``metrics.json`` ({"accuracy": {method: {overall, <family>, task/<task>}},
"prompt_tokens": {method: …}}), ``predictions.jsonl``, ``report.md`` and PNG plots into ``--out`` only.

``--benchmark uqabench`` (data from ``prepare uqabench``) generates free-text answers (methods ``none`` and
``soft``) and scores them with UQABench's rule (the answer starts with the gold); it writes ``metrics.json``
("uqabench": {method: overall / per family / per sub-task}), ``<method>_generated.jsonl`` in the official
generation format and ``report.md``.

``--benchmark lamp`` (data from ``prepare lamp``; LaMP-1, 2 and 3, whose answers are labels) adds the
official LaMP metrics per method (``metrics.json`` → "lamp") and one submission file per method,
``<method>_preds.json`` = ``{"task": "LaMP_N", "golds": [{"id", "output"}]}``.

``--noise 0,0.1,0.3,0.5`` (multiple choice) repeats the evaluation with a share of each evaluated user's
pre-cutoff events replaced (``--noise-mode replace``) or joined by inserted ones (``insert``), seeded by
``--noise-seed`` (:mod:`user_embed.eval.noise_sweep`); ``--compare-checkpoint DIR --compare-name NAME`` adds a
second embedder's soft prompt as method NAME. metrics.json gains ``"noise"``, the report a table and ``noise.png``;
the open questions are skipped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from user_embed.errors import UserError


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="user-embed evaluate", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="embedder folder (save_pretrained output)")
    p.add_argument("--data", required=True, help="prepared data folder (user-embed prepare …)")
    p.add_argument("--out", default=None, help="output folder (default: <checkpoint>/../eval)")
    p.add_argument("--benchmark", default="userqa", choices=["userqa", "lamp", "uqabench"],
                   help="userqa (accuracy per family), lamp (adds LaMP's official metrics and submission files) "
                        "or uqabench (generated answers, official startswith accuracy)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="answer length for --benchmark uqabench")
    p.add_argument("--methods", default=None,
                   help="comma-separated: none,text,bm25,soft (default none,text,soft; uqabench: none,soft)")
    p.add_argument("--llm", default=None, help="LLM id/folder (default: the one the embedder was trained with)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--max-per-task", type=int, default=None, help="cap questions per task (seeded choice)")
    p.add_argument("--max-users", type=int, default=None,
                   help="cap test users (seeded choice); each keeps all their questions")
    p.add_argument("--no-free-text", action="store_true",
                   help="skip the open questions (generated answers, parsed to a label); default: evaluate them "
                        "too when the data has them")
    p.add_argument("--free-text-tokens", type=int, default=12, help="answer length for the open questions")
    p.add_argument("--free-text-methods", default=None,
                   help="comma-separated methods for the open questions (default: --methods); generating after "
                        "hundreds of history tokens makes text/bm25 the slow ones")
    p.add_argument("--text-max-users", type=int, default=None,
                   help="the text baselines (text, bm25: hundreds of prompt tokens per question) answer only the "
                        "questions of this many seeded users; the other methods answer all")
    p.add_argument("--rating-decoding", default="median", choices=["argmax", "median", "mean"],
                   help="LaMP-3: the rating read off the option scores — the most likely label, or the median "
                        "(MAE-optimal) or mean (RMSE-optimal) of their distribution (default median)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--history-events", type=int, default=50, help="events written out by the text baseline")
    p.add_argument("--logs", default=None, help="Lightning metrics.csv for the loss plot")
    p.add_argument("--color-by", default=None, help="profile field that colours the embedding plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--noise", default=None,
                   help="comma-separated shares in [0, 1) of each evaluated user's pre-cutoff events to perturb, "
                        "e.g. 0,0.1,0.3,0.5: every method is evaluated at each (noise robustness)")
    p.add_argument("--noise-seed", type=int, default=0, help="seed of the noise (per user, share and seed)")
    p.add_argument("--noise-mode", default="replace",
                   help="replace (a share of the events get popular items instead) or insert (fake events added "
                        "until they are that share)")
    p.add_argument("--compare-checkpoint", default=None,
                   help="with --noise: a second embedder whose soft prompt is swept too (e.g. an ablation)")
    p.add_argument("--compare-name", default=None, help="the method name of --compare-checkpoint's soft prompt")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--overwrite", action="store_true",
                   help="write into an --out folder holding other files (replaces only same-named files)")
    return p.parse_args(argv)


def output_folder(args: argparse.Namespace, out: Path, check_only: bool = False):
    """``--out`` as a checked, safe output folder (data_pipelines.outputs): never an input, never others' files."""
    from data_pipelines.outputs import check_output_dir, output_directory
    from user_embed.output_kinds import EVALUATION

    inputs = [getattr(args, name, None) for name in ("checkpoint", "data", "llm", "logs")]
    write = check_output_dir if check_only else output_directory
    return write(out, EVALUATION, inputs=inputs, overwrite=getattr(args, "overwrite", False))


def main(argv: list[str], command: str = "evaluate") -> int:
    args = parse(argv)
    default = "none,soft" if args.benchmark == "uqabench" else "none,text,soft"
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    from user_embed.eval.userqa import METHODS

    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise UserError(f"--methods: unknown method(s) {unknown or methods}; choose from {', '.join(METHODS)}")
    free_methods = [m.strip() for m in (args.free_text_methods or ",".join(methods)).split(",") if m.strip()]
    if not free_methods or set(free_methods) - set(METHODS):
        unknown = sorted(set(free_methods) - set(METHODS)) or "(none)"
        raise UserError(f"--free-text-methods: unknown method(s) {unknown}; choose from {', '.join(METHODS)}")
    args.free_text_methods = ",".join(free_methods)
    if args.batch_size <= 0:
        raise UserError("--batch-size must be > 0")
    for flag, cap in (("--max-per-task", args.max_per_task), ("--max-users", args.max_users),
                      ("--text-max-users", args.text_max_users)):
        if cap is not None and cap <= 0:
            raise UserError(f"{flag} must be > 0, got {cap}")
    from user_embed.eval.noise_sweep import noise_request

    args.noise_request = noise_request(args, methods)  # checked before anything is loaded
    import torch

    from data_pipelines.schema import read_table
    from user_embed.data.questions import questions_by_split
    from user_embed.embedder import UserEmbedder
    from user_embed.store import UserStore

    torch.manual_seed(args.seed)
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent / "eval"
    output_folder(args, out, check_only=True)  # before anything is loaded
    embedder = UserEmbedder.from_pretrained(checkpoint)  # a broken checkpoint fails before the data is read
    if args.compare_checkpoint:
        UserEmbedder.from_pretrained(args.compare_checkpoint)
    users = UserStore.from_folder(args.data)
    splits = questions_by_split(read_table(args.data, "qa"), max_eval_per_task=args.max_per_task,
                                max_eval_users=args.max_users, seed=args.seed,
                                source=str(Path(args.data) / "qa.parquet"), categories=embedder.spec.categories)
    examples = splits.get(args.split) or []
    if args.benchmark == "uqabench":
        return _uqabench(args, methods, users, examples, out)
    lamp_task = lamp_task_of(examples) if args.benchmark == "lamp" else None
    if lamp_task and args.text_max_users:
        raise UserError("--text-max-users: LaMP submission files need every question answered; omit it")
    from user_embed.model import PersonalizedLM

    lm = PersonalizedLM.from_pretrained(checkpoint, llm=args.llm, device="cpu")
    compare_lm = (PersonalizedLM.from_pretrained(args.compare_checkpoint, llm=args.llm, device="cpu")
                  if args.compare_checkpoint else None)
    metrics = evaluate_and_report(lm, users, examples, methods, out, args, lamp_task, splits.get("train") or [],
                                  compare_lm)
    print(summary_table(metrics))
    if lamp_task:
        print(json.dumps(metrics["lamp"]))
    print(f"report: {out / 'report.md'}")
    return 0


def evaluate_and_report(lm, users, examples: list, methods: list[str], out: Path, args: argparse.Namespace,
                        lamp_task: str | None = None, train: list | None = None, compare_lm=None) -> dict:
    """UserQA metrics of every method — multiple choice, and free text on the open questions (or, with
    ``args.noise_request``, the noise sweep, also of ``compare_lm``'s soft prompt) — written with predictions,
    plots and a report into ``out`` (atomically)."""
    from data_pipelines.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
    from data_pipelines.lamp import resolve_task, write_lamp_submission
    from user_embed.eval.free_text import evaluate_free_text
    from user_embed.eval.report import findings, markdown_report, plot_accuracy, plot_embeddings, plot_losses
    from user_embed.eval.userqa import evaluate_userqa

    open_questions = [ex for ex in examples if not ex.options and ex.candidates] if not lamp_task else []
    examples = examples if lamp_task else [ex for ex in examples if ex.options]
    if not examples:
        raise UserError(f"no '{args.split}' multiple-choice questions in {args.data}/qa.parquet")
    method_users = None
    if args.text_max_users:
        chosen = set(seeded_users(examples, args.text_max_users, args.seed))
        method_users = {m: chosen for m in methods if m in ("text", "bm25")}
    decode = None
    if lamp_task and resolve_task(lamp_task).kind == "regression":
        from user_embed.eval.ratings import decode_ratings

        def decode(scores, options):
            return decode_ratings(scores, options, args.rating_decoding)
    def evaluate(model, store, names: list[str]) -> dict:
        return evaluate_userqa(model, store, examples, names, args.history_events, args.batch_size,
                               progress=not args.no_progress, method_users=method_users, decode=decode)

    metrics = evaluate(lm, users, methods)
    noise = getattr(args, "noise_request", None)
    if noise:
        from user_embed.eval.noise_sweep import noise_sweep

        metrics["noise"] = noise_sweep(noise, lm, users, examples, methods, evaluate, clean=metrics,
                                       compare_lm=compare_lm, progress=None if args.no_progress else print)
    free_predictions = []
    if open_questions and not args.no_free_text and not noise:
        metrics["free_text"] = evaluate_free_text(lm, users, open_questions, args.free_text_methods.split(","),
                                                  train or [],
                                                  args.free_text_tokens, args.batch_size, args.history_events,
                                                  method_users)
        free_predictions = metrics["free_text"].pop("predictions")
    metrics.update({"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
                    "llm": lm.embedder.llm_record.label, "seed": args.seed})
    predictions = metrics.pop("predictions")
    metrics["findings"] = findings(metrics)
    if lamp_task:
        metrics["lamp"] = {"task": lamp_task, **lamp_scores(lamp_task, predictions, methods)}
        if decode is not None:
            metrics["lamp"]["decoding"] = args.rating_decoding
    checkpoint = Path(args.checkpoint)
    with output_folder(args, out) as tmp:  # the report folder appears complete or not at all
        plots = {"accuracy": plot_accuracy(metrics["accuracy"], tmp / "accuracy_by_family.png", metrics["chance"])}
        logs = Path(args.logs) if args.logs else checkpoint.parent / "logs" / "metrics.csv"
        plots["losses"] = plot_losses(logs, tmp / "training_losses.png")
        ids = sorted({ex.user_id for ex in examples})
        cutoffs = {ex.user_id: ex.cutoff for ex in examples}
        vectors = lm.embed(users, ids, cutoffs=[cutoffs[u] for u in ids]).numpy()
        field = args.color_by or next(iter(lm.embedder.spec.profile_cat_fields), None)
        if field:
            by_user = users.profile(field)
            plots["embeddings"] = plot_embeddings(vectors, [str(by_user.get(u)) for u in ids], field,
                                                  tmp / "user_embeddings.png")
        if noise:
            from user_embed.eval.noise_sweep import plot_noise

            plots["noise"] = plot_noise(metrics["noise"], tmp / "noise.png", metrics["chance"].get("overall"))
        plots = {k: Path(v).name for k, v in plots.items() if v}
        write_json_atomic(tmp / "metrics.json", metrics)
        write_jsonl_atomic(tmp / "predictions.jsonl", predictions)
        if free_predictions:
            write_jsonl_atomic(tmp / "free_text_predictions.jsonl", free_predictions)
        report = markdown_report(metrics, plots)
        if noise:
            from user_embed.eval.noise_sweep import noise_report

            report += noise_report(metrics["noise"])
        if lamp_task:
            report += lamp_report(metrics["lamp"], methods)
            for method in methods:
                write_lamp_submission(lamp_task, {row["user_id"]: row[method] for row in predictions},
                                      tmp / f"{method}_preds.json")
        write_text_atomic(tmp / "report.md", report)
    return metrics


def _uqabench(args: argparse.Namespace, methods: list[str], users, examples: list, out: Path) -> int:
    """Generate answers per method, score them the UQABench way, write metrics/report/generation files."""
    from data_pipelines.io import write_json_atomic, write_jsonl_atomic, write_text_atomic
    from data_pipelines.uqabench import SUB_TASKS
    from user_embed.eval.uqabench_eval import evaluate_uqabench
    from user_embed.model import PersonalizedLM

    kept = [ex for ex in examples if ex.task in SUB_TASKS]
    if not kept:
        raise UserError(f"--benchmark uqabench: no UQABench questions in {args.data} (split {args.split}); "
                        "prepare the data with `user-embed prepare uqabench --files align_data_*.arrow`")
    lm = PersonalizedLM.from_pretrained(args.checkpoint, llm=args.llm, device="cpu")
    result = evaluate_uqabench(lm, users, kept, methods, args.max_new_tokens, args.batch_size)
    metrics = {"uqabench": result["uqabench"], "seconds": result["seconds"], "questions": len(kept),
               "skipped_other_questions": len(examples) - len(kept), "checkpoint": str(args.checkpoint),
               "data": str(args.data), "split": args.split}
    lines = ["# UQABench (generated answers; correct = starts with the gold)\n",
             "| method | overall | " + " | ".join(SUB_TASKS) + " |", "|---|---|" + "---|" * len(SUB_TASKS)]
    for method, table in result["uqabench"].items():
        tasks = table["tasks"]
        lines.append(f"| {method} | {table['accuracy']:.3f} | "
                     + " | ".join(f"{tasks[t]['accuracy']:.3f}" if t in tasks else "–" for t in SUB_TASKS) + " |")
    with output_folder(args, out) as tmp:
        write_json_atomic(tmp / "metrics.json", metrics)
        for method, answers in result["predictions"].items():
            write_jsonl_atomic(tmp / f"{method}_generated.jsonl", [
                {"question": ex.question, "prediction": answer, "answer": ex.answer, "task": ex.task,
                 "user_id": ex.user_id} for ex, answer in zip(kept, answers)])
        write_text_atomic(tmp / "report.md", "\n".join(lines) + "\n")
    print("\n".join(lines[1:]))
    print(f"report: {out / 'report.md'}")
    return 0


def lamp_task_of(examples) -> str:
    """The one LaMP task (with a label set) the questions belong to; UserError otherwise."""
    from data_pipelines.lamp import resolve_task

    tasks = sorted({ex.task for ex in examples})
    if len(tasks) != 1:
        raise UserError(f"--benchmark lamp needs questions of one LaMP task (prepare lamp …); found tasks {tasks}")
    task = resolve_task(tasks[0])
    if any(ex.answer == "" for ex in examples):
        raise UserError("--benchmark lamp: these questions have no golds (prepare lamp … with their outputs file)")
    if not task.labels:
        raise UserError(f"--benchmark lamp scores tasks with a label set (LaMP-1, 2, 3); {task.name} is a generation "
                        "task: write answers with `user-embed generate --input` and score them with `user-embed score lamp`")
    return task.name


def lamp_scores(task: str, predictions: list[dict], methods: list[str]) -> dict:
    """{method: LaMP metrics} from predictions.jsonl rows (the gold is each row's ``answer``)."""
    from user_embed.eval.lamp_metrics import lamp_metrics

    golds = [row["answer"] for row in predictions]
    return {method: lamp_metrics(task, [row[method] for row in predictions], golds) for method in methods}


def lamp_report(scores: dict, methods: list[str]) -> str:
    keys = [k for k in scores[methods[0]]]
    lines = [f"\n## {scores['task']} (official LaMP metrics)\n", "| method | " + " | ".join(keys) + " |",
             "|---|" + "---|" * len(keys)]
    lines += [f"| {m} | " + " | ".join(f"{scores[m][k]:.4f}" for k in keys) + " |" for m in methods]
    if "decoding" in scores:
        lines.append(f"\nRatings decoded as the {scores['decoding']} of the option scores (`--rating-decoding`).")
    return "\n".join(lines) + "\n"


def seeded_users(examples: list, count: int, seed: int) -> list[str]:
    """``count`` of the examples' users, chosen with ``seed`` (the same choice as ``--max-users``)."""
    import polars as pl

    return pl.Series([ex.user_id for ex in examples]).unique().sort().shuffle(seed=seed).head(count).to_list()


def summary_table(metrics: dict) -> str:
    """Accuracy per family and method (with the questions each answered), then soft minus each baseline
    with its 95 % interval over users."""
    acc = metrics["accuracy"]
    groups = ["sequence_understanding", "action_prediction", "interest_perception", "overall"]
    head = f"{'method':<8}" + "".join(f"{g[:22]:>24}" for g in groups) + f"{'questions':>11}{'prompt tokens':>15}"
    rows = [head]
    for m, a in acc.items():
        rows.append(f"{m:<8}" + "".join(f"{a.get(g, float('nan')):>24.3f}" for g in groups)
                    + f"{metrics.get('answered', {}).get(m, metrics['questions']):>11}"
                    + f"{metrics['prompt_tokens'][m]:>15.0f}")
    for pair, table in metrics.get("paired", {}).items():
        cells = [f"{table[g]['diff']:+.3f} [{table[g]['low']:+.3f}, {table[g]['high']:+.3f}]" if g in table else "–"
                 for g in groups]
        questions = table.get("overall", {}).get("questions", "")
        rows.append(f"{pair.replace('-', ' - '):<8}" + "".join(f"{c:>24}" for c in cells) + f"{questions:>11}")
    free = metrics.get("free_text")
    if free:
        rows.append(f"free text: {free['questions']} open questions, generated answers read as labels "
                    "(parsed = share naming a label)")
        for m, a in free["accuracy"].items():
            parsed = f"{free['parsed'][m]:>15.2f}" if m in free["parsed"] else ""
            rows.append(f"{m:<8}" + "".join(f"{a.get(g, float('nan')):>24.3f}" for g in groups)
                        + f"{free['answered'].get(m, free['questions']):>11}{parsed}")
    return "\n".join(rows)
