"""HF backend: batched ``model.generate(inputs_embeds=…)`` over left-padded prompts, KV cache on.

Left padding keeps every row's last prompt position in the last column, so new tokens
follow directly; the attention mask hides the padding and generate derives position ids
from it (0, 1, 2 … over real positions only: the same positions as in training and as in
an unpadded single-row run). Only the new tokens come back for decoder-only models.
"""

from __future__ import annotations

import torch
from torch import nn

from user_embed.generate.common import PromptEmbeds, SamplingConfig


def generation_config(tokenizer, eos_ids: list[int], sampling: SamplingConfig):
    """An explicit GenerationConfig, so the model's own defaults (sampling, lengths) never leak in."""
    from transformers import GenerationConfig

    options = {"max_new_tokens": sampling.max_new_tokens, "do_sample": not sampling.greedy, "use_cache": True,
               "eos_token_id": eos_ids, "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id}
    if not sampling.greedy:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
    if sampling.ignore_eos:  # end tokens are suppressed until max_new_tokens
        options.update(min_new_tokens=sampling.max_new_tokens)
    return GenerationConfig(**options)


def stop_on_strings(tokenizer, stop: list[str]):
    """A StoppingCriteria that ends a row once its new text contains a stop string.

    (transformers' own ``stop_strings`` needs a tokenizer whose tokens decode with a
    byte-level prefix, and fails on others, e.g. word-level tokenizers.)
    """
    from transformers import StoppingCriteria

    window = max(len(s) for s in stop) + 4  # every token decodes to >= 1 character

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
            texts = tokenizer.batch_decode(input_ids[:, -window:], skip_special_tokens=True)  # new tokens only
            return torch.tensor([any(s in text for s in stop) for text in texts], device=input_ids.device)

    return StopOnStrings()


class HFBackend:
    """Generation with the in-process transformers model."""

    def __init__(self, llm: nn.Module, tokenizer, eos_ids: list[int]):
        self.llm, self.tokenizer, self.eos_ids = llm, tokenizer, eos_ids

    def prepare(self) -> None:
        """Nothing to build: the model is already loaded."""

    @torch.no_grad()
    def generate_tokens(self, prompts: PromptEmbeds, sampling: SamplingConfig) -> list[list[int]]:
        """New token ids per row (raw: may end with EOS/padding; ``PersonalizedLM.decode`` trims them)."""
        config = generation_config(self.tokenizer, self.eos_ids, sampling)
        extra = {}
        if sampling.stop:
            from transformers import StoppingCriteriaList

            extra["stopping_criteria"] = StoppingCriteriaList([stop_on_strings(self.tokenizer, sampling.stop)])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sampling.seed)
            out = self.llm.generate(inputs_embeds=prompts.embeds, attention_mask=prompts.attention_mask,
                                    generation_config=config, **extra)  # (B, new) for decoder-only models
        return out.tolist()
