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

import torch
from tqdm.auto import tqdm

from user_embed.data.collate import Example
from user_embed.eval.history_text import HistoryWriter

METHODS = ("none", "text", "bm25", "soft")
DEFAULT_METHODS = ("none", "text", "soft")
TEXT_METHODS = {"text": "recent", "bm25": "bm25"}  # method → how its events are picked


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
def evaluate_userqa(module, datamodule, methods=DEFAULT_METHODS, split: str = "test", history_events: int = 50,
                    progress: bool = True) -> dict:
    """Run each method over ``split`` and return metrics + per-question predictions.

    The ``text`` method batches one user's questions together, so their shared history prefix runs once.
    """
    module.eval()
    if datamodule.collator is None:
        datamodule.setup("test")
    examples: list[Example] = datamodule.examples.get(split) or []
    if not examples:
        raise ValueError(f"no '{split}' questions to evaluate")
    size = datamodule.eval_batch_size
    histories, items = datamodule.collator.histories, datamodule.tables["items"]
    writers = {method: HistoryWriter(histories, datamodule.spec, items, history_events, TEXT_METHODS[method])
               for method in methods if method in TEXT_METHODS}  # only the text methods asked for
    results = {"accuracy": {}, "prompt_tokens": {}, "seconds": {}, "questions": len(examples), "predictions": []}
    per_method: dict[str, list[str]] = {}
    for method in methods:
        start = time.perf_counter()
        contexts = [writers[method](ex) for ex in examples] if method in writers else None
        batches = (context_batches(contexts, size) if contexts
                   else [list(range(i, min(i + size, len(examples)))) for i in range(0, len(examples), size)])
        predictions: list[str] = [""] * len(examples)
        tokens = 0.0
        for idx in tqdm(batches, desc=f"evaluate {method}", disable=not progress, leave=False):
            batch = datamodule.collator([examples[i] for i in idx]).to(module.device)
            preds, mean_tokens = module.answer_choices(batch, method=method,
                                                       contexts=[contexts[i] for i in idx] if contexts else None)
            for i, pred in zip(idx, preds):
                predictions[i] = pred
            tokens += mean_tokens * len(idx)
        per_method[method] = predictions
        results["accuracy"][method] = accuracy_table(examples, predictions)
        results["prompt_tokens"][method] = round(tokens / len(examples), 1)
        results["seconds"][method] = round(time.perf_counter() - start, 1)
    results["predictions"] = [
        {"user_id": ex.user_id, "task": ex.task, "family": ex.family, "question": ex.question, "answer": ex.answer,
         **{m: per_method[m][i] for m in methods}} for i, ex in enumerate(examples)]
    return results
