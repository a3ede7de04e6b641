"""Bad input everywhere: every case drives the real CLI in-process and expects a clean refusal.

Each case in :data:`CASES` builds its (bad) files in ``tmp_path`` and returns the command line,
the words the message must name (file, field, row …) and the paths that must not exist
afterwards. The shared check (:func:`assert_refused`) then asserts: exit status 2 (a user
error, not a crash), exactly ONE ``error:`` line on stderr of at most 500 characters that names
what is wrong, no traceback, and no partial output (nor temp files) left; and every file that
existed under the case's folder before the command is still there, byte-identical (a refused
command never deletes or changes the user's files). Issue 15 added the ``output`` (safe output
paths), ``numerics`` (config domains, a loss that turns NaN), ``reader`` (encodings, nesting,
empty files, folders, devices, batch rows) and further ``checkpoint`` cases. Droppable rows are cases too: with
``--strict`` they must be refused naming the row, and :func:`test_droppable_rows_are_counted_by_reason`
checks that without it they are dropped and reported by reason (the documented skip).
The limits (a user with 100,000 events, a 1 MB text field, unknown items, users without
events) are handled, not refused: see the ``test_limit_*`` tests at the end.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch  # noqa: F401  (import before any capsys test: its log handler keeps that stderr)
import polars as pl
import pytest
import torch
import yaml

from conftest import build_tiny_llm, write_tiny_dataset
from data_pipelines.outputs import MARKER_NAME
from user_embed.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEADER = "uid,sku,ts,rating\n"
EVENTS = ["u1,i1,1000,5", "u1,i2,1001,3", "u2,i1,1002,4", "u2,i3,1003,2"]
MAP = ["--user-col", "uid", "--item-col", "sku", "--time-col", "ts"]


# --------------------------------------------------------------------------- shared world


@dataclass
class World:
    """What many cases share: a tiny LLM, a tiny prepared data dir and a (random) embedder trained for them."""

    root: Path
    llm: Path
    data: Path
    embedder: Path
    bert: Path
    wide_llm: Path


def build_embedder(llm: Path, data: Path, out: Path) -> Path:
    """A random K=2 embedder (sequence + profile) for the tiny LLM, saved like a trained one."""
    from user_embed.config import AdapterConfig, LLMConfig, LossConfig, SourceConfig
    from user_embed.training.datamodule import UserDataModule
    from user_embed.training.module import UserEmbedModule

    torch.manual_seed(0)
    module = UserEmbedModule(
        sources=[SourceConfig(kind="sequence", dim=32, layers=1, heads=2, max_len=8),
                 SourceConfig(kind="tabular", dim=16, heads=2)],
        adapter=AdapterConfig(kind="resampler", num_tokens=2, dim=32, layers=1, heads=2, user_dim=16),
        llm=LLMConfig(name_or_path=str(llm)), loss=LossConfig(contrastive_weight=0.0))
    datamodule = UserDataModule(str(data), max_history=8, item_text_vectors=False, contrastive_texts=False)
    datamodule.setup()
    module.build(datamodule.spec)
    return module.embedder.save_pretrained(out)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_llm_dir, tiny_text_encoder_dir) -> World:
    root = tmp_path_factory.mktemp("bad-input-world")
    data = write_tiny_dataset(root / "data")
    wide = build_tiny_llm(root / "wide-llm", hidden=96, heads=3)  # head_dim 32, but hidden 96 ≠ 64
    return World(root, tiny_llm_dir, data, build_embedder(tiny_llm_dir, data, root / "embedder"),
                 tiny_text_encoder_dir, wide)


# --------------------------------------------------------------------------- running and checking


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """``user-embed <argv>`` in-process: (exit status, stdout, stderr); argparse's SystemExit counts as a status."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if re.search(r"\berror:", line)]


def leftovers(path: Path) -> list[Path]:
    """``path`` itself and temp siblings a writer may leave (``.name.tmp…``, ``.name.old-…``)."""
    found = [path] if path.exists() else []
    if path.parent.is_dir():
        found += [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    return found


def assert_refused(code: int, err: str, needles: list[str], outputs: list[Path]) -> None:
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}, expected 2 (user error)\n{err}"
    lines = error_lines(err)
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{err}"
    message = lines[0].split("error: ", 1)[-1]
    assert len(message) <= 500, f"error message of {len(message)} characters: {message[:200]}…"
    for needle in needles:
        assert needle.lower() in lines[0].lower(), f"{needle!r} not named in: {lines[0]}"
    for path in outputs:
        assert not leftovers(path), f"partial output left: {leftovers(path)}"


# --------------------------------------------------------------------------- file helpers


