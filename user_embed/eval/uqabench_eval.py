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
from pathlib import Path

from user_embed.data.collate import Example
from user_embed.errors import UserError

GENERATION_METHODS = ("none", "soft")


def generate_answers(personalizer, examples: list[Example], method: str, max_new_tokens: int,
                     batch_size: int) -> list[str]:
    """Greedy answers for each example, in order (``soft``: with the user's soft prompt; ``none``: without)."""
    from user_embed.generate import Request, SamplingConfig, generate
    from user_embed.generate.hf import generate_tokens

    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    if method == "soft":
        results = generate(personalizer, [Request(ex.user_id, ex.question) for ex in examples], backend="hf",
                           sampling=sampling, batch_size=batch_size)
        bad = next((r for r in results if r.error), None)
        if bad is not None:
            raise UserError(f"user '{bad.user_id}': {bad.error}")
        return [r.answer or "" for r in results]
    answers = []
    for i in range(0, len(examples), batch_size):
        questions = [ex.question for ex in examples[i:i + batch_size]]
        prompts = personalizer.text_embeds(questions, [""] * len(questions))  # question only, left-padded
        answers += [personalizer.decode(row, [])[0] for row in generate_tokens(personalizer, prompts, sampling)]
    return answers


def evaluate_uqabench(checkpoint: str | Path, data_dir: str | Path, examples: list[Example], methods: list[str],
                      max_new_tokens: int = 32, batch_size: int = 8, llm: str | None = None) -> dict:
    """{"uqabench": {method: accuracy tables}, "seconds": …, "predictions": {method: [answers]}}."""
    from user_embed.eval.uqabench_metrics import uqabench_accuracy
    from user_embed.generate import load

    unknown = sorted(set(methods) - set(GENERATION_METHODS))
    if unknown:
        raise UserError(f"--benchmark uqabench generates answers with methods {', '.join(GENERATION_METHODS)}; "
                        f"not {', '.join(unknown)}")
    if not examples:
        raise UserError("no questions to evaluate")
    personalizer = load(checkpoint, data_dir, llm=llm)
    out: dict = {"uqabench": {}, "seconds": {}, "predictions": {}}
    for method in methods:
        start = time.perf_counter()
        answers = generate_answers(personalizer, examples, method, max_new_tokens, batch_size)
        out["seconds"][method] = round(time.perf_counter() - start, 1)
        out["predictions"][method] = answers
        out["uqabench"][method] = uqabench_accuracy([ex.task for ex in examples], [ex.answer for ex in examples],
                                                   answers)
    return out
