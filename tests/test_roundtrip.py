"""No data lost: the real MovieLens-100k goes import → parquet → export (RecBole files) → import again,
and every one of its 100,000 ratings is accounted for.

The raw ``.inter`` file is read here with the csv module (independently of the importer), the
CLI writes the parquet data dir, :func:`export_recbole` writes it back as RecBole atomic files,
and those are imported again. Checks: read = kept + dropped (by reason) for every table in
``summary.json``; the exported ratings equal the raw ones as a multiset (user, item, rating,
timestamp); the re-imported events/items/users tables equal the first import exactly.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from data_pipelines.movielens import import_movielens
from user_embed.cli import main

pytestmark = pytest.mark.slow


def raw_ratings(inter: Path) -> Counter:
    """(user, item, rating, timestamp) of every line of a RecBole .inter file, parsed with the csv module."""
    with inter.open(encoding="utf-8", newline="") as f:
        rows = csv.reader(f, delimiter="\t")
        header = [name.split(":")[0] for name in next(rows)]
        u, i, r, t = (header.index(c) for c in ("user_id", "item_id", "rating", "timestamp"))
        return Counter((row[u], row[i], float(row[r]), int(float(row[t]))) for row in rows if row)


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def export_recbole(data_dir: Path, folder: Path, name: str = "ml-100k") -> Path:
    """Write a prepared data dir back as RecBole atomic files (.inter, .item, .user)."""
    folder.mkdir(parents=True)
    events = pl.read_parquet(data_dir / "events.parquet")
    with (folder / f"{name}.inter").open("w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        for user, item, value, ts in events.select("user_id", "item_id", "value", "timestamp").iter_rows():
            f.write(f"{user}\t{item}\t{number(value)}\t{ts}\n")
    items = pl.read_parquet(data_dir / "items.parquet")
    with (folder / f"{name}.item").open("w", encoding="utf-8") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        for item, title, categories, year in items.select("item_id", "title", "categories", "year").iter_rows():
            if year is not None and title.endswith(f" ({year})"):
                title = title[: -len(f" ({year})")]
            f.write(f"{item}\t{title}\t{'' if year is None else year}\t{' '.join(categories)}\n")
    users = pl.read_parquet(data_dir / "users.parquet")
    fields = [c for c in users.columns if c != "user_id"]
    with (folder / f"{name}.user").open("w", encoding="utf-8") as f:
        f.write("\t".join(["user_id:token", *(f"{c}:token" for c in fields)]) + "\n")
        for row in users.iter_rows():
            f.write("\t".join("" if v is None else str(v) for v in row) + "\n")
    return folder


def test_ml100k_round_trip_accounts_for_every_rating(tmp_path, capsys):
    from user_embed.assets import movielens_100k_dir

    source = movielens_100k_dir()
    raw = raw_ratings(source / "ml-100k.inter")
    assert sum(raw.values()) == 100_000

    # import → parquet, through the CLI
    data = tmp_path / "ml100k"
    assert main(["prepare", "movielens-100k", "--out", str(data), "--no-qa"]) == 0
    printed = capsys.readouterr().out
    assert "events: read 100,000" in printed
    summary = json.loads((data / "summary.json").read_text())
    for table, rows in summary["rows"].items():
        assert rows["read"] == rows["kept"] + sum(rows["dropped"].values()), table
    events_rows = summary["rows"]["events"]
    assert events_rows["read"] == 100_000
    assert summary["counts"]["events"] == events_rows["kept"]
    assert summary["counts"]["users"] == 943 and summary["counts"]["items"] == 1682

    # parquet → export → the same ratings as the raw file (nothing dropped from the real data)
    exported = export_recbole(data, tmp_path / "export")
    back = raw_ratings(exported / "ml-100k.inter")
    assert sum(back.values()) + sum(events_rows["dropped"].values()) == sum(raw.values())
    assert back == raw

    # export → import: the same tables again
    first = import_movielens(source)
    again = import_movielens(exported)
    for table in ("events", "items", "users"):
        assert again.tables[table].equals(first.tables[table]), table
    assert [r.as_dict() for r in again.reports if r.name != "item_relations"] == \
        [r.as_dict() for r in first.reports if r.name != "item_relations"]
    print(f"round trip: {sum(raw.values()):,} ratings read, {sum(back.values()):,} exported, "
          f"{sum(events_rows['dropped'].values())} dropped; {summary['counts']['items']:,} items, "
          f"{summary['counts']['users']:,} users; item_relations {summary['rows']['item_relations']}")
