"""Encoders registered by name: YAML says ``kind: sequence``; ``list_encoders()`` shows what exists."""

from __future__ import annotations

from typing import Callable

from user_embed.errors import ConfigError

_BUILDERS: dict[str, Callable] = {}


def register_encoder(kind: str) -> Callable:
    """Class decorator: ``@register_encoder("sequence")`` makes the kind buildable by name.

    The class must offer ``from_config(config: SourceConfig, spec: DataSpec)``.
    """

    def wrap(builder: Callable) -> Callable:
        if kind in _BUILDERS and _BUILDERS[kind] is not builder:
            raise ValueError(f"encoder kind '{kind}' is registered twice")
        _BUILDERS[kind] = builder
        return builder

    return wrap


def list_encoders() -> list[str]:
    """Names of every registered encoder kind."""
    _load_builtin()
    return sorted(_BUILDERS)


def get_encoder_builder(kind: str) -> Callable:
    _load_builtin()
    if kind not in _BUILDERS:
        raise ConfigError(f"unknown encoder kind '{kind}'; known: {', '.join(sorted(_BUILDERS))}")
    return _BUILDERS[kind]


def encoder_reads(kind: str) -> frozenset[str]:
    """What the encoder registered as ``kind`` reads: a subset of ``{"events", "item_texts", "profile"}``
    (``user_embed.encoders.base.READS``); unknown kinds are a ConfigError like :func:`get_encoder_builder`."""
    return get_encoder_builder(kind).reads


def _load_builtin() -> None:
    # Importing the modules runs their @register_encoder decorators.
    # The package folder is read from this file's location, not by importing the package (no import cycle).
    import importlib
    import pkgutil
    from pathlib import Path

    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if module.name not in ("base", "registry"):
            importlib.import_module(f"user_embed.encoders.{module.name}")