def write_text(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def events_csv(root: Path, rows: list[str] | None = None, header: str = HEADER, name: str = "events.csv") -> Path:
    return write_text(root / name, header + "\n".join(EVENTS if rows is None else rows) + "\n")


def prepare_events(root: Path, events: Path, *extra: str, value: bool = True) -> list[str]:
    return ["prepare", "events", "--events", str(events), *MAP, *(["--value-col", "rating"] if value else []),
            "--no-qa", "--out", str(root / "out"), *extra]


def copy_data(world: World, root: Path, edit: Callable[[dict[str, pl.DataFrame]], None]) -> Path:
    """The world's data dir with ``edit`` applied to its tables, written without validation (may be invalid)."""
    tables = {p.stem: pl.read_parquet(p) for p in world.data.glob("*.parquet")}
    edit(tables)
    folder = root / "data"
    folder.mkdir(parents=True)
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet")
    return folder


def copy_embedder(world: World, root: Path) -> Path:
    folder = root / "embedder"
    folder.mkdir(parents=True)
    for path in world.embedder.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    return folder


def embed(world: World, root: Path, data: Path | None = None, checkpoint: Path | None = None, *extra: str) -> list[str]:
    return ["embed", "--checkpoint", str(checkpoint or world.embedder), "--data", str(data or world.data),
            "--out", str(root / "users.parquet"), *extra]


def fit_config(world: World, root: Path, edit: Callable[[dict], None] | None = None) -> Path:
    """A complete tiny `user-embed fit` YAML (2 steps), optionally edited."""
    config = {
        "seed_everything": 0,
        "trainer": {"max_steps": 2, "accelerator": "cpu", "devices": 1, "logger": False,
                    "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
                    "limit_val_batches": 0, "num_sanity_val_steps": 0, "default_root_dir": str(root / "runs")},
        "model": {"sources": [{"kind": "sequence", "name": "ratings", "dim": 32, "layers": 1, "heads": 2,
                               "max_len": 8}],
                  "adapter": {"kind": "resampler", "num_tokens": 2, "dim": 32, "layers": 1, "heads": 2,
                              "user_dim": 16},
                  "llm": {"name_or_path": str(world.llm)}, "loss": {"contrastive_weight": 0.0},
                  "export_dir": str(root / "runs" / "embedder")},
        "data": {"data_dir": str(world.data), "batch_size": 4, "max_history": 8, "item_text_vectors": False,
                 "contrastive_texts": False},
    }
    if edit:
        edit(config)
    return write_text(root / "fit.yaml", yaml.safe_dump(config, sort_keys=False))


def fit(world: World, root: Path, edit: Callable[[dict], None] | None = None, *extra: str) -> list[str]:
    return ["fit", "--config", str(fit_config(world, root, edit)), *extra]


def generate(world: World, *extra: str) -> list[str]:
    return ["generate", "--checkpoint", str(world.embedder), "--data", str(world.data), "--max-new-tokens", "2", *extra]


# --------------------------------------------------------------------------- the cases

Built = tuple[list[str], list[str], list[Path]]  # argv, words the message must name, paths that must not exist
CASES: dict[str, Callable[[Path, World], Built]] = {}


def case(area: str):
    def register(fn: Callable[[Path, World], Built]):
        CASES[f"{area}/{fn.__name__}"] = fn
        return fn

    return register


# ---- importers: files that cannot be read


@case("importer")
def events_file_missing(root, w):
    return prepare_events(root, root / "nope.csv"), ["nope.csv", "not found"], [root / "out"]


@case("importer")
def empty_file(root, w):
    path = write_text(root / "empty.csv", "")
    return prepare_events(root, path), ["empty.csv", "is empty"], [root / "out"]


@case("importer")
def header_only(root, w):
    path = events_csv(root, rows=[])
    return prepare_events(root, path), ["events.csv", "no usable events"], [root / "out"]


@case("importer")
def binary_garbage(root, w):
    path = root / "events.csv"
    path.write_bytes(bytes(range(256)) * 20)
    return prepare_events(root, path), ["events.csv", "binary"], [root / "out"]


@case("importer")
def gzip_named_csv(root, w):
    import gzip

    path = root / "events.csv"
    path.write_bytes(gzip.compress((HEADER + "\n".join(EVENTS)).encode()))
    return prepare_events(root, path), ["events.csv", "not utf-8"], [root / "out"]


@case("importer")
def utf16_encoding(root, w):
    path = write_text(root / "events.csv", HEADER + "\n".join(EVENTS) + "\n", encoding="utf-16")
    return prepare_events(root, path), ["events.csv", "UTF-16"], [root / "out"]


@case("importer")
def unterminated_quote(root, w):
    path = events_csv(root, rows=EVENTS[:2] + ['u2,i1,1002,"4'])
    return prepare_events(root, path), ["events.csv"], [root / "out"]


@case("importer")
def missing_column(root, w):
    path = events_csv(root)
    argv = prepare_events(root, path)
    argv[argv.index("ts")] = "when"
    return argv, ["events.csv", "'when'"], [root / "out"]


@case("importer")
def wrong_delimiter(root, w):
    path = events_csv(root)
    return prepare_events(root, path, "--delimiter", ";"), ["events.csv", "delimiter"], [root / "out"]


@case("importer")
def time_column_is_text(root, w):
    path = events_csv(root, rows=[r.replace(",10", ",day") for r in EVENTS])
    return prepare_events(root, path), ["events.csv", "'ts'", "not a time"], [root / "out"]


@case("importer")
def value_column_is_text(root, w):
    path = events_csv(root, rows=[r[:-1] + "good" for r in EVENTS])
    return prepare_events(root, path), ["events.csv", "'rating'", "not a number"], [root / "out"]


@case("importer")
def parquet_id_is_nested(root, w):
    path = root / "events.parquet"
    pl.DataFrame({"uid": [[1], [2]], "sku": ["i1", "i2"], "ts": [1000, 1001], "rating": [4.0, 5.0]}).write_parquet(path)
    return prepare_events(root, path), ["events.parquet", "'uid'", "type"], [root / "out"]


@case("importer")
def parquet_truncated(root, w):
    path = root / "events.parquet"
    frame = pl.DataFrame({"uid": ["u1"] * 50, "sku": ["i1"] * 50, "ts": range(1000, 1050), "rating": [4.0] * 50})
    frame.write_parquet(path)
    path.write_bytes(path.read_bytes()[:-40])
    return prepare_events(root, path), ["events.parquet", "cannot read"], [root / "out"]


@case("importer")
def mapping_unknown_key(root, w):
    mapping = write_text(root / "map.yaml", "user_col: uid\nitem_col: sku\ntime_col: ts\nrating_col: rating\n")
    argv = ["prepare", "events", "--events", str(events_csv(root)), "--mapping", str(mapping), "--no-qa",
            "--out", str(root / "out")]
    return argv, ["map.yaml", "rating_col"], [root / "out"]


@case("importer")
def mapping_not_yaml(root, w):
    mapping = write_text(root / "map.yaml", "user_col: [uid\n")
    argv = ["prepare", "events", "--events", str(events_csv(root)), "--mapping", str(mapping), "--no-qa",
            "--out", str(root / "out")]
    return argv, ["map.yaml", "YAML"], [root / "out"]


@case("importer")
def out_is_a_file(root, w):
    out = write_text(root / "out", "not a folder")
    argv = prepare_events(root, events_csv(root))
    return argv, [str(out), "not a directory"], []


@case("importer")
def movielens_folder_missing(root, w):
    return ["prepare", "movielens", "--path", str(root / "ml"), "--out", str(root / "out")], ["ml", "not found"], \
        [root / "out"]


@case("importer")
def movielens_no_files(root, w):
    write_text(root / "ml" / "readme.txt", "hello")
    return ["prepare", "movielens", "--path", str(root / "ml"), "--out", str(root / "out")], \
        ["ml", "no MovieLens files"], [root / "out"]


@case("importer")
def movielens_item_file_wrong_fields(root, w):
    write_text(root / "ml" / "u.data", "1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
    write_text(root / "ml" / "u.item", "10|Toy Story (1995)|01-Jan-1995||http://x|0|1\n")
    return ["prepare", "movielens", "--path", str(root / "ml"), "--no-qa", "--out", str(root / "out")], \
        ["u.item", "24 fields"], [root / "out"]


# ---- importers: rows that would be dropped, refused with --strict (naming file and row)


def strict_case(rows: list[str], needles: list[str], header: str = HEADER):
    def build(root, w):
        path = events_csv(root, rows=rows, header=header)
        return prepare_events(root, path, "--strict"), ["events.csv", *needles], [root / "out"]

    return build


STRICT_ROWS = {
    "nan_rating": (EVENTS[:2] + ["u2,i1,1002,nan"], ["row 2", "value not finite"]),
    "inf_rating": (EVENTS[:3] + ["u2,i3,1003,inf"], ["row 3", "value not finite"]),
    "missing_rating": (EVENTS[:1] + ["u1,i2,1001,"] + EVENTS[2:], ["row 1", "missing value"]),
    "nan_timestamp": (EVENTS[:1] + ["u1,i2,nan,3"] + EVENTS[2:], ["row 1", "timestamp not a number"]),
    "inf_timestamp": (EVENTS[:2] + ["u2,i1,inf,4"], ["row 2", "timestamp not a number"]),
    "negative_timestamp": (EVENTS[:1] + ["u1,i2,-86400,3"] + EVENTS[2:], ["row 1", "before 1970"]),
    "future_timestamp": (EVENTS[:3] + ["u2,i3,4102444800,2"], ["row 3", "future"]),
    "duplicate_event": (EVENTS + [EVENTS[1]], ["row 4", "duplicate event"]),
    "missing_user_id": (EVENTS[:2] + [",i1,1002,4"], ["row 2", "missing user id"]),
    "truncated_last_row": (EVENTS[:3] + ["u2,i3,10"], ["row 3", "missing value"]),
}
for _name, (_rows, _needles) in STRICT_ROWS.items():
    CASES[f"strict/{_name}"] = strict_case(_rows, _needles)


@case("strict")
def duplicate_user_ids(root, w):
    users = write_text(root / "users.csv", "uid,age\nu1,30\nu2,40\nu1,31\n")
    argv = prepare_events(root, events_csv(root), "--users", str(users), "--strict")
    return argv, ["users.csv", "row 2", "duplicate user id"], [root / "out"]


@case("strict")
def empty_user_in_users_file(root, w):
    users = write_text(root / "users.csv", "uid,age\nu1,30\nu2,40\nu9,50\n")
    argv = prepare_events(root, events_csv(root), "--users", str(users), "--strict")
    return argv, ["users.csv", "row 2", "no events"], [root / "out"]


@case("strict")
def duplicate_item_ids(root, w):
    items = write_text(root / "items.csv", "sku,name\ni1,A\ni2,B\ni3,C\ni2,B again\n")
    argv = prepare_events(root, events_csv(root), "--items", str(items), "--strict")
    return argv, ["items.csv", "row 3", "duplicate item id"], [root / "out"]


@case("strict")
def event_item_not_in_items_file(root, w):
    items = write_text(root / "items.csv", "sku,name\ni1,A\ni2,B\n")
    argv = prepare_events(root, events_csv(root), "--items", str(items), "--strict")
    return argv, ["events.csv", "row 3", "not in the items table"], [root / "out"]


@case("strict")
def movielens_rating_out_of_range(root, w):
    write_text(root / "ml" / "u.data", "1\t10\t5\t881250949\n1\t20\t7\t881250950\n2\t10\t3\t881250951\n")
    return ["prepare", "movielens", "--path", str(root / "ml"), "--no-qa", "--strict", "--out", str(root / "out")], \
        ["u.data", "row 1", "outside [0.5, 5]"], [root / "out"]


# ---- the unified tables (a data dir read by embed / evaluate)


@case("schema")
def table_missing(root, w):
    data = copy_data(w, root, lambda t: t.pop("items"))
    return embed(w, root, data), ["items.parquet", "missing table"], [root / "users.parquet"]


@case("schema")
def table_corrupt(root, w):
    data = copy_data(w, root, lambda t: None)
    (data / "events.parquet").write_bytes(b"PAR1 this is not parquet")
    return embed(w, root, data), ["events.parquet", "cannot read"], [root / "users.parquet"]


@case("schema")
def column_mistyped(root, w):
    data = copy_data(w, root, lambda t: t.update(events=t["events"].with_columns(pl.col("timestamp").cast(pl.Utf8))))
    return embed(w, root, data), ["events.parquet", "'timestamp'", "Int64"], [root / "users.parquet"]


@case("schema")
def column_missing(root, w):
    data = copy_data(w, root, lambda t: t.update(events=t["events"].drop("source")))
    return embed(w, root, data), ["events.parquet", "'source'", "missing column"], [root / "users.parquet"]


@case("schema")
def null_id(root, w):
    def edit(t):
        t["events"] = t["events"].with_columns(
            pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("user_id")).alias("user_id"))

    data = copy_data(w, root, edit)
    return embed(w, root, data), ["events.parquet", "'user_id'", "row 5"], [root / "users.parquet"]


@case("schema")
def duplicate_user_in_users_table(root, w):
    data = copy_data(w, root, lambda t: t.update(users=pl.concat([t["users"], t["users"].head(1)])))
    return embed(w, root, data), ["users.parquet", "duplicate id 'u0'"], [root / "users.parquet"]


@case("schema")
def qa_split_unknown(root, w):
    data = copy_data(w, root, lambda t: t.update(qa=t["qa"].with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("training")).otherwise(pl.col("split")).alias("split"))))
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(data), "--out", str(root / "eval")]
    return argv, ["qa.parquet", "'split'", "row 3", "'training'"], [root / "eval"]


