"""Tests of the UserQA builder: answers recomputed from raw events, no leakage past the cutoff,
determinism, user-disjoint splits, answer balance, and a hand-worked example."""

from __future__ import annotations

import json
import math
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from data_pipelines.schema import FAMILIES, SPLITS, validate
from data_pipelines.userqa import UserQAConfig, balance_cap, build_userqa
from data_pipelines.userqa_tasks import TASKS
from user_embed.errors import ConfigError

PAST_FAMILIES = ("sequence_understanding", "interest_perception")


# ---------------------------------------------------------------- fixtures
def make_items() -> pl.DataFrame:
    rng = np.random.default_rng(7)
    cats = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi", "War", "Western"]
    rows = []
    for i in range(40):
        k = int(rng.integers(1, 4))
        rows.append({"item_id": f"i{i:02d}", "title": f"Film {i} (19{50 + i})",
                     "categories": sorted(rng.choice(cats, k, replace=False).tolist())})
    rows.append({"item_id": "i_nocat", "title": "No Category Film", "categories": []})
    return pl.DataFrame(rows, schema={"item_id": pl.Utf8, "title": pl.Utf8, "categories": pl.List(pl.Utf8)})


def make_events(n_users: int = 60, seed: int = 1, distinct_ts: bool = False) -> pl.DataFrame:
    """Users with a favourite slice of items, 12-60 events each, values 1-5, timestamp ties."""
    rng = np.random.default_rng(seed)
    item_ids = [f"i{i:02d}" for i in range(40)] + ["i_nocat"]
    rows = []
    for u in range(n_users):
        n = int(rng.integers(12, 61))
        weights = np.ones(len(item_ids))
        weights[rng.choice(len(item_ids), 8, replace=False)] = 12.0
        items = rng.choice(item_ids, n, p=weights / weights.sum())
        if distinct_ts:
            ts = rng.choice(np.arange(1_000_000), n, replace=False) * 100 + 880_000_000
        else:
            ts = rng.integers(880_000_000, 880_000_000 + 40 * 86_400, n) // 3600 * 3600  # hour ties
        for t, it in zip(ts, items):
            rows.append({"user_id": f"u{u:03d}", "timestamp": int(t), "source": "rating", "item_id": str(it),
                         "value": float(rng.integers(1, 6)), "text": None})
    return pl.DataFrame(rows, schema={"user_id": pl.Utf8, "timestamp": pl.Int64, "source": pl.Utf8,
                                      "item_id": pl.Utf8, "value": pl.Float64, "text": pl.Utf8})


@pytest.fixture(scope="module")
def items() -> pl.DataFrame:
    return make_items()


@pytest.fixture(scope="module")
def events() -> pl.DataFrame:
    return make_events()


@pytest.fixture(scope="module")
def built(events, items):
    return build_userqa(events, items, seed=3)


# ---------------------------------------------------------------- reference implementation
def user_timelines(events: pl.DataFrame, config: UserQAConfig) -> dict[str, dict]:
    """Per user, straight from the rows: cutoff, history (< cutoff) and future (>= cutoff)."""
    by_user: dict[str, list] = defaultdict(list)
    for row in events.iter_rows(named=True):
        by_user[row["user_id"]].append((row["timestamp"], row["item_id"], row["value"]))
    out = {}
    for user, evs in by_user.items():
        evs.sort(key=lambda e: (e[0], e[1]))
        cutoff = evs[math.floor(config.history_fraction * len(evs) + 1e-9)][0]
        out[user] = {"cutoff": cutoff, "history": [e for e in evs if e[0] < cutoff],
                     "future": [e for e in evs if e[0] >= cutoff]}
    return out


def bucket_of(count: int, labels) -> str:
    for label in labels:
        lo, _, hi = label.partition("-")
        if int(lo) <= count <= int(hi or lo):
            return label
    raise AssertionError(count)


