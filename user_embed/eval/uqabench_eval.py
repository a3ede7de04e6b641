"""UQABench evaluation by generation: answers are free text, correct when they start with the gold.

``user-embed evaluate --benchmark uqabench --checkpoint … --data <prepare uqabench folder>`` answers
every question of the split greedily with each method on the same frozen LLM — ``soft`` (the
embedder's soft prompt) and ``none`` (the question alone) — and scores them with the official rule
(:func:`user_embed.eval.uqabench_metrics.uqabench_accuracy`). Each method's answers are also
written in the official generation format (``{"question", "prediction", "answer"}`` per line), so
``user-embed score uqabench --golds <file>`` re-scores them.
"""

from __future__ import annotations

import time

from user_embed.data.collate import Example
from user_embed.errors import UserError

GENERATION_METHODS = ("none", "soft")


def evaluate_uqabench(lm, users, examples: list[Example], methods: list[str], max_new_tokens: int = 32,
                      batch_size: int = 8) -> dict:
    """{"uqabench": {method: accuracy tables}, "seconds": …, "predictions": {method: [answers]}} for ``lm`` (a
    PersonalizedLM) answering ``examples`` of ``users`` (a UserStore) greedily with each method."""
    from user_embed.eval.uqabench_metrics import uqabench_accuracy
    from user_embed.generate import SamplingConfig

    unknown = sorted(set(methods) - set(GENERATION_METHODS))
    if unknown:
        raise UserError(f"--benchmark uqabench generates answers with methods {', '.join(GENERATION_METHODS)}; "
                        f"not {', '.join(unknown)}")
    if not examples:
        raise UserError("no questions to evaluate")
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    out: dict = {"uqabench": {}, "seconds": {}, "predictions": {}}
    for method in methods:
        start = time.perf_counter()
        answers = lm.generate(users, [ex.user_id for ex in examples], [ex.question for ex in examples],
                              method=method, sampling=sampling, batch_size=batch_size,
                              cutoffs=[ex.cutoff for ex in examples])  # the histories the questions were asked at
        out["seconds"][method] = round(time.perf_counter() - start, 1)
        out["predictions"][method] = answers
        out["uqabench"][method] = uqabench_accuracy([ex.task for ex in examples], [ex.answer for ex in examples],
                                                   answers)
    return out