@case("schema")
def qa_answer_not_an_option(root, w):
    data = copy_data(w, root, lambda t: t.update(qa=t["qa"].with_columns(
        pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("western")).otherwise(pl.col("answer")).alias("answer"))))
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(data), "--out", str(root / "eval")]
    return argv, ["qa.parquet", "row 2", "'western'"], [root / "eval"]


@case("schema")
def data_dir_missing(root, w):
    return embed(w, root, root / "nowhere"), ["nowhere", "events"], [root / "users.parquet"]


# ---- configs (`user-embed fit --config`)


@case("config")
def yaml_syntax_error(root, w):
    path = write_text(root / "broken.yaml", "trainer:\n  max_steps: [2\n")
    return ["fit", "--config", str(path)], ["broken.yaml", "line 2"], [root / "runs"]


@case("config")
def config_file_missing(root, w):
    return ["fit", "--config", str(root / "nope.yaml")], ["nope.yaml", "does not exist"], [root / "runs"]


@case("config")
def unknown_key(root, w):
    return fit(w, root, lambda c: c["model"]["adapter"].update(num_tokenz=4)), ["model.adapter", "num_tokenz"], \
        [root / "runs"]


@case("config")
def zero_soft_tokens(root, w):
    return fit(w, root, lambda c: c["model"]["adapter"].update(num_tokens=0)), ["adapter.num_tokens", "> 0"], \
        [root / "runs"]


@case("config")
def dim_not_divisible_by_heads(root, w):
    return fit(w, root, lambda c: c["model"]["sources"][0].update(dim=33)), ["ratings", "33", "heads"], \
        [root / "runs"]


@case("config")
def unknown_truncation_policy(root, w):
    return fit(w, root, lambda c: c["model"]["sources"][0].update(truncation="oldest")), ["truncation", "'oldest'"], \
        [root / "runs"]


@case("config")
def mistyped_value(root, w):
    return fit(w, root, lambda c: c["model"]["adapter"].update(dim="wide")), ["model.adapter", "dim"], [root / "runs"]


@case("config")
def pplug_adapter_with_eight_tokens(root, w):
    return fit(w, root, lambda c: c["model"]["adapter"].update(kind="pplug", num_tokens=8)), \
        ["pplug", "num_tokens: 2"], [root / "runs"]


@case("config")
def unknown_soft_position(root, w):
    return fit(w, root, lambda c: c["model"]["llm"].update(soft_position="middle")), \
        ["llm.soft_position", "'middle'"], [root / "runs"]


@case("config")
def category_pointer_on_an_mlp_adapter(root, w):
    return fit(w, root, lambda c: c["model"]["adapter"].update(kind="mlp", category_pointer=True)), \
        ["category_pointer", "resampler"], [root / "runs"]


@case("config")
def negative_alignment_steps(root, w):
    return fit(w, root, lambda c: c["model"].update(optim={"alignment_steps": -5})), \
        ["optim.alignment_steps", ">= 0"], [root / "runs"]


@case("config")
def alignment_phase_without_multiple_choice_questions(root, w):
    def free_text(tables):
        tables["qa"] = tables["qa"].with_columns(pl.lit([], dtype=pl.List(pl.Utf8)).alias("options"))

    data = copy_data(w, root, free_text)

    def edit(c):
        c["model"].update(optim={"alignment_steps": 2})
        c["data"]["data_dir"] = str(data)

    return fit(w, root, edit), ["optim.alignment_steps", "multiple-choice"], [root / "runs" / "embedder"]


@case("config")
def data_dir_does_not_exist(root, w):
    return fit(w, root, lambda c: c["data"].update(data_dir=str(root / "nowhere"))), ["data.data_dir", "nowhere"], \
        [root / "runs" / "embedder"]


@case("config")
def batch_size_zero(root, w):
    return fit(w, root, lambda c: c["data"].update(batch_size=0)), ["data.batch_size"], [root / "runs"]


@case("config")
def validation_interval_longer_than_an_epoch(root, w):
    return fit(w, root, lambda c: c["trainer"].update(val_check_interval=10_000, limit_val_batches=1)), \
        ["trainer", "val_check_interval", "check_val_every_n_epoch"], [root / "runs" / "embedder"]


@case("config")
def unknown_task(root, w):
    return fit(w, root, lambda c: c["data"].update(tasks=["favourite_colour"])), ["data.tasks", "favourite_colour"], \
        [root / "runs" / "embedder"]


@case("config")
def llm_is_not_a_causal_lm(root, w):
    return fit(w, root, lambda c: c["model"]["llm"].update(name_or_path=str(w.bert))), ["bert", "not a causal LM"], \
        [root / "runs" / "embedder"]


@case("config")
def llm_folder_missing(root, w):
    return fit(w, root, lambda c: c["model"]["llm"].update(name_or_path=str(root / "no-llm"))), \
        ["no-llm", "does not exist"], [root / "runs" / "embedder"]


# ---- CLI flags


@case("flags")
def unknown_command(root, w):
    return ["trian", "--config", "x.yaml"], ["unknown command", "trian"], []


@case("flags")
def mistyped_number_flag(root, w):
    return fit(w, root, None, "--trainer.max_steps", "many"), ["trainer.max_steps", "many"], [root / "runs"]


@case("flags")
def required_flag_missing(root, w):
    return ["embed", "--data", str(w.data), "--out", str(root / "users.parquet")], ["--checkpoint", "required"], \
        [root / "users.parquet"]


