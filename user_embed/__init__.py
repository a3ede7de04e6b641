"""user_embed: personalized LLMs through user embeddings.

Importing this package has no side effects and loads no model; the public names below are
resolved lazily on first use.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "UserEmbedder": "user_embed.embedder",
    "UserEmbedModule": "user_embed.module",
    "UserDataModule": "user_embed.data.datamodule",
    "SourceConfig": "user_embed.config",
    "AdapterConfig": "user_embed.config",
    "LLMConfig": "user_embed.config",
    "LossConfig": "user_embed.config",
    "OptimConfig": "user_embed.config",
    "list_encoders": "user_embed.encoders",
    "load": "user_embed.generate",
    "Request": "user_embed.generate",
    "SamplingConfig": "user_embed.generate",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'user_embed' has no attribute '{name}'")
