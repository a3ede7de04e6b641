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
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--history-events", type=int, default=50, help="events written out by the text baseline")
    p.add_argument("--logs", default=None, help="Lightning metrics.csv for the loss plot")
    p.add_argument("--color-by", default=None, help="profile field that colours the embedding plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str], command: str = "evaluate") -> int:
    args = parse(argv)
    default = "none,soft" if args.benchmark == "uqabench" else "none,text,soft"
    methods = [m.strip() for m in (args.methods or default).split(",") if m.strip()]
    from user_embed.eval.userqa import METHODS

    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise UserError(f"--methods: unknown method(s) {unknown or methods}; choose from {', '.join(METHODS)}")
    if args.batch_size <= 0:
        raise UserError("--batch-size must be > 0")
    for flag, cap in (("--max-per-task", args.max_per_task), ("--max-users", args.max_users)):
        if cap is not None and cap <= 0:
            raise UserError(f"{flag} must be > 0, got {cap}")
    import torch

    from data_pipelines.schema import read_table
    from user_embed.data.questions import questions_by_split
    from user_embed.embedder import UserEmbedder
    from user_embed.store import UserStore

    torch.manual_seed(args.seed)
    checkpoint = Path(args.checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent / "eval"
    UserEmbedder.from_pretrained(checkpoint)  # a broken checkpoint fails before the data is read
    users = UserStore.from_folder(args.data)
    examples = questions_by_split(read_table(args.data, "qa"), max_eval_per_task=args.max_per_task,
                                  max_eval_users=args.max_users, seed=args.seed,
                                  source=str(Path(args.data) / "qa.parquet")).get(args.split) or []
    if args.benchmark == "uqabench":
        return _uqabench(args, methods, users, examples, out)
    lamp_task = lamp_task_of(examples) if args.benchmark == "lamp" else None
    from user_embed.model import PersonalizedLM

    lm = PersonalizedLM.from_pretrained(checkpoint, llm=args.llm, device="cpu")
    metrics = evaluate_and_report(lm, users, examples, methods, out, args, lamp_task)
    print(summary_table(metrics))
    if lamp_task:
        print(json.dumps(metrics["lamp"]))
    print(f"report: {out / 'report.md'}")
    return 0


def evaluate_and_report(lm, users, examples: list, methods: list[str], out: Path, args: argparse.Namespace,
                        lamp_task: str | None = None) -> dict:
    """UserQA metrics of every method, written with predictions, plots and a report into ``out`` (atomically)."""
    from data_pipelines.io import atomic_directory, write_json_atomic, write_jsonl_atomic, write_text_atomic
    from data_pipelines.lamp import write_lamp_submission
    from user_embed.eval.report import findings, markdown_report, plot_accuracy, plot_embeddings, plot_losses
    from user_embed.eval.userqa import evaluate_userqa

    if not examples:
        raise UserError(f"no '{args.split}' questions in {args.data}/qa.parquet")
    metrics = evaluate_userqa(lm, users, examples, methods, args.history_events, args.batch_size,
                              progress=not args.no_progress)
    metrics.update({"checkpoint": str(args.checkpoint), "data": str(args.data), "split": args.split,
                    "llm": lm.embedder.llm_record.label, "seed": args.seed})
    predictions = metrics.pop("predictions")
    metrics["findings"] = findings(metrics)
    if lamp_task:
        metrics["lamp"] = {"task": lamp_task, **lamp_scores(lamp_task, predictions, methods)}
    checkpoint = Path(args.checkpoint)
    with atomic_directory(out) as tmp:  # the report folder appears complete or not at all
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
        plots = {k: Path(v).name for k, v in plots.items() if v}
        write_json_atomic(tmp / "metrics.json", metrics)
        write_jsonl_atomic(tmp / "predictions.jsonl", predictions)
        report = markdown_report(metrics, plots)
        if lamp_task:
            report += lamp_report(metrics["lamp"], methods)
            for method in methods:
                write_lamp_submission(lamp_task, {row["user_id"]: row[method] for row in predictions},
                                      tmp / f"{method}_preds.json")
        write_text_atomic(tmp / "report.md", report)
    return metrics


def _uqabench(args: argparse.Namespace, methods: list[str], users, examples: list, out: Path) -> int:
    """Generate answers per method, score them the UQABench way, write metrics/report/generation files."""
    from data_pipelines.io import atomic_directory, write_json_atomic, write_jsonl_atomic, write_text_atomic
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
    with atomic_directory(out) as tmp:
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
    return "\n".join(lines) + "\n"


def summary_table(metrics: dict) -> str:
    acc = metrics["accuracy"]
    groups = ["sequence_understanding", "action_prediction", "interest_perception", "overall"]
    head = f"{'method':<8}" + "".join(f"{g[:22]:>24}" for g in groups) + f"{'prompt tokens':>15}"
    rows = [head]
    for m, a in acc.items():
        rows.append(f"{m:<8}" + "".join(f"{a.get(g, float('nan')):>24.3f}" for g in groups)
                    + f"{metrics['prompt_tokens'][m]:>15.0f}")
    return "\n".join(rows)
