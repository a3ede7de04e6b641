"""Fuzz-style bad input per reader: generated malformed files must end in one clean error line (exit status 2).

For every reader of user files — LaMP outputs JSON (`score lamp`), UQABench golds JSONL (`score uqabench`),
`generate --input` JSONL and parquet, an embedder's ``config.json`` and ``model.safetensors`` (`embed`),
a data folder's parquet tables, an events parquet (`prepare events`), the column mapping YAML and the
`fit` config YAML — a valid file is built and then broken by a family of generated mutations:

* **truncation** at many points (every strict prefix of these formats is invalid);
* **wrong types**: every field replaced by values of other JSON/YAML types (and absurd sizes);
* **encodings**: UTF-16, latin-1 bytes, NUL bytes, a lone invalid byte at several positions;
* **nesting**: the document wrapped 150 and 50,000 levels deep;
* **degenerate files**: empty, blank, a folder in the file's place, another top-level type.

Each must be refused the way a user error is: exit status 2, no traceback, exactly one ``error:`` line
of at most 500 characters (naming the file where the reader knows it), and nothing written. A new
reader gets the same protection by adding a :class:`Reader` here. Every command runs in a scratch
working directory, so a relative default path can never reach the checkout's own data.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch  # noqa: F401  (import before any capsys test: its log handler keeps that stderr)
import polars as pl
import pytest
import yaml

from conftest import write_tiny_dataset
from test_bad_input import build_embedder
from user_embed.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")

Mutation = Callable[[bytes], bytes]


# --------------------------------------------------------------------------- mutations of bytes and documents


def truncations(valid: bytes, points: int = 8) -> Iterator[tuple[str, bytes]]:
    for i in range(points):
        cut = max(1, len(valid) * i // points) if i else 1
        yield f"cut-{cut}", valid[:cut]


def encodings(valid: bytes) -> Iterator[tuple[str, bytes]]:
    text = valid.decode("utf-8")
    yield "utf16", text.encode("utf-16")
    yield "utf16-le-no-bom", text.encode("utf-16-le")
    yield "nul-bytes", valid.replace(b'"', b'"\x00', 1) if b'"' in valid else b"\x00" + valid
    for fraction in (0.25, 0.5, 0.9):  # one invalid UTF-8 byte inside a string value
        quotes = [m.start() for m in re.finditer(rb'"', valid)]
        if quotes:
            at = quotes[int(len(quotes) * fraction) // 2 * 2] + 1
            yield f"bad-byte-{fraction}", valid[:at] + b"\xff\xfe" + valid[at:]


def degenerate(valid: bytes) -> Iterator[tuple[str, bytes]]:
    yield "empty", b""
    yield "blank", b"  \n\n\t\n"


def other_types(value: object) -> list[object]:
    """JSON values of another type than ``value`` (and an absurd size for integers)."""
    if isinstance(value, bool):
        return ["yes", [True], {"v": 1}]
    if isinstance(value, int):
        return ["many", [value], {"v": value}, value + 0.5, 10**15]
    if isinstance(value, float):
        return ["x", [value], {"v": value}]
    if isinstance(value, str):
        return [12, [value], {"v": value}]
    if isinstance(value, list):
        return ["x", {"v": value}, 3]
    if isinstance(value, dict):
        return ["x", [value], 3]
    return [5, {"v": 1}]  # None → a type it cannot be


def paths(document: object, prefix: tuple = ()) -> Iterator[tuple]:
    """Paths to every value of a JSON document (dict keys and list indices)."""
    if prefix:
        yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from paths(value, (*prefix, key))
    elif isinstance(document, list) and document:
        yield from paths(document[0], (*prefix, 0))


def replaced(document: object, path: tuple, value: object) -> object:
    out = copy.deepcopy(document)
    target = out
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return out


def wrong_types(document: object, only: Callable[[tuple], bool] = lambda p: True,
                dump: Callable[[object], str] = json.dumps) -> Iterator[tuple[str, bytes]]:
    for path in paths(document):
        if not only(path):
            continue
        current = document
        for step in path:
            current = current[step]
        for i, value in enumerate(other_types(current)):
            name = ".".join(str(p) for p in path)
            yield f"type-{name}-{i}", dump(replaced(document, path, value)).encode()


def nestings(document: object, key: str | None = None, dump: Callable[[object], str] = json.dumps
             ) -> Iterator[tuple[str, bytes]]:
    text = dump(document)
    for depth in (150, 50_000):
        deep = "[" * depth + "]" * depth
        if key is None:
            yield f"nested-{depth}", ("[" * depth + text + "]" * depth).encode()
        else:
            yield f"nested-{depth}", dump(replaced(document, (key,), "DEEP")).replace('"DEEP"', deep).encode()


def top_levels(dump: Callable[[object], str] = json.dumps) -> Iterator[tuple[str, bytes]]:
    for name, value in (("list", [1, 2]), ("number", 7), ("text", "hello"), ("null", None)):
        yield f"top-{name}", dump(value).encode()


# --------------------------------------------------------------------------- readers


@dataclass
class Reader:
    """A reader under fuzz: where the file goes, the command that reads it, and its mutations."""

    name: str
    file: str
    """The file's name inside the test's scratch folder."""
    argv: Callable[[Path, dict], list[str]]
    """The command line reading ``<root>/<file>`` (``shared`` holds the module's tiny world)."""
    mutations: Callable[[], Iterator[tuple[str, bytes]]]
    names_file: bool = True
    """Whether every message must name the file (jsonargparse names the key for a mistyped config value)."""


GOLDS = {"task": "LaMP_3", "golds": [{"id": "1", "output": "4"}, {"id": "2", "output": "2"}]}


def lamp_outputs_mutations() -> Iterator[tuple[str, bytes]]:
    valid = json.dumps(GOLDS).encode()
    yield from truncations(valid)
    yield from encodings(valid)
    yield from degenerate(valid)
    yield from wrong_types(GOLDS, only=lambda p: p not in (("golds", 0, "id"),))  # ids may be numbers
    yield from nestings(GOLDS, "golds")
    yield from top_levels()


def lamp_argv(root: Path, shared: dict) -> list[str]:
    preds = root / "preds.json"
    preds.write_text(json.dumps(GOLDS))
    return ["score", "lamp", "--task", "LaMP_3", "--golds", str(root / "golds.json"), "--preds", str(preds)]


UQA = {"question": "what is the user's preferred brand?", "answer": "nike", "prediction": "nike shoes", "task": "ip"}


def uqabench_mutations() -> Iterator[tuple[str, bytes]]:
    valid = json.dumps(UQA).encode()
    yield from ((n, b) for n, b in truncations(valid) if b != b"")
    yield from encodings(valid)
    yield from degenerate(valid)
    accepted = {"type-answer-0", "type-answer-1", "type-prediction-0"}  # numbers are read as text, [answer] is official
    yield from ((n, b) for n, b in wrong_types(UQA, only=lambda p: p[-1] in ("answer", "prediction"))
                if n not in accepted)
    yield "nested-50000", ("[" * 50_000 + "]" * 50_000).encode()


REQUEST = {"user_id": "u1", "question": "which genre ?"}


def requests_mutations() -> Iterator[tuple[str, bytes]]:
    valid = json.dumps(REQUEST).encode()
    yield from truncations(valid)
    yield from encodings(valid)
    yield from degenerate(valid)
    for name, data in wrong_types(REQUEST):
        if name.startswith("type-user_id-") and data == json.dumps({**REQUEST, "user_id": 10**15}).encode():
            continue  # a big integer id is a valid id (read as its text)
        yield name, data
    yield from nestings(REQUEST, "question")
    yield from top_levels()
    yield "wrong-names", json.dumps({"uid": "u1", "prompt": "which genre ?"}).encode()


def generate_argv(root: Path, shared: dict) -> list[str]:
    return ["generate", "--checkpoint", str(shared["embedder"]), "--data", str(shared["data"]), "--input",
            str(root / "rows.jsonl"), "--output", str(root / "answers.jsonl"), "--max-new-tokens", "1"]


def embedder_config_mutations(valid_config: dict) -> Callable[[], Iterator[tuple[str, bytes]]]:
    def mutations() -> Iterator[tuple[str, bytes]]:
        valid = json.dumps(valid_config).encode()
        yield from truncations(valid, points=6)
        yield from encodings(valid)
        yield from degenerate(valid)
        yield from wrong_types(valid_config, only=lambda p: p[0] in ("sources", "adapter", "llm")
                               or p in (("spec",), ("spec", "item_ids"), ("spec", "categories"),
                                        ("spec", "max_categories"), ("spec", "value_std")))
        yield from nestings(valid_config, "metrics")
        yield from top_levels()

    return mutations


def embed_argv(file: str) -> Callable[[Path, dict], list[str]]:
    def argv(root: Path, shared: dict) -> list[str]:
        folder = root / "embedder"
        for path in shared["template"].iterdir():
            if path.name != file:
                (folder / path.name).write_bytes(path.read_bytes())
        return ["embed", "--checkpoint", str(folder), "--data", str(shared["data"]), "--out",
                str(root / "users.parquet")]

    return argv


def binary_mutations(valid: bytes, footer: bool = False) -> Callable[[], Iterator[tuple[str, bytes]]]:
    """Truncations, garbage, zeros, a flipped header (and ``footer``: a flipped footer, parquet's index)."""
    def mutations() -> Iterator[tuple[str, bytes]]:
        yield from truncations(valid, points=10)
        yield "empty", b""
        yield "text", b"this is not a binary file at all\n"
        yield "zeros", b"\x00" * len(valid)
        yield "head-flipped", bytes(b ^ 0xFF for b in valid[:8]) + valid[8:]
        if footer:
            yield "tail-flipped", valid[:-8] + bytes(b ^ 0xFF for b in valid[-8:])

    return mutations


def parquet_bytes(frame: pl.DataFrame) -> bytes:
    import io

    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


EVENTS = pl.DataFrame({"uid": ["u1", "u1", "u2"], "sku": ["i1", "i2", "i1"], "ts": [1000, 1001, 1002],
                       "rating": [4.0, 5.0, 3.0]})


def events_parquet_mutations() -> Iterator[tuple[str, bytes]]:
    yield from binary_mutations(parquet_bytes(EVENTS), footer=True)()
    yield "uid-nested", parquet_bytes(EVENTS.with_columns(pl.col("uid").map_elements(lambda u: [u],
                                                                                      return_dtype=pl.List(pl.Utf8))))
    yield "ts-text", parquet_bytes(EVENTS.with_columns(pl.lit("day").alias("ts")))
    yield "rating-text", parquet_bytes(EVENTS.with_columns(pl.lit("good").alias("rating")))
    yield "ts-struct", parquet_bytes(EVENTS.with_columns(pl.struct("ts", "uid").alias("ts")))
    yield "no-rows", parquet_bytes(EVENTS.head(0))
    yield "column-missing", parquet_bytes(EVENTS.drop("sku"))


def prepare_argv(root: Path, shared: dict) -> list[str]:
    return ["prepare", "events", "--events", str(root / "events.parquet"), "--user-col", "uid", "--item-col", "sku",
            "--time-col", "ts", "--value-col", "rating", "--no-qa", "--out", str(root / "out")]


def table_argv(table: str) -> Callable[[Path, dict], list[str]]:
    def argv(root: Path, shared: dict) -> list[str]:
        folder = root / "data"
        for path in shared["data"].iterdir():
            if path.name != f"{table}.parquet":
                (folder / path.name).write_bytes(path.read_bytes())
        return ["embed", "--checkpoint", str(shared["embedder"]), "--data", str(folder), "--out",
                str(root / "users.parquet")]

    return argv


MAPPING = {"user_col": "uid", "item_col": "sku", "time_col": "ts", "value_col": "rating"}


def mapping_mutations() -> Iterator[tuple[str, bytes]]:
    dump = yaml.safe_dump
    valid = dump(MAPPING).encode()
    yield from encodings(valid)
    yield from degenerate(valid)
    yield "comments-only", b"# user_col: uid\n"
    yield from wrong_types(MAPPING, dump=dump)
    yield from ((n, b) for n, b in top_levels(dump=dump) if n != "top-null")
    yield "syntax-bracket", b"user_col: [uid\nitem_col: sku\n"
    yield "syntax-indent", b"user_col: uid\n  item_col: sku\n time_col: ts\n"
    yield "unknown-key", dump({**MAPPING, "rating_col": "rating"}).encode()
    yield "alias-bomb", ALIAS_BOMB.encode()


def mapping_argv(root: Path, shared: dict) -> list[str]:
    events = root / "events.csv"
    events.write_text("uid,sku,ts,rating\nu1,i1,1000,4\nu2,i1,1001,5\n")
    return ["prepare", "events", "--events", str(events), "--mapping", str(root / "map.yaml"), "--no-qa",
            "--out", str(root / "out")]


ALIAS_BOMB = "".join(f"{c}: &{c} [" + ", ".join([f"*{p}"] * 9 if p else ["lol"] * 9) + "]\n"
                     for p, c in zip([None, *"abcdefgh"], "abcdefghi"))


def fit_config(shared: dict) -> dict:
    return {"seed_everything": 0,
            "trainer": {"max_steps": 1, "accelerator": "cpu", "devices": 1, "logger": False,
                        "enable_checkpointing": False, "enable_progress_bar": False, "limit_val_batches": 0,
                        "num_sanity_val_steps": 0},
            "model": {"sources": [{"kind": "sequence", "dim": 16, "layers": 1, "heads": 2, "max_len": 8}],
                      "adapter": {"kind": "resampler", "num_tokens": 2, "dim": 16, "layers": 1, "heads": 2,
                                  "user_dim": 8},
                      "llm": {"name_or_path": str(shared["llm"])}, "loss": {"contrastive_weight": 0.0},
                      "optim": {"lr": 0.01, "weight_decay": 0.0, "min_lr_ratio": 0.1}},
            "data": {"data_dir": str(shared["data"]), "batch_size": 4, "item_text_vectors": False,
                     "contrastive_texts": False}}


#: Config values that a mistyped or out-of-domain replacement must break (the key, bad values).
CONFIG_VALUES = {("trainer", "max_steps"): ["many", [1], -5, 1.5],
                 ("model", "optim", "lr"): ["fast", [0.1], -1.0, 0.0, float("nan"), float("inf")],
                 ("model", "optim", "weight_decay"): [-0.5, "none"],
                 ("model", "optim", "min_lr_ratio"): [-0.1, 2.0],
                 ("model", "adapter", "num_tokens"): [0, "eight", {"k": 8}],
                 ("model", "adapter", "dropout"): [1.0, -0.1],
                 ("data", "batch_size"): [0, -4, "four"]}


def config_mutations(shared: dict) -> Callable[[], Iterator[tuple[str, bytes]]]:
    def mutations() -> Iterator[tuple[str, bytes]]:
        config = fit_config(shared)
        valid = yaml.safe_dump(config, sort_keys=False).encode()
        yield from encodings(valid)
        yield from degenerate(valid)
        yield "comments-only", b"# trainer:\n#   max_steps: 1\n"
        yield from ((n, b) for n, b in top_levels(dump=yaml.safe_dump) if n != "top-null")
        for path, values in CONFIG_VALUES.items():
            for i, value in enumerate(values):
                yield f"value-{'.'.join(path)}-{i}", yaml.safe_dump(replaced(config, path, value)).encode()
        yield "syntax-bracket", valid.replace(b"max_steps: 1", b"max_steps: [1", 1)
        yield "syntax-tab", valid.replace(b"\n  max_steps", b"\n\tmax_steps", 1)
        for depth in (150, 50_000):
            yield f"nested-{depth}", valid + b"deep: " + b"[" * depth + b"]" * depth + b"\n"
        yield "alias-bomb", ALIAS_BOMB.encode()

    return mutations


def fit_argv(root: Path, shared: dict) -> list[str]:
    return ["fit", "--config", str(root / "fit.yaml"), "--trainer.default_root_dir", str(root / "runs")]


# --------------------------------------------------------------------------- the world and the cases


@pytest.fixture(scope="module")
def shared(tmp_path_factory, tiny_llm_dir) -> dict:
    root = tmp_path_factory.mktemp("fuzz-world")
    data = write_tiny_dataset(root / "data")
    embedder = build_embedder(tiny_llm_dir, data, root / "embedder")
    return {"llm": tiny_llm_dir, "data": data, "embedder": embedder,
            "template": TEMPLATE.save_pretrained(root / "template")}


def template_embedder():
    """A small embedder built without any LLM (``embed`` needs none): its files are the valid templates."""
    import torch

    from user_embed.config import AdapterConfig, SourceConfig
    from user_embed.data.spec import DataSpec
    from user_embed.embedder import UserEmbedder
    from user_embed.llm.record import LLMRecord

    torch.manual_seed(0)
    spec = DataSpec(item_ids=["i1", "i2"], categories=["drama"], profile_cat_fields={"gender": ["F", "M"]},
                    profile_num_fields={"age": [30.0, 5.0]})
    return UserEmbedder([SourceConfig(kind="sequence", dim=16, heads=2, layers=1, max_len=4),
                         SourceConfig(kind="tabular", dim=8, heads=2, layers=1)],
                        AdapterConfig(num_tokens=2, dim=16, heads=2, layers=1, user_dim=8), spec,
                        LLMRecord(name_or_path="tiny", hidden_size=64, embed_rms=0.02))


def weights_template(embedder) -> bytes:
    from safetensors.torch import save

    return save({k: v.contiguous() for k, v in embedder.state_dict().items()}, metadata={"format": "pt"})


TEMPLATE = template_embedder()
CONFIG_TEMPLATE = TEMPLATE.config_dict()
READERS = [
    Reader("lamp-outputs", "golds.json", lamp_argv, lamp_outputs_mutations),
    Reader("uqabench-golds", "golds.jsonl",
           lambda root, shared: ["score", "uqabench", "--golds", str(root / "golds.jsonl")], uqabench_mutations),
    Reader("generate-jsonl", "rows.jsonl", generate_argv, requests_mutations),
    Reader("generate-parquet", "rows.parquet",
           lambda root, shared: [a.replace("rows.jsonl", "rows.parquet") for a in generate_argv(root, shared)],
           binary_mutations(parquet_bytes(pl.DataFrame({"user_id": ["u1"], "question": ["which genre ?"]})),
                            footer=True)),
    Reader("embedder-config", "embedder/config.json", embed_argv("config.json"),
           embedder_config_mutations(CONFIG_TEMPLATE)),
    Reader("embedder-weights", "embedder/model.safetensors", embed_argv("model.safetensors"),
           binary_mutations(weights_template(TEMPLATE))),
    Reader("events-parquet", "events.parquet", prepare_argv, events_parquet_mutations),
    Reader("data-table", "data/events.parquet", table_argv("events"),
           binary_mutations(parquet_bytes(pl.DataFrame({"user_id": ["u0"], "timestamp": [1], "source": ["r"],
                                                        "item_id": ["i1"], "value": [1.0], "text": ["t"]})),
                            footer=True)),
    Reader("mapping-yaml", "map.yaml", mapping_argv, mapping_mutations),
    Reader("fit-config", "fit.yaml", fit_argv, config_mutations({"llm": Path("/llm"), "data": Path("/data")}),
           names_file=False),
]
CASES = {f"{reader.name}/{name}": (reader, name) for reader in READERS for name, _ in reader.mutations()}


VALID = {"lamp-outputs": lambda shared: json.dumps(GOLDS).encode(),
         "uqabench-golds": lambda shared: json.dumps(UQA).encode(),
         "generate-jsonl": lambda shared: json.dumps(REQUEST).encode(),
         "generate-parquet": lambda shared: parquet_bytes(pl.DataFrame({"user_id": ["u1"], "question": ["q ?"]})),
         "embedder-config": lambda shared: json.dumps(CONFIG_TEMPLATE).encode(),
         "embedder-weights": lambda shared: weights_template(TEMPLATE),
         "events-parquet": lambda shared: parquet_bytes(EVENTS),
         "data-table": lambda shared: (shared["data"] / "events.parquet").read_bytes(),
         "mapping-yaml": lambda shared: yaml.safe_dump(MAPPING).encode(),
         "fit-config": lambda shared: yaml.safe_dump(fit_config(shared)).encode()}


def mutation_bytes(reader: Reader, name: str, shared: dict) -> bytes:
    mutations = config_mutations(shared) if reader.name == "fit-config" else reader.mutations
    return dict(mutations())[name]


def test_every_reader_gets_many_mutations():
    counts = {reader.name: sum(1 for key in CASES if key.startswith(f"{reader.name}/")) for reader in READERS}
    assert all(n >= 12 for n in counts.values()), counts
    assert len(CASES) >= 300, len(CASES)


@pytest.mark.parametrize("key", sorted(CASES))
def test_malformed_input_is_one_clean_error(key, shared, tmp_path, monkeypatch, capsys):
    reader, name = CASES[key]
    monkeypatch.chdir(tmp_path)  # a relative default path never reaches the checkout's data or runs
    target = tmp_path / reader.file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(mutation_bytes(reader, name, shared))
    argv = reader.argv(tmp_path, shared)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code} for {key}\n{err[-2000:]}"
    lines = [line for line in err.splitlines() if re.search(r"\berror:", line)]
    assert len(lines) == 1, f"expected one error line for {key}, got {len(lines)}:\n{err[-2000:]}"
    message = lines[0].split("error: ", 1)[-1]
    assert len(message) <= 500, message
    if reader.names_file and not name.startswith("folder"):
        assert Path(reader.file).name in message, message
    after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert after == before, f"{key}: a refused command wrote or changed {sorted(set(after) ^ set(before))[:5]}"


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
def test_the_unbroken_file_is_accepted(reader, shared, tmp_path, monkeypatch, capsys):
    """Each reader's valid template passes: the refusals above are the mutations' doing."""
    monkeypatch.chdir(tmp_path)
    target = tmp_path / reader.file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(VALID[reader.name](shared))
    capsys.readouterr()
    assert main(reader.argv(tmp_path, shared)) == 0, capsys.readouterr().err[-3000:]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.name)
def test_a_folder_in_place_of_the_file_is_one_clean_error(reader, shared, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / reader.file).mkdir(parents=True)
    argv = reader.argv(tmp_path, shared)
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if re.search(r"\berror:", line)]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert "folder" in lines[0] and Path(reader.file).name in lines[0], lines[0]
