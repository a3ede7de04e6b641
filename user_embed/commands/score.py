"""`user-embed score`: score a prediction file the official LaMP / UQABench way; print one JSON object.

    user-embed score lamp --task LaMP_3 --golds dev_outputs.json --preds preds.json
        # {"mae": 0.31, "rmse": 0.62}   (LaMP-1/2: accuracy, f1; LaMP-4..7: rouge-1, rouge-L)
    user-embed score uqabench --golds golds.jsonl --preds preds.jsonl
    user-embed score uqabench --golds generated.jsonl      # official output: question, prediction, answer
        # {"accuracy": 0.42, "n": 7192, "families": {...}, "tasks": {"df": {"accuracy": …, "n": …}, …}}

Both files of ``score lamp`` are ``{"task": "LaMP_N", "golds": [{"id", "output"}]}``; their ids
must match. Errors (malformed file, missing ids, unknown task) print one line, exit status 2.
Every file is first read defensively (:func:`check_readable`: missing, a folder, empty, not UTF-8,
malformed or too deeply nested JSON, unreadable parquet). ``score`` writes nothing: it prints.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from data_pipelines.lamp import LAMP_TASKS
from data_pipelines.report import DataError


def build_parser(command: str = "score") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"user-embed {command}",
        description="Score predictions made by any system with the official LaMP or UQABench metrics.",
    )
    benchmarks = parser.add_subparsers(dest="benchmark", required=True, metavar="{lamp,uqabench}")
    lamp = benchmarks.add_parser("lamp", help="LaMP-1..7: accuracy/F1, MAE/RMSE or ROUGE-1/L")
    lamp.add_argument("--task", required=True, help=f"one of {', '.join(LAMP_TASKS)}")
    lamp.add_argument("--golds", required=True, metavar="FILE", help="the task's *_outputs.json")
    lamp.add_argument(
        "--preds", required=True, metavar="FILE", help='predictions {"task", "golds": [{"id", "output"}]}'
    )
    uqa = benchmarks.add_parser("uqabench", help="UQABench: startswith accuracy per sub-task, family, overall")
    uqa.add_argument(
        "--golds", required=True, metavar="FILE", help="golds (.jsonl/.json, align_data_*.arrow, qa.parquet)"
    )
    uqa.add_argument("--preds", metavar="FILE", help="predictions .jsonl (omit when --golds also holds 'prediction')")
    return parser


def check_readable(path: str | Path, what: str, json_lines: bool) -> None:
    """DataError (one line naming the file, and the line where known) unless ``path`` reads as its suffix says
    (``json_lines``: anything but .json is JSON lines, as the UQABench reader reads it)."""
    from data_pipelines.readers import iter_jsonl, read_json, read_parquet, require_file

    path = require_file(path, what)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        read_parquet(path, what)
    elif suffix in (".arrow", ".ipc", ".feather"):
        return  # read (with its own one-line errors) by the UQABench reader
    elif json_lines and suffix != ".json":
        for _, _, error in iter_jsonl(path, what):
            if error:
                raise DataError(error)
    else:
        read_json(path, what)


def main(argv: list[str] | None = None, command: str = "score") -> int:
    args = build_parser(command).parse_args(argv)
    check_readable(args.golds, "golds", json_lines=args.benchmark == "uqabench")
    if args.preds is not None:
        check_readable(args.preds, "predictions", json_lines=args.benchmark == "uqabench")
    if args.benchmark == "lamp":
        from user_embed.eval.lamp_metrics import score_lamp

        metrics = score_lamp(args.task, args.golds, args.preds)
    else:
        from user_embed.eval.uqabench_metrics import score_uqabench

        metrics = score_uqabench(args.golds, args.preds)
    print(json.dumps(metrics, ensure_ascii=False))
    return 0
