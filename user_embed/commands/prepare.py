"""`user-embed prepare <source>`: import a dataset into the unified parquet schema (+ UserQA).

Sources::

    user-embed prepare movielens-100k --out data/ml100k            # the offline copy (fetched once)
    user-embed prepare movielens --path ~/ml-1m --out data/ml1m    # any MovieLens layout
    user-embed prepare events --events log.csv --user-col uid --item-col sku --time-col ts \\
        [--items items.csv --title-col name --category-col tags --category-sep '|'] \\
        [--mapping mapping.yaml] --out data/shop                   # any event log
    user-embed prepare lamp --task LaMP_3 --dir LaMP_3/ --out data/lamp3   # LaMP train/dev/test folders
    user-embed prepare lamp --task LaMP_3 --questions dev_questions.json [--outputs dev_outputs.json] \
        [--split test] --out data/lamp3-dev                        # one LaMP file pair
    user-embed prepare lamp3-movielens --out lamp/LaMP_3_movielens   # LaMP-3-format files built from ML-100k
    user-embed prepare uqabench --files align_data_train.arrow align_data_eval.arrow --out data/uqa

Each source is one entry of :data:`SOURCES` (name → help, add-arguments, run); adding a
source means adding a function pair and an entry there. All sources share ``--out``,
``--seed``, ``--strict`` (stop at the first row that would be dropped), ``--no-qa`` and
``--overwrite``. ``--out`` is a safe output (:mod:`data_pipelines.outputs`), checked before
anything is read: a previous output of `prepare` is replaced; a folder with other files, or one
that is, holds or lies inside an input, is refused (``--overwrite`` replaces only same-named files).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Source:
    """One `prepare` subcommand: how to describe it, which flags it takes, what it runs."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# --------------------------------------------------------------------------- shared flags


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--out``, ``--seed``, ``--strict``, ``--no-qa`` (every source takes them)."""
    parser.add_argument(
        "--out", required=True, type=Path, metavar="DIR",
        help="output data directory (a previous `prepare` output there is replaced atomically)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the UserQA splits and options (default 0)")
    parser.add_argument(
        "--strict", action="store_true", help="stop at the first row that would be dropped instead of counting it"
    )
    parser.add_argument("--no-qa", action="store_true", help="write events/items/users only, no UserQA questions")
    add_overwrite_argument(parser)


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true",
                        help="write into an --out folder that holds other files (replaces only same-named files)")


def inputs_of(args: argparse.Namespace) -> list[Path]:
    """Every file or folder the command line names as input (all path arguments but --out)."""
    found: list[Path] = []
    for name, value in vars(args).items():
        values = value if isinstance(value, list) else [value]
        found += [v for v in values if isinstance(v, Path) and name != "out"]
    return found


def write(result, args: argparse.Namespace, qa_config=None) -> int:
    """Build UserQA (unless --no-qa) and write ``args.out``."""
    from data_pipelines.prepare import prepare

    prepare(result, args.out, seed=args.seed, build_qa=not args.no_qa, qa_config=qa_config, overwrite=args.overwrite,
            inputs=inputs_of(args))
    return 0


# --------------------------------------------------------------------------- sources


def _movielens_100k_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)


def _run_movielens_100k(args: argparse.Namespace) -> int:
    from data_pipelines.prepare import prepare_movielens_100k
    from user_embed.assets import movielens_100k_dir

    prepare_movielens_100k(args.out, args.seed, source=movielens_100k_dir(report=print), strict=args.strict,
                           build_qa=not args.no_qa, overwrite=args.overwrite)
    return 0


def _movielens_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--path",
        required=True,
        type=Path,
        metavar="DIR",
        help="MovieLens folder (RecBole, ml-100k, ml-1m, ml-latest …)",
    )
    add_common_arguments(parser)


def _run_movielens(args: argparse.Namespace) -> int:
    from data_pipelines.movielens import import_movielens
    from data_pipelines.prepare import movielens_qa_config

    return write(import_movielens(args.path, strict=args.strict), args, movielens_qa_config())


#: ``--flag`` of `prepare events` → ColumnMapping field it sets (flags override the YAML mapping).
MAPPING_FLAGS: dict[str, tuple[str, str]] = {
    "--user-col": ("user_col", "events column with the user id"),
    "--item-col": ("item_col", "events column with the item id"),
    "--time-col": ("time_col", "events column with the time (Unix s or ms, or dates)"),
    "--value-col": ("value_col", "events column with a numeric value (rating, price …)"),
    "--text-col": ("text_col", "events column with free text"),
    "--source-col": ("source_col", "events column with the kind of each event"),
    "--source": ("source", "kind of every event when there is no --source-col (default 'event')"),
    "--title-col": ("item_title_col", "items column with the title (events column without --items)"),
    "--category-col": ("category_col", "items column with categories (events column without --items)"),
    "--category-sep": ("category_sep", "separator between several categories in one cell, e.g. '|'"),
    "--time-format": ("time_format", "strftime format of date strings, e.g. '%%Y-%%m-%%d %%H:%%M' (default: infer)"),
    "--items-item-col": ("items_item_col", "items column with the item id (default: --item-col)"),
    "--users-user-col": ("users_user_col", "users column with the user id (default: --user-col)"),
    "--delimiter": ("delimiter", "CSV field delimiter (default: detect among , tab ; |)"),
}


def _events_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--events", required=True, type=Path, metavar="FILE", help="event log: .csv, .tsv or .parquet")
    parser.add_argument("--items", type=Path, metavar="FILE", help="items file (title, categories)")
    parser.add_argument("--users", type=Path, metavar="FILE", help="users file (other columns become profile fields)")
    parser.add_argument("--mapping", type=Path, metavar="YAML", help="column mapping file; flags override it")
    for flag, (dest, help_) in MAPPING_FLAGS.items():
        parser.add_argument(flag, dest=dest, metavar="COL" if flag.endswith("-col") else "TEXT", help=help_)
    add_common_arguments(parser)


def _run_events(args: argparse.Namespace) -> int:
    from data_pipelines.generic import ColumnMapping, import_events, read_mapping_yaml

    values = read_mapping_yaml(args.mapping) if args.mapping else {}
    flags = {dest: getattr(args, dest) for dest, _ in MAPPING_FLAGS.values()}
    values.update({k: v for k, v in flags.items() if v is not None})
    required = ("user_col", "item_col", "time_col")
    missing = [flag for flag, (dest, _) in MAPPING_FLAGS.items() if dest in required and not values.get(dest)]
    if missing:
        args.parser.error(f"{', '.join(missing)} required (as flags or in --mapping)")
    mapping = ColumnMapping.from_dict(values, source=str(args.mapping or "command line"))
    result = import_events(args.events, mapping, items_path=args.items, users_path=args.users, strict=args.strict)
    return write(result, args)


def _lamp_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="LaMP_1 … LaMP_7 or LaMP_2_news")
    parser.add_argument("--dir", type=Path, metavar="DIR",
                        help="folder with train/, dev/, test/ each holding *_questions.json (+ *_outputs.json)")
    parser.add_argument("--questions", type=Path, metavar="FILE", help="one *_questions.json (instead of --dir)")
    parser.add_argument("--outputs", type=Path, metavar="FILE", help="its *_outputs.json (golds), if any")
    parser.add_argument("--split", default="test", choices=["train", "dev", "val", "test"],
                        help="split of --questions (default test)")
    add_common_arguments(parser)


def _run_lamp(args: argparse.Namespace) -> int:
    from data_pipelines.lamp import find_lamp_files, import_lamp_splits
    from data_pipelines.prepare import prepare

    if (args.dir is None) == (args.questions is None):
        args.parser.error("give either --dir or --questions")
    if args.outputs is not None and args.questions is None:
        args.parser.error("--outputs goes with --questions")
    files = find_lamp_files(args.dir) if args.dir else {args.split: (args.questions, args.outputs)}  # dev = val
    prepare(import_lamp_splits(args.task, files), args.out, seed=args.seed, build_qa=False,  # LaMP has its questions
            overwrite=args.overwrite, inputs=inputs_of(args))
    return 0


def _lamp3_movielens_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="output folder: train/, dev/, test/ *_questions.json + *_outputs.json, summary.json")
    parser.add_argument("--seed", type=int, default=0, help="seed of the user-disjoint split (default 0)")
    parser.add_argument("--profile-size", type=int, default=50, help="profile items per question (default 50)")
    parser.add_argument("--questions-per-user", type=int, default=1, help="rated movies asked per user (default 1)")
    parser.add_argument("--strict", action="store_true", help="stop at the first rating that would be dropped")
    add_overwrite_argument(parser)


def _run_lamp3_movielens(args: argparse.Namespace) -> int:
    import json

    from data_pipelines.lamp_movielens import build_lamp3_from_movielens
    from data_pipelines.movielens import import_movielens
    from user_embed.assets import movielens_100k_dir

    source = movielens_100k_dir(report=print)
    tables = import_movielens(source, strict=args.strict).tables
    summary = build_lamp3_from_movielens(tables["events"], tables["items"], args.out, seed=args.seed,
                                         profile_size=args.profile_size, questions_per_user=args.questions_per_user,
                                         strict=args.strict, overwrite=args.overwrite, inputs=[source])
    print(json.dumps(summary["splits"]))
    print(f"wrote {args.out}")
    return 0


def _uqabench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--files", required=True, nargs="+", type=Path, metavar="ARROW",
                        help="pretrain_data_*.arrow and/or align_data_*.arrow (align files carry the questions)")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"],
                        help="split of files whose name does not say it (*_train, *_eval …); default test")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="output data directory")
    parser.add_argument("--strict", action="store_true", help="stop at the first row that would be dropped")
    add_overwrite_argument(parser)


def _run_uqabench(args: argparse.Namespace) -> int:
    from data_pipelines.prepare import prepare
    from data_pipelines.uqabench import import_uqabench

    result = import_uqabench(args.files, split=args.split, strict=args.strict)
    prepare(result, args.out, build_qa=False, overwrite=args.overwrite,  # align files bring UQABench's own questions
            inputs=inputs_of(args))
    return 0


#: Subcommand name → Source. Add a source by adding an entry.
SOURCES: dict[str, Source] = {
    "movielens-100k": Source(
        "the offline MovieLens-100k copy (RecBole files, fetched once)",
        _movielens_100k_arguments,
        _run_movielens_100k,
    ),
    "movielens": Source(
        "a MovieLens folder: RecBole atomic files, ml-100k, ml-1m/10m (.dat), ml-latest/25m (.csv)",
        _movielens_arguments,
        _run_movielens,
    ),
    "events": Source("any event log (CSV/TSV/parquet) with a column mapping", _events_arguments, _run_events),
    "lamp": Source("LaMP questions/outputs json (tasks 1-7, one file pair or train/dev/test folders)",
                   _lamp_arguments, _run_lamp),
    "uqabench": Source("UQABench Arrow IPC files (Taobao sequences; align files add its 7 sub-task questions)",
                       _uqabench_arguments, _run_uqabench),
    "lamp3-movielens": Source("write a LaMP-3-format rating set (user-disjoint) built from the offline ML-100k",
                              _lamp3_movielens_arguments, _run_lamp3_movielens),
}


def build_parser(command: str = "prepare") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"user-embed {command}",
        description="Import a dataset into the unified parquet schema (events, items, users) and build UserQA.",
    )
    sub = parser.add_subparsers(dest="dataset", metavar="SOURCE", required=True)
    for name, source in SOURCES.items():
        child = sub.add_parser(name, help=source.help, description=source.help)
        source.add_arguments(child)
        child.set_defaults(run=source.run, parser=child)
    return parser


def main(argv: list[str] | None = None, command: str = "prepare") -> int:
    """Parse ``argv`` and run the chosen source; argparse mistakes exit 2 with its one-line message."""
    from data_pipelines.outputs import DATA, LAMP_FILES, check_output_dir

    parser = build_parser(command)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: usage + "error: …" already printed
        return exc.code if isinstance(exc.code, int) else 2
    kind = LAMP_FILES if args.dataset == "lamp3-movielens" else DATA
    check_output_dir(args.out, kind, inputs=inputs_of(args), overwrite=args.overwrite)  # before any input is read
    try:
        return int(args.run(args) or 0)
    except SystemExit as exc:  # args.parser.error(…): its one-line message is already printed
        return exc.code if isinstance(exc.code, int) else 2
