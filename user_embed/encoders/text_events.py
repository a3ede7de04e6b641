"""`text_events` encoder: one token per history event, the item's frozen text vector as it is.

No trainable pooling and no position: the history is a bag of frozen text-encoder vectors, as in
PPlug (Liu et al., 2024), whose input-aware attention (``adapter.kind: pplug``) decides which events
matter for the question. The vectors are computed once per item (``user_embed.text_vectors``) and
saved with the embedder, like the `text` encoder's.
"""

from __future__ import annotations

import torch

from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.encoders.base import EncoderOutput, SourceEncoder, SourceInputs
from user_embed.encoders.registry import register_encoder
from user_embed.encoders.text import item_text_vectors


@register_encoder("text_events")
class TextEventsEncoder(SourceEncoder):
    """(B, L) item ids → (B, L, d_text) frozen item-text vectors, masked like the history."""

    kind = "text_events"
    reads = frozenset({"events", "item_texts"})

    def __init__(self, item_vectors: torch.Tensor):
        super().__init__()
        self.dim = item_vectors.shape[1]
        self.register_buffer("item_vectors", item_vectors.float().clone())  # (num_items, d_text), frozen

    @classmethod
    def from_config(cls, config: SourceConfig, spec: DataSpec) -> "TextEventsEncoder":
        return cls(item_text_vectors(config, spec))

    def forward(self, inputs: SourceInputs) -> EncoderOutput:
        tokens = self.item_vectors[inputs.items] * inputs.mask.unsqueeze(-1)  # (B, L, d_text)
        return EncoderOutput(tokens=tokens, mask=inputs.mask)
