"""Rating prediction (LaMP-3): how a rating is read off the LLM's option scores, and the reference rules.

**Decoding.** The LLM scores each rating label ("1" … "5") by its log-likelihood as the answer. ``argmax``
answers the most likely label. The labels are ordered numbers, so the scores define a distribution over
them (a softmax), and the MAE-optimal answer under that distribution is its **median** (``median``: the
smallest label whose cumulative probability reaches 0.5); its **mean** (``mean``) is the RMSE-optimal one.
The same decoding applies to every method (``none``, ``text``, ``bm25``, ``soft``).

**Reference rules** (no LLM), from the ratings a question may see — every rating in the training split,
and each evaluated question's own profile:

* ``user_mean``: the mean of the question's profile ratings;
* ``item_mean``: the mean of the question's item's visible ratings (shrunk towards the global mean by
  ``prior`` pseudo-ratings), the global mean for an unseen item;
* ``global_mean``: the mean of all visible ratings;
* ``svd``: scikit-surprise's SVD (biased matrix factorisation), fitted on the visible ratings — how much
  collaborative signal the data holds.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from user_embed.errors import UserError

DECODINGS = ("argmax", "median", "mean")


def _label_values(options: Sequence[str]) -> list[float]:
    try:
        return [float(o) for o in options]
    except ValueError:
        raise UserError(f"rating decoding needs numeric options, got {list(options)}") from None


def decode_rating(scores: Sequence[float], options: Sequence[str], decoding: str = "median") -> str:
    """One question's answer from its options' log-likelihoods: ``argmax``, ``median`` or ``mean`` (see above)."""
    if decoding not in DECODINGS:
        raise UserError(f"unknown rating decoding '{decoding}'; choose one of {', '.join(DECODINGS)}")
    if decoding == "argmax":
        return options[max(range(len(scores)), key=scores.__getitem__)]
    values = _label_values(options)
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]  # softmax over the options, numerically stable
    total = sum(weights)
    probs = [w / total for w in weights]
    if decoding == "mean":
        return f"{sum(p * v for p, v in zip(probs, values)):.4f}".rstrip("0").rstrip(".")
    cumulative = 0.0
    for index in sorted(range(len(values)), key=values.__getitem__):
        cumulative += probs[index]
        if cumulative >= 0.5:
            return options[index]
    return options[max(range(len(values)), key=values.__getitem__)]


def decode_ratings(scores: Sequence[Sequence[float]], options: Sequence[Sequence[str]],
                   decoding: str = "median") -> list[str]:
    """:func:`decode_rating` for a batch of questions."""
    return [decode_rating(s, o, decoding) for s, o in zip(scores, options)]


@dataclass(frozen=True)
class RatingQuestion:
    """A question to predict: its user, its item, and the user's visible (profile) ratings as (item, rating)."""

    user_id: str
    item_id: str
    profile: tuple[tuple[str, float], ...]


def reference_predictions(train: Sequence[tuple[str, str, float]], questions: Sequence[RatingQuestion],
                          prior: float = 5.0, svd_seed: int = 0, with_svd: bool = True) -> dict[str, list[float]]:
    """{rule: one prediction per question} for the rules above.

    ``train`` holds (user, item, rating) triples the questions may see besides their own profiles (e.g. the
    training split's profiles and answers); the evaluated questions' profiles are visible too, so each
    question's answer must not appear in another question's profile (LaMP's one question per user). The SVD needs scikit-surprise (``pip install scikit-surprise``).
    """
    if not questions:
        raise UserError("no rating questions to predict")
    visible = list(train) + [(q.user_id, item, rating) for q in questions for item, rating in q.profile]
    if not visible:
        raise UserError("no visible ratings to fit the reference rules on")
    unique = {(u, i): r for u, i, r in visible}  # one rating per (user, item): the last one seen
    global_mean = statistics.fmean(unique.values())
    item_sum: dict[str, float] = defaultdict(float)
    item_count: dict[str, int] = defaultdict(int)
    for (_, item), rating in unique.items():
        item_sum[item] += rating
        item_count[item] += 1
    predictions: dict[str, list[float]] = {"global_mean": [], "user_mean": [], "item_mean": []}
    for q in questions:
        total, count = item_sum.get(q.item_id, 0.0), item_count.get(q.item_id, 0)
        predictions["global_mean"].append(global_mean)
        predictions["user_mean"].append(statistics.fmean(r for _, r in q.profile) if q.profile else global_mean)
        predictions["item_mean"].append((total + prior * global_mean) / (count + prior) if count + prior > 0
                                        else global_mean)
    if with_svd:
        predictions["svd"] = _svd_predictions(unique, questions, svd_seed)
    return predictions


def _svd_predictions(ratings: dict[tuple[str, str], float], questions: Sequence[RatingQuestion],
                     seed: int) -> list[float]:
    try:
        import pandas as pd
        from surprise import SVD, Dataset, Reader
    except ImportError as error:
        raise UserError(f"the SVD reference needs scikit-surprise and pandas ({error.name} is missing): "
                        "pip install scikit-surprise pandas") from None
    low, high = min(ratings.values()), max(ratings.values())
    frame = pd.DataFrame([(u, i, r) for (u, i), r in ratings.items()], columns=["user", "item", "rating"])
    data = Dataset.load_from_df(frame, Reader(rating_scale=(low, high)))
    model = SVD(random_state=seed)
    model.fit(data.build_full_trainset())
    return [float(model.predict(q.user_id, q.item_id).est) for q in questions]
