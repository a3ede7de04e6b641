"""Load any HF causal LM (offline default, HF id or folder), frozen and in eval mode; optional LoRA.

Safe by default: weights come from safetensors only (``use_safetensors=True``), configs and
tokenizers from JSON, and model code from the hub runs only with ``trust_remote_code: true``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from user_embed.config import LLMConfig
from user_embed.errors import UserError
from user_embed.llm.record import LLMRecord

#: Saved architectures that generate text (``LlamaForCausalLM``, ``GPT2LMHeadModel``,
#: ``Gemma3ForConditionalGeneration``); a folder saved as e.g. ``BertModel`` or ``BertForMaskedLM``
#: is refused even though its model type has a causal-LM class.
GENERATIVE_MARKERS = ("CausalLM", "LMHead", "ConditionalGeneration")


@dataclass
class LoadedLLM:
    model: nn.Module
    tokenizer: object
    name_or_path: str  # as resolved (local folder or HF id)
    record: LLMRecord  # what an embedder trained on this LLM records of it


def _origin(path: str) -> str | None:
    origin = Path(path) / "origin.json"
    if origin.is_file():
        import json

        return json.loads(origin.read_text()).get("upstream_id")
    return None


def load_llm(config: LLMConfig | None = None, dtype: torch.dtype | None = None) -> LoadedLLM:
    """Load tokenizer + causal LM, freeze every weight, switch to eval mode, add LoRA if asked."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    from user_embed.assets import resolve_model

    config = config or LLMConfig()
    path = resolve_model(config.name_or_path, "llm")
    common = {"revision": config.revision, "trust_remote_code": config.trust_remote_code}
    try:
        hf_config = AutoConfig.from_pretrained(path, **common)
    except OSError as exc:
        raise UserError(f"LLM '{config.name_or_path}': cannot load a model config from '{path}' "
                        f"(not an HF model folder, or the id is not reachable offline): {exc}".splitlines()[0]) from exc
    except ValueError as exc:
        if "custom code" in str(exc) and not config.trust_remote_code:
            raise UserError(f"LLM '{config.name_or_path}' ships its own model code, which is not run unless you "
                            "trust it: set llm.trust_remote_code: true (--model.llm.trust_remote_code true)") from exc
        raise UserError(f"LLM '{config.name_or_path}': {exc}".splitlines()[0]) from exc
    architectures = list(getattr(hf_config, "architectures", None) or [])
    generative = any(marker in a for a in architectures for marker in GENERATIVE_MARKERS)
    if not config.trust_remote_code and (hf_config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                         or (architectures and not generative)):
        kind = architectures[0] if architectures and not generative else f"'{hf_config.model_type}' model"
        raise UserError(f"LLM '{config.name_or_path}' is a {kind}, not a causal LM "
                        f"(pass a decoder-only model such as SmolLM2, Llama, Qwen2)")
    tokenizer = AutoTokenizer.from_pretrained(path, **common)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:  # weights from safetensors only: a pytorch_model.bin (a pickle) is never read
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, use_safetensors=True,
                                                     **common)
    except OSError as exc:
        raise UserError(f"LLM '{config.name_or_path}': no safetensors weights in '{path}' (only safetensors are "
                        f"loaded, never pytorch_model.bin; re-save the model with `save_pretrained`): "
                        f"{exc}".splitlines()[0]) from exc
    freeze(model)
    if config.lora:
        model = add_lora(model, config)
    embed = model.get_input_embeddings().weight
    record = LLMRecord(
        name_or_path=str(config.name_or_path), hidden_size=int(embed.shape[1]),
        embed_rms=float(embed.detach().float().pow(2).mean().sqrt()), resolved=str(path),
        origin=_origin(str(path)) or str(config.name_or_path), revision=config.revision,
        model_type=hf_config.model_type, system_prompt=config.system_prompt, soft_position=config.soft_position)
    return LoadedLLM(model=model, tokenizer=tokenizer, name_or_path=str(path), record=record)


def freeze(model: nn.Module) -> nn.Module:
    """Mark every LLM weight as frozen and put the model in eval mode (no dropout)."""
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval()


def add_lora(model: nn.Module, config: LLMConfig) -> nn.Module:
    """Wrap with peft LoRA adapters; only the LoRA weights train."""
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the weights that train (LoRA), for checkpoints that never copy the frozen LLM."""
    return {k: v for k, v in model.state_dict().items() if "lora_" in k}
