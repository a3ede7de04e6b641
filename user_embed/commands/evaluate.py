"""`user-embed evaluate --checkpoint EMBEDDER --data DIR --out DIR`: UserQA accuracy of soft prompts vs baselines.

Writes ``metrics.json`` ({"accuracy": {method: {overall, <family>, task/<task>}}, "prompt_tokens": {method: …}}),
``predictions.jsonl``, ``report.md`` and PNG plots, and records the metrics in the embedder's model card.
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
    p.add_argument("--benchmark", default="userqa", choices=["userqa"], help="benchmark to run")
    p.add_argument("--methods", default="none,text,soft", help="comma-separated: none,text,soft")
    p.add_argument("--llm", default=None, help="LLM id/folder (default: the one the embedder was trained with)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--max-per-task", type=int, default=None, help="cap questions per task (seeded choice)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--history-events", type=int, default=50, help="events written out by the text baseline")
    p.add_argument("--logs", default=None, help="Lightning metrics.csv for the loss plot")
    p.add_argument("--color-by", default=None, help="profile field that colours the embedding plot")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def main(argv: list[str], command: str = "evaluate") -> int:
    args = parse(argv)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"none", "text", "soft"})
    if unknown or not methods:
        raise UserError(f"--methods: unknown method(s) {unknown or methods}; choose from none, text, soft")
    if args.batch_size <= 0:
        raise UserError("--batch-size must be > 0")
    import torch

    from user_embed.config import LLMConfig
    from user_embed.data.datamodule import UserDataModule
    from user_embed.embedder import UserEmbedder
    from user_embed.eval.embed_users import embed_users
    from user_embed.eval.report import findings, markdown_report, plot_accuracy, plot_embeddings, plot_losses
    from user_embed.eval.userqa import evaluate_userqa
    from user_embed.module import UserEmbedModule

    torch.manual_seed(args.seed)
    checkpoint = Path(args.checkpoint)
    embedder = UserEmbedder.from_pretrained(checkpoint)
    out = Path(args.out) if args.out else checkpoint.parent / "eval"
    data = UserDataModule(args.data, eval_batch_size=args.batch_size, max_history=embedder.max_len,
                          item_text_vectors=False, contrastive_texts=False, max_eval_per_task=args.max_per_task,
                          seed=args.seed)
    data.use_spec(embedder.spec)
    data.setup("test")
    llm_name = args.llm or embedder.llm_info.get("name_or_path", "default")
    module = UserEmbedModule(embedder.source_configs, embedder.adapter_config, LLMConfig(name_or_path=llm_name))
    module.build(embedder.spec, embedder=embedder)
    metrics = evaluate_userqa(module, data, methods, args.split, args.history_events, progress=not args.no_progress)
    examples = data.examples[args.split]
    chance: dict[str, list[float]] = {}
    for ex in examples:
        for key in ("overall", ex.family):
            chance.setdefault(key, []).append(1.0 / len(ex.options))
    metrics["chance"] = {k: round(sum(v) / len(v), 4) for k, v in chance.items()}
    metrics.update({"checkpoint": str(checkpoint), "data": str(args.data), "split": args.split,
                    "llm": embedder.llm_info.get("origin", llm_name), "seed": args.seed})
    metrics["findings"] = findings(metrics)
    predictions = metrics.pop("predictions")

    from data_pipelines.io import atomic_directory, write_json_atomic

    with atomic_directory(out) as tmp:  # the report folder appears complete or not at all
        plots = {"accuracy": plot_accuracy(metrics["accuracy"], tmp / "accuracy_by_family.png", metrics["chance"])}
        logs = Path(args.logs) if args.logs else checkpoint.parent / "logs" / "metrics.csv"
        plots["losses"] = plot_losses(logs, tmp / "training_losses.png")
        users = sorted({ex.user_id for ex in examples})
        cutoffs = {ex.user_id: ex.cutoff for ex in examples}
        vectors = embed_users(embedder, data.collator, users, [cutoffs[u] for u in users])
        field = args.color_by or next(iter(embedder.spec.profile_cat_fields), None)
        if field:
            profile = data.tables["users"].select("user_id", field).to_dict(as_series=False)
            by_user = dict(zip(profile["user_id"], profile[field]))
            plots["embeddings"] = plot_embeddings(vectors, [str(by_user.get(u)) for u in users], field,
                                                  tmp / "user_embeddings.png")
        plots = {k: Path(v).name for k, v in plots.items() if v}
        write_json_atomic(tmp / "metrics.json", metrics)
        with open(tmp / "predictions.jsonl", "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in predictions)
        (tmp / "report.md").write_text(markdown_report(metrics, plots))
    embedder.metrics = {"userqa": {"accuracy": {m: {k: v for k, v in a.items() if not k.startswith("task/")}
                                                for m, a in metrics["accuracy"].items()},
                                   "prompt_tokens": metrics["prompt_tokens"], "questions": metrics["questions"]}}
    embedder.save_pretrained(checkpoint)
    print(summary_table(metrics))
    print(f"report: {out / 'report.md'}")
    return 0


def summary_table(metrics: dict) -> str:
    acc = metrics["accuracy"]
    groups = ["sequence_understanding", "action_prediction", "interest_perception", "overall"]
    head = f"{'method':<8}" + "".join(f"{g[:22]:>24}" for g in groups) + f"{'prompt tokens':>15}"
    rows = [head]
    for m, a in acc.items():
        rows.append(f"{m:<8}" + "".join(f"{a.get(g, float('nan')):>24.3f}" for g in groups)
                    + f"{metrics['prompt_tokens'][m]:>15.0f}")
    return "\n".join(rows)