def check_row(row: dict, tl: dict, cats: dict[str, set], titles: dict[str, str], config: UserQAConfig) -> None:
    """Recompute the answer of one qa row from the user's events; assert it matches."""
    hist, fut, q, answer = tl["history"], tl["future"], row["question"], row["answer"]
    assert row["cutoff"] == tl["cutoff"]
    assert all(e[0] < row["cutoff"] for e in hist) and fut[0][0] >= row["cutoff"]
    others = [o for o in row["options"] if o != answer]
    task = row["task"]

    def counts(events) -> Counter:
        return Counter(c for e in events for c in cats[e[1]])

    if task in ("recent_category", "next_category"):
        item = hist[-1][1] if task == "recent_category" else fut[0][1]
        assert answer in cats[item] and not set(others) & cats[item]
    elif task == "category_count":
        m = re.search(r"the last (\d+) \S+ this user .+ have the \S+ (.+)\? Options", q)
        window, category = int(m.group(1)), m.group(2)
        assert window == config.count_window
        assert answer == bucket_of(sum(category in cats[e[1]] for e in hist[-window:]), config.count_buckets)
        assert row["options"] and sorted(row["options"]) == sorted(config.count_buckets)
    elif task == "next_rating":
        assert titles[fut[0][1]] in q
        assert answer == ("high" if fut[0][2] >= config.high_rating else "low")
    elif task in ("longterm_top_category", "recent_top_category"):
        window = len(hist)
        if task == "recent_top_category":
            window = int(re.search(r"among the last (\d+) ", q).group(1))
            assert window == min(len(hist), config.recent_window)
        c = counts(hist[-window:])
        top = max(c.values())
        assert c[answer] == top
        assert all(c.get(o, 0) <= config.distractor_max_ratio * top for o in others)
    elif task == "interest_shift":
        category = re.search(r"is the \S+ (.+) more or less frequent", q).group(1)
        half = len(hist) // 2
        old, new = counts(hist[:half]), counts(hist[half:])
        change = {k: new[k] / (len(hist) - half) - old[k] / half for k in set(old) | set(new)}
        assert abs(change[category]) == pytest.approx(max(abs(v) for v in change.values()))
        assert abs(change[category]) > config.min_shift
        assert answer == ("more" if change[category] > 0 else "less")
    else:
        raise AssertionError(f"unknown task {task}")


# ---------------------------------------------------------------- tests
def test_every_answer_recomputed_from_events(built, events, items):
    qa, _, _ = built
    config = UserQAConfig()
    tl = user_timelines(events, config)
    cats = {r["item_id"]: set(r["categories"]) for r in items.iter_rows(named=True)}
    titles = dict(zip(items["item_id"], items["title"]))
    open_tasks = {f"{t}_open" for t, spec in TASKS.items() if spec.open_template is not None}
    assert set(qa["task"]) == set(TASKS) | open_tasks
    choice = qa.filter(pl.col("options").list.len() > 0)
    for row in choice.iter_rows(named=True):
        check_row(row, tl[row["user_id"]], cats, titles, config)
    # each open question is a multiple-choice question of its base task without the options
    key = ["user_id", "answer", "cutoff", "split"]
    for task in open_tasks:
        open_rows = qa.filter(pl.col("task") == task).select(key).sort(key)
        base = choice.filter(pl.col("task") == task.removesuffix("_open")).select(key).unique().sort(key)
        assert open_rows.height and open_rows.equals(base)


def test_tables_valid_and_options_well_formed(built):
    qa, texts, summary = built
    validate("qa", qa)
    validate("texts", texts)
    assert summary["rows"] == qa.height
    open_rows = qa.filter(pl.col("task").str.ends_with("_open"))
    assert open_rows["options"].list.len().max() == 0
    assert all(q.endswith("Answer with one category.") and "Options" not in q for q in open_rows["question"])
    qa = qa.filter(~pl.col("task").str.ends_with("_open"))
    assert qa["options"].list.len().is_between(2, 4).all()
    assert all(a in o for a, o in zip(qa["answer"], qa["options"]))
    assert qa.select(pl.col("options").list.n_unique() == pl.col("options").list.len()).to_series().all()
    assert set(qa["family"]) == set(FAMILIES)
    assert all(q.endswith("Answer with one option.") and ", ".join(o) in q for q, o in zip(qa["question"], qa["options"]))
    assert set(qa["user_id"]) <= set(texts["user_id"])
    json.dumps(summary)  # goes into summary.json as qa_summary


