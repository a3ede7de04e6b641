"""`prepare()` (UserQA + atomic write + summary) and the `user-embed prepare` command."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import polars as pl
import pytest

from data_pipelines.movielens import import_movielens
from data_pipelines.outputs import MARKER_NAME
from data_pipelines.prepare import prepare, prepare_movielens_100k
from data_pipelines.schema import read_table
from user_embed import cli
from user_embed.commands import prepare as prepare_command


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def ml_folder(root: Path) -> Path:
    """A few-row RecBole ML-100k copy (the layout `movielens_100k_dir()` returns)."""
    folder = root / "ml-100k"
    write(
        folder / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "1\t10\t5\t100\n1\t20\t3\t200\n2\t10\t4\t150\n2\t30\t2\t250\n",
    )
    write(
        folder / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "10\tToy Story\t1995\tAnimation Children's Comedy\n20\tHeat\t1995\tAction Crime Thriller\n"
        "30\tMisérables, Les\t1995\tDrama Musical\n",
    )
    write(
        folder / "ml-100k.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n1\t24\tM\ttechnician\t85711\n"
        "2\t53\tF\tother\t94043\n",
    )
    return folder


def fake_userqa(monkeypatch, fail: bool = False) -> list[dict]:
    """Install a stand-in `data_pipelines.userqa` whose build_userqa records its calls."""
    calls: list[dict] = []

    def build_userqa(events: pl.DataFrame, items: pl.DataFrame, seed: int = 0, config=None):
        calls.append({"events": events.height, "items": items.height, "seed": seed})
        if fail:
            raise RuntimeError("userqa exploded")
        users = events["user_id"].unique().sort().to_list()
        qa = pl.DataFrame(
            {
                "user_id": users,
                "question": ["Which genre?"] * len(users),
                "answer": ["Drama"] * len(users),
                "options": [["Drama", "Comedy"]] * len(users),
                "task": ["genre_pref"] * len(users),
                "family": ["interest_perception"] * len(users),
                "cutoff": pl.Series([10**9] * len(users), dtype=pl.Int64),
                "split": ["train"] * len(users),
            }
        )
        texts = pl.DataFrame({"user_id": users, "text": ["likes films"] * len(users)})
        return qa, texts, {"genre_pref": {"train": len(users), "val": 0, "test": 0}}

    from data_pipelines.userqa import UserQAConfig

    module = types.ModuleType("data_pipelines.userqa")
    module.build_userqa = build_userqa
    module.UserQAConfig = UserQAConfig
    monkeypatch.setitem(sys.modules, "data_pipelines.userqa", module)
    return calls


# --------------------------------------------------------------------------- prepare()


def test_prepare_writes_tables_qa_and_summary(tmp_path, monkeypatch):
    calls = fake_userqa(monkeypatch)
    lines: list[str] = []
    out = prepare(import_movielens(ml_folder(tmp_path)), tmp_path / "data", seed=7, report_to=lines.append)
    assert calls == [{"events": 4, "items": 3, "seed": 7}]
    assert read_table(out, "qa").height == 2 and read_table(out, "texts").height == 2
    assert read_table(out, "events").height == 4
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"events": 4, "items": 3, "users": 2, "qa": 2, "texts": 2}
    assert summary["rows"]["events"] == {"read": 4, "kept": 4, "dropped": {}}
    assert summary["qa"] == {"genre_pref": {"train": 2, "val": 0, "test": 0}}
    assert summary["seed"] == 7 and summary["source"]["layout"] == "recbole"
    assert lines[0] == "events: read 4, kept 4, dropped 0 (none)"
    assert lines[-1].startswith(f"wrote {out}: events 4, items 3, users 2, qa 2")


def test_prepare_without_qa(tmp_path):
    out = prepare(import_movielens(ml_folder(tmp_path)), tmp_path / "data", build_qa=False, report_to=lambda _: None)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_NAME, "events.parquet", "items.parquet", "summary.json",
                                                     "users.parquet"]
    assert json.loads((out / "summary.json").read_text())["qa"] is None


def test_failed_prepare_leaves_no_output_dir(tmp_path, monkeypatch):
    fake_userqa(monkeypatch, fail=True)
    result = import_movielens(ml_folder(tmp_path / "src"))
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="exploded"):
        prepare(result, tmp_path / "out" / "data", report_to=lambda _: None)
    assert list((tmp_path / "out").iterdir()) == []
    # a bad table (fails the schema) is caught before anything is written
    result.tables["events"] = result.tables["events"].with_columns(pl.col("timestamp").cast(pl.Utf8))
    with pytest.raises(Exception, match="timestamp"):
        prepare(result, tmp_path / "out" / "data", build_qa=False, report_to=lambda _: None)
    assert list((tmp_path / "out").iterdir()) == []


def test_prepare_movielens_100k_uses_the_asset_folder(tmp_path, monkeypatch):
    out = prepare_movielens_100k(tmp_path / "data", 3, source=ml_folder(tmp_path / "cache"), build_qa=False,
                                 report_to=lambda _: None)
    assert read_table(out, "users").height == 2


# --------------------------------------------------------------------------- the command


def run_cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = cli.main(["prepare", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_movielens_and_movielens_100k(tmp_path, capsys, monkeypatch):
    folder = ml_folder(tmp_path / "src")
    code, out, _ = run_cli(["movielens", "--path", str(folder), "--out", str(tmp_path / "a"), "--no-qa"], capsys)
    assert code == 0 and "events: read 4, kept 4" in out
    assert read_table(tmp_path / "a", "items")["title"].to_list()[2] == "Misérables, Les (1995)"
    monkeypatch.setenv("USER_EMBED_ML100K", str(folder))
    calls = fake_userqa(monkeypatch)
    code, out, _ = run_cli(["movielens-100k", "--out", str(tmp_path / "b"), "--seed", "5"], capsys)
    assert code == 0 and calls[0]["seed"] == 5 and read_table(tmp_path / "b", "qa").height == 2


def test_cli_events_with_yaml_mapping_and_overriding_flags(tmp_path, capsys):
    events = write(
        tmp_path / "log.csv", "who,what,when,stars,score\nu1,a,1600000000000,bad,4\nu2,b,1600000100000,bad,5\n"
    )
    items = write(tmp_path / "items.tsv", "what\tname\tgenres\na\tAlpha\tx|y\nb\tBeta\tz\n")
    mapping = write(
        tmp_path / "m.yaml",
        "user_col: who\nitem_col: what\ntime_col: when\nvalue_col: stars\nitem_title_col: name\ncategory_col: genres\n",
    )
    argv = ["events", "--events", str(events), "--items", str(items), "--mapping", str(mapping)]
    argv += ["--value-col", "score", "--category-sep", "|", "--out", str(tmp_path / "data"), "--no-qa"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert read_table(tmp_path / "data", "events")["value"].to_list() == [4.0, 5.0]
    items_table = read_table(tmp_path / "data", "items")
    assert items_table.rows() == [("a", "Alpha", ["x", "y"]), ("b", "Beta", ["z"])]


def test_cli_data_errors_are_one_line_and_write_nothing(tmp_path, capsys):
    events = write(tmp_path / "log.csv", "uid,sku,ts\nu1,a,100\nu1,a,100\n")
    base = ["events", "--events", str(events), "--user-col", "uid", "--item-col", "sku", "--out", str(tmp_path / "o")]
    code, _, err = run_cli([*base, "--time-col", "time", "--no-qa"], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "log.csv: events column 'time' not found" in err
    code, _, err = run_cli([*base, "--time-col", "ts", "--no-qa", "--strict"], capsys)
    assert code == 2 and "row 1: duplicate event" in err
    bad_yaml = write(tmp_path / "m.yaml", "user_col: uid\nitem_col: sku\ntime_col: ts\nitem_col_name: x\n")
    code, _, err = run_cli([*base, "--mapping", str(bad_yaml), "--no-qa"], capsys)
    assert code == 2 and "m.yaml: unknown mapping name 'item_col_name'" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["movielens", "--path", "x"], "the following arguments are required: --out"),
        (["events", "--events", "f.csv", "--out", "o"], "--user-col, --item-col, --time-col required"),
        (["lamp-9", "--out", "o"], "invalid choice: 'lamp-9'"),
        ([], "the following arguments are required: SOURCE"),
        (["movielens", "--path", "x", "--out", "o", "--seed", "one"], "argument --seed: invalid int value"),
    ],
)
def test_cli_usage_errors_exit_2(argv, message, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 2
    assert err.splitlines()[-1].startswith("user-embed prepare") and message in err.splitlines()[-1]


def test_sources_table_is_the_extension_point(tmp_path, monkeypatch, capsys):
    seen = {}

    def add(parser):
        parser.add_argument("--thing")
        prepare_command.add_common_arguments(parser)

    def run(args):
        seen.update(thing=args.thing, out=args.out, qa=not args.no_qa)
        return 0

    monkeypatch.setitem(prepare_command.SOURCES, "dummy", prepare_command.Source("a test source", add, run))
    code, _, _ = run_cli(["dummy", "--thing", "x", "--out", str(tmp_path), "--no-qa"], capsys)
    assert code == 0 and seen == {"thing": "x", "out": tmp_path, "qa": False}


@pytest.mark.slow
def test_real_ml100k_with_the_real_userqa_builder(tmp_path, real_ml100k):
    out = prepare_movielens_100k(tmp_path / "data", 0, source=real_ml100k, report_to=lambda _: None)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["events"] == 100_000 and summary["counts"]["qa"] > 0
    assert summary["qa"]


def test_cli_out_that_is_a_file(tmp_path, capsys):
    folder = ml_folder(tmp_path / "src")
    target = write(tmp_path / "taken", "not a directory")
    code, _, err = run_cli(["movielens", "--path", str(folder), "--out", str(target), "--no-qa"], capsys)
    assert code == 2 and "taken: exists and is not a directory" in err
    assert target.read_text() == "not a directory"


def test_cli_source_flag_names_the_event_kind(tmp_path, capsys):
    events = write(tmp_path / "log.csv", "uid,sku,ts\nu1,a,5\n")
    argv = ["events", "--events", str(events), "--user-col", "uid", "--item-col", "sku", "--time-col", "ts"]
    code, _, err = run_cli([*argv, "--source", "click", "--out", str(tmp_path / "o"), "--no-qa"], capsys)
    assert code == 0, err
    assert read_table(tmp_path / "o", "events")["source"].to_list() == ["click"]
