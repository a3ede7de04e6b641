"""MovieLens layouts and the generic event importer on few-row files in the real formats."""

from __future__ import annotations

import math
from pathlib import Path

import polars as pl
import pytest

from data_pipelines.generic import ColumnMapping, import_events, sniff_delimiter
from data_pipelines.movielens import detect_layout, import_movielens
from data_pipelines.report import DataError
from data_pipelines.schema import validate



def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def check_schema(result) -> None:
    for name, table in result.tables.items():
        validate(name, table)
    for report in result.reports:
        assert report.read == report.kept + sum(report.dropped.values())


def rows(result, table: str) -> dict[str, dict]:
    key = "item_id" if table == "items" else "user_id"
    return {row[key]: row for row in result.tables[table].iter_rows(named=True)}


# --------------------------------------------------------------------------- MovieLens layouts


def write_recbole(folder: Path) -> Path:
    write(
        folder / "ml-100k.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
        "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t543\t4\t881251000\n",
    )
    write(
        folder / "ml-100k.item",
        "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
        "242\tKolya\t1996\tComedy\n"
        "302\tL.A. Confidential\t1997\tCrime Film-Noir Mystery Thriller\n"
        "543\tMisérables, Les\t1995\tDrama Musical\n"
        "267\tunkonwn\tunkonwn\tunknown\n",
    )
    write(
        folder / "ml-100k.user",
        "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
        "196\t49\tM\twriter\t55105\n186\t39\tF\texecutive\t00000\n",
    )
    write(folder / "ml-100k.link", "item_id:token\tentity_id:token\n242\tm.0abc\n302\tm.0def\n")
    write(
        folder / "ml-100k.kg",
        "head_id:token\trelation_id:token\ttail_id:token\n"
        "m.0abc\tfilm.film.genre\tm.02l7c8\n"
        "m.0def\tfilm.film.actor\tm.0zzz\n"
        "m.0zzz\tfilm.actor.film\tm.0def\n",
    )
    return folder


