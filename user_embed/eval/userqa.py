"""UserQA evaluation: accuracy per task, per family and overall for soft prompts and the baselines.

Methods, all on the same frozen LLM, questions and likelihood-based option choice:
* ``none`` — the question only;
* ``text`` — the user's most recent events written as text before the question;
* ``bm25`` — the user's events that best match the question (BM25), written as text;
* ``soft`` — the trained embedder's K soft tokens before the question.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from user_embed.data.collate import Example
from user_embed.errors import UserError
from user_embed.llm.scoring import pick
from user_embed.model import METHODS

DEFAULT_METHODS = ("none", "text", "soft")


def accuracy_table(examples: list[Example], predictions: list[str]) -> dict[str, float]:
    """{"overall": …, "<family>": …, "task/<task>": …} from predictions aligned with examples."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for ex, pred in zip(examples, predictions):
        ok = pred == ex.answer
        hits["overall"].append(ok)
        hits[ex.family].append(ok)
        hits[f"task/{ex.task}"].append(ok)
    return {key: round(sum(v) / len(v), 4) for key, v in sorted(hits.items()) if v}


def context_batches(contexts: list[str], batch_size: int) -> list[list[int]]:
    """Example indices in batches of ≤ ``batch_size`` where every batch shares one context (first-seen order)."""
    groups: dict[str, list[int]] = {}
    for i, context in enumerate(contexts):
        groups.setdefault(context, []).append(i)
    return [idx[j:j + batch_size] for idx in groups.values() for j in range(0, len(idx), batch_size)]


@torch.no_grad()
def evaluate_userqa(lm, users, examples: list[Example], methods=DEFAULT_METHODS, history_events: int = 50,
                    batch_size: int = 16, progress: bool = True, method_users: dict[str, set[str]] | None = None,
                    decode: Callable[[list[list[float]], list[list[str]]], list[str]] | None = None) -> dict:
    """Run each method over ``examples`` with ``lm`` (a PersonalizedLM) on ``users`` (a UserStore); return
    {"accuracy", "prompt_tokens", "seconds", "questions", "answered", "predictions", "chance", "paired"}
    (predictions: one row per question; a method's entry is None where it did not answer).

    ``method_users`` limits a method to the questions of some users (e.g. the slow text baseline on a seeded
    subset); its accuracy is over those questions, and each paired difference over the questions both methods
    answered. The text methods batch one user's questions together, so their shared history prefix runs once.
    ``decode`` turns a batch's option scores (and options) into answers; default: the most likely option
    (e.g. :func:`user_embed.eval.ratings.decode_ratings` reads a rating as the median of the distribution).
    """

    if not examples:
        raise UserError("no questions to evaluate")
    if any(not ex.options for ex in examples):
        raise UserError("UserQA evaluation picks among options; some questions have none (free-text answers: "
                        "use --benchmark uqabench or generate)")
    unknown = sorted(set(methods) - set(METHODS))
    if unknown or not methods:
        raise UserError(f"unknown method(s) {unknown or list(methods)}; choose from {', '.join(METHODS)}")
    lm.eval()
    results = {"accuracy": {}, "prompt_tokens": {}, "seconds": {}, "questions": len(examples), "answered": {},
               "predictions": []}
    per_method: dict[str, list[str | None]] = {}
    for method in methods:
        start = time.perf_counter()
        allowed = (method_users or {}).get(method)
        rows = [i for i, ex in enumerate(examples) if allowed is None or ex.user_id in allowed]
        if not rows:
            raise UserError(f"method '{method}': none of its users has a question to answer")
        asked = [examples[i] for i in rows]
        contexts = lm.contexts(users, asked, method, history_events)
        batches = (context_batches(contexts, batch_size) if contexts
                   else [list(range(i, min(i + batch_size, len(asked)))) for i in range(0, len(asked), batch_size)])
        answers: list[str] = [""] * len(asked)
        tokens = 0.0
        for idx in tqdm(batches, desc=f"evaluate {method}", disable=not progress, leave=False):
            batch = lm.batch(users, [asked[i] for i in idx])
            scores, mean_tokens = lm.option_scores(batch, method=method,
                                                   contexts=[contexts[i] for i in idx] if contexts else None)
            preds = (decode or pick)(scores, [ex.options for ex in batch.examples])
            for i, pred in zip(idx, preds):
                answers[i] = pred
            tokens += mean_tokens * len(idx)
        predictions: list[str | None] = [None] * len(examples)
        for i, answer in zip(rows, answers):
            predictions[i] = answer
        per_method[method] = predictions
        results["accuracy"][method] = accuracy_table(asked, answers)
        results["answered"][method] = len(asked)
        results["prompt_tokens"][method] = round(tokens / len(asked), 1)
        results["seconds"][method] = round(time.perf_counter() - start, 1)
    results["predictions"] = [
        {"user_id": ex.user_id, "task": ex.task, "family": ex.family, "question": ex.question, "answer": ex.answer,
         **{m: per_method[m][i] for m in methods}} for i, ex in enumerate(examples)]
    results["chance"] = chance_levels(examples)
    if "soft" in methods and len(methods) > 1:  # soft minus each baseline, with an interval over users
        from user_embed.eval.paired import paired_differences
        from user_embed.eval.report import FAMILY_ORDER

        groups = [g for g in (*FAMILY_ORDER, "overall") if g in results["accuracy"]["soft"]]
        results["paired"] = paired_differences(results["predictions"], "soft", [m for m in methods if m != "soft"],
                                               groups)
    return results


def chance_levels(examples: list[Example]) -> dict[str, float]:
    """Expected accuracy of a uniform random pick among the options, overall and per family."""
    chance: dict[str, list[float]] = defaultdict(list)
    for ex in examples:
        for key in ("overall", ex.family):
            chance[key].append(1.0 / len(ex.options))
    return {k: round(sum(v) / len(v), 4) for k, v in chance.items()}
