"""Category names in the LLM's own words: named category tokens and the category pointer.

Both start from the frozen LLM's embedding of each category's name (mean over its sub-word tokens),
kept as a buffer (saved with the embedder, never trained), and from that category's statistics in the
user's history (``category_features``: shares over recency windows, older/newer half, mean value).

**Named category tokens** (``adapter.named_categories: N``): a user's most frequent item categories as
extra soft tokens the LLM reads by name.

The adapter's K tokens must learn, from scratch, how to say "Drama" in the LLM's embedding space.
Named tokens skip that: token_c = c's name embedding + a learned shift computed from c's statistics.
The LLM can then match a genre named in the question or among the options to the genre's token with
its pretrained attention, and only the shift (how much, how recently, how liked) has to be learned.

A user gets the ``top`` categories with the most events in the read history, most frequent first
(ties: vocabulary order), so the prompt grows by a fixed ``top`` tokens whatever the catalogue size.

**Category pointer** (``adapter.category_pointer: true``, resampler only): each of the adapter's K tokens
also points at categories — attention from the token's (question-aware) query over one key per category
(its statistics + its name) — and adds the attention-weighted mix of the name embeddings. "Say Drama"
becomes "attend to Drama", so answers that are category names need no new tokens and no learned
vocabulary. Categories the question names (whole words, any case: "… the genre Sci-Fi?", "Options:
Drama, Romance") are found by ``CategoryMentions``: their keys join the resampler's source tokens, so
the statistics of exactly the named categories reach the soft prompt, and the pointer points only among
them when there are any.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from user_embed.encoders.base import SourceInputs
from user_embed.encoders.category_stats import category_features, recency_windows


@torch.no_grad()
def name_embeddings(tokenizer, embedding: nn.Embedding, names: list[str]) -> torch.Tensor:
    """(C, d_llm): each name's mean input-token embedding under the LLM (names with no tokens give zeros)."""
    rows = []
    for name in names:
        ids = tokenizer(name, add_special_tokens=False)["input_ids"]
        if ids:
            rows.append(embedding.weight[torch.tensor(ids, device=embedding.weight.device)].float().mean(0))
        else:
            rows.append(torch.zeros(embedding.weight.shape[1], device=embedding.weight.device))
    return torch.stack(rows).cpu()


MAX_MENTIONS = 16  # categories read from one question at most


class CategoryMentions:
    """Which category names a question mentions: (B, M) indices + 1 in order of first mention, 0 = padding."""

    def __init__(self, names: list[str], limit: int = MAX_MENTIONS):
        self.limit = limit
        self.index = {name.lower(): i for i, name in enumerate(names) if name.strip()}
        alternatives = sorted((re.escape(name) for name in self.index), key=len, reverse=True)  # longest first
        words = r"(?<!\w)(" + "|".join(alternatives) + r")(?!\w)"  # whole words only: "War" is not in "Wars"
        self.pattern = re.compile(words, re.IGNORECASE) if alternatives else None

    def __call__(self, questions: list[str]) -> torch.Tensor:
        rows = []
        for question in questions:
            found: list[int] = []
            for match in self.pattern.finditer(question) if self.pattern else ():
                index = self.index[match.group(1).lower()] + 1
                if index not in found:
                    found.append(index)
            rows.append(found[: self.limit])
        width = max((len(r) for r in rows), default=0)
        return torch.tensor([r + [0] * (width - len(r)) for r in rows], dtype=torch.long).reshape(len(rows), width)


