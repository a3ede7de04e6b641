"""A bounded LRU of each user's question-independent encoding, and the soft prompts computed from it.

What a user costs before the question is known — the collated history and every source encoder's output
(``UserEmbedder.encode``) — depends on the history only, so it is kept per (user, history version) and
reused by every request; only the adapter (which may read the question) and the LLM run per request. An
append bumps the user's version, so a stale entry is never read; :meth:`EncodingCache.invalidate` also
drops it at once. All methods run on the model's worker thread (the cache is not locked).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, fields

import torch

from user_embed.data.collate import Example, UserBatch
from user_embed.encoders.base import EncoderOutput, SourceInputs
from user_embed.llm.soft_prompt import PromptBatch


@dataclass
class UserEncoding:
    """One user's model inputs (1 row) and each source's encoder output (1 row)."""

    inputs: SourceInputs
    encoded: dict[str, EncoderOutput]


def cat_inputs(rows: list[SourceInputs]) -> SourceInputs:
    """Stack 1-row SourceInputs into one batch (fields that are None stay None)."""
    out = {}
    for f in fields(SourceInputs):
        values = [getattr(r, f.name) for r in rows]
        out[f.name] = None if values[0] is None else torch.cat(values)
    return SourceInputs(**out)


def cat_encoded(rows: list[dict[str, EncoderOutput]]) -> dict[str, EncoderOutput]:
    """{name: (1, n_s, d_s)} per user → {name: (B, n_s, d_s)}."""
    return {name: EncoderOutput(torch.cat([r[name].tokens for r in rows]), torch.cat([r[name].mask for r in rows]))
            for name in rows[0]}


def row(inputs: SourceInputs, i: int) -> SourceInputs:
    return SourceInputs(**{f.name: (None if getattr(inputs, f.name) is None
                                    else getattr(inputs, f.name)[i:i + 1].clone()) for f in fields(SourceInputs)})


class EncodingCache:
    """Per-user encodings for one PersonalizedLM over LiveUsers; hits and misses are counted."""

    def __init__(self, lm, users, size: int = 1024):
        self.lm, self.users, self.size = lm, users, size
        self.entries: OrderedDict[str, tuple[int, UserEncoding]] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self.entries)

    def invalidate(self, user_id: str) -> None:
        self.entries.pop(user_id, None)

    @torch.no_grad()
    def get(self, user_ids: list[str]) -> list[UserEncoding]:
        """Each user's encoding, computing the missing ones in one batch."""
        found: dict[str, UserEncoding] = {}
        for user in dict.fromkeys(user_ids):
            entry = self.entries.get(user)
            if entry is not None and entry[0] == self.users.version(user):
                self.entries.move_to_end(user)
                found[user] = entry[1]
        self.hits += sum(1 for u in user_ids if u in found)
        missing = [u for u in dict.fromkeys(user_ids) if u not in found]
        self.misses += sum(1 for u in user_ids if u not in found)
        if missing:
            embedder = self.lm.embedder
            batch = self.users.collator(embedder.max_len)([Example(u, "", "", []) for u in missing])
            inputs = batch.inputs.to(self.lm.device)
            encoded = embedder.encode(inputs)  # {name: (m, n_s, d_s)}
            for i, user in enumerate(missing):
                one = {n: EncoderOutput(e.tokens[i:i + 1].clone(), e.mask[i:i + 1].clone()) for n, e in encoded.items()}
                found[user] = UserEncoding(row(inputs, i), one)
                self.entries[user] = (self.users.version(user), found[user])
                self.entries.move_to_end(user)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return [found[u] for u in user_ids]

    @torch.no_grad()
    def soft_prompts(self, examples: list[Example], prompt: PromptBatch) -> torch.Tensor:
        """(B, K, d_llm) soft prompts of the examples' users for their questions (``prompt``: their prompts)."""
        rows = self.get([ex.user_id for ex in examples])
        batch = UserBatch(cat_inputs([r.inputs for r in rows]), examples, torch.zeros(len(rows), dtype=torch.long))
        return self.lm.embedder_output(batch, prompt, encoded=cat_encoded([r.encoded for r in rows])).soft_prompt

    @torch.no_grad()
    def user_vector(self, user_id: str) -> torch.Tensor:
        """(user_dim,) the pooled, question-independent user vector."""
        encoding = self.get([user_id])[0]
        return self.lm.embedder.adapter.user_vector(encoding.encoded)[0]  # (user_dim,)