def test_no_leakage_from_later_events(items):
    """Changing events after the cutoff must not change history questions or texts; changing all
    but the first future event must change nothing."""
    events = make_events(40, seed=5, distinct_ts=True)
    config = UserQAConfig()
    cutoffs = {u: tl["cutoff"] for u, tl in user_timelines(events, config).items()}
    first_future = (
        events.filter(pl.col("timestamp") >= pl.col("user_id").replace_strict(cutoffs))
        .sort("user_id", "timestamp").group_by("user_id", maintain_order=True).first()
    )
    is_future = pl.col("timestamp") >= pl.col("user_id").replace_strict(cutoffs)
    is_first = pl.struct("user_id", "timestamp").is_in(first_future.select(pl.struct("user_id", "timestamp")).to_series().implode())
    scramble = {"item_id": pl.lit("i_nocat"), "value": pl.lit(1.0)}

    def mutate(mask: pl.Expr) -> pl.DataFrame:
        return events.with_columns(**{c: pl.when(mask).then(v).otherwise(pl.col(c)) for c, v in scramble.items()})

    qa, texts, _ = build_userqa(events, items, seed=0)
    qa_later, texts_later, _ = build_userqa(mutate(is_future & ~is_first), items, seed=0)
    assert qa_later.equals(qa) and texts_later.equals(texts)
    qa_fut, texts_fut, _ = build_userqa(mutate(is_future), items, seed=0)
    past = pl.col("family").is_in(PAST_FAMILIES)
    assert qa_fut.filter(past).equals(qa.filter(past)) and texts_fut.equals(texts)
    assert not qa_fut.filter(~past).equals(qa.filter(~past))  # the mutation did reach the future tasks


def test_deterministic_and_seed_changes_split(events, items, built):
    qa, texts, summary = built
    qa2, texts2, summary2 = build_userqa(events.sample(fraction=1.0, shuffle=True, seed=11), items, seed=3)
    assert qa.equals(qa2) and texts.equals(texts2) and summary == summary2
    qa3, _, _ = build_userqa(events, items, seed=4)
    split_of = lambda df: dict(df.select("user_id", "split").unique().iter_rows())  # noqa: E731
    assert split_of(qa) != split_of(qa3)


def test_splits_are_user_disjoint(built):
    qa, _, summary = built
    per_user = qa.group_by("user_id").agg(pl.col("split").n_unique())
    assert (per_user["split"] == 1).all()
    assert set(qa["split"]) == set(SPLITS)
    assert sum(summary["split_users"].values()) == summary["users"]["eligible"]


def test_balance_rule(built):
    qa, _, summary = built
    config = UserQAConfig()
    for (task, split), part in qa.group_by("task", "split"):
        share = part["answer"].value_counts()["count"].max() / part.height
        entry = summary["tasks"][task]
        assert share <= config.max_majority_share + 1e-9 or not entry["balanced"], (task, split, share)
        assert entry["majority_share"][split] == pytest.approx(share, abs=1e-4)
    assert sum(t.get("dropped_for_balance", 0) for t in summary["tasks"].values()) > 0


def test_balance_cap():
    assert balance_cap([100, 3], 0.5) == 3
    assert balance_cap([10, 3, 2], 0.5) == 5
    assert balance_cap([5, 3, 2], 0.5) is None  # already balanced
    assert balance_cap([7], 0.5) is None  # a single label cannot be balanced
    assert balance_cap([10, 1, 1], 0.4) == 1


def test_null_values_skip_rating_task(events, items):
    qa, texts, summary = build_userqa(events.with_columns(value=pl.lit(None, dtype=pl.Float64)), items)
    assert "next_rating" not in set(qa["task"])
    assert summary["tasks"]["next_rating"]["skipped"] == "events have no values"
    assert not texts["text"].str.contains("mean rating").any()
    assert set(qa["family"]) == set(FAMILIES)


def test_config_counts_and_options(events, items):
    config = UserQAConfig(num_options=4, tasks={"longterm_top_category": 2, "next_category": 1, "next_rating": 3})
    qa, _, summary = build_userqa(events, items, config=config)
    assert set(qa["task"]) == {"longterm_top_category", "next_category", "next_rating", "longterm_top_category_open",
                               "next_category_open"}
    qa = qa.filter(~pl.col("task").str.ends_with("_open"))
    assert (qa.filter(pl.col("task") != "next_rating")["options"].list.len() == 4).all()
    per_user = qa.group_by("user_id", "task").len()
    assert per_user.filter(pl.col("task") == "next_rating")["len"].max() == 1  # identical questions deduplicated
    assert per_user["len"].max() == 2
    assert summary["tasks"]["recent_category"]["skipped"] == "disabled in config"