class CategoryNames(nn.Module):
    """The LLM's name embeddings of the categories (a buffer) and each user's per-category statistics."""

    def __init__(self, num_categories: int, llm_dim: int, max_len: int):
        super().__init__()
        self.num_categories, self.max_len = num_categories, max_len
        self.windows = recency_windows(max_len)
        self.count_column = 2 * (len(self.windows) - 1)  # share over the whole read history
        self.num_features = 2 * len(self.windows) + 4
        self.register_buffer("names", torch.zeros(num_categories - 1, llm_dim))  # (C, d_llm), set by set_names

    def set_names(self, vectors: torch.Tensor) -> None:
        """Store the LLM's embeddings of the category names, (C, d_llm) in vocabulary order."""
        if vectors.shape != self.names.shape:
            raise ValueError(f"name embeddings have shape {tuple(vectors.shape)}, expected {tuple(self.names.shape)}")
        self.names.copy_(vectors)

    def statistics(self, inputs: SourceInputs) -> torch.Tensor:
        """(B, C, F) per-category statistics over the last ``max_len`` events."""
        return category_features(inputs.tail(self.max_len), self.num_categories, self.windows)


class NamedCategoryTokens(CategoryNames):
    """(B, L) histories → (B, top, d_llm) tokens: name embedding + learned statistics shift."""

    def __init__(self, num_categories: int, llm_dim: int, llm_embed_rms: float, top: int, max_len: int,
                 hidden: int = 256):
        super().__init__(num_categories, llm_dim, max_len)
        self.top = min(top, num_categories - 1)
        self.shift = nn.Sequential(nn.Linear(self.num_features, hidden), nn.GELU(), nn.Linear(hidden, llm_dim),
                                   nn.LayerNorm(llm_dim, elementwise_affine=False))
        self.shift_scale = nn.Parameter(torch.tensor(0.5 * float(llm_embed_rms)))  # starts below the name's scale

    def forward(self, inputs: SourceInputs) -> torch.Tensor:
        stats = self.statistics(inputs)  # (B, C, F)
        share = stats[..., self.count_column]  # (B, C)
        order = torch.sort(share, dim=-1, descending=True, stable=True).indices[:, : self.top]  # (B, top)
        picked = stats.gather(1, order.unsqueeze(-1).expand(-1, -1, stats.shape[-1]))  # (B, top, F)
        return self.names[order] + self.shift(picked) * self.shift_scale  # (B, top, d_llm)


class CategoryPointerKeys(CategoryNames):
    """One key per category in the adapter's width, (B, C, D): statistics MLP + projected name embedding."""

    def __init__(self, num_categories: int, llm_dim: int, max_len: int, dim: int):
        super().__init__(num_categories, llm_dim, max_len)
        self.stats = nn.Sequential(nn.Linear(self.num_features, dim), nn.GELU(), nn.Linear(dim, dim))
        self.name = nn.Sequential(nn.LayerNorm(llm_dim), nn.Linear(llm_dim, dim))

    def forward(self, inputs: SourceInputs, mentions: torch.Tensor | None = None) -> "Pointer":
        """Keys (B, C, D), the name embeddings they point at (C, d_llm) and the mentioned categories (B, M)."""
        keys = self.stats(self.statistics(inputs)) + self.name(self.names)  # (B, C, D)
        if mentions is None:
            mentions = torch.zeros(keys.shape[0], 0, dtype=torch.long, device=keys.device)
        return Pointer(keys, self.names, mentions.to(keys.device))


@dataclass
class Pointer:
    """What the adapter's category pointer reads."""

    keys: torch.Tensor  # (B, C, D) one key per category
    names: torch.Tensor  # (C, d_llm) the LLM's name embeddings
    mentions: torch.Tensor  # (B, M) categories named by the question, index + 1; 0 = padding

    def mentioned_keys(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, M, D) keys of the mentioned categories and their mask (B, M)."""
        mask = self.mentions > 0
        index = (self.mentions - 1).clamp(min=0).unsqueeze(-1).expand(-1, -1, self.keys.shape[-1])
        return self.keys.gather(1, index), mask

    def allowed(self) -> torch.Tensor:
        """(B, C) bool: the mentioned categories where the question names any, else every category."""
        batch, num = self.keys.shape[:2]
        named = torch.zeros(batch, num + 1, dtype=torch.bool, device=self.keys.device)
        named.scatter_(1, self.mentions, True)
        named = named[:, 1:]  # drop the padding column
        return torch.where(named.any(-1, keepdim=True), named, torch.ones_like(named))
