"""Free-text UserQA: answer open questions (no options listed) by generation, then read the label off the text.

Each method (``none``, ``text``, ``bm25``, ``soft``) answers greedily on the same frozen LLM. The answer's
label is the candidate label (for UserQA's open questions: every category) that the text names first —
whole words, any case; where two labels start at the same place (``Sci-Fi`` in ``Sci-Fi Horror``) the
longer one. A text that names no candidate counts as wrong. The **majority rule** answers every question
of a task with that task's most frequent answer in the training split: the constant a free-text answer
has to beat.
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict

from user_embed.data.collate import Example
from user_embed.errors import UserError
from user_embed.eval.userqa import accuracy_table


def parse_label(text: str, labels: list[str]) -> str | None:
    """The label ``text`` names first (whole words, case-insensitive; the longer label on a tie), or None."""
    best: tuple[int, int, str] | None = None
    lowered = text.lower()
    for label in labels:
        if not label:
            continue
        match = re.search(rf"(?<!\w){re.escape(label.lower())}(?!\w)", lowered)
        if match and (best is None or (match.start(), -len(label)) < (best[0], best[1])):
            best = (match.start(), -len(label), label)
    return best[2] if best else None


def majority_answers(train: list[Example]) -> dict[str, str]:
    """{task: its most frequent training answer} (ties: the alphabetically first)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for ex in train:
        counts[ex.task][ex.answer] += 1
    return {task: min(c, key=lambda a: (-c[a], a)) for task, c in counts.items()}


def evaluate_free_text(lm, users, examples: list[Example], methods: list[str], train: list[Example],
                       max_new_tokens: int = 12, batch_size: int = 16, history_events: int = 50,
                       method_users: dict[str, set[str]] | None = None) -> dict:
    """Generate an answer per open question and method, parse its label, and score it.

    Returns {"accuracy": {method | "majority": table}, "parsed": {method: share of answers naming a
    label}, "answered": {method: questions}, "seconds", "questions", "predictions": one row per question
    (the text and the parsed label per method)}. ``method_users`` limits a method to some users' questions.
    """
    from user_embed.generate.common import SamplingConfig

    if not examples:
        raise UserError("no open questions to evaluate (prepare the data with UserQAConfig.open_questions)")
    if any(not ex.candidates for ex in examples):
        raise UserError("free-text evaluation parses answers against candidate labels; some questions have none")
    sampling = SamplingConfig(max_new_tokens=max_new_tokens)
    majority = majority_answers(train)
    out: dict = {"accuracy": {}, "parsed": {}, "answered": {}, "seconds": {}, "questions": len(examples)}
    rows = [{"user_id": ex.user_id, "task": ex.task, "family": ex.family, "question": ex.question,
             "answer": ex.answer, "majority": majority.get(ex.task, "")} for ex in examples]
    for method in methods:
        start = time.perf_counter()
        allowed = (method_users or {}).get(method)
        chosen = [i for i, ex in enumerate(examples) if allowed is None or ex.user_id in allowed]
        asked = [examples[i] for i in chosen]
        texts = lm.generate(users, [ex.user_id for ex in asked], [ex.question for ex in asked], method=method,
                            sampling=sampling, batch_size=batch_size, history_events=history_events,
                            cutoffs=[ex.cutoff for ex in asked])
        labels = [parse_label(text, ex.candidates) for text, ex in zip(texts, asked)]
        for i, text, label in zip(chosen, texts, labels):
            rows[i][f"{method}_text"], rows[i][method] = text, label
        out["accuracy"][method] = accuracy_table(asked, [label or "" for label in labels])
        out["parsed"][method] = round(sum(label is not None for label in labels) / len(labels), 4)
        out["answered"][method] = len(asked)
        out["seconds"][method] = round(time.perf_counter() - start, 1)
    out["accuracy"]["majority"] = accuracy_table(examples, [row["majority"] for row in rows])
    out["predictions"] = rows
    return out