@case("flags")
def unknown_method(root, w):
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(w.data), "--methods", "soft,psychic",
            "--out", str(root / "eval")]
    return argv, ["--methods", "psychic"], [root / "eval"]


@case("flags")
def batch_size_flag_zero(root, w):
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(w.data), "--batch-size", "0",
            "--out", str(root / "eval")]
    return argv, ["--batch-size", "> 0"], [root / "eval"]


@case("flags")
def unknown_user_ids(root, w):
    return embed(w, root, None, None, "--users", "u1,nobody"), ["--users", "nobody"], [root / "users.parquet"]


@case("flags")
def out_is_a_folder(root, w):
    (root / "users.parquet").mkdir()
    return embed(w, root), ["--out", "users.parquet", "folder"], []


@case("flags")
def score_unknown_task(root, w):
    golds = write_text(root / "golds.json", json.dumps({"task": "LaMP_9", "golds": [{"id": "1", "output": "x"}]}))
    return ["score", "lamp", "--task", "LaMP_9", "--golds", str(golds), "--preds", str(golds)], ["LaMP_9"], []


# ---- checkpoints


@case("checkpoint")
def embedder_folder_missing(root, w):
    return embed(w, root, None, root / "no-embedder"), ["no-embedder", "not a user embedder"], [root / "users.parquet"]


@case("checkpoint")
def embedder_config_not_json(root, w):
    folder = copy_embedder(w, root)
    (folder / "config.json").write_text('{"sources": [')
    return embed(w, root, None, folder), ["config.json", "invalid embedder config"], [root / "users.parquet"]


@case("checkpoint")
def embedder_config_missing_key(root, w):
    folder = copy_embedder(w, root)
    config = json.loads((folder / "config.json").read_text())
    del config["llm"]["hidden_size"]
    (folder / "config.json").write_text(json.dumps(config))
    return embed(w, root, None, folder), ["config.json", "hidden_size"], [root / "users.parquet"]


@case("checkpoint")
def weights_are_a_pickle(root, w):
    folder = copy_embedder(w, root)
    torch.save({"adapter.weight": torch.zeros(2)}, folder / "model.safetensors")  # a pickle under the safe name
    return embed(w, root, None, folder), ["model.safetensors", "safetensors"], [root / "users.parquet"]


@case("checkpoint")
def weights_truncated(root, w):
    folder = copy_embedder(w, root)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return embed(w, root, None, folder), ["model.safetensors", "safetensors"], [root / "users.parquet"]


@case("checkpoint")
def weights_wrong_dimensions(root, w):
    folder = copy_embedder(w, root)
    config = json.loads((folder / "config.json").read_text())
    config["sources"][0]["dim"] = 64
    (folder / "config.json").write_text(json.dumps(config))
    return embed(w, root, None, folder), ["model.safetensors", "do not match"], [root / "users.parquet"]


@case("checkpoint")
def embedder_for_a_wider_llm(root, w):
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(w.data), "--llm", str(w.wide_llm),
            "--out", str(root / "eval")]
    return argv, ["hidden size", "96"], [root / "eval"]


@case("checkpoint")
def ckpt_path_missing(root, w):
    return fit(w, root, None, "--ckpt_path", str(root / "last.ckpt")), ["last.ckpt", "no such checkpoint"], \
        [root / "runs"]


@case("checkpoint")
def ckpt_path_not_a_checkpoint(root, w):
    bad = write_text(root / "last.ckpt", "definitely not a torch file")
    return fit(w, root, None, "--ckpt_path", str(bad)), ["last.ckpt", "weights-only"], [root / "runs"]


class Exploit:
    """Unpickling this runs code: a weights-only loader must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@case("checkpoint")
def ckpt_path_executes_code(root, w):
    marker = root / "pwned"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": Exploit(marker)}}, root / "evil.ckpt")
    return fit(w, root, None, "--ckpt_path", str(root / "evil.ckpt")), ["evil.ckpt", "weights-only"], \
        [root / "runs", marker]


# ---- generation


@case("generate")
def unknown_user(root, w):
    return generate(w, "--user", "nobody", "--question", "which genre ?"), ["unknown user 'nobody'"], []


@case("generate")
def empty_question(root, w):
    return generate(w, "--user", "u1", "--question", "   "), ["--question", "empty"], []


@case("generate")
def input_file_missing(root, w):
    return generate(w, "--input", str(root / "rows.jsonl"), "--output", str(root / "answers.jsonl")), \
        ["rows.jsonl", "no such file"], [root / "answers.jsonl"]


@case("generate")
def input_parquet_missing_column(root, w):
    pl.DataFrame({"user_id": ["u1"], "prompt": ["which genre ?"]}).write_parquet(root / "rows.parquet")
    return generate(w, "--input", str(root / "rows.parquet"), "--output", str(root / "answers.jsonl")), \
        ["rows.parquet", "question"], [root / "answers.jsonl"]


@case("generate")
def zero_new_tokens(root, w):
    return generate(w, "--user", "u1", "--question", "which genre ?", "--max-new-tokens", "0"), \
        ["max_new_tokens", "> 0"], []


@case("generate")
def negative_temperature(root, w):
    return generate(w, "--user", "u1", "--question", "which genre ?", "--temperature", "-1"), \
        ["temperature", ">= 0"], []


@case("generate")
def llm_not_a_causal_lm(root, w):
    return generate(w, "--user", "u1", "--question", "which genre ?", "--llm", str(w.bert)), \
        ["not a causal LM"], []


@case("generate")
def llm_of_other_width(root, w):
    return generate(w, "--user", "u1", "--question", "which genre ?", "--llm", str(w.wide_llm)), \
        ["hidden size", "96"], []


# ---- outputs: never replace an input or files the command did not write (issue 15)


def unrelated_folder(path: Path) -> Path:
    """A folder holding the user's own files (a refused command must leave them byte-identical)."""
    write_text(path / "notes.txt", "my own notes\n")
    write_text(path / "sub" / "data.csv", "a,b\n1,2\n")
    return path


def pretrain_config(world: World, root: Path, **model: object) -> Path:
    config = {"trainer": {"max_epochs": 1, "accelerator": "cpu", "enable_progress_bar": False,
                          "enable_model_summary": False},
              "model": {"encoder": {"kind": "gru4rec", "name": "sequence", "dim": 16, "layers": 1, "heads": 2,
                                    "max_len": 5}, "output_dir": str(root / "encoder"), **model},
              "data": {"data_dir": str(world.data), "batch_size": 8}}
    return write_text(root / "pretrain.yaml", yaml.safe_dump(config, sort_keys=False))


@case("output")
def prepare_into_a_folder_of_unrelated_files(root, w):
    unrelated_folder(root / "out")
    return prepare_events(root, events_csv(root)), ["out", "not an output of", "--overwrite"], []


@case("output")
def prepare_out_holds_the_input(root, w):
    events = events_csv(root / "mine")
    argv = prepare_events(root, events)
    argv[argv.index("--out") + 1] = str(root / "mine")
    return argv, ["mine", "contains the input", "events.csv"], []


@case("output")
def prepare_out_is_the_input_file(root, w):
    events = events_csv(root)
    argv = prepare_events(root, events)
    argv[argv.index("--out") + 1] = str(events)
    return argv, ["events.csv", "is the input"], []


@case("output")
def prepare_out_inside_the_input_folder(root, w):
    write_text(root / "ml" / "u.data", "1\t10\t5\t881250949\n2\t10\t3\t881250950\n")
    return ["prepare", "movielens", "--path", str(root / "ml"), "--no-qa", "--out", str(root / "ml" / "out")], \
        ["lies inside the input folder", "ml"], [root / "ml" / "out"]


