"""`user-embed evaluate-embeddings --checkpoint EMBEDDER --data DIR --out DIR`: the user vector as a representation.

Linear probes (profile fields, behaviour after the cutoff), user↔text retrieval and recommendation from the
vector, for the embedder (named ``soft``), any ``--compare NAME=EMBEDDER`` (e.g. ``ar_only=runs/ablation_ar_only/
embedder``), any ``--encoder NAME=PRETRAINED`` (a ``user-embed pretrain`` checkpoint, e.g. ``sasrec=...``) and the
baselines (category histogram, mean text vector, random projection). An embedder whose user head was never
trained (fitted with ``loss.contrastive_weight: 0``) is benchmarked on its pooled features, and the report says
so; the main embedder must have a trained head. ``--question-vectors`` also loads the LLM and compares the
question-conditioned soft prompt with a generic one on each target. Writes ``metrics.json``, ``report.md`` and
``embeddings.png`` into ``--out`` (a safe output: an earlier evaluation is replaced, other files never).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from user_embed.errors import UserError


def named_paths(values: list[str], flag: str) -> dict[str, str]:
    """``["a=path", …]`` → {"a": "path"}; UserError for a malformed or repeated name."""
    out: dict[str, str] = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise UserError(f"{flag}: expected NAME=PATH, got {value!r}")
        if name.strip() in out or name.strip() == "soft":
            raise UserError(f"{flag}: the name {name.strip()!r} is used twice (soft is the --checkpoint embedder)")
        out[name.strip()] = path.strip()
    return out


def main(argv: list[str], command: str = "evaluate-embeddings") -> int:
    p = argparse.ArgumentParser(prog=f"user-embed {command}", description=__doc__)
    p.add_argument("--checkpoint", required=True, help="the embedder to benchmark (named soft)")
    p.add_argument("--data", required=True, help="prepared data folder (with qa.parquet for the user splits)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--compare", action="append", default=[], metavar="NAME=EMBEDDER", help="another embedder")
    p.add_argument("--encoder", action="append", default=[], metavar="NAME=PRETRAINED",
                   help="a pre-trained sequence encoder folder (`user-embed pretrain` output)")
    p.add_argument("--targets", default=None, help="comma-separated probe targets (default: every usable one)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-baselines", action="store_true", help="skip histogram, mean text vector, random projection")
    p.add_argument("--question-vectors", action="store_true",
                   help="also probe the question-conditioned soft prompt (loads the LLM)")
    p.add_argument("--llm", default=None, help="the LLM for --question-vectors (default: the one the embedder records)")
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args(argv)
    compare, encoders = named_paths(args.compare, "--compare"), named_paths(args.encoder, "--encoder")
    if args.folds < 2:
        raise UserError(f"--folds must be at least 2, got {args.folds}")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()] if args.targets else None
    from data_pipelines.outputs import check_output_dir, output_directory
    from user_embed.output_kinds import EVALUATION

    inputs = [args.checkpoint, args.data, *compare.values(), *encoders.values()]
    check_output_dir(args.out, EVALUATION, inputs=inputs, overwrite=args.overwrite)
    from user_embed.embedder import UserEmbedder
    from user_embed.eval.embedding_benchmark import EmbedderEntry, run_embedding_benchmark
    from user_embed.eval.embedding_report import plot, write_report

    main_embedder = UserEmbedder.from_pretrained(args.checkpoint)
    if main_embedder.user_head_trained is False:
        raise UserError(f"{args.checkpoint}: its user head was never trained (loss.contrastive_weight 0), so its "
                        "vector is a random projection; benchmark it with --compare NAME=DIR next to a trained one")
    entries = [EmbedderEntry("soft", main_embedder)]
    for name, path in compare.items():
        embedder = UserEmbedder.from_pretrained(path)
        entries.append(EmbedderEntry(name, embedder, "fused" if embedder.user_head_trained is False else "head"))
    lm = None
    if args.question_vectors:
        from user_embed.model.personalized_lm import PersonalizedLM

        lm = PersonalizedLM.from_pretrained(args.checkpoint, llm=args.llm)
    text_encoder = (main_embedder.text_space_config or {}).get("text_encoder", "default")
    metrics = run_embedding_benchmark(args.data, entries, encoders, lm, targets, args.folds, args.seed,
                                      text_encoder, baselines=not args.no_baselines)
    metrics["checkpoints"] = {"soft": args.checkpoint, **compare, **encoders}
    with output_directory(args.out, EVALUATION, inputs=inputs, overwrite=args.overwrite) as tmp:
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        write_report(metrics, tmp)
        plot(metrics, tmp / "embeddings.png")
    out = Path(args.out)
    print(f"wrote {out / 'metrics.json'}, {out / 'report.md'}, {out / 'embeddings.png'} "
          f"({metrics['users']['held_out']} held-out users, {len(metrics['probes'])} probes, "
          f"{len(metrics['representations'])} representations, {metrics['seconds']['total']} s)")
    return 0
