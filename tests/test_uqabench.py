"""UQABench: import of Arrow IPC files written like the official ones, bad files, and the
startswith accuracy per sub-task, family and overall checked by hand."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest

from data_pipelines.report import DataError
from data_pipelines.schema import validate
from data_pipelines.uqabench import SUB_TASKS, import_uqabench, sub_task_of
from user_embed.eval.uqabench_metrics import score_uqabench, uqabench_accuracy

IDS = pa.list_(pa.list_(pa.int64()))
# One question per sub-task, worded so the official substring rules pick it (Taobao data is Chinese).
QUESTIONS = {
    "df": ("用户第2次（从1开始计数）浏览的商品的类目是什么？", "女装"),
    "mf": ("用户浏览过的类目为女装的商品有多少个？", "3"),
    "ip": ("用户下一个可能点击的商品的标题是什么？", "红色连衣裙"),
    "ap": ("用户下一个可能点击的商品的品牌是什么？", "优衣库"),
    "li": ("用户最感兴趣的3个类目是什么？", "女装、鞋、包"),
    "si": ("用户近期最感兴趣的品牌是什么？", "耐克"),
    "it": ("用户偏好的转移路径是什么？", "女装->鞋"),
}


def chat(question: str, answer: str) -> str:
    return json.dumps(
        [{"role": "user", "content": question}, {"role": "assistant", "content": answer}], ensure_ascii=False
    )


def sequences(n_rows: int) -> dict[str, pa.Array]:
    """Row r has items r+1, r+2 (and r+3 on even rows), item i in cate 100 + i % 5 etc.; ids are one-element lists."""
    items = [[r + 1, r + 2] + ([r + 3] if r % 2 == 0 else []) for r in range(n_rows)]

    def column(offset: int) -> pa.Array:
        return pa.array([[[offset + i % 5] for i in row] for row in items], type=IDS)

    return {
        "uni_seq_item_id": pa.array([[[i] for i in row] for row in items], type=IDS),
        "uni_seq_cate_id": column(100),
        "uni_seq_brand_id": column(200),
        "uni_seq_shop_id": column(300),
        "uni_seq_seller_id": column(400),
        "uni_seq_title_bpe_token_ids": pa.array([[[7, i] for i in row] for row in items], type=IDS),
        "uni_seq_cate_bpe_token_ids": pa.array([[[9] for _ in row] for row in items], type=IDS),  # extra, ignored
    }


def write_arrow(path: Path, columns: dict) -> Path:
    table = pa.table(columns)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return path


def align_file(tmp_path: Path, name: str = "align_data_eval.arrow") -> Path:
    columns = sequences(len(QUESTIONS))
    columns["text"] = pa.array([chat(q, a) for q, a in QUESTIONS.values()])
    return write_arrow(tmp_path / name, columns)


def test_import_align_and_pretrain_files(tmp_path):
    align = align_file(tmp_path)
    pretrain = write_arrow(tmp_path / "pretrain_data_train.arrow", sequences(2))
    result = import_uqabench([pretrain, align])
    tables = result.tables
    for name, table in tables.items():
        validate(name, table)
    events = tables["events"]
    assert events.height == (3 + 2) + (4 * 3 + 3 * 2)  # pretrain rows 0,1 + align rows 0..6
    assert set(events["source"]) == {"behaviour"}
    row0 = events.filter(pl.col("user_id") == "align_data_eval:0")
    assert row0["item_id"].to_list() == ["1", "2", "3"] and row0["timestamp"].to_list() == [0, 1, 2]
    item2 = tables["items"].filter(pl.col("item_id") == "2").row(0, named=True)
    assert item2["categories"] == ["cate:102", "brand:202", "shop:302", "seller:402"]
    assert item2["title"] == "" and item2["title_token_ids"] == [7, 2]
    assert tables["items"]["item_id"].is_unique().all()
    assert tables["users"].height == 2 + 7
    qa = tables["qa"]
    assert qa["task"].to_list() == list(QUESTIONS)
    assert qa["family"].to_list() == [SUB_TASKS[t] for t in QUESTIONS]
    assert qa["answer"].to_list() == [a for _, a in QUESTIONS.values()]
    assert qa["cutoff"].to_list() == [3, 2, 3, 2, 3, 2, 3]
    assert set(qa["split"]) == {"test"}  # *_eval
    assert qa["id"][0] == "align_data_eval:0" and set(qa["options"].list.len()) == {0}
    assert result.reports[0].read == 5 and result.notes == []


def test_user_id_column_merges_rows_and_other_questions_are_kept(tmp_path):
    columns = sequences(2)
    columns["user_id"] = pa.array([42, 42])
    columns["text"] = pa.array([chat("用户最感兴趣的3个品牌是什么？", "a"), chat("Describe the user.", "b")])
    # both rows of user 42 carry the same sequence
    for key in [k for k in columns if k.startswith("uni_seq")]:
        columns[key] = pa.array([columns[key][0].as_py()] * 2, type=IDS)
    result = import_uqabench(write_arrow(tmp_path / "align_data_train.arrow", columns))
    assert result.tables["users"]["user_id"].to_list() == ["42"]
    assert result.tables["events"].height == 3  # not duplicated per question
    assert result.tables["qa"]["task"].to_list() == ["li", "other"]
    assert set(result.tables["qa"]["split"]) == {"train"}
    assert "1 question(s) match no UQABench sub-task rule" in result.notes[0]


def test_missing_column_and_bad_rows_are_named(tmp_path):
    columns = sequences(2)
    del columns["uni_seq_brand_id"]
    path = write_arrow(tmp_path / "pretrain_data_eval.arrow", columns)
    with pytest.raises(DataError, match=r"pretrain_data_eval.arrow: missing required column 'uni_seq_brand_id'"):
        import_uqabench(path)
    columns = sequences(2)
    columns["uni_seq_shop_id"] = pa.array([[[1], [2], [3]], [[1]]], type=IDS)  # row 1: 1 shop for 2 items
    with pytest.raises(DataError, match=r"row 1: column 'uni_seq_shop_id' has 1 items, 'uni_seq_item_id' has 2"):
        import_uqabench(write_arrow(tmp_path / "a.arrow", columns))
    columns = sequences(2)
    columns["text"] = pa.array([chat("q", "a"), "{not json"])
    with pytest.raises(DataError, match=r"b.arrow: row 1, column 'text': not chat JSON"):
        import_uqabench(write_arrow(tmp_path / "b.arrow", columns))
    (tmp_path / "c.arrow").write_text("hello")
    with pytest.raises(DataError, match=r"c.arrow: not an Arrow IPC file"):
        import_uqabench(tmp_path / "c.arrow")


def test_official_sub_task_rules():
    for code, (question, _) in QUESTIONS.items():
        assert sub_task_of(question) == code
    assert sub_task_of("用户第3次浏览的商品的品牌是什么？") == "df"
    assert sub_task_of("用户浏览序列的长度是多少？") == "mf"
    assert sub_task_of("hello") is None


def test_accuracy_by_hand():
    tasks = ["df", "df", "mf", "ip", "ap", "li", "si", "it"]
    golds = ["女装", "鞋", "3", "红色连衣裙", "优衣库", "女装", "耐克", "a->b"]
    preds = [
        "女装。",  # starts with the gold: right
        "女装",  # wrong
        " 3 ",  # right after strip
        "红色",  # a prefix of the gold is not enough: wrong
        "优衣库的衣服",  # right
        "",  # empty: wrong
        "耐克",  # right
        "a->b->c",  # right
    ]
    m = uqabench_accuracy(tasks, golds, preds)
    assert m["accuracy"] == pytest.approx(5 / 8) and m["n"] == 8
    assert m["tasks"]["df"] == {"accuracy": 0.5, "n": 2}
    assert {k: v["accuracy"] for k, v in m["tasks"].items()} == {
        "df": 0.5,
        "mf": 1.0,
        "ip": 0.0,
        "ap": 1.0,
        "li": 0.0,
        "si": 1.0,
        "it": 1.0,
    }
    assert m["families"] == {
        "sequence_understanding": {"accuracy": pytest.approx(2 / 3), "n": 3},
        "action_prediction": {"accuracy": 0.5, "n": 2},
        "interest_perception": {"accuracy": pytest.approx(2 / 3), "n": 3},
    }
    assert list(uqabench_accuracy(["si"], ["x"], ["x"])["tasks"]) == ["si"]  # absent groups left out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n", encoding="utf-8")
    return path


def test_score_official_generation_file_and_split_files(tmp_path):
    # the official run_generation.py output: question, prediction, answer (answer may be a list)
    records = [
        {"question": q, "prediction": a if code in ("df", "ip") else "?", "answer": [a]}
        for code, (q, a) in QUESTIONS.items()
    ]
    m = score_uqabench(write_jsonl(tmp_path / "generated.jsonl", records))
    assert m["accuracy"] == pytest.approx(2 / 7)
    assert m["families"]["sequence_understanding"] == {"accuracy": 0.5, "n": 2}
    # golds from the align Arrow file, predictions matched by id (in another order)
    align = align_file(tmp_path)
    preds = [
        {"id": f"align_data_eval:{i}", "prediction": a} for i, (_, a) in reversed(list(enumerate(QUESTIONS.values())))
    ]
    preds[0]["prediction"] = "wrong"  # the last question (it)
    m = score_uqabench(align, write_jsonl(tmp_path / "preds.jsonl", preds))
    assert m["accuracy"] == pytest.approx(6 / 7) and m["tasks"]["it"]["accuracy"] == 0.0
    # golds with explicit task fields, predictions by position
    golds = write_jsonl(
        tmp_path / "golds.jsonl",
        [{"question": "q1", "answer": "x", "task": "li"}, {"question": "q2", "answer": "y", "task": "si"}],
    )
    by_order = write_jsonl(tmp_path / "p.jsonl", [{"prediction": "x"}, {"prediction": "z"}])
    assert score_uqabench(golds, by_order)["tasks"] == {
        "li": {"accuracy": 1.0, "n": 1},
        "si": {"accuracy": 0.0, "n": 1},
    }


def test_score_bad_files(tmp_path):
    align = align_file(tmp_path)
    short = write_jsonl(tmp_path / "short.jsonl", [{"id": "align_data_eval:0", "prediction": "x"}])
    with pytest.raises(DataError, match=r"short.jsonl: no prediction for 6 id\(s\)"):
        score_uqabench(align, short)
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [{"question": "hello", "answer": "a", "prediction": "a"}])
    with pytest.raises(DataError, match=r"unknown.jsonl: line 1: no UQABench sub-task"):
        score_uqabench(unknown)
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "a", "prediction": "a", "task": "df"}\n{"question": \n')
    with pytest.raises(DataError, match=r"broken.jsonl: line 2: malformed JSON"):
        score_uqabench(broken)
    golds = write_jsonl(tmp_path / "g.jsonl", [{"answer": "a", "task": "df"}, {"answer": "b", "task": "df"}])
    with pytest.raises(DataError, match=r"1 predictions for 2 golds and no 'id' fields"):
        score_uqabench(golds, write_jsonl(tmp_path / "p.jsonl", [{"prediction": "a"}]))
    with pytest.raises(DataError, match=r"records scored without --preds need a 'prediction' field"):
        score_uqabench(golds)


def test_score_by_position_checks_questions(tmp_path):
    golds = write_jsonl(tmp_path / "g.jsonl", [{"question": "用户近期最感兴趣的品牌是什么？", "answer": "a"}])
    preds = write_jsonl(tmp_path / "p.jsonl", [{"question": "用户最感兴趣的3个类目是什么？", "prediction": "a"}])
    with pytest.raises(DataError, match=r"p.jsonl: the prediction paired with gold line 1 is for another question"):
        score_uqabench(golds, preds)


def test_prepare_uqabench_cli_writes_the_tables(tmp_path, capsys):
    from user_embed.cli import main

    align = align_file(tmp_path)
    pretrain = write_arrow(tmp_path / "pretrain_data_train.arrow", sequences(2))
    out = tmp_path / "data"
    assert main(["prepare", "uqabench", "--files", str(pretrain), str(align), "--out", str(out)]) == 0
    qa = pl.read_parquet(out / "qa.parquet")
    assert qa["task"].to_list() == list(QUESTIONS) and set(qa["split"]) == {"test"}
    assert pl.read_parquet(out / "events.parquet").height == 5 + 18
    capsys.readouterr()
    assert main(["prepare", "uqabench", "--files", str(tmp_path / "missing.arrow"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.arrow" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_evaluate_uqabench_generates_scores_and_writes_official_files(tmp_path, tiny_llm_dir, capsys):
    from test_lamp_cli import fit_tiny
    from user_embed.cli import main

    files = [str(align_file(tmp_path, f"align_data_{s}.arrow")) for s in ("train", "val", "eval")]
    data = tmp_path / "data"
    assert main(["prepare", "uqabench", "--files", *files, "--out", str(data)]) == 0
    embedder = fit_tiny(data, tiny_llm_dir, tmp_path)
    out = tmp_path / "eval"
    assert main(["evaluate", "--benchmark", "uqabench", "--checkpoint", str(embedder), "--data", str(data),
                 "--max-new-tokens", "4", "--out", str(out), "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["questions"] == 7 and set(metrics["uqabench"]) == {"none", "soft"}
    for method in ("none", "soft"):
        table = metrics["uqabench"][method]
        assert set(table["tasks"]) == set(SUB_TASKS) and table["n"] == 7
        rows = [json.loads(line) for line in (out / f"{method}_generated.jsonl").read_text().splitlines()]
        assert [r["answer"] for r in rows] == [a for _, a in QUESTIONS.values()]
        assert score_uqabench(out / f"{method}_generated.jsonl")["accuracy"] == table["accuracy"]
    assert main(["evaluate", "--benchmark", "uqabench", "--checkpoint", str(embedder), "--data", str(data),
                 "--methods", "text", "--out", str(tmp_path / "e2"), "--no-progress"]) == 2
    assert "none, soft" in capsys.readouterr().err.strip().splitlines()[-1] and not (tmp_path / "e2").exists()
