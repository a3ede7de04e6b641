"""Named category tokens: a user's most frequent item categories as soft tokens the LLM reads by name.

The adapter's K tokens must learn, from scratch, how to say "Drama" in the LLM's embedding space.
Named tokens skip that: token_c = the frozen LLM's own embedding of category c's name (mean over
its sub-word tokens) + a learned shift computed from c's statistics in the user's history (shares
over recency windows, older/newer half, mean value: ``category_features``). The LLM can then match
a genre named in the question or among the options to the genre's token with its pretrained
attention, and only the shift (how much, how recently, how liked) has to be learned.

A user gets the ``top`` categories with the most events in the read history, most frequent first
(ties: vocabulary order), so the prompt grows by a fixed ``top`` tokens whatever the catalogue size.
The name embeddings are a buffer: saved with the embedder, never trained.
"""

from __future__ import annotations

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


class NamedCategoryTokens(nn.Module):
    """(B, L) histories → (B, top, d_llm) tokens: name embedding + learned statistics shift."""

    def __init__(self, num_categories: int, llm_dim: int, llm_embed_rms: float, top: int, max_len: int,
                 hidden: int = 256):
        super().__init__()
        self.num_categories, self.max_len = num_categories, max_len
        self.top = min(top, num_categories - 1)
        self.windows = recency_windows(max_len)
        self.count_column = 2 * (len(self.windows) - 1)  # share over the whole read history
        num_features = 2 * len(self.windows) + 4
        self.register_buffer("names", torch.zeros(num_categories - 1, llm_dim))  # (C, d_llm), set by set_names
        self.shift = nn.Sequential(nn.Linear(num_features, hidden), nn.GELU(), nn.Linear(hidden, llm_dim),
                                   nn.LayerNorm(llm_dim, elementwise_affine=False))
        self.shift_scale = nn.Parameter(torch.tensor(0.5 * float(llm_embed_rms)))  # starts below the name's scale

    def set_names(self, vectors: torch.Tensor) -> None:
        """Store the LLM's embeddings of the category names, (C, d_llm) in vocabulary order."""
        if vectors.shape != self.names.shape:
            raise ValueError(f"name embeddings have shape {tuple(vectors.shape)}, expected {tuple(self.names.shape)}")
        self.names.copy_(vectors)

    def forward(self, inputs: SourceInputs) -> torch.Tensor:
        stats = category_features(inputs.tail(self.max_len), self.num_categories, self.windows)  # (B, C, F)
        share = stats[..., self.count_column]  # (B, C)
        order = torch.sort(share, dim=-1, descending=True, stable=True).indices[:, : self.top]  # (B, top)
        picked = stats.gather(1, order.unsqueeze(-1).expand(-1, -1, stats.shape[-1]))  # (B, top, F)
        return self.names[order] + self.shift(picked) * self.shift_scale  # (B, top, d_llm)
