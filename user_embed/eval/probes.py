"""Linear probes on user representations: cross-validated logistic regression with user-bootstrap intervals.

For each (representation, target): the users with a label, stratified K-fold cross-validation over them
(fixed seed), a scikit-learn pipeline ``StandardScaler → LogisticRegression`` whose inverse regularisation
is chosen by an inner cross-validation on each training fold, and the out-of-fold predictions scored as a
whole: accuracy, macro-F1 and AUC (binary: ROC AUC; multiclass: one-vs-rest macro AUC). The headline
``score`` is AUC for a binary target and macro-F1 for a multiclass one; its 95 % interval resamples users
(:data:`BOOTSTRAP` draws, seeded) over the same out-of-fold predictions. ``majority`` (always the most
frequent class of the training fold) is the floor every representation is read against.
"""

from __future__ import annotations

import warnings

import numpy as np

from user_embed.eval.embedding_targets import Target

BOOTSTRAP = 300
C_GRID = (0.01, 0.1, 1.0)


def probe(features: np.ndarray, target: Target, folds: int = 5, seed: int = 0) -> dict:
    """features (N, d) for the users of ``target.labels`` (same order) → metrics with an interval."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = [i for i, label in enumerate(target.labels) if label is not None]
    x = np.asarray(features, dtype=np.float64)[rows]  # (n, d)
    classes = sorted({target.labels[i] for i in rows})
    y = np.array([classes.index(target.labels[i]) for i in rows])  # (n,)
    probabilities = np.zeros((len(rows), len(classes)))  # out-of-fold, (n, C)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for train, test in splitter.split(x, y):
        model = make_pipeline(StandardScaler(), LogisticRegressionCV(Cs=list(C_GRID), cv=3, max_iter=2000,
                                                                     scoring="neg_log_loss"))
        with warnings.catch_warnings():  # scikit-learn announces API changes of LogisticRegressionCV
            warnings.simplefilter("ignore", FutureWarning)
            model.fit(x[train], y[train])
        probabilities[np.ix_(test, model.classes_)] = model.predict_proba(x[test])
    return score_predictions(y, probabilities, target.kind, seed)


def majority(target: Target, folds: int = 5, seed: int = 0) -> dict:
    """The same protocol for a rule that predicts each training fold's class shares (its majority class)."""
    rows = [i for i, label in enumerate(target.labels) if label is not None]
    return probe(np.zeros((len(target.labels), 1)), target, folds, seed) if rows else {}


def score_predictions(y: np.ndarray, probabilities: np.ndarray, kind: str, seed: int = 0) -> dict:
    """Accuracy, macro-F1, AUC of out-of-fold class probabilities (n, C), and ``score`` with a user-bootstrap
    95 % interval (``low``, ``high``)."""
    rng = np.random.default_rng(seed)
    point = _metrics(y, probabilities, kind)
    draws = []
    for _ in range(BOOTSTRAP):
        sample = rng.integers(0, len(y), len(y))
        if len(np.unique(y[sample])) < 2:
            continue
        draws.append(_score(y[sample], probabilities[sample], kind))
    low, high = (np.percentile(draws, [2.5, 97.5]) if draws else (np.nan, np.nan))
    return {**{k: round(v, 4) for k, v in point.items()}, "low": round(float(low), 4), "high": round(float(high), 4),
            "users": int(len(y)), "classes": int(probabilities.shape[1])}


def _score(y: np.ndarray, probabilities: np.ndarray, kind: str) -> float:
    """The headline score alone (what the bootstrap resamples): AUC (binary) or macro-F1 (multiclass)."""
    from sklearn.metrics import f1_score, roc_auc_score

    if kind == "binary":
        return float(roc_auc_score(y, probabilities[:, 1]))
    labels = list(range(probabilities.shape[1]))
    return float(f1_score(y, probabilities.argmax(1), labels=labels, average="macro", zero_division=0))


def _metrics(y: np.ndarray, probabilities: np.ndarray, kind: str) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    predicted = probabilities.argmax(1)
    labels = list(range(probabilities.shape[1]))
    accuracy = accuracy_score(y, predicted)
    macro_f1 = f1_score(y, predicted, labels=labels, average="macro", zero_division=0)
    present = np.unique(y)
    if kind == "binary":
        auc = roc_auc_score(y, probabilities[:, 1])
    else:  # one-vs-rest over the classes present in this (re)sample
        scores = probabilities[:, present] / np.maximum(probabilities[:, present].sum(1, keepdims=True), 1e-12)
        auc = roc_auc_score(y, scores, multi_class="ovr", average="macro", labels=present) if len(present) > 2 \
            else roc_auc_score(y == present[1], scores[:, 1])
    score = auc if kind == "binary" else macro_f1
    return {"score": float(score), "accuracy": float(accuracy), "macro_f1": float(macro_f1), "auc": float(auc)}
