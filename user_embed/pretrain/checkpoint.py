"""Pre-trained encoder checkpoints: ``encoder.safetensors`` + ``config.json`` (+ ``head.safetensors``).

``config.json`` records the encoder's architecture (kind, dim, layers, heads, max_len), the
data vocabularies it was trained on (``spec``: item ids in table order, categories, value
statistics) and the pre-training report. A UserEmbedder source loads it with
``checkpoint: <folder>`` (``freeze: true`` keeps it fixed); :func:`load_encoder_checkpoint`
refuses a checkpoint whose architecture or item/category vocabulary differs from the data, with
a message that says what differs. Weights are safetensors only: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import load_file, save_file
from torch import nn

from data_pipelines.outputs import output_directory
from data_pipelines.readers import read_json
from user_embed.config import SourceConfig
from user_embed.data.spec import DataSpec
from user_embed.errors import CheckpointError
from user_embed.finite import non_finite_tensor
from user_embed.output_kinds import ENCODER

ENCODER_WEIGHTS, HEAD_WEIGHTS, CONFIG_NAME, CARD_NAME = "encoder.safetensors", "head.safetensors", "config.json", "README.md"
METRICS_NAME = "metrics.json"
FORMAT_VERSION = 1
CHECKPOINT_TYPE = "user_embed.pretrained_encoder"
ARCHITECTURE_FIELDS = ("kind", "dim", "layers", "heads", "max_len")


def vocabulary_digest(ids: list[str]) -> str:
    """sha256 of the ids in table order (two vocabularies match iff ids and order match)."""
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


def save_encoder_checkpoint(directory: str | Path, encoder: nn.Module, source: SourceConfig, spec: DataSpec,
                            head: nn.Module | None = None, report: dict | None = None, *, overwrite: bool = False) -> Path:
    """Write encoder (+ head) weights, config.json, metrics.json (the report) and a short card into ``directory``.

    Atomic and a safe output (``data_pipelines.outputs``: a previous encoder checkpoint is replaced, a folder
    with other files needs ``overwrite``); refused (CheckpointError) when a weight is NaN or infinite."""
    directory = Path(directory)
    weights = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
    head_weights = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()} if head is not None else {}
    broken = non_finite_tensor(weights) or non_finite_tensor(head_weights)
    if broken:
        raise CheckpointError(f"{directory}: not saved — the pre-trained encoder's weights are broken ({broken})")
    architecture = {k: v for k, v in asdict(source).items() if k not in ("checkpoint", "freeze", "name")}
    config = {
        "format_version": FORMAT_VERSION,
        "type": CHECKPOINT_TYPE,
        "source": architecture,
        "item_vocabulary": {"items": len(spec.item_ids), "table_rows": spec.num_items,
                            "reserved_rows": {"0": "padding", "1": "unknown item"},
                            "sha256": vocabulary_digest(spec.item_ids)},
        "spec": spec.to_json(),
        "pretrain": report or {},
    }
    with output_directory(directory, ENCODER, overwrite=overwrite) as tmp:
        save_file(weights, str(tmp / ENCODER_WEIGHTS))
        if head is not None:
            save_file(head_weights, str(tmp / HEAD_WEIGHTS))
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str))
        if report is not None:
            (tmp / METRICS_NAME).write_text(json.dumps(report, indent=2, default=str))
        (tmp / CARD_NAME).write_text(_card(config))
    return directory


def read_checkpoint_config(directory: str | Path) -> dict:
    """The checkpoint's config.json; CheckpointError when the folder is not a pre-trained encoder."""
    directory = Path(directory)
    if directory.is_file() and directory.name == ENCODER_WEIGHTS:
        directory = directory.parent
    config_path = directory / CONFIG_NAME
    if not (directory / ENCODER_WEIGHTS).is_file() or not config_path.is_file():
        raise CheckpointError(f"{directory}: not a pre-trained encoder (needs {ENCODER_WEIGHTS} and {CONFIG_NAME}; "
                              f"write one with `user-embed pretrain`)")
    try:
        config = read_json(config_path, "encoder checkpoint config")
        config["source"], config["spec"]  # noqa: B018 - required keys
        if not isinstance(config["source"], dict) or not isinstance(config["spec"], dict):
            raise TypeError("'source' and 'spec' must be objects")
    except (ValueError, KeyError, TypeError) as exc:  # DataError (unreadable, not JSON) is a ValueError
        detail = str(exc).removeprefix(f"{config_path}: ")
        raise CheckpointError(f"{config_path}: invalid encoder checkpoint config ({detail})") from exc
    if config.get("type") != CHECKPOINT_TYPE:
        raise CheckpointError(f"{config_path}: type is {config.get('type')!r}, expected {CHECKPOINT_TYPE!r}")
    return config