@case("output")
def prepare_into_another_commands_output(root, w):
    write_text(root / "out" / "metrics.json", "{}")
    write_text(root / "out" / MARKER_NAME, json.dumps({"kind": "evaluation", "written_by": "user-embed evaluate",
                                                       "files": ["metrics.json"]}))
    return prepare_events(root, events_csv(root)), ["out", "user-embed evaluate", "--overwrite"], []


@case("output")
def prepare_out_below_a_file(root, w):
    write_text(root / "taken", "a file")
    argv = prepare_events(root, events_csv(root))
    argv[argv.index("--out") + 1] = str(root / "taken" / "out")
    return argv, ["taken", "not a directory"], []


@case("output")
def prepare_lamp3_movielens_into_unrelated_files(root, w):
    unrelated_folder(root / "lamp")  # refused before MovieLens is even looked up
    return ["prepare", "lamp3-movielens", "--out", str(root / "lamp")], ["lamp", "--overwrite"], []


@case("output")
def evaluate_out_is_an_existing_file(root, w):
    write_text(root / "report.txt", "my report, not a folder")
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(w.data), "--out", str(root / "report.txt")]
    return argv, ["report.txt", "not a directory"], []


@case("output")
def evaluate_into_a_folder_of_unrelated_files(root, w):
    unrelated_folder(root / "eval")
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(w.data), "--out", str(root / "eval")]
    return argv, ["eval", "user-embed evaluate", "--overwrite"], []


@case("output")
def evaluate_out_is_the_checkpoint(root, w):
    folder = copy_embedder(w, root)
    argv = ["evaluate", "--checkpoint", str(folder), "--data", str(w.data), "--out", str(folder)]
    return argv, ["embedder", "is the input"], []


@case("output")
def evaluate_out_holds_the_data(root, w):
    data = copy_data(w, root, lambda t: None)
    argv = ["evaluate", "--checkpoint", str(w.embedder), "--data", str(data), "--out", str(root)]
    return argv, ["contains the input", "data"], []


@case("output")
def embed_out_is_an_unrelated_file(root, w):
    write_text(root / "users.parquet", "my spreadsheet, not an embedding file")
    return embed(w, root), ["users.parquet", "user-embed embed", "--overwrite"], []


@case("output")
def embed_out_is_an_unrelated_parquet(root, w):
    pl.DataFrame({"user_id": ["u1"], "salary": [1]}).write_parquet(root / "users.parquet")
    return embed(w, root), ["users.parquet", "not an earlier output"], []


@case("output")
def embed_out_inside_the_data_folder(root, w):
    data = copy_data(w, root, lambda t: None)
    argv = embed(w, root, data)
    argv[argv.index("--out") + 1] = str(data / "events.parquet")
    return argv, ["events.parquet", "lies inside the input folder"], []


@case("output")
def embed_out_below_a_file(root, w):
    write_text(root / "taken", "a file")
    argv = embed(w, root)
    argv[argv.index("--out") + 1] = str(root / "taken" / "users.parquet")
    return argv, ["taken", "not a directory"], []


@case("output")
def generate_output_is_the_input(root, w):
    rows = write_text(root / "rows.jsonl", json.dumps({"user_id": "u1", "question": "which genre ?"}) + "\n")
    return generate(w, "--input", str(rows), "--output", str(rows)), ["--output", "rows.jsonl", "is the input"], []


@case("output")
def generate_output_is_an_unrelated_file(root, w):
    rows = write_text(root / "rows.jsonl", json.dumps({"user_id": "u1", "question": "which genre ?"}) + "\n")
    write_text(root / "answers.jsonl", '{"my": "own log"}\n')
    return generate(w, "--input", str(rows), "--output", str(root / "answers.jsonl")), \
        ["answers.jsonl", "user-embed generate", "--overwrite"], []


@case("output")
def generate_output_is_a_folder(root, w):
    rows = write_text(root / "rows.jsonl", json.dumps({"user_id": "u1", "question": "which genre ?"}) + "\n")
    (root / "answers").mkdir()
    return generate(w, "--input", str(rows), "--output", str(root / "answers")), ["--output", "is a folder"], []


@case("output")
def fit_export_dir_holds_unrelated_files(root, w):
    unrelated_folder(root / "export")
    return fit(w, root, lambda c: c["model"].update(export_dir=str(root / "export"))), \
        ["model.export_dir", "export", "--overwrite"], [root / "runs"]


@case("output")
def fit_export_dir_is_the_data_dir(root, w):
    data = copy_data(w, root, lambda t: None)

    def edit(c):
        c["data"]["data_dir"] = str(data)
        c["model"]["export_dir"] = str(data)

    return fit(w, root, edit), ["model.export_dir", "is the input"], [root / "runs"]


@case("output")
def fit_export_dir_is_a_file(root, w):
    write_text(root / "export", "a file")
    return fit(w, root, lambda c: c["model"].update(export_dir=str(root / "export"))), \
        ["export", "not a directory"], [root / "runs"]


@case("output")
def pretrain_output_dir_holds_unrelated_files(root, w):
    unrelated_folder(root / "encoder")
    return ["pretrain", "--config", str(pretrain_config(w, root))], ["model.output_dir", "--overwrite"], []


# ---- numerics: every config value inside its domain, before training starts


def numeric_case(edit: Callable[[dict], None], needles: list[str]):
    def build(root, w):
        return fit(w, root, edit), needles, [root / "runs"]

    return build


NUMERIC = {
    "nan_learning_rate": (lambda c: c["model"].update(optim={"lr": float("nan")}), ["optim.lr", "nan"]),
    "inf_learning_rate": (lambda c: c["model"].update(optim={"lr": float("inf")}), ["optim.lr", "inf"]),
    "negative_learning_rate": (lambda c: c["model"].update(optim={"lr": -0.01}), ["optim.lr", "-0.01", "> 0"]),
    "zero_lora_learning_rate": (lambda c: c["model"].update(optim={"lora_lr": 0.0}), ["optim.lora_lr", "> 0"]),
    "negative_min_lr_ratio": (lambda c: c["model"].update(optim={"min_lr_ratio": -0.5}),
                              ["optim.min_lr_ratio", "-0.5", "[0, 1]"]),
    "min_lr_ratio_above_one": (lambda c: c["model"].update(optim={"min_lr_ratio": 1.5}), ["optim.min_lr_ratio", "1.5"]),
    "negative_weight_decay": (lambda c: c["model"].update(optim={"weight_decay": -0.1}),
                              ["optim.weight_decay", "-0.1", ">= 0"]),
    "nan_alignment_lr": (lambda c: c["model"].update(optim={"alignment_lr": float("nan")}), ["optim.alignment_lr"]),
    "source_dropout_of_five": (lambda c: c["model"]["sources"][0].update(dropout=5), ["ratings", "dropout", "5"]),
    "adapter_dropout_of_one": (lambda c: c["model"]["adapter"].update(dropout=1.0), ["adapter.dropout", "[0, 1)"]),
    "negative_lora_dropout": (lambda c: c["model"]["llm"].update(lora_dropout=-0.1), ["llm.lora_dropout", "-0.1"]),
    "nan_contrastive_weight": (lambda c: c["model"]["loss"].update(contrastive_weight=float("nan")),
                               ["loss.contrastive_weight", "nan"]),
    "zero_temperature": (lambda c: c["model"]["loss"].update(init_temperature=0.0), ["loss.init_temperature", "> 0"]),
    "negative_max_steps": (lambda c: c["trainer"].update(max_steps=-5), ["trainer.max_steps", "-5", "-1"]),
    "negative_max_epochs": (lambda c: c["trainer"].update(max_epochs=-3), ["trainer.max_epochs", "-3"]),
    "zero_gradient_accumulation": (lambda c: c["trainer"].update(accumulate_grad_batches=0),
                                   ["trainer.accumulate_grad_batches", "0"]),
    "negative_gradient_clip": (lambda c: c["trainer"].update(gradient_clip_val=-1.0), ["trainer.gradient_clip_val"]),
    "negative_train_batch_limit": (lambda c: c["trainer"].update(limit_train_batches=-1),
                                   ["trainer.limit_train_batches", "-1"]),
    "train_fraction_above_one": (lambda c: c["trainer"].update(limit_train_batches=1.5),
                                 ["trainer.limit_train_batches", "1.5"]),
    "negative_workers": (lambda c: c["data"].update(num_workers=-2), ["data.num_workers", "-2"]),
    "zero_eval_batch_size": (lambda c: c["data"].update(eval_batch_size=0), ["data.eval_batch_size", "> 0"]),
}
for _name, (_edit, _needles) in NUMERIC.items():
    CASES[f"numerics/{_name}"] = numeric_case(_edit, _needles)


