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
    parser.add_argument("--overwrite", action="store_true",
                        help="batch mode: replace an existing --output file that `generate` did not write")
    return parser


#: Types a request field may have in a JSON line (an id may be a number; a question must be text).
FIELD_TYPES = {"user_id": (str, int), "question": (str,)}


def _row_error(record: object, where: str) -> str | None:
    """Why a parsed JSON line is not a usable request, or None."""
    if not isinstance(record, dict):
        return f"{where}: needs an object with user_id and question, got a JSON {type(record).__name__}"
    missing = [name for name in FIELD_TYPES if name not in record]
    if missing:
        return f"{where}: needs an object with user_id and question (missing {', '.join(missing)})"
    for name, types in FIELD_TYPES.items():
        value = record[name]
        if isinstance(value, bool) or not isinstance(value, types):
            kind = "null" if value is None else type(value).__name__
            return f"{where}: '{name}' must be {'text or a number' if int in types else 'text'}, got {kind}"
    return None


def _read_parquet_requests(path: Path) -> list[tuple[int, object, str | None]]:
    import polars as pl

    from data_pipelines.readers import read_parquet
    from user_embed.generate import Request

    frame = read_parquet(path, "--input")
    missing = [c for c in FIELD_TYPES if c not in frame.columns]
    if missing:
        raise UserError(f"--input {path}: missing column(s) {missing} (has {frame.columns})")
    for name, dtype in frame.select(*FIELD_TYPES).schema.items():
        if not (dtype == pl.Utf8 or dtype == pl.Categorical or (name == "user_id" and dtype.is_integer())):
            raise UserError(f"--input {path}: column '{name}' has type {dtype}, expected text")
    frame = frame.select(pl.col("user_id").cast(pl.Utf8), pl.col("question").cast(pl.Utf8))
    rows = []
    for i, (user, question) in enumerate(frame.iter_rows()):
        null = [name for name, value in (("user_id", user), ("question", question)) if value is None]
        error = f"{path}: row {i + 1}: '{null[0]}' is null" if null else None
        rows.append((i + 1, None if error else Request(user, question), error))
    return rows


def read_requests(path: str | Path) -> list[tuple[int, object, str | None]]:
    """Rows of a .jsonl/.parquet request file as (row number, Request or None, error); bad rows keep going.

    A row's error: not JSON, not an object, a missing field, or a field of the wrong type (``user_id``
    text or an integer, ``question`` text). A file with no usable row at all is a UserError.
    """
    from data_pipelines.readers import iter_jsonl, require_file
    from user_embed.generate import Request

    path = Path(path)
    if not path.exists():
        raise UserError(f"--input {path}: no such file")
    require_file(path, "--input")
    if path.suffix == ".parquet":
        rows = _read_parquet_requests(path)
    elif path.suffix not in (".jsonl", ".ndjson", ".json"):
        raise UserError(f"--input {path}: expected a .jsonl or .parquet file")
    else:
        rows = []
        for number, record, error in iter_jsonl(path, "--input"):
            error = error or _row_error(record, f"{path}:{number}")
            request = None if error else Request(str(record["user_id"]), record["question"])
            rows.append((number, request, error))
    if not rows:
        raise UserError(f"--input {path}: no rows")
    if all(error for _, _, error in rows):
        raise UserError(f"--input {path}: no usable row ({len(rows)} rows; the first: {rows[0][2]})")
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
    from data_pipelines.outputs import check_output_file, output_file
    from user_embed.devices import check_device
    from user_embed.output_kinds import ANSWERS

    check_device(args.device)
    target = {"kind": ANSWERS, "inputs": [args.checkpoint, args.data, args.input, args.llm],
              "overwrite": args.overwrite, "flag": "--output"}
    if batch_mode:
        check_output_file(args.output, **target)  # before any model is loaded
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers.utils import logging as hf_logging

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
    failed = sum(1 for r in records if r["error"])
    if failed == len(records):
        first = next(r for r in records if r["error"])
        raise UserError(f"--input {args.input}: no row could be answered ({failed} rows; row {first['row']}: "
                        f"{first['error']}); nothing written")
    with output_file(args.output, **target) as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    print(f"user-embed {command}: wrote {len(records)} answers to {args.output} ({failed} with errors)",
          file=sys.stderr)
    return 0
