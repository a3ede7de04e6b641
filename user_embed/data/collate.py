"""Turn a list of QA examples into a :class:`UserBatch` of padded history tensors and raw texts.

Histories are right-aligned (left-padded) so the most recent event is always the last
column and each encoder can take ``inputs.tail(max_len)``. Prompts stay text here: the
model side tokenises them, so the data side never needs the LLM.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import numpy as np
import torch

from user_embed.data.spec import GAP_BUCKETS
from user_embed.encoders.base import SourceInputs


@dataclass
class Example:
    """One question about one user at one cutoff."""

    user_id: str
    question: str
    answer: str
    options: list[str]
    task: str = ""
    family: str = ""
    cutoff: int | None = None
    uid: int = -1  # integer user index (same user → same uid), for contrastive masking
    candidates: list[str] = field(default_factory=list)
    """The labels an open question's answer is one of (e.g. every category): free-text answers are parsed
    against them and the option-alignment loss points among them; empty for multiple choice."""

    @property
    def choices(self) -> list[str]:
        """The options, or for an open question its candidate labels."""
        return self.options or self.candidates


@dataclass
class UserBatch:
    inputs: SourceInputs
    examples: list[Example]
    user_index: torch.Tensor  # (B,) long
    text_vectors: torch.Tensor | None = None  # (B, d_text) embeddings of texts about the users
    truncated: int = 0  # events dropped by truncation in this batch
    extra: dict = field(default_factory=dict)

    def to(self, device) -> "UserBatch":
        text = self.text_vectors.to(device) if self.text_vectors is not None else None
        return UserBatch(self.inputs.to(device), self.examples, self.user_index.to(device), text, self.truncated,
                         self.extra)

    def __len__(self) -> int:
        return len(self.examples)

    def select(self, rows: list[int]) -> "UserBatch":
        """The batch of these rows only (e.g. its multiple-choice questions)."""
        index = torch.tensor(rows, dtype=torch.long)

        def pick(value):
            return value.index_select(0, index.to(value.device)) if isinstance(value, torch.Tensor) else value

        inputs = SourceInputs(**{f.name: pick(getattr(self.inputs, f.name)) for f in fields(self.inputs)})
        text = pick(self.text_vectors) if self.text_vectors is not None else None
        return UserBatch(inputs, [self.examples[i] for i in rows], pick(self.user_index), text, self.truncated,
                         self.extra)


def gap_buckets(cutoff: int | None, timestamps: np.ndarray) -> np.ndarray:
    """log2 buckets of hours between each event and the cutoff (or the last event when no cutoff)."""
    if len(timestamps) == 0:
        return np.zeros(0, dtype=np.int64)
    reference = cutoff if cutoff is not None else int(timestamps[-1]) + 1
    hours = np.maximum(reference - timestamps, 0) / 3600.0
    return np.clip(np.floor(np.log2(hours + 1.0)), 0, GAP_BUCKETS - 1).astype(np.int64)


class Collator:
    """Callable collate_fn; holds the lookup tables (histories, categories, profiles, text vectors)."""

    def __init__(self, histories, category_table: np.ndarray, max_len: int, profiles=None,
                 user_text_vectors: dict[str, np.ndarray] | None = None, default_cutoff: int | None = None):
        """``default_cutoff``: the cutoff of examples that have none (times are measured to it)."""
        self.histories = histories
        self.default_cutoff = default_cutoff
        self.category_table = category_table
        self.max_len = max_len
        self.profiles = profiles  # ProfileTable or None
        self.user_text_vectors = user_text_vectors

    def __call__(self, examples: list[Example]) -> UserBatch:
        batch, length = len(examples), self.max_len
        items = np.zeros((batch, length), np.int64)
        values = np.zeros((batch, length), np.float32)
        has_value = np.zeros((batch, length), bool)
        gaps = np.zeros((batch, length), np.int64)
        mask = np.zeros((batch, length), bool)
        truncated = 0
        for row, ex in enumerate(examples):
            cutoff = ex.cutoff if ex.cutoff is not None else self.default_cutoff
            window = self.histories.window(ex.user_id, cutoff, length)
            n = len(window.items)
            truncated += window.truncated
            if n:
                items[row, -n:] = window.items
                values[row, -n:] = window.values
                has_value[row, -n:] = window.has_value
                gaps[row, -n:] = gap_buckets(cutoff, window.timestamps)
                mask[row, -n:] = True
        inputs = SourceInputs(
            items=torch.from_numpy(items), categories=torch.from_numpy(self.category_table[items]),
            values=torch.from_numpy(values), has_value=torch.from_numpy(has_value),
            gaps=torch.from_numpy(gaps), mask=torch.from_numpy(mask))
        if self.profiles is not None:
            cat, num, num_mask = self.profiles.lookup([ex.user_id for ex in examples])
            inputs.profile_cat, inputs.profile_num, inputs.profile_num_mask = cat, num, num_mask
        text_vectors = None
        if self.user_text_vectors:
            dim = len(next(iter(self.user_text_vectors.values())))
            text = np.stack([self.user_text_vectors.get(ex.user_id, np.zeros(dim, np.float32)) for ex in examples])
            text_vectors = torch.from_numpy(text)
        user_index = torch.tensor([ex.uid for ex in examples], dtype=torch.long)
        return UserBatch(inputs, examples, user_index, text_vectors, truncated)
