"""Noise robustness: the perturbation (``user_embed.eval.noise``), the ``evaluate --noise`` sweep on a tiny model,
its refusals, and the pure helpers of ``benchmarks/noise.py``."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from conftest import write_tiny_dataset
from user_embed.cli import main
from user_embed.errors import UserError
from user_embed.eval.noise import noisy_events, noisy_store
from user_embed.eval.noise_sweep import parse_shares, question_cutoffs
from user_embed.store import UserStore

ROOT = Path(__file__).resolve().parent.parent
CUT = 1_000_000 + 3600 * 20  # users' cutoff: events 0..19 before it, 20..29 at/after it


def events_table(n_users: int = 6, per_user: int = 30, seed: int = 0) -> pl.DataFrame:
    """Users u0…: ``per_user`` hourly events each over 40 items (item i0 the most popular), ratings 1–5; user u5
    has no values."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t in range(per_user):
            item = "i0" if rng.random() < 0.4 else f"i{rng.integers(1, 40)}"
            value = None if u == 5 else float(rng.integers(1, 6) if u != 1 else rng.choice([2.0, 4.0]))
            rows.append((f"u{u}", 1_000_000 + 3600 * t, "rating", item, value, "note" if t % 3 == 0 else None))
    return pl.DataFrame(rows, schema={"user_id": pl.Utf8, "timestamp": pl.Int64, "source": pl.Utf8,
                                      "item_id": pl.Utf8, "value": pl.Float64, "text": pl.Utf8}, orient="row")


def pre_cutoff(frame: pl.DataFrame, user: str) -> pl.DataFrame:
    return frame.with_row_index("row").filter((pl.col("user_id") == user) & (pl.col("timestamp") < CUT))


@pytest.mark.parametrize("share", [0.1, 0.33, 0.5, 0.95])
def test_replace_changes_exactly_round_share_n_pre_cutoff_events_per_user(share):
    events = events_table()
    cutoffs = {f"u{u}": CUT for u in range(5)}  # u5 is not evaluated
    noisy, changed = noisy_events(events, cutoffs, share, seed=0, mode="replace")
    assert noisy.schema == events.schema and noisy.height == events.height
    for column in ("user_id", "timestamp", "source"):
        assert noisy[column].equals(events[column]), column
    differs = (noisy["item_id"] != events["item_id"]).to_numpy()
    total = 0
    for u in range(6):
        user = (events["user_id"] == f"u{u}").to_numpy()
        before = user & (events["timestamp"] < CUT).to_numpy()
        expected = round(share * before.sum()) if f"u{u}" in cutoffs else 0
        assert differs[before].sum() == expected, f"u{u}"
        assert not differs[user & ~before].any()  # at/after the cutoff: never changed
        total += expected
    assert changed == total
    after = (events["timestamp"] >= CUT) | (events["user_id"] == "u5")
    assert noisy.filter(after).equals(events.filter(after))  # whole rows, values and texts included
    assert noisy.filter(pl.lit(differs))["text"].null_count() == int(differs.sum())  # fake events carry no text
    assert set(noisy["item_id"].to_list()) <= set(events["item_id"].to_list())