@pytest.mark.parametrize("bad", [{"num_options": 5}, {"history_fraction": 1.0}, {"tasks": {"nope": 1}},
                                 {"count_buckets": ("0", "2-10")}, {"split_fractions": (0.5, 0.5, 0.5)}])
def test_config_errors(bad):
    with pytest.raises(ConfigError):
        UserQAConfig(**bad)


def _hand_tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    items = pl.DataFrame(
        {"item_id": ["A", "B", "C", "D", "E", "F"],
         "title": ["Alpha", "Bravo", "Charlie", "Delta", "Echo", "Foxtrot"],
         "categories": [["Drama"], ["Comedy"], ["Drama", "Romance"], ["Horror"], ["Comedy", "Romance"], ["Action"]]},
        schema={"item_id": pl.Utf8, "title": pl.Utf8, "categories": pl.List(pl.Utf8)},
    )
    day = 86_400
    rows = [("u1", t, it, v) for t, it, v in [
        (1, "A", 4), (2, "A", 5), (3, "C", 4), (4, "D", 1), (5, "B", 3), (6, "E", 4), (7, "B", 3), (8, "E", 4),
        (9, "D", 2), (10, "A", 5)]]
    rows += [("u2", t, "B", 3) for t in (1, 2, 3)]  # too short
    rows += [("u3", t, "F", 4) for t in (1, 2, 3, 4, 5, 6, 7, 8, 8, 8)]  # cutoff tie at t=8
    rows += [("u1", 11, "ZZZ", 1)]  # unknown item -> dropped and counted
    events = pl.DataFrame(
        [{"user_id": u, "timestamp": t * day, "source": "rating", "item_id": it, "value": float(v), "text": None}
         for u, t, it, v in rows],
        schema={"user_id": pl.Utf8, "timestamp": pl.Int64, "source": pl.Utf8, "item_id": pl.Utf8,
                "value": pl.Float64, "text": pl.Utf8},
    )
    return events, items


def test_hand_worked_example():
    events, items = _hand_tables()
    config = UserQAConfig(min_history=4, count_window=4, count_buckets=("0", "1-2", "3-4"), recent_window=4)
    qa, texts, summary = build_userqa(events, items, config=config)
    # u1: 10 known events -> cutoff index floor(0.8 * 10) = 8 -> cutoff t=9; history t1..t8:
    #   A[Drama] A[Drama] C[Drama,Romance] D[Horror] | B[Comedy] E[Comedy,Romance] B[Comedy] E[Comedy,Romance]
    # u3: cutoff index 8 -> t=8, so history = t1..t7 (7 events) despite the tie.
    assert summary["events"]["dropped"] == {"item_id not in items table": 1}
    assert summary["users"] == {"in_events": 3, "eligible": 2, "skipped": {"too_few_history": 1, "no_future": 0}}
    u1 = {r["task"]: r for r in qa.filter(pl.col("user_id") == "u1").iter_rows(named=True)}
    open_tasks = {f"{t}_open" for t, spec in TASKS.items() if spec.open_template is not None}
    assert set(u1) == set(TASKS) | open_tasks
    assert u1["longterm_top_category_open"]["answer"] == u1["longterm_top_category"]["answer"]
    assert u1["next_category_open"]["question"] == "Which category does this user's next item have? Answer with one category."
    assert {r["cutoff"] for r in u1.values()} == {9 * 86_400}
    assert u1["recent_category"]["answer"] in {"Comedy", "Romance"}  # most recent: E
    assert not set(u1["recent_category"]["options"]) & {"Comedy", "Romance"} - {u1["recent_category"]["answer"]}
    asked = re.search(r"have the category (\w+)\?", u1["category_count"]["question"]).group(1)
    assert u1["category_count"]["answer"] == {"Comedy": "3-4", "Romance": "1-2"}.get(asked, "0")
    assert u1["next_category"]["answer"] == "Horror"  # first future event: D at t=9
    assert u1["next_rating"]["answer"] == "low" and '"Delta"' in u1["next_rating"]["question"]
    # overall counts Comedy 4, Drama 3, Romance 3, Horror 1 -> Comedy vs one with <= 2: Horror or Action
    assert u1["longterm_top_category"]["answer"] == "Comedy"
    assert set(u1["longterm_top_category"]["options"]) - {"Comedy"} <= {"Horror", "Action"}
    # last 4: Comedy 4, Romance 2 -> any other category qualifies as distractor
    assert u1["recent_top_category"]["answer"] == "Comedy"
    assert "last 4 items" in u1["recent_top_category"]["question"]
    # shares older -> newer half: Comedy 0 -> 1 (+1.0) is the largest change
    assert "category Comedy more or less" in u1["interest_shift"]["question"]
    assert u1["interest_shift"]["answer"] == "more"
    assert qa.filter(pl.col("user_id") == "u3")["cutoff"].unique().to_list() == [8 * 86_400]
    text = dict(texts.iter_rows())
    assert text["u1"] == (
        "Interacted with 8 items between 1970-01 and 1970-01; mean rating 3.5. "
        "Top categories: Comedy (4), Drama (3), Romance (3), Horror (1). "
        "Most recent first: Echo (Comedy/Romance), Bravo (Comedy), Echo (Comedy/Romance), Bravo (Comedy), "
        "Delta (Horror)."
    )
    assert text["u3"].startswith("Interacted with 7 items")
    assert set(texts["user_id"]) == {"u1", "u3"}
    # one row per task and split: a single answer cannot be balanced, so rows are kept and flagged
    assert summary["tasks"]["next_category"]["balanced"] is False


