"""user_embed: personalized LLMs through user embeddings.

>>> import user_embed as ue
>>> lm = ue.PersonalizedLM.from_pretrained("runs/quickstart/embedder")              # doctest: +SKIP
>>> users = ue.UserStore.from_folder("data/ml-100k")                                # doctest: +SKIP
>>> lm.embed(users, ["196", "405"]).shape                                           # doctest: +SKIP
>>> lm.generate(users, ["196"], ["Which genre should I watch tonight?"])            # doctest: +SKIP

Importing this package has no side effects and loads no model and no Lightning; the public names
below are resolved lazily on first use (the training recipe's names import Lightning when used).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    # inference
    "PersonalizedLM": "user_embed.model",
    "UserStore": "user_embed.store",
    "UserEmbedder": "user_embed.embedder",
    "SamplingConfig": "user_embed.generate.common",
    # configuration and registries
    "SourceConfig": "user_embed.config",
    "AdapterConfig": "user_embed.config",
    "LLMConfig": "user_embed.config",
    "LossConfig": "user_embed.config",
    "OptimConfig": "user_embed.config",
    "list_encoders": "user_embed.encoders",
    "list_adapters": "user_embed.adapters",
    # training recipe (imports Lightning)
    "UserEmbedModule": "user_embed.training.module",
    "UserDataModule": "user_embed.training.datamodule",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'user_embed' has no attribute '{name}'")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