@case("numerics")
def pretrain_nan_learning_rate(root, w):
    return ["pretrain", "--config", str(pretrain_config(w, root, lr=float("nan")))], ["model.lr", "nan"], \
        [root / "encoder"]


@case("numerics")
def pretrain_negative_weight_decay(root, w):
    return ["pretrain", "--config", str(pretrain_config(w, root, weight_decay=-1.0))], ["model.weight_decay", "-1"], \
        [root / "encoder"]


@case("numerics")
def pretrain_negative_max_steps(root, w):
    config = pretrain_config(w, root)
    return ["pretrain", "--config", str(config), "--trainer.max_steps", "-7"], ["trainer.max_steps", "-7"], \
        [root / "encoder"]


@case("numerics")
def loss_turns_nan_mid_run(root, w):
    """A learning rate of 1e30 is finite and > 0 (so accepted), but the first update blows the weights up:
    the next loss is not finite, the fit stops there and nothing is exported."""
    def edit(c):
        c["trainer"]["max_steps"] = 4
        c["model"]["optim"] = {"lr": 1e30, "warmup_steps": 0, "min_lr_ratio": 1.0}

    return fit(w, root, edit), ["training stopped at step", "nothing was exported"], [root / "runs" / "embedder"]


# ---- embedder checkpoints: config.json field by field, weights finite


def edit_embedder_config(w: World, root: Path, edit: Callable[[dict], None]) -> Path:
    folder = copy_embedder(w, root)
    config = json.loads((folder / "config.json").read_text())
    edit(config)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


CONFIG_EDITS = {
    "absurd_source_dim": (lambda c: c["sources"][0].update(dim=10**15), ["sources[0].dim", "1000000000000000"]),
    "absurd_llm_width": (lambda c: c["llm"].update(hidden_size=10**12), ["llm.hidden_size", "1000000000000"]),
    "absurd_soft_tokens": (lambda c: c["adapter"].update(num_tokens=10**9), ["adapter.num_tokens", "1000000000"]),
    "soft_tokens_as_text": (lambda c: c["adapter"].update(num_tokens="eight"), ["adapter.num_tokens", "eight"]),
    "source_dim_as_float": (lambda c: c["sources"][0].update(dim=32.5), ["sources[0].dim", "32.5"]),
    "sources_not_a_list": (lambda c: c.update(sources={"kind": "sequence"}), ["sources", "list"]),
    "item_ids_not_text": (lambda c: c["spec"].update(item_ids=[1, 2, 3]), ["spec.item_ids"]),
    "embed_rms_not_finite": (lambda c: c["llm"].update(embed_rms=float("nan")), ["llm.embed_rms", "nan"]),
    "unknown_adapter_key": (lambda c: c["adapter"].update(num_tokenz=4), ["adapter", "num_tokenz"]),
    "boolean_as_text": (lambda c: c["adapter"].update(instruction_aware="yes"), ["adapter.instruction_aware"]),
}


def embedder_config_case(edit: Callable[[dict], None], needles: list[str]):
    def build(root, w):
        return embed(w, root, None, edit_embedder_config(w, root, edit)), ["config.json", *needles], \
            [root / "users.parquet"]

    return build


for _name, (_edit, _needles) in CONFIG_EDITS.items():
    CASES[f"checkpoint/{_name}"] = embedder_config_case(_edit, _needles)


@case("checkpoint")
def embedder_config_not_utf8(root, w):
    folder = copy_embedder(w, root)
    (folder / "config.json").write_bytes(b'{"sources": "\xff\xfe caf\xe9"}')
    return embed(w, root, None, folder), ["config.json", "not UTF-8", "line 1"], [root / "users.parquet"]


@case("checkpoint")
def embedder_config_nested_deep(root, w):
    folder = copy_embedder(w, root)
    (folder / "config.json").write_text("[" * 100_000 + "]" * 100_000)
    return embed(w, root, None, folder), ["config.json", "nests JSON"], [root / "users.parquet"]


@case("checkpoint")
def embedder_config_empty(root, w):
    folder = copy_embedder(w, root)
    (folder / "config.json").write_text("")
    return embed(w, root, None, folder), ["config.json", "is empty"], [root / "users.parquet"]


@case("checkpoint")
def embedder_config_is_a_list(root, w):
    folder = copy_embedder(w, root)
    (folder / "config.json").write_text("[1, 2]")
    return embed(w, root, None, folder), ["config.json", "top level", "object"], [root / "users.parquet"]


@case("checkpoint")
def embedder_config_is_a_folder(root, w):
    folder = copy_embedder(w, root)
    (folder / "config.json").unlink()
    (folder / "config.json").mkdir()
    return embed(w, root, None, folder), ["config.json", "is a folder"], [root / "users.parquet"]


@case("checkpoint")
def weights_hold_nan(root, w):
    from safetensors.torch import load_file, save_file

    folder = copy_embedder(w, root)
    state = load_file(str(folder / "model.safetensors"))
    name = sorted(k for k, v in state.items() if v.is_floating_point())[0]
    state[name] = state[name].clone().fill_(float("nan"))
    save_file(state, str(folder / "model.safetensors"))
    return embed(w, root, None, folder), ["model.safetensors", name, "NaN/inf"], [root / "users.parquet"]


@case("checkpoint")
def ckpt_path_is_a_folder(root, w):
    (root / "last.ckpt").mkdir()
    return fit(w, root, None, "--ckpt_path", str(root / "last.ckpt")), ["last.ckpt", "is a folder"], \
        [root / "runs" / "embedder"]


# ---- readers: encodings, nesting, empty files, folders, corrupt files


def rows_file(root: Path, lines: list[str], name: str = "rows.jsonl") -> Path:
    return write_text(root / name, "\n".join(lines) + "\n")


def batch(w: World, root: Path, rows: Path, *extra: str) -> list[str]:
    return generate(w, "--input", str(rows), "--output", str(root / "answers.jsonl"), *extra)


@case("reader")
def generate_input_not_utf8(root, w):
    path = root / "rows.jsonl"
    path.write_bytes(json.dumps({"user_id": "u1", "question": "ok ?"}).encode() + b'\n{"user_id": "u2", '
                     b'"question": "caf\xe9 ?"}\n')
    return batch(w, root, path), ["rows.jsonl", "not UTF-8", "line 2"], [root / "answers.jsonl"]


@case("reader")
def generate_input_empty(root, w):
    return batch(w, root, write_text(root / "rows.jsonl", "")), ["rows.jsonl", "is empty"], [root / "answers.jsonl"]


@case("reader")
def generate_input_is_a_folder(root, w):
    (root / "rows.jsonl").mkdir()
    return batch(w, root, root / "rows.jsonl"), ["rows.jsonl", "is a folder"], [root / "answers.jsonl"]


@case("reader")
def generate_rows_nested_deep(root, w):
    deep = '{"user_id": "u1", "question": ' + "[" * 5000 + "]" * 5000 + "}"
    return batch(w, root, rows_file(root, [deep, deep])), ["rows.jsonl", "no usable row", "nests JSON"], \
        [root / "answers.jsonl"]


@case("reader")
def generate_rows_with_wrong_field_names(root, w):
    rows = rows_file(root, [json.dumps({"uid": "u1", "prompt": "which genre ?"})] * 3)
    return batch(w, root, rows), ["rows.jsonl", "no usable row", "user_id"], [root / "answers.jsonl"]


