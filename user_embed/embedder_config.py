"""Field-by-field validation of an embedder's ``config.json`` before anything is built or allocated.

``UserEmbedder.from_pretrained`` calls :func:`validate_embedder_config` on the parsed JSON: every
entry must have the type its dataclass declares (``sources[i]`` → :class:`SourceConfig`, ``adapter`` →
:class:`AdapterConfig`, ``llm`` → :class:`LLMRecord`, ``spec`` → :class:`DataSpec`), sizes are bounded
(:data:`SIZE_LIMITS`: a dimension of 10^15 would otherwise ask for petabytes), floats are finite, and
unknown keys are named. The message names the key path, e.g. ``sources[0].dim must be an integer in
[1, 65536], got 1000000000000000``. The dataclasses' own checks (heads dividing dim …) run afterwards.
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Integral, Real

from user_embed.config import AdapterConfig, SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.llm.record import LLMRecord

#: Upper bounds of size fields (lower bound 1, or 0 for ``named_categories``).
SIZE_LIMITS = {"dim": 1 << 16, "layers": 1024, "heads": 1024, "max_len": 1 << 20, "num_tokens": 4096,
               "user_dim": 1 << 16, "named_categories": 4096, "hidden_size": 1 << 17, "max_categories": 4096,
               "r": 4096}
#: Fields that may be 0.
MAY_BE_ZERO = ("named_categories",)


class ConfigFieldError(ValueError):
    """One field of the config is wrong; the message starts with its key path."""


def _type_name(value: object) -> str:
    return "null" if value is None else {dict: "object", list: "list", str: "text", bool: "boolean"}.get(
        type(value), type(value).__name__)


def _check_scalar(key: str, value: object, annotation: str) -> None:
    """``value`` against a dataclass annotation written as text (``int``, ``float | None``, ``list[str]`` …)."""
    options = [a.strip() for a in annotation.split("|")]
    if value is None:
        if "None" in options:
            return
        raise ConfigFieldError(f"{key} must not be null")
    base = next(o for o in options if o != "None")
    name = key.rsplit(".", 1)[-1]
    if base == "bool":
        ok = isinstance(value, bool)
    elif base == "int":
        ok = isinstance(value, Integral) and not isinstance(value, bool)
        if ok and name in SIZE_LIMITS:
            low = 0 if name in MAY_BE_ZERO else 1
            if not low <= value <= SIZE_LIMITS[name]:
                raise ConfigFieldError(f"{key} must be an integer in [{low}, {SIZE_LIMITS[name]}], got {value!r}")
    elif base == "float":
        ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    elif base == "str":
        ok = isinstance(value, str)
    elif base.startswith("list["):
        inner = base[5:-1]
        ok = isinstance(value, list) and all(_fits(item, inner) for item in value)
    elif base.startswith("dict["):
        ok = isinstance(value, dict) and all(isinstance(k, str) for k in value)
    else:
        ok = True  # a type this validator does not know: the dataclass checks it
    if not ok:
        raise ConfigFieldError(f"{key} must be {_expected(base)}, got {_type_name(value)} {value!r:.80}")


def _expected(annotation: str) -> str:
    """An annotation in words: ``int`` → "an integer", ``list[str]`` → "a list of text" …"""
    words = {"int": "an integer", "float": "a finite number", "str": "text", "bool": "true or false",
             "list[str]": "a list of text", "list[int]": "a list of integers", "list[float]": "a list of numbers"}
    return "an object" if annotation.startswith("dict[") else words.get(annotation, annotation)


def _fits(value: object, annotation: str) -> bool:
    try:
        _check_scalar("-", value, annotation)
        return True
    except ConfigFieldError:
        return False


def _check_object(key: str, value: object, cls: type, required: tuple[str, ...] = ()) -> None:
    if not isinstance(value, dict):
        raise ConfigFieldError(f"{key} must be an object, got {_type_name(value)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - set(fields))
    if unknown and cls is not LLMRecord and cls is not DataSpec:  # records may gain keys; configs may not
        raise ConfigFieldError(f"{key} has unknown key {unknown[0]!r} (known: {', '.join(fields)})")
    for name in required:
        if name not in value:
            raise ConfigFieldError(f"{key} lacks {name!r}")
    for name, item in value.items():
        if name in fields:
            _check_scalar(f"{key}.{name}", item, str(fields[name].type))


def _check_spec(spec: object) -> None:
    _check_object("spec", spec, DataSpec, required=("item_ids", "categories"))
    for name, values in (spec.get("profile_cat_fields") or {}).items():
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ConfigFieldError(f"spec.profile_cat_fields.{name} must be a list of text values")
    for name, values in (spec.get("profile_num_fields") or {}).items():
        if not (isinstance(values, list) and len(values) == 2 and all(_fits(v, "float") for v in values)):
            raise ConfigFieldError(f"spec.profile_num_fields.{name} must be [mean, std] (finite numbers), got {values!r:.80}")
    for name, width in (spec.get("text_dims") or {}).items():
        if not _fits(width, "int") or not 1 <= width <= SIZE_LIMITS["dim"]:
            raise ConfigFieldError(f"spec.text_dims.{name} must be an integer in [1, {SIZE_LIMITS['dim']}], got {width!r}")


def validate_embedder_config(config: object) -> None:
    """Raise ConfigFieldError (message: key path, expectation, value) for the first bad field of ``config``."""
    if not isinstance(config, dict):
        raise ConfigFieldError(f"the top level must be an object, got {_type_name(config)}")
    missing = [k for k in ("sources", "adapter", "llm", "spec") if k not in config]
    if missing:
        raise ConfigFieldError(f"lacks {missing[0]!r} (KeyError: {missing[0]!r})")
    version = config.get("format_version", 1)
    if not _fits(version, "int") or version < 1:
        raise ConfigFieldError(f"format_version must be a positive integer, got {version!r}")
    sources = config["sources"]
    if not isinstance(sources, list) or not sources:
        raise ConfigFieldError(f"sources must be a non-empty list of objects, got {_type_name(sources)}")
    for i, source in enumerate(sources):
        _check_object(f"sources[{i}]", source, SourceConfig, required=("kind",))
    _check_object("adapter", config["adapter"], AdapterConfig)
    _check_object("llm", config["llm"], LLMRecord, required=("name_or_path", "hidden_size", "embed_rms"))
    rms = config["llm"]["embed_rms"]
    if not _fits(rms, "float") or rms <= 0:
        raise ConfigFieldError(f"llm.embed_rms must be a finite number > 0, got {rms!r}")
    _check_spec(config["spec"])
    for key in ("metrics", "lora"):
        if config.get(key) is not None and not isinstance(config[key], dict):
            raise ConfigFieldError(f"{key} must be an object or null, got {_type_name(config[key])}")
    trained = config.get("user_head_trained")
    if trained is not None and not isinstance(trained, bool):
        raise ConfigFieldError(f"user_head_trained must be true, false or null, got {trained!r}")
    space = config.get("text_space")
    if space is not None:
        if not isinstance(space, dict):
            raise ConfigFieldError(f"text_space must be an object or null, got {_type_name(space)}")
        for name, annotation in (("text_encoder", "str"), ("text_dim", "int"), ("dim", "int")):
            if name not in space:
                raise ConfigFieldError(f"text_space lacks {name!r}")
            _check_scalar(f"text_space.{name}", space[name], annotation)
        for name in ("text_dim", "dim"):
            if space[name] <= 0:
                raise ConfigFieldError(f"text_space.{name} must be a positive integer, got {space[name]!r}")
    lora = config.get("lora") or {}
    if lora:
        for name, annotation in (("r", "int"), ("alpha", "float"), ("dropout", "float"), ("target_modules", "list[str]")):
            if name not in lora:
                raise ConfigFieldError(f"lora lacks {name!r}")
            _check_scalar(f"lora.{name}", lora[name], annotation)
