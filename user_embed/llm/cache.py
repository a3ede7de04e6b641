"""KV-cache plumbing that differs across transformers releases: the forward keyword and the output field."""

from __future__ import annotations

import inspect


def cache_kwargs(llm, cache) -> dict:
    """The KV-cache keyword of ``llm.forward``: ``cache`` in recent transformers, ``past_key_values`` before."""
    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm  # a peft wrapper forwards **kwargs
    return {"cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values": cache}


def output_cache(out):
    """The KV cache of a forward output (``cache`` in recent transformers, ``past_key_values`` before)."""
    return out["cache"] if "cache" in out else out.past_key_values
