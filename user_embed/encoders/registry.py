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


def _load_builtin() -> None:
    # Importing the modules runs their @register_encoder decorators.
    import importlib
    import pkgutil

    import user_embed.encoders as package

    for module in pkgutil.iter_modules(package.__path__):
        if module.name not in ("base", "registry"):
            importlib.import_module(f"user_embed.encoders.{module.name}")
