"""Next-item prediction head: item scores from encoder states, with full or sampled softmax.

``logits = h · E[item] + b[item]`` with an output item table ``E`` of its own (not tied to the
encoder's input embedding). Rows 0 (padding) and 1 (unknown item) are never predicted.

* **full softmax** — cross-entropy over every item; exact, O(items) per target: small catalogs.
* **sampled softmax** — cross-entropy over the batch's distinct targets (in-batch negatives) plus
  ``num_negatives`` items drawn uniformly, shared by the batch; a negative equal to the row's own
  target (an accidental hit) is masked out. No log-Q correction. O(batch + negatives) per target:
  large catalogs. Evaluation always ranks the full catalog.

``softmax: auto`` picks full softmax up to ``full_softmax_max_items`` items, sampled above.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from user_embed.errors import ConfigError

SOFTMAX_MODES = ("auto", "full", "sampled")
RESERVED_ROWS = 2  # 0 = padding, 1 = unknown item


def resolve_softmax(mode: str, num_items: int, full_softmax_max_items: int) -> str:
    """``full`` or ``sampled`` for a catalog of ``num_items`` items (``auto`` switches at the threshold)."""
    if mode not in SOFTMAX_MODES:
        raise ConfigError(f"model.softmax '{mode}' is unknown; known: {SOFTMAX_MODES}")
    if mode == "auto":
        return "full" if num_items <= full_softmax_max_items else "sampled"
    return mode


class NextItemHead(nn.Module):
    """Scores every item for each state: (N, d) → (N, num_items)."""

    def __init__(self, num_items: int, dim: int):
        super().__init__()
        self.item = nn.Embedding(num_items, dim)
        self.bias = nn.Parameter(torch.zeros(num_items))
        nn.init.normal_(self.item.weight, std=0.02)

    @property
    def num_items(self) -> int:
        return self.item.num_embeddings

    def score_all(self, states: torch.Tensor) -> torch.Tensor:
        """states (N, d) → logits (N, V); padding and unknown rows are -inf."""
        logits = self.score_items(states)  # (N, V - 2)
        return F.pad(logits, (RESERVED_ROWS, 0), value=float("-inf"))  # (N, V)

    def score_items(self, states: torch.Tensor) -> torch.Tensor:
        """states (N, d) → logits (N, V - 2) of the real items only (column j = item index j + 2)."""
        return states @ self.item.weight[RESERVED_ROWS:].T + self.bias[RESERVED_ROWS:]

    def full_softmax_loss(self, states: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy over all items; states (N, d), targets (N,) item indices ≥ 2."""
        return F.cross_entropy(self.score_items(states), targets - RESERVED_ROWS)

    def sampled_softmax_loss(self, states: torch.Tensor, targets: torch.Tensor, num_negatives: int) -> torch.Tensor:
        """Mean cross-entropy over in-batch targets + ``num_negatives`` uniform negatives (shared)."""
        in_batch = targets.unique()  # (T,) sorted
        uniform = torch.randint(RESERVED_ROWS, self.num_items, (num_negatives,), device=targets.device)
        candidates = torch.cat([in_batch, uniform])  # (C,)
        logits = states @ self.item(candidates).T + self.bias[candidates]  # (N, C)
        labels = torch.searchsorted(in_batch, targets)  # (N,) position of each target among the candidates
        accidental = candidates[None, :] == targets[:, None]  # (N, C)
        accidental[torch.arange(len(targets), device=targets.device), labels] = False
        return F.cross_entropy(logits.masked_fill(accidental, float("-inf")), labels)