def test_nouns_from_config():
    events, items = _hand_tables()
    config = UserQAConfig(min_history=4, item_noun="movie", category_noun="genre", action_verb="watched",
                          count_window=4, count_buckets=("0", "1-2", "3-4"),
                          tasks={"longterm_top_category": 1, "category_count": 1})
    qa, texts, _ = build_userqa(events, items, config=config)
    questions = " ".join(qa["question"])
    assert "Which of these genres has this user watched most overall?" in questions
    assert "movies this user watched have the genre" in questions and "categor" not in questions
    assert texts["text"][0].startswith("Watched 8 movies between") and "Top genres:" in texts["text"][0]


def test_no_eligible_users(items):
    events = make_events(3).group_by("user_id").head(5)
    qa, texts, summary = build_userqa(events, items)
    assert qa.is_empty() and texts.is_empty()
    assert summary["users"]["skipped"]["too_few_history"] == 3
    validate("qa", qa)


def load_ml100k(folder: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    inter = pl.read_csv(folder / "ml-100k.inter", separator="\t",
                        schema_overrides={"user_id:token": pl.Utf8, "item_id:token": pl.Utf8})
    events = inter.select(
        pl.col("user_id:token").alias("user_id"), pl.col("timestamp:float").cast(pl.Int64).alias("timestamp"),
        pl.lit("rating").alias("source"), pl.col("item_id:token").alias("item_id"),
        pl.col("rating:float").cast(pl.Float64).alias("value"), pl.lit(None, dtype=pl.Utf8).alias("text"),
    )
    raw = pl.read_csv(folder / "ml-100k.item", separator="\t", quote_char=None,
                      schema_overrides={"item_id:token": pl.Utf8, "release_year:token": pl.Utf8})
    title = pl.format("{} ({})", "movie_title:token_seq", "release_year:token")
    items = raw.select(
        pl.col("item_id:token").alias("item_id"), title.fill_null(pl.col("movie_title:token_seq")).alias("title"),
        pl.col("class:token_seq").fill_null("").str.split(" ").alias("categories"),
    )
    return events, items


@pytest.mark.slow
def test_movielens_100k_all_families_in_all_splits(real_ml100k):
    events, items = load_ml100k(real_ml100k)
    config = UserQAConfig(item_noun="movie", category_noun="genre", action_verb="watched")
    start = time.perf_counter()
    qa, texts, summary = build_userqa(events, items, seed=0, config=config)
    elapsed = time.perf_counter() - start
    assert elapsed < 10, f"ML-100k build took {elapsed:.1f} s"
    assert summary["users"]["in_events"] == 943 and texts.height == summary["users"]["eligible"]
    for split in SPLITS:
        assert set(qa.filter(pl.col("split") == split)["family"]) == set(FAMILIES), split
    for task, entry in summary["tasks"].items():
        assert entry["rows"]["test"] > 0, task
        assert entry["majority_share"]["all"] <= 0.5 + 1e-9, task
    tl = user_timelines(events, config)
    cats = {r["item_id"]: set(r["categories"]) - {""} for r in items.iter_rows(named=True)}
    titles = dict(zip(items["item_id"], items["title"]))
    for row in qa.filter(pl.col("options").list.len() > 0).iter_rows(named=True):
        check_row(row, tl[row["user_id"]], cats, titles, config)
