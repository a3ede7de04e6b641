"""User representations the embedding benchmark compares, each an (N, d) float matrix over the same users.

Every representation reads only each user's events before their cutoff:
* :func:`embedder_vectors` — a trained embedder's vector (``head``: its user head, the exported vector;
  ``fused``: the adapter's pooled features, for an embedder whose head was never trained);
* :func:`question_vectors` — the question-conditioned soft prompt averaged over its tokens (needs the LLM);
* :func:`category_histogram` — the share of each item category in the history, plus log(1 + events);
* :func:`mean_text_vector` — the mean frozen text-encoder vector of the history's items;
* :func:`random_projection` — a seeded Gaussian random projection of the bag of items (scikit-learn);
* :func:`sequence_encoder_state` — a pre-trained sequence encoder's (``user-embed pretrain``) state at the
  last event, e.g. SASRec's user state.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl
import torch

if TYPE_CHECKING:
    from user_embed.embedder import UserEmbedder
    from user_embed.model.personalized_lm import PersonalizedLM
    from user_embed.store import UserStore


def history_before(events: pl.DataFrame, ids: list[str], cutoffs: dict[str, int]) -> pl.DataFrame:
    """The events of ``ids`` before each one's cutoff."""
    cut = pl.DataFrame({"user_id": ids, "cutoff": [cutoffs[u] for u in ids]})
    return events.join(cut, on="user_id").filter(pl.col("timestamp") < pl.col("cutoff"))


def embedder_vectors(embedder: UserEmbedder, store: UserStore, ids: list[str], cutoffs: dict[str, int],
                     vector: str = "head") -> np.ndarray:
    """(N, d) the embedder's pooled vectors at each user's cutoff."""
    return embedder.embed(store, ids, [cutoffs[u] for u in ids], vector=vector).numpy()


def question_vectors(lm: PersonalizedLM, store: UserStore, ids: list[str], cutoffs: dict[str, int],
                     question: str) -> np.ndarray:
    """(N, d_llm) the soft prompt for ``question``, averaged over its tokens, at each user's cutoff."""
    return lm.embed(store, ids, [question] * len(ids), [cutoffs[u] for u in ids], batch_size=64).numpy()


def category_histogram(events: pl.DataFrame, items: pl.DataFrame, ids: list[str],
                       cutoffs: dict[str, int]) -> np.ndarray:
    """(N, C + 1) each category's share of the user's history items, and log(1 + number of events)."""
    categories = list(dict.fromkeys(c for cs in items["categories"].to_list() for c in (cs or [])))
    column = {c: i for i, c in enumerate(categories)}
    history = history_before(events, ids, cutoffs).join(items.select("item_id", "categories"), on="item_id",
                                                        how="left")
    row = {u: i for i, u in enumerate(ids)}
    out = np.zeros((len(ids), len(categories) + 1), dtype=np.float32)
    for user, cats in zip(history["user_id"].to_list(), history["categories"].to_list()):
        for c in cats or []:
            out[row[user], column[c]] += 1
        out[row[user], -1] += 1
    counts = out[:, -1:].copy()
    out[:, :-1] /= np.maximum(counts, 1)
    out[:, -1:] = np.log1p(counts)
    return out


def item_bag(events: pl.DataFrame, item_ids: list[str], ids: list[str], cutoffs: dict[str, int]):
    """(N, n_items) sparse 0/1 matrix: which items each user had before the cutoff (scipy CSR)."""
    from scipy.sparse import csr_matrix

    column = {item: i for i, item in enumerate(item_ids)}
    row = {u: i for i, u in enumerate(ids)}
    history = history_before(events, ids, cutoffs).unique(["user_id", "item_id"])
    pairs = [(row[u], column[i]) for u, i in zip(history["user_id"].to_list(), history["item_id"].to_list())
             if i in column]
    rows, cols = (list(x) for x in zip(*pairs)) if pairs else ([], [])
    return csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(len(ids), len(item_ids)))


def mean_text_vector(events: pl.DataFrame, item_ids: list[str], item_vectors: np.ndarray, ids: list[str],
                     cutoffs: dict[str, int]) -> np.ndarray:
    """(N, d_text) the mean text vector of each user's history items (zeros for an empty history)."""
    bag = item_bag(events, item_ids, ids, cutoffs)  # (N, n_items)
    sums = bag @ item_vectors  # (N, d_text)
    counts = np.asarray(bag.sum(1)).reshape(-1, 1)
    return (sums / np.maximum(counts, 1)).astype(np.float32)


def random_projection(events: pl.DataFrame, item_ids: list[str], ids: list[str], cutoffs: dict[str, int],
                      dim: int = 256, seed: int = 0) -> np.ndarray:
    """(N, dim) a seeded Gaussian random projection of each user's bag of items."""
    from sklearn.random_projection import GaussianRandomProjection

    bag = item_bag(events, item_ids, ids, cutoffs)
    projection = GaussianRandomProjection(n_components=dim, random_state=seed)
    return np.asarray(projection.fit_transform(bag), dtype=np.float32)


@torch.no_grad()
def sequence_encoder_state(checkpoint: str | Path, store: UserStore, ids: list[str],
                           cutoffs: dict[str, int], batch_size: int = 256) -> np.ndarray:
    """(N, d) a pre-trained encoder's output at each user's last event before the cutoff."""
    from user_embed.data.collate import Example
    from user_embed.pretrain.checkpoint import load_pretrained_encoder

    encoder, source, spec = load_pretrained_encoder(checkpoint)
    encoder.eval()
    collator = store.collator(spec, source.max_len)
    chunks = []
    for start in range(0, len(ids), batch_size):
        chunk = [Example(u, "", "", [], cutoff=cutoffs[u]) for u in ids[start:start + batch_size]]
        out = encoder(collator(chunk).inputs.tail(source.max_len))  # tokens (b, n, d), mask (b, n)
        chunks.append(last_real_token(out.tokens, out.mask).float().numpy())
    return np.concatenate(chunks) if chunks else np.zeros((0, encoder.dim), dtype=np.float32)


def last_real_token(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """tokens (B, n, d), mask (B, n) → (B, d): each row's last real token (zeros for a row without one)."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, n)
    last = torch.where(mask, positions, -1).max(1).values  # (B,)
    picked = tokens[torch.arange(len(tokens)), last.clamp(min=0)]  # (B, d)
    return torch.where((last >= 0)[:, None], picked, torch.zeros_like(picked))
