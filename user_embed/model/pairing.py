"""Pairing a saved embedder with its LLM: which LLM to load, the checks that refuse another one, LoRA weights.

An embedder records the LLM it was trained for (:class:`~user_embed.llm.record.LLMRecord`). By default that
LLM is loaded again (from the folder it was loaded from, when that still exists). Any HF causal-LM id or
folder may be named instead; it is refused when its hidden size, model type or identity differs.
"""

from __future__ import annotations

from pathlib import Path

import torch

from user_embed.config import LLMConfig
from user_embed.embedder import UserEmbedder
from user_embed.errors import CheckpointError
from user_embed.llm.load import trainable_state
from user_embed.llm.record import LLMRecord


def requested_llm(llm: str | None, recorded: LLMRecord) -> str:
    """The LLM to load: the recorded one unless the user named another (ids of the recorded one map to it)."""
    recorded_names = {recorded.name_or_path, recorded.origin, recorded.resolved}
    if llm is None or llm in recorded_names:
        resolved = recorded.resolved
        if recorded.name_or_path in (None, "default") or not (resolved and Path(resolved).is_dir()):
            return recorded.name_or_path or "default"
        return resolved
    return llm


def llm_config_for(embedder: UserEmbedder, name_or_path: str, system_prompt: str | None = None,
                   trust_remote_code: bool = False) -> LLMConfig:
    """The LLMConfig that rebuilds the LLM and prompt format an embedder was trained with."""
    record = embedder.llm_record
    lora = {f"lora_{key}": value for key, value in (embedder.lora or {}).items()}
    return LLMConfig(name_or_path=name_or_path, revision=record.revision, soft_position=record.soft_position,
                     system_prompt=record.system_prompt if system_prompt is None else system_prompt,
                     lora=bool(embedder.lora), trust_remote_code=trust_remote_code, **lora)


def check_same_llm(recorded: LLMRecord, loaded: LLMRecord, requested: str | None) -> None:
    """Refuse an LLM of another width, model type or identity than the one the embedder was trained for."""
    if loaded.hidden_size != recorded.hidden_size:
        raise CheckpointError(f"embedder was trained for LLM '{recorded.label}' (hidden size {recorded.hidden_size}), "
                              f"but '{requested or loaded.label}' has hidden size {loaded.hidden_size}")
    same = recorded.origin == loaded.origin or recorded.resolved == loaded.resolved
    if recorded.model_type and loaded.model_type and recorded.model_type != loaded.model_type:
        same = False
    if not same:
        raise CheckpointError(f"embedder was trained for LLM '{recorded.label}', not '{requested or loaded.label}' "
                              f"(omit --llm to use the recorded one)")


def load_lora(llm: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Put an exported embedder's LoRA weights into the freshly wrapped LLM; every tensor must find its place."""
    expected = trainable_state(llm)
    unknown = sorted(set(state) - set(expected))
    missing = sorted(set(expected) - set(state))
    if unknown or missing or not state:
        raise CheckpointError(f"the embedder's LoRA weights do not fit this LLM (unknown {unknown[:2]}, "
                              f"missing {missing[:2]})")
    llm.load_state_dict(state, strict=False)
