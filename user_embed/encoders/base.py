"""What every source encoder returns and the inputs it may read.

An encoder turns one source of a user's history into token states ``(B, n_s, d_s)`` with a
boolean mask ``(B, n_s)`` (True = real token). Inputs come from the collate function as a
:class:`SourceInputs` bundle; each encoder reads the fields its kind needs.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import nn


@dataclass
class SourceInputs:
    """Per-batch tensors describing users' histories (all optional; kinds read what they need).

    items:      (B, L) long   item indices, 0 = padding, 1 = unknown item
    categories: (B, L, C) long category indices per event's item, 0 = none
    values:     (B, L) float  event value (e.g. rating), standardised; 0 where missing
    has_value:  (B, L) bool   True where the event has a value
    gaps:       (B, L) long   log2-bucketed time from the event to the cutoff
    mask:       (B, L) bool   True = real event
    profile_cat:(B, F) long   categorical profile field indices, 0 = missing
    profile_num:(B, G) float  numeric profile fields, standardised; 0 where missing
    profile_num_mask: (B, G) bool True where a numeric field is present
    """

    items: torch.Tensor | None = None
    categories: torch.Tensor | None = None
    values: torch.Tensor | None = None
    has_value: torch.Tensor | None = None
    gaps: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    profile_cat: torch.Tensor | None = None
    profile_num: torch.Tensor | None = None
    profile_num_mask: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> "SourceInputs":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return SourceInputs(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in moved.items()})

    def tail(self, max_len: int) -> "SourceInputs":
        """The most recent ``max_len`` events (histories are right-aligned); profile fields unchanged."""
        out = SourceInputs(**{f.name: getattr(self, f.name) for f in fields(self)})
        for name in ("items", "categories", "values", "has_value", "gaps", "mask"):
            value = getattr(out, name)
            if value is not None and value.shape[1] > max_len:
                setattr(out, name, value[:, -max_len:])
        return out

    @property
    def batch_size(self) -> int:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                return value.shape[0]
        return 0


@dataclass
class EncoderOutput:
    """tokens: (B, n_s, d_s); mask: (B, n_s) bool, True = real token."""

    tokens: torch.Tensor
    mask: torch.Tensor


#: What an encoder may read (:attr:`SourceEncoder.reads`): ``events`` — the event history (items, categories,
#: values, gaps, mask; cut to ``max_len``); ``item_texts`` — the items' frozen text vectors, which the data module
#: computes for the source's ``text_encoder``; ``profile`` — the user's profile fields (profile_cat, profile_num).
READS = frozenset({"events", "item_texts", "profile"})


class SourceEncoder(nn.Module):
    """Base class: subclasses set ``kind``, ``reads`` and ``dim`` and implement ``forward(inputs) -> EncoderOutput``.

    ``reads`` (a non-empty subset of :data:`READS`) declares what the kind reads, so callers need not know kinds
    by name: only sources that read ``events`` count towards the longest history, only those that read
    ``item_texts`` need the data module's item text vectors.
    """

    kind: str = ""
    reads: frozenset[str] = frozenset()
    dim: int

    def forward(self, inputs: SourceInputs) -> EncoderOutput:  # pragma: no cover - interface
        raise NotImplementedError


def sinusoid_positions(length: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal table (length, dim) for recency positions."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-torch.log(torch.tensor(10000.0)) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: table[:, 1::2].shape[1]])
    return table
