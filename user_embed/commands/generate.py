"""`user-embed generate`: personalized answers from a trained embedder, with the HF or vLLM backend.

One question:
    user-embed generate --checkpoint runs/quickstart/embedder --data data/ml-100k \\
        --user 196 --question "Which genre should I watch tonight?" [--backend vllm]
Many (a progress bar on stderr; a bad row gets its ``error`` and the rest go on):
    user-embed generate --checkpoint … --data … --input rows.jsonl --output answers.jsonl
``rows.jsonl`` (or ``.parquet``) holds ``user_id`` and ``question`` per row; each output line
is ``{"row", "user_id", "question", "answer", "prompt_tokens", "output_tokens", "latency_s", "error"}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from user_embed.errors import UserError


def build_parser(command: str = "generate") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"user-embed {command}", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Personalized answers from a trained user embedder (HF or vLLM backend).")
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="trained embedder folder (save_pretrained)")
    parser.add_argument("--data", required=True, metavar="DIR", help="prepared data folder with the users' histories")
    parser.add_argument("--user", metavar="ID", help="user id (one-question mode)")
    parser.add_argument("--question", metavar="TEXT", help="the question (one-question mode)")
    parser.add_argument("--input", metavar="FILE", help="batch mode: .jsonl or .parquet rows with user_id, question")
    parser.add_argument("--output", metavar="FILE", help="batch mode: answers as JSONL")
    parser.add_argument("--backend", choices=["hf", "vllm"], default="hf", help="hf (default) or vllm (prompt_embeds)")
    parser.add_argument("--method", choices=["soft", "none", "text", "bm25"], default="soft",
                        help="soft (the user's soft prompt, default) or a baseline: none (question only), text "
                             "(recent events as text), bm25 (best-matching events as text)")
    parser.add_argument("--history-events", type=int, default=50, help="events written out by --method text/bm25")
    parser.add_argument("--llm", help="LLM to pair with (default: the one recorded in the checkpoint)")
    parser.add_argument("--device", default="cpu", help="torch device for the HF backend (cpu, cuda)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    parser.add_argument("--ignore-eos", action="store_true",
                        help="generate exactly --max-new-tokens per answer (end tokens do not stop it)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", action="store_true",
                        help="one-question mode: print the JSON row, not just the answer")
    return parser


def read_requests(path: str | Path) -> list[tuple[int, object, str | None]]:
    """Rows of a .jsonl/.parquet request file as (row number, Request or None, error); bad rows keep going."""
    from user_embed.generate import Request

    path = Path(path)
    if not path.is_file():
        raise UserError(f"--input {path}: no such file")
    if path.suffix == ".parquet":
        import polars as pl

        try:
            frame = pl.read_parquet(path)
        except Exception as exc:
            raise UserError(f"--input {path}: cannot read parquet ({type(exc).__name__}: {exc})") from exc
        missing = [c for c in ("user_id", "question") if c not in frame.columns]
        if missing:
            raise UserError(f"--input {path}: missing column(s) {missing} (has {frame.columns})")
        frame = frame.select(pl.col("user_id").cast(pl.Utf8), pl.col("question").cast(pl.Utf8))
        return [(i + 1, Request(u, q), None) for i, (u, q) in enumerate(frame.iter_rows())]
    if path.suffix not in (".jsonl", ".ndjson", ".json"):
        raise UserError(f"--input {path}: expected a .jsonl or .parquet file")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                rows.append((number, None, f"{path}:{number}: not JSON ({exc.msg})"))
                continue
            if not isinstance(record, dict) or "user_id" not in record or "question" not in record:
                rows.append((number, None, f"{path}:{number}: needs an object with user_id and question"))
                continue
            user = record["user_id"]
            rows.append((number, Request(None if user is None else str(user), record["question"]), None))
    if not rows:
        raise UserError(f"--input {path}: no rows")
    return rows


def main(argv: list[str] | None = None, command: str = "generate") -> int:
    args = build_parser(command).parse_args(argv)
    batch_mode = args.input is not None
    if batch_mode and (args.user or args.question):
        raise UserError("use either --user/--question or --input/--output, not both")
    if batch_mode and not args.output:
        raise UserError("--input needs --output (a .jsonl file)")
    if not batch_mode:
        if args.user is None or args.question is None:
            raise UserError("give --user and --question (or --input FILE --output FILE for many)")
        if not args.question.strip():
            raise UserError("--question is empty")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

    from data_pipelines.io import write_jsonl_atomic
    from user_embed.generate import Request, SamplingConfig
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    hf_logging.disable_progress_bar()  # keep stderr to our progress bar and one-line errors

    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                              seed=args.seed, stop=args.stop, ignore_eos=args.ignore_eos)
    if args.backend == "vllm":
        from user_embed.generate.vllm import import_vllm

        import_vllm()  # the install hint before minutes of loading
    rows = read_requests(args.input) if batch_mode else [(1, Request(args.user, args.question), None)]
    if not Path(args.checkpoint).is_dir():
        raise UserError(f"--checkpoint {args.checkpoint}: no such embedder folder")
    if not Path(args.data).is_dir():
        raise UserError(f"--data {args.data}: no such data folder (build it with `user-embed prepare …`)")
    users = UserStore.from_folder(args.data)
    lm = PersonalizedLM.from_pretrained(args.checkpoint, llm=args.llm, device=args.device)
    if not batch_mode:
        error = lm.request_error(users, rows[0][1], args.method)
        if error:
            raise UserError(error)
    good = [request for _, request, error in rows if error is None]
    results = iter(lm.generate_results(users, good, method=args.method, backend=args.backend, sampling=sampling,
                                       batch_size=args.batch_size, progress=batch_mode,
                                       history_events=args.history_events))
    records = []
    for number, request, error in rows:
        if error is not None:
            records.append({"row": number, "user_id": None, "question": None, "answer": None, "prompt_tokens": 0,
                            "output_tokens": 0, "latency_s": 0.0, "error": error})
        else:
            records.append({"row": number, **next(results).to_json()})
    if not batch_mode:
        record = records[0]
        if record["error"]:
            raise UserError(record["error"])
        print(json.dumps(record, ensure_ascii=False) if args.json else record["answer"])
        return 0
    write_jsonl_atomic(Path(args.output), records)
    failed = sum(1 for r in records if r["error"])
    print(f"user-embed {command}: wrote {len(records)} answers to {args.output} ({failed} with errors)",
          file=sys.stderr)
    return 0
