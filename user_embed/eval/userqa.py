"""UserQA evaluation: accuracy per task, per family and overall for soft prompts and the baselines.

Methods, all on the same frozen LLM, questions and likelihood-based option choice:
* ``none`` — the question only;
* ``text`` — the user's most recent events written as text before the question;
* ``soft`` — the trained embedder's K soft tokens before the question.
"""

from __future__ import annotations

import time
from collections import defaultdict

import torch
from tqdm.auto import tqdm

from user_embed.data.collate import Example
from user_embed.eval.history_text import HistoryWriter

METHODS = ("none", "text", "soft")


def accuracy_table(examples: list[Example], predictions: list[str]) -> dict[str, float]:
    """{"overall": …, "<family>": …, "task/<task>": …} from predictions aligned with examples."""
    hits: dict[str, list[bool]] = defaultdict(list)
    for ex, pred in zip(examples, predictions):
        ok = pred == ex.answer
        hits["overall"].append(ok)
        hits[ex.family].append(ok)
        hits[f"task/{ex.task}"].append(ok)
    return {key: round(sum(v) / len(v), 4) for key, v in sorted(hits.items()) if v}


@torch.no_grad()
def evaluate_userqa(module, datamodule, methods=METHODS, split: str = "test", history_events: int = 50,
                    progress: bool = True) -> dict:
    """Run each method over ``split`` and return metrics + per-question predictions."""
    module.eval()
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    writer = HistoryWriter(datamodule.collator.histories, datamodule.spec, datamodule.tables["items"], history_events)
    results = {"accuracy": {}, "prompt_tokens": {}, "seconds": {}, "questions": 0, "predictions": []}
    per_method: dict[str, list[str]] = {}
    examples: list[Example] = []
    for method in methods:
        start, predictions, tokens = time.perf_counter(), [], []
        for batch in tqdm(loader, desc=f"evaluate {method}", disable=not progress, leave=False):
            batch = batch.to(module.device)
            contexts = [writer(ex) for ex in batch.examples] if method == "text" else None
            preds, mean_tokens = module.answer_choices(batch, method=method, contexts=contexts)
            predictions += preds
            tokens.append((mean_tokens, len(batch)))
            if method == methods[0]:
                examples += batch.examples
        per_method[method] = predictions
        results["accuracy"][method] = accuracy_table(examples, predictions)
        results["prompt_tokens"][method] = round(sum(t * n for t, n in tokens) / max(1, sum(n for _, n in tokens)), 1)
        results["seconds"][method] = round(time.perf_counter() - start, 1)
    results["questions"] = len(examples)
    results["predictions"] = [
        {"user_id": ex.user_id, "task": ex.task, "family": ex.family, "question": ex.question, "answer": ex.answer,
         **{m: per_method[m][i] for m in methods}} for i, ex in enumerate(examples)]
    return results