@case("reader")
def generate_question_is_an_object(root, w):
    rows = rows_file(root, [json.dumps({"user_id": "u1", "question": {"text": "which genre ?"}})] * 2)
    return batch(w, root, rows), ["rows.jsonl:1", "'question' must be text", "dict"], [root / "answers.jsonl"]


@case("reader")
def generate_user_id_is_a_list(root, w):
    rows = rows_file(root, [json.dumps({"user_id": ["u1"], "question": "which genre ?"})])
    return batch(w, root, rows), ["rows.jsonl:1", "'user_id'", "list"], [root / "answers.jsonl"]


@case("reader")
def generate_rows_are_not_objects(root, w):
    return batch(w, root, rows_file(root, ["[1, 2]", '"text"', "42"])), ["no usable row", "JSON list"], \
        [root / "answers.jsonl"]


@case("reader")
def generate_parquet_question_is_a_struct(root, w):
    pl.DataFrame({"user_id": ["u1"], "question": [{"text": "which genre ?"}]}).write_parquet(root / "rows.parquet")
    return batch(w, root, root / "rows.parquet"), ["rows.parquet", "'question'", "struct"], [root / "answers.jsonl"]


@case("reader")
def generate_parquet_corrupt(root, w):
    (root / "rows.parquet").write_bytes(b"PAR1 not really parquet PAR1")
    return batch(w, root, root / "rows.parquet"), ["rows.parquet", "cannot read"], [root / "answers.jsonl"]


@case("reader")
def generate_rows_all_unknown_users(root, w):
    rows = rows_file(root, [json.dumps({"user_id": "ghost", "question": "which genre ?"})] * 2)
    return batch(w, root, rows), ["no row could be answered", "ghost"], [root / "answers.jsonl"]


@case("reader")
def generate_made_up_device(root, w):
    return generate(w, "--user", "u1", "--question", "which genre ?", "--device", "quantum"), \
        ["--device", "quantum", "not a device"], []


@case("reader")
def generate_device_that_is_not_here(root, w):
    return generate(w, "--user", "u1", "--question", "which genre ?", "--device", "cuda:99"), \
        ["--device", "cuda:99"], []


def lamp_golds(root: Path, text: str | bytes, name: str = "golds.json") -> list[str]:
    path = root / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    preds = write_text(root / "preds.json", json.dumps({"task": "LaMP_3", "golds": [{"id": "1", "output": "4"}]}))
    return ["score", "lamp", "--task", "LaMP_3", "--golds", str(path), "--preds", str(preds)]


@case("reader")
def score_golds_not_utf8(root, w):
    return lamp_golds(root, b'{"task": "LaMP_3",\n "golds": [{"id": "1", "output": "\xe94"}]}'), \
        ["golds.json", "not UTF-8", "line 2"], []


@case("reader")
def score_golds_nested_deep(root, w):
    return lamp_golds(root, '{"golds": ' + "[" * 50_000 + "]" * 50_000 + "}"), ["golds.json", "nests JSON"], []


@case("reader")
def score_golds_nested_beyond_the_limit(root, w):
    return lamp_golds(root, '{"golds": ' + "[" * 150 + "]" * 150 + "}"), ["golds.json", "more than 100 levels"], []


@case("reader")
def score_golds_empty(root, w):
    return lamp_golds(root, ""), ["golds.json", "is empty"], []