def test_replacement_items_follow_popularity_and_values_the_users_own():
    events = events_table(n_users=6, per_user=200)
    noisy, _ = noisy_events(events, {"u1": None, "u5": None}, 0.5, seed=3)
    fake = noisy.filter(pl.lit((noisy["item_id"] != events["item_id"]).to_numpy()))
    # i0 holds ~40 % of all events; the 39 others ~1.5 % each (i0 is excluded only where it was the event's item)
    assert (fake["item_id"] == "i0").mean() > 0.2
    assert set(fake.filter(pl.col("user_id") == "u1")["value"].to_list()) <= {2.0, 4.0}  # u1's own values
    others = fake.filter(pl.col("user_id") == "u5")["value"]  # u5 has none: the table's distribution
    assert others.null_count() == 0 and set(others.to_list()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


@pytest.mark.parametrize("share", [0.2, 0.3, 0.5])
def test_insert_adds_round_share_n_over_one_minus_share_events_within_the_span(share):
    events = events_table()
    cutoffs = {"u0": CUT, "u2": CUT}
    noisy, changed = noisy_events(events, cutoffs, share, seed=1, mode="insert")
    assert noisy.schema == events.schema
    assert noisy.head(events.height).equals(events)  # the original rows, untouched, first
    added = noisy.tail(noisy.height - events.height)
    for user in ("u0", "u2"):
        n = pre_cutoff(events, user).height
        mine = added.filter(pl.col("user_id") == user)
        assert mine.height == round(share * n / (1 - share))
        span = pre_cutoff(events, user)["timestamp"]
        assert mine["timestamp"].min() >= span.min() and mine["timestamp"].max() <= span.max() < CUT
    assert set(added["user_id"].to_list()) == set(cutoffs) and changed == added.height
    assert added["text"].null_count() == added.height and set(added["source"].to_list()) == {"rating"}


@pytest.mark.parametrize("mode", ["replace", "insert"])
def test_noise_is_seeded_per_user_and_independent_of_other_users(mode):
    events = events_table()
    everyone = {f"u{u}": CUT for u in range(6)}
    a, _ = noisy_events(events, everyone, 0.3, seed=7, mode=mode)
    b, _ = noisy_events(events, everyone, 0.3, seed=7, mode=mode)
    c, _ = noisy_events(events, everyone, 0.3, seed=8, mode=mode)
    alone, _ = noisy_events(events, {"u2": CUT}, 0.3, seed=7, mode=mode)
    assert a.equals(b) and not a.equals(c)

    def user(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.filter(pl.col("user_id") == "u2").sort("timestamp", "item_id", "value", nulls_last=True)

    assert user(a).equals(user(alone))
    d, _ = noisy_events(events, everyone, 0.31, seed=7, mode=mode)  # another share: other draws
    assert not user(a).equals(user(d))


def test_share_zero_and_no_users_return_the_data_unchanged():
    events = events_table()
    assert noisy_events(events, {"u0": CUT}, 0.0)[1] == 0
    assert noisy_events(events, {"u0": CUT}, 0.0)[0] is events
    assert noisy_events(events, {}, 0.5)[0] is events
    assert noisy_events(events, {"nobody": CUT}, 0.5) == (events, 0)
    store = UserStore.from_frames(events, pl.DataFrame({"item_id": [f"i{i}" for i in range(40)]}))
    assert noisy_store(store, {"u0": CUT}, 0.0) == (store, 0)
    noisy, changed = noisy_store(store, {"u0": CUT}, 0.5)
    assert changed == 10 and noisy.events.height == store.events.height and noisy.items is store.items
    assert "noise" in noisy.origin and store.events.equals(events)  # the clean store is not changed


@pytest.mark.parametrize("share, mode, needle", [(1.0, "replace", "[0, 1)"), (-0.1, "replace", "[0, 1)"),
                                                 (float("nan"), "replace", "[0, 1)"), (0.1, "shuffle", "mode")])
def test_noisy_events_refuses_bad_arguments(share, mode, needle):
    with pytest.raises(UserError, match=re.escape(needle)):
        noisy_events(events_table(), {"u0": CUT}, share, 0, mode)


def test_parse_shares_and_question_cutoffs():
    assert parse_shares("0, 0.1,0.3,0.5") == (0.0, 0.1, 0.3, 0.5)
    for text, needle in (("0,abc", "not a number"), ("0,1", "outside"), ("0.3,0.30", "twice"), ("", "no shares")):
        with pytest.raises(UserError, match=needle):
            parse_shares(text)

    class Ex:
        def __init__(self, user_id, cutoff):
            self.user_id, self.cutoff = user_id, cutoff

    assert question_cutoffs([Ex("a", 5), Ex("a", 3), Ex("b", None), Ex("c", None), Ex("c", 4)]) == \
        {"a": 3, "b": None, "c": 4}


def test_noise_sweep_evaluates_every_method_on_the_noisy_store_and_reuses_the_clean_result():
    from user_embed.eval.noise_sweep import NoiseRequest, noise_sweep

    events = events_table()
    store = UserStore.from_frames(events, pl.DataFrame({"item_id": [f"i{i}" for i in range(40)]}))

    class Ex:
        def __init__(self, user_id):
            self.user_id, self.cutoff = user_id, CUT

    seen = []

    def evaluate(lm, users, methods):  # "accuracy" = the share of events as in the clean table, per method
        seen.append((lm, users, tuple(methods)))
        acc = round(float((users.events["item_id"] == events["item_id"]).mean()), 4)
        return {"accuracy": {m: {"overall": acc, "fam": acc, "task/t": acc} for m in methods},
                "answered": {m: 3 for m in methods}}

    clean = evaluate("main", store, ["none", "soft"])
    seen.clear()
    block = noise_sweep(NoiseRequest((0.0, 0.5), seed=2, compare_name="other"), "main", store,
                        [Ex("u0"), Ex("u1")], ["none", "soft"], evaluate, clean=clean, compare_lm="second")
    assert [(lm, methods) for lm, _, methods in seen] == [("second", ("soft",)), ("main", ("none", "soft")),
                                                          ("second", ("soft",))]
    assert seen[0][1] is store and seen[1][1] is seen[2][1] is not store  # share 0: the clean store
    noisy = noisy_events(events, {"u0": CUT, "u1": CUT}, 0.5, seed=2)[0]
    assert seen[1][1].events.equals(noisy)
    assert block["events_changed"] == {"0": 0, "0.5": 20}
    assert block["accuracy"]["none"]["0"] == {"overall": clean["accuracy"]["none"]["overall"],
                                              "fam": clean["accuracy"]["none"]["fam"]}  # per-task keys dropped
    assert set(block["accuracy"]) == {"none", "soft", "other"}
    assert block["accuracy"]["other"]["0.5"] == block["accuracy"]["soft"]["0.5"] != block["accuracy"]["soft"]["0"]


# --------------------------------------------------------------------------- the CLI


@pytest.mark.parametrize("flags, needle", [
    (["--noise", "0,1.0"], "share 1.0 is outside [0, 1)"),
    (["--noise", "0,1e-1,abc"], "'abc' is not a number"),
    (["--noise", "0.1,0,0.1"], "share 0.1 is given twice"),
    (["--noise", "0,0.1", "--noise-mode", "shuffle"], "unknown mode 'shuffle'"),
    (["--compare-checkpoint", "x", "--compare-name", "y"], "add --noise"),
    (["--noise", "0", "--compare-checkpoint", "x"], "go together"),
    (["--noise", "0", "--compare-checkpoint", "x", "--compare-name", "soft"], "must be a new method name"),
])
def test_evaluate_refuses_bad_noise_flags_in_one_line_before_loading_anything(tmp_path, capsys, flags, needle):
    # the checkpoint does not exist: a refusal naming the noise flag shows it was checked first
    code = main(["evaluate", "--checkpoint", str(tmp_path / "missing"), "--data", str(tmp_path / "nodata"),
                 "--out", str(tmp_path / "out"), *flags])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2 and "Traceback" not in err
    assert len(lines) == 1 and needle in lines[0], err
    assert not (tmp_path / "out").exists()


@pytest.mark.usefixtures("one_torch_thread")
def test_evaluate_noise_sweep_writes_the_block_png_and_table(tmp_path, tiny_llm_dir, capsys):
    from test_bad_input import build_embedder

    data = write_tiny_dataset(tmp_path / "data", n_users=36)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.iterdir()}
    embedder = build_embedder(tiny_llm_dir, data, tmp_path / "embedder")
    other = build_embedder(tiny_llm_dir, data, tmp_path / "other")
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(embedder), "--data", str(data), "--out", str(out),
                 "--methods", "none,text,soft", "--text-max-users", "3", "--noise", "0,0.5", "--noise-seed", "1",
                 "--compare-checkpoint", str(other), "--compare-name", "soft_other", "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    noise = metrics["noise"]
    assert noise["mode"] == "replace" and noise["seed"] == 1 and noise["shares"] == [0.0, 0.5]
    assert set(noise["accuracy"]) == {"none", "text", "soft", "soft_other"}
    for method, by_share in noise["accuracy"].items():
        assert set(by_share) == {"0", "0.5"}, method
        assert set(by_share["0"]) == {"overall", "interest_perception"}, method
    for method in ("none", "text", "soft"):  # share 0 is the clean evaluation
        assert noise["accuracy"][method]["0"]["overall"] == metrics["accuracy"][method]["overall"]
    test_users = {u for u in metrics_users(out)}
    assert noise["events_changed"] == {"0": 0, "0.5": 6 * len(test_users)}  # 12 pre-cutoff events each
    assert noise["answered"]["text"] < noise["answered"]["none"] == metrics["questions"]
    assert (out / "noise.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## Noise robustness" in report and "| soft_other |" in report and "![noise](noise.png)" in report
    assert "not evaluated under `--noise`" in report
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in data.iterdir()}
    assert after == before  # the data on disk is never changed


def metrics_users(out: Path) -> set[str]:
    return {json.loads(line)["user_id"] for line in (out / "predictions.jsonl").read_text().splitlines()}


# --------------------------------------------------------------------------- benchmarks/noise.py helpers


def load_benchmark():
    spec = importlib.util.spec_from_file_location("noise_benchmark", ROOT / "benchmarks" / "noise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_benchmark_margins_and_retained_margin():
    bench = load_benchmark()
    accuracy = {"none": {"0": {"overall": 0.5, "a": 0.4}, "0.3": {"overall": 0.5, "a": 0.5}},
                "soft": {"0": {"overall": 0.8, "a": 0.7}, "0.3": {"overall": 0.65, "a": 0.5}},
                "worse": {"0": {"overall": 0.45}, "0.3": {"overall": 0.5}}}
    margin = bench.margins(accuracy)
    assert set(margin) == {"soft", "worse"}
    assert margin["soft"] == {"0": {"overall": 0.3, "a": 0.3}, "0.3": {"overall": 0.15, "a": 0.0}}
    assert bench.retained_margin(margin["soft"]) == 0.5
    assert bench.retained_margin(margin["soft"], group="a") == 0.0
    assert bench.retained_margin(margin["worse"]) is None  # no clean margin to retain
    assert bench.retained_margin({"0": {"overall": 0.2}}) is None  # share 0.3 missing
    noise = {"mode": "replace", "seed": 0, "shares": [0.0, 0.3], "accuracy": accuracy, "events_changed": {},
             "answered": {}, "seconds": {}}
    summary = bench.summarize(noise)
    assert summary["retained_margin"] == {"soft": 0.5, "worse": None}
    assert summary["margin_over_none"]["soft"]["0.3"]["overall"] == 0.15


def test_benchmark_reuse_reads_the_evaluation_folder_into_the_documented_json(tmp_path):
    import argparse

    bench = load_benchmark()
    shares = ["0", "0.1", "0.3", "0.5"]
    accuracy = {m: {s: {"overall": base - 0.1 * i * k, "interest_perception": base} for i, s in enumerate(shares)}
                for m, base, k in (("none", 0.5, 0), ("text", 0.6, 0.5), ("soft", 0.8, 1),
                                   ("soft_not_instruction_aware", 0.7, 1))}
    noise = {"mode": "replace", "seed": 0, "shares": [0.0, 0.1, 0.3, 0.5], "accuracy": accuracy,
             "answered": {"none": 10, "text": 3, "soft": 10, "soft_not_instruction_aware": 10},
             "events_changed": dict.fromkeys(shares, 5), "paired": {}, "seconds": dict.fromkeys(shares, 1.0)}
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"noise": noise, "split": "test", "questions": 10}))
    args = argparse.Namespace(runs=str(tmp_path), reuse=True, checkpoint="a", compare_checkpoint="b",
                              compare_name="soft_not_instruction_aware", data="d", text_max_users=30)
    result = bench.measure(args)
    assert set(result["accuracy"]) == {"none", "text", "soft", "soft_not_instruction_aware"}
    assert result["accuracy"]["soft"]["0.3"]["overall"] == pytest.approx(0.6)
    assert result["retained_margin"]["soft"] == pytest.approx((0.6 - 0.5) / (0.8 - 0.5), abs=1e-4)
    assert result["evaluate_s"] is None and result["commit"] and result["machine"]["cpus"]
    (tmp_path / "eval" / "metrics.json").write_text(json.dumps({"split": "test", "questions": 10}))
    with pytest.raises(SystemExit, match="no noise block"):
        bench.measure(args)
