"""Free-text UserQA: open question variants, reading a label off a generated answer, the majority rule."""

from __future__ import annotations

import polars as pl

from conftest import write_tiny_dataset
from test_generate import build_tiny_embedder, build_varied_llm


def test_parse_label_takes_the_first_named_label_as_whole_words():
    from user_embed.eval.free_text import parse_label

    labels = ["Action", "Drama", "Sci-Fi", "Horror", "War"]
    assert parse_label("This user watches Drama, then Action.", labels) == "Drama"
    assert parse_label("mostly sci-fi", labels) == "Sci-Fi"
    assert parse_label("A warrior's story", labels) is None  # "war" inside a word does not count
    assert parse_label("", labels) is None
    assert parse_label("Sci-Fi Horror", ["Sci", "Sci-Fi", "Horror"]) == "Sci-Fi"  # the longer label on a tie


def test_majority_rule_per_task():
    from user_embed.data.collate import Example
    from user_embed.eval.free_text import majority_answers

    train = [Example("u", "q", a, [], task=t) for t, a in [("a", "x"), ("a", "y"), ("a", "y"), ("b", "z")]]
    assert majority_answers(train) == {"a": "y", "b": "z"}


def test_userqa_builds_open_variants_with_the_same_answers(real_ml100k):
    from data_pipelines.movielens import import_movielens
    from data_pipelines.userqa import UserQAConfig, build_userqa

    tables = import_movielens(real_ml100k).tables
    config = UserQAConfig(item_noun="movie", category_noun="genre", action_verb="watched")
    qa, _, summary = build_userqa(tables["events"], tables["items"], config=config)
    choice = qa.filter(pl.col("task") == "longterm_top_category")
    open_ = qa.filter(pl.col("task") == "longterm_top_category_open")
    assert open_.height == choice.height and open_["options"].list.len().max() == 0
    assert open_.select("user_id", "answer", "split").sort("user_id").equals(
        choice.select("user_id", "answer", "split").sort("user_id"))
    assert "Options" not in open_["question"][0] and open_["question"][0].endswith("Answer with one genre.")
    assert summary["tasks"]["longterm_top_category_open"]["open_variant_of"] == "longterm_top_category"
    off = build_userqa(tables["events"], tables["items"], config=UserQAConfig(open_questions=False))[0]
    assert not off.filter(pl.col("task").str.ends_with("_open")).height


def test_open_questions_get_candidates_and_are_evaluated_by_generation(tmp_path):
    from data_pipelines.schema import read_table
    from user_embed.data.questions import questions_by_split
    from user_embed.eval.free_text import evaluate_free_text
    from user_embed.model import PersonalizedLM
    from user_embed.store import UserStore

    llm = build_varied_llm(tmp_path / "llm")
    data = write_tiny_dataset(tmp_path / "data")
    qa = pl.read_parquet(data / "qa.parquet")
    open_ = qa.with_columns(pl.lit("which genre has this user watched most ?").alias("question"),
                            pl.lit([], pl.List(pl.Utf8)).alias("options"), pl.lit("top_genre_open").alias("task"))
    pl.concat([qa, open_]).write_parquet(data / "qa.parquet")
    splits = questions_by_split(read_table(data, "qa"), categories=["drama", "comedy", "action", "horror"])
    test = [ex for ex in splits["test"] if ex.task == "top_genre_open"]
    assert test and all(ex.candidates == ["action", "comedy", "drama", "horror"] and ex.choices == ex.candidates
                        for ex in test)
    assert all(ex.candidates == [] for ex in splits["test"] if ex.options)
    lm = PersonalizedLM.from_pretrained(build_tiny_embedder(llm, data, tmp_path / "embedder"), device="cpu")
    users = UserStore.from_folder(data)
    result = evaluate_free_text(lm, users, test, ["none", "soft"], splits["train"], max_new_tokens=4,
                                method_users={"none": {test[0].user_id}})
    assert result["answered"] == {"none": 1, "soft": len(test)}
    assert set(result["accuracy"]) == {"none", "soft", "majority"} and 0 <= result["parsed"]["soft"] <= 1
    rows = result["predictions"]
    assert all(isinstance(row["soft_text"], str) for row in rows) and "none_text" in rows[0]
    assert "none_text" not in rows[1] if len(rows) > 1 else True
