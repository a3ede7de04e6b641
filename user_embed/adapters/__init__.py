"""Adapters: fuse all sources' tokens into K soft-prompt vectors (B, K, d_llm) and a pooled user vector.

One kind per file, registered by name like the encoders and built from an
:class:`~user_embed.config.AdapterConfig` by :func:`build_adapter`:

* ``mlp`` — masked mean of all source tokens → MLP → K tokens (K=1 is the UQABench/E2P baseline).
* ``resampler`` — K learned queries cross-attend over all source tokens (Perceiver/Q-Former style).
* ``pplug`` — the PPlug baseline (Liu et al., 2024): input-aware attention → one user token, plus one
  learned instruction token.

What every kind shares (source fusion, question conditioning, output scale, user head) is in
:mod:`user_embed.adapters.base`. A new kind subclasses :class:`BaseAdapter` in its own file and is
decorated with ``@register_adapter("<kind>")``.
"""

from __future__ import annotations

from user_embed.adapters.base import AdapterOutput, BaseAdapter, masked_mean
from user_embed.adapters.registry import get_adapter_builder, list_adapters, register_adapter
from user_embed.config import AdapterConfig

__all__ = ["AdapterOutput", "BaseAdapter", "build_adapter", "get_adapter_builder", "list_adapters", "masked_mean",
           "register_adapter"]


def build_adapter(config: AdapterConfig, source_dims: dict[str, int], llm_dim: int,
                  llm_embed_rms: float) -> BaseAdapter:
    """Build the adapter named by ``config.kind`` (an unknown kind is a ConfigError naming the known ones)
    for sources of widths ``source_dims``, an LLM of width ``llm_dim`` and embedding RMS ``llm_embed_rms``."""
    return get_adapter_builder(config.kind).from_config(config, source_dims, llm_dim, llm_embed_rms)
