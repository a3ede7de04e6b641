"""LaMP metrics, computed exactly as the official ``LaMP/eval/evaluation.py`` does.

* LaMP-1/2 (classification): predictions and golds are whitespace-stripped and mapped to
  their index in the task's label list (unknown text -> -1); ``accuracy`` and macro ``f1``
  over ``labels=range(len(label_list))`` with scikit-learn (what HF ``evaluate``'s
  accuracy/f1 wrap).
* LaMP-3 (rating): ``float(prediction)``; a prediction that does not parse becomes whichever
  of 1 or 5 is farther from the gold (5 on a tie at 3); ``mae`` and ``rmse`` with scikit-learn.
* LaMP-4..7 (generation): ``rouge-1`` and ``rouge-L`` F-measure from ``rouge-score`` without
  stemming, aggregated like ``evaluate.load("rouge")``'s default: a ``BootstrapAggregator``
  (1000 resamples) and its ``mid`` (median of resampled means). The official run leaves
  numpy's global RNG unseeded; here it is seeded (0) inside a saved/restored RNG state, so
  scores are reproducible and the caller's RNG is untouched.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from data_pipelines.lamp import LampTask, read_lamp_outputs, resolve_task
from data_pipelines.report import DataError
from user_embed.errors import UserError

ROUGE_SEED = 0


def classification_metrics(preds: list[str], golds: list[str], labels: list[str] | tuple[str, ...]) -> dict[str, float]:
    """Accuracy and macro-F1 over ``labels`` (official LaMP-1/2 definition)."""
    labels = list(labels)

    def index(text: str) -> int:
        text = str(text).strip()
        return labels.index(text) if text in labels else -1

    pred_idx = [index(p) for p in preds]
    gold_idx = [index(g) for g in golds]
    return {
        "accuracy": float(accuracy_score(gold_idx, pred_idx)),
        # zero_division=0.0 is what the default "warn" computes, minus the warning
        "f1": float(f1_score(gold_idx, pred_idx, labels=list(range(len(labels))), average="macro", zero_division=0.0)),
    }


def _rating(prediction: str, gold: float) -> float:
    """The predicted rating; unparseable or non-finite (``nan``, ``inf``) → the extreme farther from the gold."""
    try:
        value = float(prediction)
    except ValueError:
        value = math.nan
    if math.isfinite(value):
        return value
    return 1.0 if abs(1 - gold) > abs(5 - gold) else 5.0


def rating_metrics(preds: list[str], golds: list[str]) -> dict[str, float]:
    """MAE and RMSE (official LaMP-3 definition, "farther extreme" for unparseable predictions)."""
    gold_values = [float(str(g).strip()) for g in golds]
    pred_values = [_rating(str(p).strip(), g) for p, g in zip(preds, gold_values)]
    return {
        "mae": float(mean_absolute_error(gold_values, pred_values)),
        "rmse": float(math.sqrt(mean_squared_error(gold_values, pred_values))),
    }


def absolute_errors(preds: list[str], golds: list[str]) -> list[float]:
    """Per-question absolute error of each rating prediction, read as :func:`rating_metrics` reads it."""
    gold_values = [float(str(g).strip()) for g in golds]
    return [abs(_rating(str(p).strip(), g) - g) for p, g in zip(preds, gold_values)]


def rouge_metrics(preds: list[str], golds: list[str], seed: int = ROUGE_SEED) -> dict[str, float]:
    """ROUGE-1 / ROUGE-L mid F-measure, as ``evaluate``'s rouge with its defaults."""
    from rouge_score import rouge_scorer, scoring

    scorer = rouge_scorer.RougeScorer(["rouge1", "rougeL"], use_stemmer=False)
    aggregator = scoring.BootstrapAggregator()
    for pred, gold in zip(preds, golds):
        aggregator.add_scores(scorer.score(str(gold).strip(), str(pred).strip()))
    state = np.random.get_state()
    try:
        np.random.seed(seed)
        result = aggregator.aggregate()
    finally:
        np.random.set_state(state)
    return {"rouge-1": float(result["rouge1"].mid.fmeasure), "rouge-L": float(result["rougeL"].mid.fmeasure)}


def lamp_metrics(task: str | LampTask, preds: list[str], golds: list[str]) -> dict[str, float]:
    """The official metrics of ``task`` for aligned lists of predictions and golds."""
    spec = resolve_task(task) if isinstance(task, str) else task
    if len(preds) != len(golds):
        raise UserError(f"{len(preds)} predictions for {len(golds)} golds")
    if not golds:
        raise UserError("no examples to score")
    if spec.kind == "classification":
        return classification_metrics(preds, golds, spec.labels)
    if spec.kind == "regression":
        return rating_metrics(preds, golds)
    return rouge_metrics(preds, golds)


def score_lamp(task: str, golds_path: str | Path, preds_path: str | Path) -> dict[str, float]:
    """Score a LaMP prediction file against an outputs file (both ``{"task", "golds"}``).

    The ids of the two files must be the same set (as the official script asserts); the
    error names the ids that are missing or extra.
    """
    spec = resolve_task(task)
    golds = read_lamp_outputs(spec, golds_path, what="golds")
    # predictions may be any text (labels are checked on golds only)
    preds = read_lamp_outputs(_open_task(spec), preds_path, what="predictions")
    missing = golds.filter(~golds["qid"].is_in(preds["qid"].implode()))["qid"].to_list()
    if missing:
        raise DataError(f"{preds_path}: no prediction for {len(missing)} id(s), e.g. {missing[:5]}")
    extra = preds.filter(~preds["qid"].is_in(golds["qid"].implode()))["qid"].to_list()
    if extra:
        raise DataError(f"{preds_path}: {len(extra)} prediction id(s) are not in the golds, e.g. {extra[:5]}")
    aligned = golds.join(preds.rename({"answer": "prediction"}), on="qid", how="left", maintain_order="left")
    return lamp_metrics(spec, aligned["prediction"].to_list(), aligned["answer"].to_list())


def _open_task(spec: LampTask) -> LampTask:
    """The same task without a label list, so free-text predictions are read as they are."""
    return replace(spec, labels=())