def test_recbole_layout_with_knowledge_graph(tmp_path):
    result = import_movielens(write_recbole(tmp_path / "ml-100k"))
    check_schema(result)
    assert result.info["layout"] == "recbole"
    events = result.tables["events"]
    assert events.height == 3 and set(events["source"]) == {"rating"} and events["text"].null_count() == 3
    assert events.filter(item_id="543")["value"].to_list() == [4.0]
    assert events["timestamp"].dtype == pl.Int64 and 881250949 in events["timestamp"].to_list()
    items = rows(result, "items")
    assert items["302"]["title"] == "L.A. Confidential (1997)"
    assert items["302"]["categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert items["543"]["title"] == "Misérables, Les (1995)"
    assert items["267"]["title"] == "unkonwn" and items["267"]["categories"] == [] and items["267"]["year"] is None
    users = rows(result, "users")
    assert users["196"] == {"user_id": "196", "age": 49, "gender": "M", "occupation": "writer", "zip_code": "55105"}
    assert users["186"]["zip_code"] == "00000"
    relations = result.tables["item_relations"].sort("item_id")
    assert relations.rows() == [("242", "film.film.genre", "m.02l7c8"), ("302", "film.film.actor", "m.0zzz")]
    kg_report = next(r for r in result.reports if r.name == "item_relations")
    assert kg_report.dropped == {"head is not a movie": 1}


def write_grouplens(folder: Path) -> Path:
    write(folder / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    flags_302 = "0|0|0|0|0|0|1|0|0|0|1|0|0|1|0|0|1|0|0"
    write(
        folder / "u.item",
        "242|Kolya (1996)|24-Jan-1997||http://us.imdb.com/M/title-exact?Kolya%20(1996)|"
        + "0|0|0|0|0|1|" + "0|" * 12 + "0\n"
        "302|L.A. Confidential (1997)|01-Jan-1997||http://us.imdb.com/M/title-exact?L%2EA%2E+Confidential+(1997)|"
        + flags_302 + "\n"
        "377|Misérables, Les (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Mis%E9rables%2C%20Les%20%281995%29|"
        "0|0|0|0|0|0|0|0|1|0|0|0|1|0|0|0|0|0|0\n"
        "267|unknown||||1|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0\n",
        encoding="latin-1",
    )
    write(folder / "u.user", "22|25|M|writer|40206\n186|39|F|executive|00000\n196|49|M|writer|55105\n")
    return folder


def test_grouplens_100k_layout_latin1(tmp_path):
    result = import_movielens(write_grouplens(tmp_path / "ml-100k"))
    check_schema(result)
    assert result.info["layout"] == "grouplens-100k"
    assert result.tables["events"].height == 3
    items = rows(result, "items")
    assert items["377"]["title"] == "Misérables, Les (1995)"
    assert items["377"]["categories"] == ["Drama", "Musical"]
    assert items["302"]["categories"] == ["Crime", "Film-Noir", "Mystery", "Thriller"]
    assert items["242"]["categories"] == ["Comedy"] and items["242"]["year"] == 1996
    assert items["267"]["categories"] == []
    assert rows(result, "users")["22"]["age"] == 25


def write_ml1m(folder: Path) -> Path:
    write(folder / "ratings.dat", "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    write(
        folder / "movies.dat",
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
        "3086::Babes in Toyland (1934)::Children's|Comedy\n"
        "1002::Ed's Next Move (1996)::Comedy\n"
        "3793::Misérables, Les (1998)::Drama\n",
        encoding="latin-1",
    )
    write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n3::M::25::15::55117\n")
    return folder


def test_ml1m_layout(tmp_path):
    result = import_movielens(write_ml1m(tmp_path / "ml-1m"))
    check_schema(result)
    assert result.info["layout"] == "dat"
    items = rows(result, "items")
    assert items["661"]["categories"] == ["Animation", "Children's", "Musical"]
    assert items["3793"]["title"] == "Misérables, Les (1998)"
    users = rows(result, "users")
    assert users["1"] == {"user_id": "1", "age": 1, "gender": "F", "occupation": "K-12 student", "zip_code": "48067"}
    assert users["2"]["occupation"] == "self-employed"
    users_report = next(r for r in result.reports if r.name == "users")
    assert users_report.dropped == {"user has no events": 1}  # user 3 rated nothing
    assert "3" not in users


def write_ml_latest(folder: Path) -> Path:
    write(
        folder / "ratings.csv",
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.0,964981247\n2,11,2.5,1445714835\n"
        "2,208112,3.5,1574000000\n",
    )
    write(
        folder / "movies.csv",
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation|Children|Comedy|Fantasy\n"
        '3,Grumpier Old Men (1995),Comedy|Romance\n11,"American President, The (1995)",Comedy|Drama|Romance\n'
        "208112,Ringo (2019),(no genres listed)\n",
    )
    return folder


def test_ml_latest_layout_without_users_file(tmp_path):
    result = import_movielens(write_ml_latest(tmp_path / "ml-latest-small"))
    check_schema(result)
    assert result.info["layout"] == "csv"
    items = rows(result, "items")
    assert items["11"]["title"] == "American President, The (1995)"
    assert items["11"]["categories"] == ["Comedy", "Drama", "Romance"]
    assert items["208112"]["categories"] == []
    assert result.tables["users"].columns == ["user_id"] and sorted(result.tables["users"]["user_id"]) == ["1", "2"]
    assert result.tables["events"].filter(item_id="11")["value"].to_list() == [2.5]


def test_layout_is_found_one_folder_down(tmp_path):
    write_ml1m(tmp_path / "download" / "ml-1m")
    assert detect_layout(tmp_path / "download") == ("dat", tmp_path / "download" / "ml-1m")


def test_movielens_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not found"):
        import_movielens(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty: no MovieLens files found .*u\.data"):
        import_movielens(tmp_path / "empty")
    folder = write_grouplens(tmp_path / "bad")
    write(folder / "u.data", "196,242,3,881250949\n")
    with pytest.raises(DataError, match=r"u\.data: expected 4 fields separated by '\\t', found 1"):
        import_movielens(folder)
    folder = write_recbole(tmp_path / "rb" / "ml-100k")
    write(folder / "ml-100k.inter", "user_id:token\titem_id:token\ttimestamp:float\n1\t2\t3\n")
    with pytest.raises(DataError, match=r"ml-100k\.inter: column 'rating' not found"):
        import_movielens(folder)


def test_movielens_row_accounting_and_strict(tmp_path):
    folder = write_ml1m(tmp_path / "ml-1m")
    write(
        folder / "ratings.dat",
        "1::1193::5::978300760\n"
        "1::1193::5::978300760\n"  # duplicate
        "1::661::x::978302109\n"  # rating not a number
        "2::1193::4::\n"  # no timestamp
        "2::9999::4::978298413\n"  # unknown movie
        "2::661::4::978298414\n",
    )
    result = import_movielens(folder)
    check_schema(result)
    events = next(r for r in result.reports if r.name == "events")
    assert (events.read, events.kept) == (6, 2)
    assert set(events.dropped.values()) == {1}
    reasons = " ".join(events.dropped)
    for expected in ("duplicate", "value not a number", "missing timestamp", "item not in the items table"):
        assert expected in reasons
    # strict: the error names the first droppable row
    with pytest.raises(DataError, match=r"ratings\.dat: row 1: duplicate"):
        import_movielens(folder, strict=True)


@pytest.mark.slow
def test_real_recbole_ml100k(real_ml100k):
    result = import_movielens(real_ml100k, strict=True)
    check_schema(result)
    assert result.tables["events"].height == 100_000
    assert result.tables["users"].height == 943
    assert result.tables["items"].height == 1_682
    assert result.tables["events"]["user_id"].n_unique() == 943
    assert result.tables["item_relations"].height > 50_000
    toy = rows(result, "items")["1"]
    assert toy["title"] == "Toy Story (1995)" and toy["categories"] == ["Animation", "Children's", "Comedy"]


# --------------------------------------------------------------------------- generic importer

MAPPING = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", value_col="price")


def test_generic_csv_milliseconds_and_items_with_categories(tmp_path):
    events = write(
        tmp_path / "log.csv", "uid,sku,ts,price\nu1,a,1600000000000,9.5\nu1,b,1600000001500,3\nu2,a,1600000002000,1\n"
    )
    items = write(tmp_path / "items.csv", 'sku,name,tags\na,"Apple, red",fruit| food \nb,Bread,\nc,Cheese,food\n')
    mapping = ColumnMapping(
        user_col="uid", item_col="sku", time_col="ts", value_col="price",
        item_title_col="name", category_col="tags", category_sep="|", source="purchase",
    )  # fmt: skip
    result = import_events(events, mapping, items_path=items)
    check_schema(result)
    assert result.tables["events"]["timestamp"].to_list() == [1600000000, 1600000001, 1600000002]
    assert set(result.tables["events"]["source"]) == {"purchase"}
    got = rows(result, "items")
    assert got["a"]["title"] == "Apple, red" and got["a"]["categories"] == ["fruit", "food"]
    assert got["b"]["categories"] == [] and got["c"]["title"] == "Cheese"  # items without events are kept
    assert result.tables["users"]["user_id"].sort().to_list() == ["u1", "u2"]


def test_generic_tsv_with_date_strings_text_and_users(tmp_path):
    events = write(
        tmp_path / "log.tsv",
        "user\titem\twhen\treview\nu1\ti1\t2020-01-02 10:00:00\tgreat\nu2\ti2\t2020-01-03 00:00:00\tmeh\n",
    )
    users = write(tmp_path / "people.tsv", "user\tage\tzip\tcity\nu1\t31\t01234\tOslo\nu2\t40\t99999\tRome\n")
    mapping = ColumnMapping(user_col="user", item_col="item", time_col="when", text_col="review")
    result = import_events(events, mapping, users_path=users)
    check_schema(result)
    assert result.tables["events"]["timestamp"].to_list() == [1577959200, 1578009600]
    assert result.tables["events"]["text"].to_list() == ["great", "meh"]
    assert result.tables["events"]["value"].null_count() == 2
    people = rows(result, "users")
    assert people["u1"]["age"] == 31 and people["u1"]["zip"] == "01234" and people["u2"]["city"] == "Rome"
    assert rows(result, "items")["i1"] == {"item_id": "i1", "title": "i1", "categories": []}


def test_generic_time_format(tmp_path):
    events = write(tmp_path / "log.csv", "uid,sku,ts\nu1,a,03/01/2020 10:00\nu1,b,04/01/2020 10:00\n")
    mapping = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", time_format="%d/%m/%Y %H:%M")
    result = import_events(events, mapping)
    assert result.tables["events"]["timestamp"].to_list() == [1578045600, 1578132000]


def test_generic_parquet_with_typed_columns(tmp_path):
    pl.DataFrame(
        {
            "uid": [10, 10, 11],
            "sku": [1, 2, 1],
            "ts": pl.Series(["2021-05-01 12:00", "2021-05-02 12:00", "2021-05-03 12:00"]).str.to_datetime(),
            "kind": ["click", None, "buy"],
            "cat": [["x", "y"], ["y"], ["x", "y"]],
        }
    ).write_parquet(tmp_path / "log.parquet")
    mapping = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", source_col="kind", category_col="cat")
    result = import_events(tmp_path / "log.parquet", mapping)
    check_schema(result)
    events = result.tables["events"]
    assert events["user_id"].to_list() == ["10", "10", "11"]
    assert events["source"].to_list() == ["click", "event", "buy"]
    assert events["timestamp"][0] == 1619870400
    assert rows(result, "items")["1"]["categories"] == ["x", "y"]  # items built from the events file


def test_generic_parquet_milliseconds(tmp_path):
    pl.DataFrame({"uid": ["a", "b"], "sku": ["x", "y"], "ts": [1_700_000_000_123, 1_700_000_100_999]}).write_parquet(
        tmp_path / "log.parquet"
    )
    result = import_events(tmp_path / "log.parquet", ColumnMapping(user_col="uid", item_col="sku", time_col="ts"))
    assert result.tables["events"]["timestamp"].to_list() == [1_700_000_000, 1_700_000_100]


def test_yaml_mapping_and_delimiter_detection(tmp_path):
    yaml_file = write(
        tmp_path / "mapping.yaml", "user_col: uid\nitem_col: sku\ntime_col: ts\ncategory_col: tags\ncategory_sep: ','\n"
    )
    mapping = ColumnMapping.from_yaml(yaml_file, value_col="price")
    assert mapping.value_col == "price" and mapping.category_sep == ","
    events = write(tmp_path / "log.txt", "uid;sku;ts;price;tags\nu1;a;100;1.5;x,y\nu1;b;200;2;\n")
    assert sniff_delimiter(events) == ";"
    result = import_events(events, mapping)
    assert rows(result, "items")["a"]["categories"] == ["x", "y"]
    assert result.tables["events"]["value"].to_list() == [1.5, 2.0]


def test_generic_row_accounting(tmp_path):
    events = write(
        tmp_path / "log.csv",
        "uid,sku,ts,price\n"
        "u1,a,100,1\n"
        ",a,101,1\n"  # missing user
        "u1,,102,1\n"  # missing item
        "u1,a,,1\n"  # missing timestamp
        "u1,a,soon,1\n"  # timestamp not a number
        "u1,b,104,\n"  # missing value
        "u1,b,105,cheap\n"  # value not a number
        "u1,b,106,inf\n"  # not finite
        "u1,b,107,nan\n"  # not finite
        "u1,a,100,1\n"  # duplicate
        "u2,zzz,108,1\n"  # unknown item
        "u2,b,109,2\n",
    )
    items = write(tmp_path / "items.csv", "sku,name\na,A\nb,B\nb,B again\n,nameless\n")
    users = write(tmp_path / "users.csv", "uid,age\nu1,30\nu2,31\nu3,32\nu3,33\n")
    mapping = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", value_col="price", item_title_col="name")
    result = import_events(events, mapping, items_path=items, users_path=users)
    check_schema(result)
    reports = {r.name: r for r in result.reports}
    ev = reports["events"]
    assert (ev.read, ev.kept) == (12, 2)
    assert ev.dropped == {
        "missing user id (uid)": 1,
        "missing item id (sku)": 1,
        "missing timestamp (ts)": 1,
        "timestamp not a number or date (ts)": 1,
        "missing value (price)": 1,
        "value not a number (price)": 1,
        "value not finite (price)": 2,
        "duplicate event (same user, item, source and timestamp)": 1,
        "item not in the items table": 1,
    }
    assert reports["items"].dropped == {"missing item id": 1, "duplicate item id (first kept)": 1}
    assert rows(result, "items")["b"]["title"] == "B"
    assert reports["users"].dropped == {"duplicate user id (first kept)": 1, "user has no events": 1}
    assert all(math.isfinite(v) for v in result.tables["events"]["value"])


def test_users_missing_from_users_file_are_added_with_a_note(tmp_path):
    events = write(tmp_path / "log.csv", "uid,sku,ts\nu1,a,1\nu2,a,2\n")
    users = write(tmp_path / "users.csv", "uid,age\nu1,30\n")
    result = import_events(events, ColumnMapping(user_col="uid", item_col="sku", time_col="ts"), users_path=users)
    assert rows(result, "users")["u2"]["age"] is None
    assert "1 users with events have no row" in result.notes[0]


def test_generic_strict_names_file_and_row(tmp_path):
    events = write(tmp_path / "log.csv", "uid,sku,ts,price\nu1,a,100,1\nu1,b,101,oops\n")
    with pytest.raises(DataError, match=r"log\.csv: row 1: value not a number \(price\).*oops"):
        import_events(events, MAPPING, strict=True)
    assert import_events(events, MAPPING).tables["events"].height == 1


@pytest.mark.parametrize(
    ("content", "kwargs", "pattern"),
    [
        ("uid,sku,ts,price\nu1,a,1,1\n", {"mapping": ColumnMapping("uid", "sku", "time", "price")},
         r"log\.csv: events column 'time' not found \(columns: uid, sku, ts, price\)"),
        ("uid,sku,ts,price\nu1,a,1,1\n", {"mapping": ColumnMapping("uid", "sku", "ts", "price", delimiter=";")},
         r"log\.csv: found one column 'uid,sku,ts,price' with delimiter ';'; wrong delimiter"),
        ("uid,sku,ts,price\nu1,a,x,1\nu2,b,y,2\n", {},
         r"log\.csv: column 'ts', row 0: 'x' is not a time"),
        ("uid,sku,ts,price\nu1,a,1,abc\n", {},
         r"log\.csv: column 'price', row 0: 'abc' is not a number"),
        ("uid,sku,ts,price\n", {}, r"log\.csv: no usable events"),
    ],
)  # fmt: skip
def test_generic_errors_name_file_and_column(tmp_path, content, kwargs, pattern):
    events = write(tmp_path / "log.csv", content)
    with pytest.raises(DataError, match=pattern):
        import_events(events, kwargs.get("mapping", MAPPING))


def test_missing_files_and_mistyped_columns(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: events file not found"):
        import_events(tmp_path / "nope.csv", MAPPING)
    events = write(tmp_path / "log.csv", "uid,sku,ts,price\nu1,a,1,1\n")
    with pytest.raises(DataError, match=r"items\.csv: items file not found"):
        import_events(events, MAPPING, items_path=tmp_path / "items.csv")
    pl.DataFrame({"uid": ["a"], "sku": ["x"], "ts": [[1, 2]]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"bad\.parquet: column 'ts' has type List"):
        import_events(tmp_path / "bad.parquet", ColumnMapping("uid", "sku", "ts"))


def test_mapping_yaml_errors(tmp_path):
    bad_key = write(tmp_path / "m.yaml", "user_col: uid\nitem_col: sku\ntime_col: ts\nuser_column: x\n")
    with pytest.raises(DataError, match=r"m\.yaml: unknown mapping name 'user_column' \(known: user_col"):
        ColumnMapping.from_yaml(bad_key)
    missing = write(tmp_path / "m2.yaml", "user_col: uid\nitem_col: sku\n")
    with pytest.raises(DataError, match=r"m2\.yaml: 'time_col' is required"):
        ColumnMapping.from_yaml(missing)
    wrong_type = write(tmp_path / "m3.yaml", "user_col: uid\nitem_col: sku\ntime_col: [a, b]\n")
    with pytest.raises(DataError, match=r"m3\.yaml: 'time_col' must be a non-empty string"):
        ColumnMapping.from_yaml(wrong_type)
    with pytest.raises(DataError, match=r"absent\.yaml: mapping file not found"):
        ColumnMapping.from_yaml(tmp_path / "absent.yaml")


def test_generic_latin1_items_and_nested_text_column(tmp_path):
    events = write(tmp_path / "log.csv", "uid,sku,ts\nu1,a,1\n")
    items = write(tmp_path / "items.csv", "sku,name\na,Misérables\n", encoding="latin-1")
    mapping = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", item_title_col="name")
    assert rows(import_events(events, mapping, items_path=items), "items")["a"]["title"] == "Misérables"
    pl.DataFrame({"uid": ["a"], "sku": ["x"], "ts": [1], "body": [["w"]]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: column 'body' has type List"):
        import_events(tmp_path / "t.parquet", ColumnMapping("uid", "sku", "ts", text_col="body"))


def test_tab_delimiter_as_typed(tmp_path):
    events = write(tmp_path / "log.txt", "uid\tsku\tts\nu1\ta\t5\n")
    for typed in ("\\t", "tab", "\t"):
        mapping = ColumnMapping(user_col="uid", item_col="sku", time_col="ts", delimiter=typed)
        assert import_events(events, mapping).tables["events"]["timestamp"].to_list() == [5]
