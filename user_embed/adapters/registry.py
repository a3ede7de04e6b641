"""Adapters registered by name: YAML says ``adapter: {kind: resampler}``; ``list_adapters()`` shows what exists.

The registry mirrors :mod:`user_embed.encoders.registry`: one adapter kind per file of this package,
each class decorated with ``@register_adapter("<kind>")``. Looking a kind up is where an unknown
``adapter.kind`` fails (``user_embed.config`` is the bottom layer and knows no adapter classes).
"""

from __future__ import annotations

from typing import Callable

from user_embed.errors import ConfigError

_BUILDERS: dict[str, Callable] = {}


def register_adapter(kind: str) -> Callable:
    """Class decorator: ``@register_adapter("resampler")`` makes the kind buildable by name.

    The class must offer ``from_config(config: AdapterConfig, source_dims, llm_dim, llm_embed_rms)``
    (:class:`~user_embed.adapters.base.BaseAdapter` subclasses do).
    """

    def wrap(builder: Callable) -> Callable:
        if kind in _BUILDERS and _BUILDERS[kind] is not builder:
            raise ValueError(f"adapter kind '{kind}' is registered twice")
        _BUILDERS[kind] = builder
        return builder

    return wrap


def list_adapters() -> list[str]:
    """Names of every registered adapter kind, sorted."""
    _load_builtin()
    return sorted(_BUILDERS)


def get_adapter_builder(kind: str) -> Callable:
    """The class registered as ``kind``; a :class:`ConfigError` naming the known kinds if there is none."""
    _load_builtin()
    if kind not in _BUILDERS:
        raise ConfigError(f"unknown adapter kind '{kind}'; known: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[kind]


def _load_builtin() -> None:
    # Importing the modules runs their @register_adapter decorators.
    # The package folder is read from this file's location, not by importing the package (no import cycle).
    import importlib
    import pkgutil
    from pathlib import Path

    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name not in ("base", "registry"):
            importlib.import_module(f"user_embed.adapters.{module.name}")
