"""Paired cluster-bootstrap differences: exact difference, interval behaviour, users as clusters."""

from __future__ import annotations

import pytest

from user_embed.eval.paired import cluster_bootstrap_diff, paired_differences


def test_difference_is_exact_and_the_interval_brackets_it():
    users = ["u1"] * 3 + ["u2"] * 3 + ["u3"] * 4
    a = [True, True, False, True, True, True, False, True, True, False]
    b = [False, True, False, False, True, False, False, True, False, False]
    out = cluster_bootstrap_diff(users, a, b)
    assert out["diff"] == pytest.approx((7 - 3) / 10)
    assert out["low"] <= out["diff"] <= out["high"]
    assert out["questions"] == 10 and out["users"] == 3
    assert cluster_bootstrap_diff(users, a, b) == out  # fixed seed: reproducible


def test_identical_methods_give_a_zero_width_interval_and_a_clear_win_excludes_zero():
    users = [f"u{i // 2}" for i in range(40)]
    same = [i % 3 == 0 for i in range(40)]
    assert cluster_bootstrap_diff(users, same, same) == {"diff": 0.0, "low": 0.0, "high": 0.0, "questions": 40,
                                                         "users": 20}
    better = cluster_bootstrap_diff(users, [True] * 40, same)
    assert better["low"] > 0


def test_correlated_questions_of_one_user_widen_the_interval():
    # 6 users × 10 questions; within a user every question goes the same way (one history decides them all)
    a = [i // 10 < 3 for i in range(60)]
    b = [False] * 60
    clustered = cluster_bootstrap_diff([f"u{i // 10}" for i in range(60)], a, b)
    independent = cluster_bootstrap_diff([f"q{i}" for i in range(60)], a, b)
    assert clustered["diff"] == independent["diff"] == 0.5
    assert clustered["high"] - clustered["low"] > 1.5 * (independent["high"] - independent["low"])


def test_paired_differences_per_family_and_overall():
    rows = [{"user_id": f"u{i % 4}", "family": "f1" if i < 6 else "f2", "answer": "x",
             "soft": "x", "none": "x" if i % 2 else "y"} for i in range(10)]
    out = paired_differences(rows, "soft", ["none"], ["f1", "f2", "overall"])
    assert set(out) == {"soft-none"} and set(out["soft-none"]) == {"f1", "f2", "overall"}
    assert out["soft-none"]["overall"]["diff"] == pytest.approx(0.5)
    assert out["soft-none"]["f1"]["questions"] == 6
    with pytest.raises(ValueError, match="aligned"):
        cluster_bootstrap_diff(["u"], [True, False], [True])