@case("reader")
def score_golds_truncated(root, w):
    text = json.dumps({"task": "LaMP_3", "golds": [{"id": "1", "output": "4"}, {"id": "2", "output": "3"}]})
    return lamp_golds(root, text[: len(text) // 2]), ["golds.json", "malformed JSON", "line 1"], []


@case("reader")
def score_golds_is_a_folder(root, w):
    (root / "golds.json").mkdir()
    preds = write_text(root / "preds.json", json.dumps({"task": "LaMP_3", "golds": []}))
    return ["score", "lamp", "--task", "LaMP_3", "--golds", str(root / "golds.json"), "--preds", str(preds)], \
        ["golds.json", "is a folder"], []


@case("reader")
def score_uqabench_golds_not_utf8(root, w):
    path = root / "golds.jsonl"
    path.write_bytes(b'{"question": "q", "answer": "a", "prediction": "a"}\n' * 2 + b'{"answer": "\xff"}\n')
    return ["score", "uqabench", "--golds", str(path)], ["golds.jsonl", "not UTF-8", "line 3"], []


@case("reader")
def score_uqabench_preds_corrupt_parquet(root, w):
    golds = write_text(root / "golds.jsonl", json.dumps({"id": "1", "question": "q", "answer": "a"}) + "\n")
    (root / "preds.parquet").write_bytes(b"PAR1\x00\x00garbagePAR1")
    return ["score", "uqabench", "--golds", str(golds), "--preds", str(root / "preds.parquet")], \
        ["preds.parquet", "cannot read"], []


@case("reader")
def prepare_lamp_questions_not_utf8(root, w):
    path = root / "dev_questions.json"
    path.write_bytes(b'[{"id": "1", "input": "caf\xe9", "profile": []}]')
    return ["prepare", "lamp", "--task", "LaMP_3", "--questions", str(path), "--out", str(root / "out")], \
        ["dev_questions.json", "not UTF-8"], [root / "out"]


@case("reader")
def prepare_events_is_a_folder(root, w):
    (root / "events.csv").mkdir()
    return prepare_events(root, root / "events.csv"), ["events.csv", "is a folder"], [root / "out"]


@case("reader")
def prepare_items_file_empty(root, w):
    items = write_text(root / "items.csv", "")
    return prepare_events(root, events_csv(root), "--items", str(items)), ["items.csv", "is empty"], [root / "out"]


@case("reader")
def prepare_uqabench_file_empty(root, w):
    path = write_text(root / "align_data_eval.arrow", "")
    return ["prepare", "uqabench", "--files", str(path), "--out", str(root / "out")], \
        ["align_data_eval.arrow", "is empty"], [root / "out"]


def mapping_case(content: bytes, needles: list[str]):
    def build(root, w):
        mapping = root / "map.yaml"
        mapping.write_bytes(content)
        argv = ["prepare", "events", "--events", str(events_csv(root)), "--mapping", str(mapping), *MAP, "--no-qa",
                "--out", str(root / "out")]
        return argv, ["map.yaml", *needles], [root / "out"]

    return build


MAPPINGS = {
    "mapping_empty": (b"", ["is empty"]),
    "mapping_only_comments": (b"# nothing here\n", ["is empty"]),
    "mapping_is_a_list": (b"- uid\n- sku\n", ["mapping", "list"]),
    "mapping_not_utf8": (b"user_col: \xff\xfe\n", ["not UTF-8"]),
}
for _name, (_content, _needles) in MAPPINGS.items():
    CASES[f"reader/{_name}"] = mapping_case(_content, _needles)


def config_file_case(content: bytes, needles: list[str]):
    def build(root, w):
        path = root / "fit.yaml"
        path.write_bytes(content)
        return ["fit", "--config", str(path)], ["fit.yaml", *needles], [root / "runs"]

    return build


ALIAS_BOMB = "".join(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9 if p else ["lol"] * 9) + "]\n"
                     for p, c in zip([None, *"abcdefgh"], "abcdefghi"))
CONFIG_FILES = {
    "config_empty": (b"", ["is empty"]),
    "config_only_comments": (b"# trainer: {}\n", ["is empty"]),
    "config_is_a_list": (b"- trainer\n- model\n", ["mapping", "list"]),
    "config_is_a_number": (b"42\n", ["mapping", "int"]),
    "config_not_utf8": (b"trainer:\n  max_steps: 2 # \xe9t\xe9\n", ["not UTF-8", "line 2"]),
    "config_alias_bomb": (ALIAS_BOMB.encode(), ["more than", "aliases"]),
}
for _name, (_content, _needles) in CONFIG_FILES.items():
    CASES[f"reader/{_name}"] = config_file_case(_content, _needles)


@case("reader")
def config_is_a_folder(root, w):
    (root / "fit.yaml").mkdir()
    return ["fit", "--config", str(root / "fit.yaml")], ["fit.yaml", "is a folder"], [root / "runs"]


@case("reader")
def pretrain_config_empty(root, w):
    path = write_text(root / "pretrain.yaml", "")
    return ["pretrain", "--config", str(path)], ["pretrain.yaml", "is empty"], []


# --------------------------------------------------------------------------- the tests


def snapshot(root: Path) -> dict[Path, bytes]:
    """Every file under ``root`` and its bytes."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_cleanly(name, world, tmp_path, capsys):
    argv, needles, outputs = CASES[name](tmp_path, world)
    before = snapshot(tmp_path)
    code, _, err = run(argv, capsys)
    assert_refused(code, err, needles, outputs)
    after = snapshot(tmp_path)  # a refused command changes nothing that was there: the user's files survive
    changed = [p for p, data in before.items() if after.get(p) != data]
    assert not changed, f"files changed or removed by a refused command: {changed[:5]}"


def test_there_are_at_least_40_cases():
    assert len(CASES) >= 40, len(CASES)


def test_issue_15_added_at_least_40_cases():
    """87 cases before issue 15 (outputs, numerics, readers, messages); it asked for at least 40 more."""
    assert len(CASES) >= 87 + 40, len(CASES)


def test_debug_shows_the_traceback(tmp_path, capsys):
    """The same mistake with ``--debug``: the exception propagates (a traceback) instead of one line."""
    from user_embed.errors import UserError

    argv = prepare_events(tmp_path, tmp_path / "nope.csv")
    with pytest.raises(UserError, match="nope.csv"):
        main([*argv, "--debug"])


def test_droppable_rows_are_counted_by_reason(tmp_path, capsys):
    """Without --strict, every bad row of STRICT_ROWS is dropped and counted under its reason; read = kept + dropped."""
    rows = list(EVENTS) + ["u3,i1,2000,4", "u3,i2,2001,4"]
    for bad, _ in STRICT_ROWS.values():
        rows += [r.replace("u1,", "u4,").replace("u2,", "u5,") for r in bad if r not in EVENTS]
    path = events_csv(tmp_path, rows=rows)
    code, out, err = run(prepare_events(tmp_path, path), capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())["rows"]["events"]
    assert summary["read"] == len(rows) == summary["kept"] + sum(summary["dropped"].values())
    reasons = " | ".join(summary["dropped"])
    for expected in ("value not finite", "missing value", "timestamp not a number", "before 1970", "future",
                     "missing user id"):
        assert expected in reasons, reasons
    assert "events: read" in out and "dropped" in out  # the report is printed, not only saved
    assert pl.read_parquet(tmp_path / "out" / "events.parquet").height == summary["kept"]


# --------------------------------------------------------------------------- limits: handled, not refused


def test_limit_user_with_100k_events_is_truncated_and_reported(world, tmp_path, capsys):
    """One user with 100,000 events imports whole; the embedder reads the most recent 8 and says so."""
    n = 100_000
    events = pl.DataFrame({"uid": ["u0"] * n + ["u1"] * 3, "sku": [f"i{i % 16}" for i in range(n + 3)],
                           "ts": list(range(1_000_000, 1_000_000 + n)) + [1_000_000, 1_000_001, 1_000_002],
                           "rating": [float(1 + i % 5) for i in range(n + 3)]})
    events.write_parquet(tmp_path / "events.parquet")
    code, out, err = run(prepare_events(tmp_path, tmp_path / "events.parquet"), capsys)
    assert code == 0, err
    assert pl.read_parquet(tmp_path / "out" / "events.parquet").height == n + 3
    code, out, err = run(embed(world, tmp_path, tmp_path / "out"), capsys)
    assert code == 0, err
    assert "truncated (policy 'recent', most recent 8 events): 1 users, 99,992 older events not read" in out
    frame = pl.read_parquet(tmp_path / "users.parquet")
    assert frame.filter(pl.col("user_id") == "u0")["events_used"].item() == 8


def test_limit_one_megabyte_text_field_survives_import(tmp_path, capsys):
    big = "word " * 200_000  # 1 MB of review text in one cell
    path = events_csv(tmp_path, rows=[f'{r},"{big if i == 1 else "ok"}"' for i, r in enumerate(EVENTS)],
                      header="uid,sku,ts,rating,review\n")
    code, _, err = run(prepare_events(tmp_path, path, "--text-col", "review"), capsys)
    assert code == 0, err
    texts = pl.read_parquet(tmp_path / "out" / "events.parquet")["text"]
    assert texts.str.len_bytes().max() >= len(big) - 1  # kept whole (at most the trailing space trimmed)


def test_limit_unknown_items_at_inference_are_counted(world, tmp_path, capsys):
    """Events of items the embedder never saw are read as the unknown item, and the summary says how many."""
    def edit(t):
        t["items"] = pl.concat([t["items"], pl.DataFrame({"item_id": ["new1", "new2"], "title": ["a", "b"],
                                                          "categories": [["drama"], ["comedy"]]})])
        t["events"] = t["events"].with_columns(
            pl.when(pl.int_range(pl.len()) < 3).then(pl.lit("new1")).otherwise(pl.col("item_id")).alias("item_id"))

    data = copy_data(world, tmp_path, edit)
    code, out, err = run(embed(world, tmp_path, data), capsys)
    assert code == 0, err
    assert "3 events of items the embedder was not trained on" in out


def test_limit_users_without_events_get_profile_only_vectors(world, tmp_path, capsys):
    """A user with a profile but no events, and every user before their first event: profile-only, finite vectors."""
    def edit(t):
        t["users"] = pl.concat([t["users"], pl.DataFrame({"user_id": ["newcomer"], "age": [33], "gender": ["F"]})])

    data = copy_data(world, tmp_path, edit)
    code, out, err = run(embed(world, tmp_path, data), capsys)
    assert code == 0, err
    assert "(1 with no events: profile-only vectors)" in out
    frame = pl.read_parquet(tmp_path / "users.parquet")
    row = frame.filter(pl.col("user_id") == "newcomer")
    assert not row["has_events"].item() and row["events_used"].item() == 0
    code, out, err = run(embed(world, tmp_path, data, None, "--cutoff", "10"), capsys)  # before every event
    assert code == 0, err
    assert f"({frame.height} with no events: profile-only vectors)" in out
    vectors = torch.tensor(pl.read_parquet(tmp_path / "users.parquet")["embedding"].to_list())
    assert torch.isfinite(vectors).all()
    assert len({tuple(v) for v in vectors.tolist()}) > 1  # profile-only vectors still differ by profile
    code, out, err = run(["generate", "--checkpoint", str(world.embedder), "--data", str(data), "--user", "newcomer",
                          "--question", "which genre ?", "--max-new-tokens", "2"], capsys)
    assert code == 0, err  # generation for a user without events: a profile-only soft prompt


def test_limit_training_data_reports_truncation(world, capsys):
    """The data module names the policy and counts the questions whose history it cut (12 events, max_history 8)."""
    from user_embed.training.datamodule import UserDataModule

    data = UserDataModule(str(world.data), max_history=8, item_text_vectors=False, contrastive_texts=False)
    data.setup()
    assert data.stats["truncation"] == {"policy": "recent", "max_history": 8, "questions_truncated": 24,
                                        "questions_without_events": 0}


def test_limit_question_longer_than_the_llm_context_is_refused(world, tmp_path, capsys):
    """A question longer than the LLM's context must be refused per row, not run (1 MB would exhaust memory)."""
    question = "which genre " * 300  # 600 tokens > max_position_embeddings 512 of the tiny LLM
    code, _, err = run(generate(world, "--user", "u1", "--question", question), capsys)
    assert_refused(code, err, ["question", "512"], [])
