"""LaMP: import of every task from few-record files in the official formats, the official
metrics checked against values worked out by hand, bad input, submission files, and the
LaMP-3-format set built from MovieLens."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_pipelines.lamp import (
    LAMP_TASKS,
    MOVIE_TAGS,
    NEWS_CATEGORIES,
    import_lamp,
    resolve_task,
    write_lamp_submission,
)
from data_pipelines.lamp_movielens import build_lamp3_from_movielens
from data_pipelines.report import DataError
from data_pipelines.schema import validate
from user_embed.errors import UserError
from user_embed.eval.lamp_metrics import classification_metrics, lamp_metrics, rating_metrics, rouge_metrics, score_lamp



def write_json(path: Path, obj) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj), encoding="utf-8")
    return path


# Two questions per task in the official field layout (abridged texts), with their golds.
SAMPLES: dict[str, tuple[list[dict], list[str]]] = {
    "LaMP_1": (
        [
            {
                "id": "110",
                "input": 'For an author who has written the paper with the title "Deep nets", which reference is '
                'related? Just answer with [1] or [2] without explanation. [1]: "Kernels" [2]: "Backprop"',
                "profile": [
                    {"title": "Conv nets", "abstract": "We train.", "id": "1100", "date": "2005"},
                    {"title": "RNNs", "abstract": "We recur.", "id": "1101", "date": "2007"},
                ],
            },
            {
                "id": "111",
                "input": 'For an author ... [1]: "A" [2]: "B"',
                "profile": [{"title": "Graphs", "abstract": "Nodes.", "id": "1110", "date": "2010"}],
            },
        ],
        ["[2]", "[1]"],
    ),
    "LaMP_2": (
        [
            {
                "id": "200",
                "input": "Which tag does this movie relate to among the following tags? ... description: A robot.",
                "profile": [
                    {"tag": "sci-fi", "description": "Space travel.", "id": "2000"},
                    {"tag": "comedy", "description": "A wedding goes wrong.", "id": "2001"},
                ],
            },
            {
                "id": "201",
                "input": "Which tag ... description: Two friends.",
                "profile": [{"tag": "true story", "description": "A war hero.", "id": "2010"}],
            },
        ],
        ["sci-fi", "comedy"],
    ),
    "LaMP_2_news": (
        [
            {
                "id": "2100",
                "input": "Which category does this article relate to among the following categories? … article: Goal!",
                "profile": [{"text": "The match ended.", "title": "Cup final", "category": "sports", "id": "21000"}],
            },
            {
                "id": "2101",
                "input": "Which category ... article: Stocks fell.",
                "profile": [{"text": "Markets.", "title": "Dow", "category": "business", "id": "21010"}],
            },
        ],
        ["sports", "business"],
    ),
    "LaMP_3": (
        [
            {
                "id": "310",
                "input": "What is the score of the following review on a scale of 1 to 5? just answer with 1, 2, "
                "3, 4, or 5 without further explanation. review: Great fit.",
                "profile": [
                    {"text": "Broke in a week.", "score": "1", "id": "3100"},
                    {"text": "Fine.", "score": "4", "id": "3101"},
                ],
            },
            {
                "id": "311",
                "input": "What is the score ... review: Meh.",
                "profile": [{"text": "Love it.", "score": "5", "id": "3110"}],
            },
        ],
        ["5", "3"],
    ),
    "LaMP_4": (
        [
            {
                "id": "410",
                "input": "Generate a headline for the following article: The council voted ...",
                "profile": [{"text": "Rain expected.", "title": "Storm coming", "id": "4100", "date": "2014-05-02"}],
            },
            {
                "id": "411",
                "input": "Generate a headline for the following article: Prices rose ...",
                "profile": [
                    {"text": "Bread costs more.", "title": "Inflation bites", "id": "4110", "date": "2015-01-31"}
                ],
            },
        ],
        ["Council votes yes", "Prices up again"],
    ),
    "LaMP_5": (
        [
            {
                "id": "510",
                "input": "Generate a title for the following abstract of a paper: We study ...",
                "profile": [{"title": "On graphs", "abstract": "Graphs are studied.", "id": "5100"}],
            },
            {
                "id": "511",
                "input": "Generate a title for the following abstract of a paper: We prove ...",
                "profile": [{"title": "A proof", "abstract": "We prove it.", "id": "5110"}],
            },
        ],
        ["A study of things", "Proving it"],
    ),
    "LaMP_6": (
        [
            {
                "id": "610",
                "input": "Generate a subject for the following email: Hi all, the meeting ...",
                "profile": [{"text": "Lunch at noon?", "title": "lunch", "id": "6100"}],
            },
            {
                "id": "611",
                "input": "Generate a subject for the following email: Please review ...",
                "profile": [{"text": "Draft attached.", "title": "draft", "id": "6110"}],
            },
        ],
        ["meeting moved", "review please"],
    ),
    "LaMP_7": (
        [
            {
                "id": "710",
                "input": "Paraphrase the following tweet without any explanation before or after it: so tired",
                "profile": [{"text": "coffee time #monday", "id": "7100"}, {"text": "gym done", "id": "7101"}],
            },
            {
                "id": "711",
                "input": "Paraphrase the following tweet without any explanation before or after it: yay",
                "profile": [{"text": "best day", "id": "7110"}],
            },
        ],
        ["exhausted today", "hooray"],
    ),
}


def write_task(tmp_path: Path, task: str) -> tuple[Path, Path]:
    questions, golds = SAMPLES[task]
    official = LAMP_TASKS[task].official_name
    q = write_json(tmp_path / f"{task}_questions.json", questions)
    o = write_json(
        tmp_path / f"{task}_outputs.json",
        {"task": official, "golds": [{"id": x["id"], "output": g} for x, g in zip(questions, golds)]},
    )
    return q, o


# --------------------------------------------------------------------------- import


@pytest.mark.parametrize("task", list(SAMPLES))
def test_each_task_imports(tmp_path, task):
    questions_path, outputs_path = write_task(tmp_path, task)
    result = import_lamp(task, questions_path, outputs_path, split="dev")
    tables = result.tables
    for name, table in tables.items():
        validate(name, table)
    questions, golds = SAMPLES[task]
    spec = LAMP_TASKS[task]
    n_items = sum(len(q["profile"]) for q in questions)
    assert tables["events"].height == n_items
    assert set(tables["events"]["user_id"]) == {q["id"] for q in questions}
    assert tables["events"]["source"].unique().to_list() == [spec.source]
    assert tables["users"]["user_id"].to_list() == [q["id"] for q in questions]
    qa = tables["qa"]
    assert qa["id"].to_list() == qa["user_id"].to_list() == [q["id"] for q in questions]
    assert qa["question"].to_list() == [q["input"] for q in questions]
    assert qa["answer"].to_list() == golds
    assert qa["options"][0].to_list() == list(spec.labels)
    assert set(qa["task"]) == {task} and set(qa["family"]) == {"lamp"} and set(qa["split"]) == {"val"}
    first = questions[0]["profile"][0]
    event = tables["events"].filter(pl.col("item_id") == first["id"]).row(0, named=True)
    assert event["text"] == " ".join(first[f] for f in spec.text_fields)
    item = tables["items"].filter(pl.col("item_id") == first["id"]).row(0, named=True)
    assert item["title"] == first[spec.title_field]
    assert item["categories"] == ([first[spec.category_field]] if spec.category_field else [])
    assert event["value"] == (float(first["score"]) if spec.score_field else None)
    assert result.reports[1].read == n_items


def test_dates_become_timestamps_and_cutoff(tmp_path):
    questions_path, outputs_path = write_task(tmp_path, "LaMP_4")
    tables = import_lamp("LaMP_4", questions_path, outputs_path).tables
    ts = dict(zip(tables["events"]["item_id"], tables["events"]["timestamp"]))
    assert ts["4100"] == 1398988800  # 2014-05-02T00:00:00Z
    cutoffs = dict(zip(tables["qa"]["id"], tables["qa"]["cutoff"]))
    assert cutoffs["410"] == 1398988800 + 1
    # year-only dates (LaMP-1) are 1 January of that year
    q1, o1 = write_task(tmp_path, "LaMP_1")
    ts1 = dict(zip(*import_lamp("LaMP_1", q1, o1).tables["events"].select("item_id", "timestamp")))
    assert ts1["1100"] == 1104537600 and ts1["1101"] == 1167609600


def test_without_dates_position_is_time_and_without_outputs_answers_are_empty(tmp_path):
    questions_path, _ = write_task(tmp_path, "LaMP_7")
    result = import_lamp("LaMP-7", questions_path)  # dash spelling accepted
    events = result.tables["events"].filter(pl.col("user_id") == "710")
    assert events["timestamp"].to_list() == [0, 1]
    assert events["item_id"].to_list() == ["7100", "7101"]
    assert result.tables["qa"]["cutoff"].to_list() == [2, 1]
    assert result.tables["qa"]["answer"].to_list() == ["", ""]
    # an unlabelled classification question is valid too (answer "" = unknown)
    q2, _ = write_task(tmp_path, "LaMP_2")
    assert import_lamp("LaMP_2", q2).tables["qa"]["answer"].to_list() == ["", ""]


def test_task_names_and_label_lists():
    assert resolve_task("lamp_2").labels == MOVIE_TAGS and len(MOVIE_TAGS) == 15
    assert resolve_task("LaMP_2_news").labels == NEWS_CATEGORIES and len(NEWS_CATEGORIES) == 15
    assert resolve_task("LaMP_2_news").official_name == "LaMP_2"
    assert resolve_task("LaMP_1").labels == ("[1]", "[2]")
    assert resolve_task("LaMP_3").labels == ("1", "2", "3", "4", "5")
    assert resolve_task("LaMP_5").labels == ()
    with pytest.raises(UserError, match="unknown LaMP task 'LaMP_8'"):
        resolve_task("LaMP_8")


# --------------------------------------------------------------------------- bad input


def test_malformed_json_names_file_and_line(tmp_path):
    bad = tmp_path / "dev_questions.json"
    bad.write_text('[{"id": "1", "input": "x",\n "profile": [}]')
    with pytest.raises(DataError, match=r"dev_questions.json: malformed JSON.*line 2"):
        import_lamp("LaMP_7", bad)


@pytest.mark.parametrize("profile", [[], None, "missing", "missing everywhere"])
def test_question_without_profile_names_id(tmp_path, profile):
    questions = [{"id": "1", "input": "a", "profile": [{"id": "9", "text": "t"}]}, {"id": "2", "input": "b"}]
    if profile == "missing everywhere":
        questions = [{"id": "2", "input": "b"}, {"id": "3", "input": "c"}]
    elif profile != "missing":
        questions[1]["profile"] = profile
    path = write_json(tmp_path / "q.json", questions)
    with pytest.raises(DataError, match=r"q.json: question '2' has no profile"):
        import_lamp("LaMP_7", path)


def test_output_ids_must_match_questions(tmp_path):
    questions_path, _ = write_task(tmp_path, "LaMP_7")
    extra = write_json(
        tmp_path / "o.json",
        {
            "task": "LaMP_7",
            "golds": [{"id": "710", "output": "a"}, {"id": "711", "output": "b"}, {"id": "999", "output": "c"}],
        },
    )
    with pytest.raises(DataError, match=r"o.json: 1 output id\(s\) match no question, e.g. \['999'\]"):
        import_lamp("LaMP_7", questions_path, extra)
    missing = write_json(tmp_path / "o2.json", {"task": "LaMP_7", "golds": [{"id": "710", "output": "a"}]})
    with pytest.raises(DataError, match=r"o2.json: 1 question\(s\) have no output, e.g. \['711'\]"):
        import_lamp("LaMP_7", questions_path, missing)


def test_gold_label_outside_label_list_names_id(tmp_path):
    questions_path, _ = write_task(tmp_path, "LaMP_2")
    outputs = write_json(
        tmp_path / "o.json",
        {"task": "LaMP_2", "golds": [{"id": "200", "output": "sci-fi"}, {"id": "201", "output": "horror"}]},
    )
    with pytest.raises(DataError, match=r"o.json: id '201': gold 'horror' is not a LaMP_2 label"):
        import_lamp("LaMP_2", questions_path, outputs)


def test_unknown_task_wrong_task_file_and_missing_fields(tmp_path):
    questions_path, outputs_path = write_task(tmp_path, "LaMP_4")
    with pytest.raises(UserError, match="unknown LaMP task"):
        import_lamp("LaMP_9", questions_path, outputs_path)
    with pytest.raises(DataError, match=r"_outputs.json: file is for task 'LaMP_4', not LaMP_6"):
        import_lamp("LaMP_6", questions_path, outputs_path)  # same profile fields, other task
    questions_path, _ = write_task(tmp_path, "LaMP_7")
    with pytest.raises(DataError, match=r"LaMP_4 profile items need the field 'title'.*is --task right"):
        import_lamp("LaMP_4", questions_path)


def test_bad_date_and_score_name_question_and_item(tmp_path):
    q = write_json(
        tmp_path / "q.json",
        [
            {
                "id": "1",
                "input": "x",
                "profile": [
                    {"id": "a", "text": "t", "date": "2014-01-01"},
                    {"id": "b", "text": "t", "date": "yesterday"},
                ],
            }
        ],
    )
    with pytest.raises(DataError, match=r"question '1', profile item 'b': date 'yesterday'"):
        import_lamp("LaMP_7", q)
    q = write_json(
        tmp_path / "q3.json", [{"id": "1", "input": "x", "profile": [{"id": "a", "text": "t", "score": "five"}]}]
    )
    with pytest.raises(DataError, match=r"question '1', profile item 'a': score 'five' is not a number"):
        import_lamp("LaMP_3", q)
    q = write_json(tmp_path / "int.json", [{"id": 7, "input": "x", "profile": [{"id": 70, "text": "t"}]}])
    assert import_lamp("LaMP_7", q).tables["qa"]["id"].to_list() == ["7"]  # integer ids are read as text
    q = write_json(tmp_path / "dup.json", [{"id": "1", "input": "x", "profile": [{"id": "a", "text": "t"}]}] * 2)
    with pytest.raises(DataError, match="duplicate question id '1'"):
        import_lamp("LaMP_7", q)


# --------------------------------------------------------------------------- metrics (by hand)


def test_classification_metrics_by_hand():
    # golds -> [0, 1, 0, 0]; preds -> [0, 0, -1 (unknown), 1 (after strip)]
    m = classification_metrics(["[1]", "[1]", "the first", " [2] "], ["[1]", "[2]", "[1]", "[1]"], ["[1]", "[2]"])
    assert m["accuracy"] == pytest.approx(1 / 4)
    # label [1]: tp 1, fp 1, fn 2 -> P 1/2, R 1/3, F1 0.4; label [2]: tp 0 -> 0; macro 0.2
    assert m["f1"] == pytest.approx(0.2)
    # macro over the whole 15-tag list: labels never seen count as 0
    m2 = lamp_metrics("LaMP_2", ["comedy", "action"], ["comedy", "action"])
    assert m2 == {"accuracy": 1.0, "f1": pytest.approx(2 / 15)}
    # empty predictions are unknown labels
    assert lamp_metrics("LaMP_1", ["", ""], ["[1]", "[2]"]) == {"accuracy": 0.0, "f1": 0.0}


def test_rating_metrics_by_hand():
    # "abc" vs gold 2 -> 5 (farther), "" vs gold 4 -> 1, "2.5" parses
    m = rating_metrics(["5", "abc", "", "2.5"], ["4", "2", "4", "3"])
    assert m["mae"] == pytest.approx((1 + 3 + 3 + 0.5) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((1 + 9 + 9 + 0.25) / 4))
    assert rating_metrics(["?"], ["3"]) == {"mae": 2.0, "rmse": 2.0}  # tie at 3 -> 5, as the official code
    assert rating_metrics(["?"], ["1"]) == {"mae": 4.0, "rmse": 4.0}


def test_rouge_by_hand_no_stemming_and_rng_untouched():
    # one example: rouge-1 P 3/3 R 3/6 -> 2/3; LCS("mat the on", ...) = 2 -> P 2/3 R 1/3 -> 4/9
    m = rouge_metrics(["mat the on"], ["The cat sat on the mat"])
    assert m == {"rouge-1": pytest.approx(2 / 3), "rouge-L": pytest.approx(4 / 9)}
    assert rouge_metrics(["cats running"], ["cat run"]) == {"rouge-1": 0.0, "rouge-L": 0.0}  # no stemming
    state = np.random.get_state()[1].copy()
    two = lamp_metrics("LaMP_4", ["the cat sat", ""], ["the cat sat on the mat", "hello world"])
    assert two == {"rouge-1": pytest.approx(1 / 3), "rouge-L": pytest.approx(1 / 3)}  # bootstrap mid = mean
    assert (np.random.get_state()[1] == state).all()


def test_score_lamp_files_and_id_checks(tmp_path):
    golds = write_json(
        tmp_path / "golds.json",
        {
            "task": "LaMP_3",
            "golds": [{"id": "1", "output": "5"}, {"id": "2", "output": "1"}, {"id": "3", "output": "3"}],
        },
    )
    preds = write_lamp_submission("LaMP_3", {"3": "3", "1": "4", "2": "no idea"}, tmp_path / "preds.json")
    assert json.loads(preds.read_text())["task"] == "LaMP_3"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left
    # 1 vs 5, "no idea" vs 1 -> 5 (err 4), 3 vs 3
    assert score_lamp("LaMP_3", golds, preds) == {"mae": pytest.approx(5 / 3), "rmse": pytest.approx(math.sqrt(17 / 3))}
    short = write_lamp_submission("LaMP_3", {"1": "4"}, tmp_path / "short.json")
    with pytest.raises(DataError, match=r"short.json: no prediction for 2 id\(s\), e.g. \['2', '3'\]"):
        score_lamp("LaMP_3", golds, short)
    extra = write_lamp_submission("LaMP_3", {"1": "4", "2": "4", "3": "4", "x": "1"}, tmp_path / "extra.json")
    with pytest.raises(DataError, match=r"not in the golds, e.g. \['x'\]"):
        score_lamp("LaMP_3", golds, extra)
    other = write_lamp_submission("LaMP_4", {"1": "a"}, tmp_path / "other.json")
    with pytest.raises(DataError, match="file is for task 'LaMP_4', not LaMP_3"):
        score_lamp("LaMP_3", golds, other)


# --------------------------------------------------------------------------- LaMP-3 from MovieLens


def movielens_tables(n_users: int = 10) -> tuple[pl.DataFrame, pl.DataFrame]:
    items = pl.DataFrame(
        {
            "item_id": ["1", "2", "3", "4"],
            "title": ["Toy Story (1995)", "GoldenEye (1995)", "Heat", "Fargo (1996)"],
            "categories": [["Animation", "Comedy"], ["Action"], [], ["Crime", "Drama"]],
            "year": [1995, 1995, 1995, 1996],
        }
    )
    rows = []
    for u in range(n_users):
        for k, item in enumerate(["1", "2", "3", "4"][: 2 + u % 3]):
            rows.append((f"u{u}", 880_000_000 + 86_400 * (10 * u + k), "rating", item, float(1 + (u + k) % 5), None))
    rows.append(("lonely", 880_000_000, "rating", "1", 4.0, None))  # one rating: no question possible
    rows.append(("u0", 870_000_000, "click", "2", None, None))  # no rating value
    events = pl.DataFrame(
        rows,
        schema=["user_id", "timestamp", "source", "item_id", "value", "text"],
        orient="row",
        schema_overrides={"text": pl.Utf8},
    )
    return events, items


def test_lamp3_from_movielens_files_and_roundtrip(tmp_path):
    events, items = movielens_tables()
    summary = build_lamp3_from_movielens(events, items, tmp_path / "lamp3", seed=1, profile_size=2)
    out = tmp_path / "lamp3"
    splits = {}
    for split in ("train", "dev", "test"):
        questions = json.loads((out / split / f"{split}_questions.json").read_text())
        golds = json.loads((out / split / f"{split}_outputs.json").read_text())
        assert golds["task"] == "LaMP_3" and [g["id"] for g in golds["golds"]] == [q["id"] for q in questions]
        splits[split] = {q["id"].rsplit("_", 1)[0] for q in questions}
    assert [len(splits[s]) for s in ("train", "dev", "test")] == [8, 1, 1]
    assert not (splits["train"] & splits["dev"]) and not (splits["train"] & splits["test"])  # user-disjoint
    assert summary["rows"]["events"]["dropped"] == {"no rating value": 1, "user has fewer than 2 ratings": 1}
    every = {
        q["id"]: q for s in ("train", "dev", "test") for q in json.loads((out / s / f"{s}_questions.json").read_text())
    }
    # u2 rated items 1..4 on 1997-11-20 + 20..23 days: the question is its last rating (Fargo),
    # the profile the 2 ratings before it
    q = every["u2_3"]
    assert (
        q["input"] == "What is the score of this movie: Fargo (1996) [Crime, Drama]? Answer with one of 1, 2, 3, 4, 5."
    )
    assert q["profile"] == [
        {"id": "2", "text": "GoldenEye (1995) [Action]", "score": "4", "date": "1997-12-11"},
        {"id": "3", "text": "Heat (1995)", "score": "5", "date": "1997-12-12"},
    ]
    split = next(s for s in splits if "u2" in splits[s])
    gold = {g["id"]: g["output"] for g in json.loads((out / split / f"{split}_outputs.json").read_text())["golds"]}
    assert gold["u2_3"] == "1"  # value 1 + (2 + 3) % 5
    tables = import_lamp(
        "LaMP_3", out / split / f"{split}_questions.json", out / split / f"{split}_outputs.json"
    ).tables
    assert tables["qa"].filter(pl.col("id") == "u2_3")["answer"].to_list() == ["1"]
    assert oct((out / "train").stat().st_mode)[-3:] == "755" and oct(out.stat().st_mode)[-3:] == "755"


def test_lamp3_from_movielens_more_questions_and_nothing_half_written(tmp_path):
    events, items = movielens_tables()
    build_lamp3_from_movielens(events, items, tmp_path / "x", questions_per_user=2, fractions=(1.0, 0.0, 0.0))
    ids = [q["id"] for q in json.loads((tmp_path / "x/train/train_questions.json").read_text())]
    assert "u2_3" in ids and "u2_2" in ids and "u0_1" in ids and "u0_0" not in ids  # never an empty profile
    with pytest.raises(DataError, match="no user has 2 or more ratings"):
        build_lamp3_from_movielens(events.filter(pl.col("user_id") == "lonely"), items, tmp_path / "y")
    assert not (tmp_path / "y").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


@pytest.mark.slow
def test_lamp3_from_real_movielens_100k(tmp_path, real_ml100k):
    from data_pipelines.movielens import import_movielens

    imported = import_movielens(real_ml100k)
    summary = build_lamp3_from_movielens(imported.tables["events"], imported.tables["items"], tmp_path / "ml")
    assert sum(s["questions"] for s in summary["splits"].values()) == 943
    result = import_lamp("LaMP_3", tmp_path / "ml/test/test_questions.json", tmp_path / "ml/test/test_outputs.json")
    assert result.tables["qa"].height == summary["splits"]["test"]["questions"]
    assert result.tables["events"].group_by("user_id").len()["len"].max() <= 50