def check_encoder_checkpoint(directory: str | Path, source: SourceConfig, spec: DataSpec) -> dict:
    """Raise CheckpointError unless the checkpoint fits ``source``'s architecture and the data's vocabularies."""
    config = read_checkpoint_config(directory)
    where = f"source '{source.name}': encoder checkpoint {directory}"
    saved = config["source"]
    differ = [f"{k} {saved.get(k)!r} (checkpoint) vs {getattr(source, k)!r} (config)"
              for k in ARCHITECTURE_FIELDS if saved.get(k) != getattr(source, k)]
    if differ:
        raise CheckpointError(f"{where} has a different architecture: {'; '.join(differ)}; "
                              f"copy these values from {Path(directory) / CONFIG_NAME}")
    trained = DataSpec.from_json(config["spec"])
    _check_vocabulary(where, "item", trained.item_ids, spec.item_ids)
    _check_vocabulary(where, "category", trained.categories, spec.categories)
    return config


def _check_vocabulary(where: str, what: str, trained: list[str], data: list[str]) -> None:
    if trained == data:
        return
    if len(data) > len(trained):
        raise CheckpointError(f"{where}: the data's {what} catalog ({len(data)} {what}s) is larger than the "
                              f"checkpoint's {what} embedding table ({len(trained)} {what}s + 2 reserved rows); "
                              f"pre-train again on this data (`user-embed pretrain`)")
    if len(data) < len(trained):
        raise CheckpointError(f"{where}: {what} vocabulary does not match the data ({len(trained)} {what}s in the "
                              f"checkpoint, {len(data)} in the data); pre-train again on this data")
    first = next(i for i, (a, b) in enumerate(zip(trained, data)) if a != b)
    count = sum(a != b for a, b in zip(trained, data))
    raise CheckpointError(f"{where}: {what} vocabulary does not match the data: {count} of {len(data)} {what} ids "
                          f"differ (first at index {first}: checkpoint {trained[first]!r}, data {data[first]!r}); "
                          f"pre-train again on this data")


def load_encoder_checkpoint(encoder: nn.Module, source: SourceConfig, spec: DataSpec) -> dict:
    """Check ``source.checkpoint`` against ``source`` and ``spec``, then load its weights into ``encoder``."""
    if not source.checkpoint:
        raise CheckpointError(f"source '{source.name}': no checkpoint set")
    directory = Path(source.checkpoint)
    if not directory.exists():
        raise CheckpointError(f"source '{source.name}': encoder checkpoint {directory} not found")
    config = check_encoder_checkpoint(directory, source, spec)
    directory = directory.parent if directory.is_file() else directory
    try:
        state = load_file(str(directory / ENCODER_WEIGHTS))
    except Exception as exc:  # SafetensorError: truncated, or not safetensors at all
        raise CheckpointError(f"{directory / ENCODER_WEIGHTS}: not a readable safetensors file "
                              f"({str(exc).splitlines()[0]})") from exc
    broken = non_finite_tensor(state)
    if broken:
        raise CheckpointError(f"{directory / ENCODER_WEIGHTS}: broken weights ({broken}); pre-train it again")
    try:
        result = encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"{directory / ENCODER_WEIGHTS}: does not fit encoder '{source.name}' ({exc})") from exc
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{directory / ENCODER_WEIGHTS}: does not match encoder '{source.name}' "
                              f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return config


def load_pretrained_encoder(directory: str | Path) -> tuple[nn.Module, SourceConfig, DataSpec]:
    """Rebuild an encoder from its own config.json and load its weights (for inspection or reuse)."""
    from user_embed.encoders import build_encoder

    config = read_checkpoint_config(directory)
    source = SourceConfig(**config["source"], checkpoint=str(directory))
    spec = DataSpec.from_json(config["spec"])
    encoder = build_encoder(source, spec)
    load_encoder_checkpoint(encoder, source, spec)
    return encoder, source, spec


def _card(config: dict) -> str:
    source, vocab = config["source"], config["item_vocabulary"]
    test = (config.get("pretrain") or {}).get("test", {})
    lines = [
        f"# Pre-trained `{source['kind']}` encoder (user_embed)",
        "",
        f"- dim {source['dim']}, layers {source['layers']}, heads {source['heads']}, max_len {source['max_len']} "
        f"(truncation: {source['truncation']})",
        f"- Item vocabulary: {vocab['items']} items (+2 reserved rows), sha256 {vocab['sha256'][:12]}…",
        f"- Test metrics: {json.dumps(test)}" if test else "- Not evaluated",
        "",
        "Use as a UserEmbedder source: `{kind: " + source["kind"] + ", checkpoint: <this folder>, freeze: true}` "
        "with the same dim/layers/heads/max_len.",
    ]
    return "\n".join(lines) + "\n"


def load_encoder_checkpoints(embedder: nn.Module, sources: list[SourceConfig]) -> None:
    """Start a UserEmbedder's encoders from pre-trained weights where a source names a checkpoint folder.

    The checkpoint's architecture (kind, dim, layers, heads, max_len) and item/category vocabularies
    must match this source and the data; otherwise a CheckpointError says what differs.
    """
    for source in sources:
        if source.checkpoint:
            load_encoder_checkpoint(embedder.encoders[source.name], source, embedder.spec)
