"""Rating decoding (argmax / median / mean of the option distribution) and the LaMP-3 reference rules."""

from __future__ import annotations

import math

import pytest

from user_embed.errors import UserError
from user_embed.eval.ratings import RatingQuestion, decode_rating, decode_ratings, reference_predictions

LABELS = ["1", "2", "3", "4", "5"]


def log_probs(probs: list[float]) -> list[float]:
    return [math.log(p) for p in probs]


def test_median_differs_from_argmax_on_a_bimodal_distribution():
    scores = log_probs([0.40, 0.05, 0.05, 0.15, 0.35])  # most likely "1", but half the mass is at 4–5
    assert decode_rating(scores, LABELS, "argmax") == "1"
    assert decode_rating(scores, LABELS, "median") == "3"  # cumulative 0.40, 0.45, 0.50 → 3
    assert float(decode_rating(scores, LABELS, "mean")) == pytest.approx(0.4 + 0.1 + 0.15 + 0.6 + 1.75)


def test_decoding_ignores_option_order_and_the_scores_offset():
    probs = [0.1, 0.2, 0.3, 0.4]
    options = ["4", "1", "3", "2"]  # numeric order 1, 2, 3, 4 has mass 0.2, 0.4, 0.3, 0.1
    shifted = [s - 100.0 for s in log_probs(probs)]  # log-likelihoods, not normalised
    assert decode_rating(shifted, options, "median") == "2"
    assert decode_ratings([shifted, shifted], [options, options], "argmax") == ["2", "2"]


def test_decoding_refuses_unknown_modes_and_non_numeric_options():
    with pytest.raises(UserError, match="unknown rating decoding"):
        decode_rating([0.0, 0.0], ["1", "2"], "mode")
    with pytest.raises(UserError, match="numeric options"):
        decode_rating([0.0, 0.0], ["good", "bad"], "median")


def test_reference_rules_use_only_visible_ratings():
    train = [("a", "m1", 5.0), ("b", "m1", 3.0), ("b", "m2", 1.0)]
    questions = [RatingQuestion("q1", "m1", (("m2", 2.0), ("m3", 4.0))),
                 RatingQuestion("q2", "m9", (("m1", 4.0),))]
    rules = reference_predictions(train, questions, prior=0.0, with_svd=False)
    visible = [5.0, 3.0, 1.0, 2.0, 4.0, 4.0]
    assert rules["global_mean"] == [pytest.approx(sum(visible) / 6)] * 2
    assert rules["user_mean"] == [3.0, 4.0]
    assert rules["item_mean"][0] == pytest.approx((5 + 3 + 4) / 3)  # m1: a, b and q2's profile
    assert rules["item_mean"][1] == pytest.approx(sum(visible) / 6)  # unseen item → global mean


def test_item_mean_shrinks_towards_the_global_mean():
    train = [("a", "m1", 5.0), ("b", "m2", 1.0), ("c", "m2", 1.0)]
    questions = [RatingQuestion("q", "m1", (("m2", 1.0),))]
    shrunk = reference_predictions(train, questions, prior=1.0, with_svd=False)["item_mean"][0]
    assert shrunk == pytest.approx((5.0 + 2.0) / 2)  # (one 5 + one pseudo-rating at the global mean 2) / 2


def test_svd_reference_learns_a_user_bias():
    train = [(f"u{u}", f"m{m}", 5.0 if u < 10 else 1.0) for u in range(20) for m in range(10)]
    questions = [RatingQuestion("high", "m0", tuple((f"m{m}", 5.0) for m in range(1, 10))),
                 RatingQuestion("low", "m0", tuple((f"m{m}", 1.0) for m in range(1, 10)))]
    svd = reference_predictions(train, questions)["svd"]
    assert svd[0] > svd[1] + 1.0


def test_reference_rules_refuse_empty_input():
    with pytest.raises(UserError, match="no rating questions"):
        reference_predictions([], [])
