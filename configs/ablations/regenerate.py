"""Rewrite the ablation configs from ``configs/quickstart.yaml`` so they stay one change away from it.

    python configs/ablations/regenerate.py

Each ablation is the quickstart experiment with one change (``CHANGES``, applied to the whole config) and its own run folder
(``runs/ablation_<name>``); run one with ``user-embed fit --config configs/ablations/<name>.yaml``.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import yaml

HERE = Path(__file__).resolve().parent
QUICKSTART = HERE.parent / "quickstart.yaml"


def _ar_only(config: dict) -> None:
    model = config["model"]
    model["loss"]["contrastive_weight"] = 0.0


def _not_instruction_aware(config: dict) -> None:
    model = config["model"]
    model["adapter"].update(instruction_aware=False, question_tokens=False)


def _k1(config: dict) -> None:
    model = config["model"]
    model["adapter"]["num_tokens"] = 1


def _k1_mlp(config: dict) -> None:
    model = config["model"]
    model["adapter"].update(kind="mlp", num_tokens=1, question_tokens=False, category_pointer=False)


def _sequence_only(config: dict) -> None:
    model = config["model"]
    model["sources"] = [s for s in model["sources"] if s["kind"] == "sequence"]


def _lora(config: dict) -> None:
    model = config["model"]
    model["llm"]["lora"] = True  # rank 8 on q_proj/v_proj (LLMConfig defaults); the base weights stay frozen
    model["optim"]["lora_lr"] = 1e-3


def _no_alignment(config: dict) -> None:
    steps = config["model"]["optim"]["alignment_steps"]
    config["model"]["optim"]["alignment_steps"] = 0
    config["model"]["loss"]["option_alignment_weight"] = 0.0
    for key in ("max_steps", "val_check_interval"):  # the same joint steps, without the alignment phase
        config["trainer"][key] -= steps


def _no_category_pointer(config: dict) -> None:
    config["model"]["adapter"]["category_pointer"] = False


#: name → (what differs, how)
CHANGES: dict[str, tuple[str, Callable[[dict], None]]] = {
    "ar_only": ("UserQA (AR) loss only, no contrastive loss (loss.contrastive_weight: 0)", _ar_only),
    "not_instruction_aware": ("adapter not conditioned on the question (neither its mean nor its tokens)",
                              _not_instruction_aware),
    "k1": ("K = 1 soft token (resampler)", _k1),
    "k1_mlp": ("K = 1 soft token from the mlp adapter over pooled source tokens (the UQABench/E2P baseline; "
               "no category pointer, which needs the resampler)",
               _k1_mlp),
    "sequence_only": ("one source: the rating sequence only", _sequence_only),
    "no_alignment": ("no alignment phase and no option-alignment loss: the same 100 joint steps on the AR "
                     "(+ contrastive) loss alone", _no_alignment),
    "no_category_pointer": ("adapter without the category pointer (soft tokens do not point at the LLM's "
                            "embeddings of category names)", _no_category_pointer),
    "lora": ("LoRA adapters on the LLM (r = 8, q/v projections, lr 1e-3) trained with the embedder; "
             "evaluate then runs every method, baselines included, on the LoRA-adapted LLM", _lora),
}


def _retarget(value, old: str, new: str):
    """Replace the quickstart's run folder in every string of the config."""
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_retarget(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _retarget(v, old, new) for k, v in value.items()}
    return value


def main() -> None:
    base = yaml.safe_load(QUICKSTART.read_text())
    for name, (what, change) in CHANGES.items():
        config = _retarget(copy.deepcopy(base), "runs/quickstart", f"runs/ablation_{name}")
        change(config)
        header = (f"# Ablation of configs/quickstart.yaml: {what}\n"
                  "# Written by configs/ablations/regenerate.py; everything else equals the quickstart.\n")
        (HERE / f"{name}.yaml").write_text(header + yaml.safe_dump(config, sort_keys=False, width=120))
        print(f"wrote {HERE / f'{name}.yaml'}")


if __name__ == "__main__":
    main()
