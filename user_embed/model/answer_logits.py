"""The frozen LLM's logits over answer tokens, with a batch's soft prompts spliced in (the AR loss's input).

Two equivalent paths (same loss, same gradients; tested):
* :func:`answer_logits` runs whole left-padded prompts once and keeps logits only for the positions
  that predict answer tokens;
* :func:`answer_logits_after_frozen_prefix` (soft prompt after the question, no LoRA) runs the tokens
  before the soft slot without gradients and continues from their KV cache, so back-propagation covers
  only the soft tokens, what follows them and the answer.

Both take the inference model (``PersonalizedLM``) as ``lm`` and return ``(logits, labels, embedder output)``.
"""

from __future__ import annotations

import torch

from user_embed.data.collate import UserBatch
from user_embed.llm.cache import cache_kwargs, output_cache
from user_embed.llm.prompt import PromptIds
from user_embed.llm.soft_prompt import IGNORE_INDEX, collate_prompts


def answer_logits(lm, batch: UserBatch):
    """One forward over whole prompts: (B, keep, V) logits, their (B, keep) labels, the adapter output."""
    # Left padding puts every answer at the end, so logits are needed only for the last `keep` positions.
    prompt = lm.prompt_batch(batch.examples, with_answers=True, padding_side="left")
    embeds, out = lm.inputs_embeds(batch, prompt)
    answer_rows = (prompt.labels != IGNORE_INDEX).any(0)  # (T,)
    length = prompt.labels.shape[1]
    keep = int(length - answer_rows.nonzero()[0, 0]) + 1 if answer_rows.any() else length
    logits = lm.llm(inputs_embeds=embeds, attention_mask=prompt.attention_mask,
                    position_ids=prompt.position_ids, logits_to_keep=keep).logits  # (B, keep, V)
    return logits, prompt.labels[:, -logits.shape[1]:], out


def answer_logits_after_frozen_prefix(lm, batch: UserBatch):
    """The tokens before the soft slot (left-padded) run once without gradients; the rest — soft tokens,
    what follows, the answer (right-padded) — continues from their KV cache with gradients."""
    k = lm.embedder.num_tokens
    prompts = [lm.prompts.build(ex.question, ex.answer, num_soft=k) for ex in batch.examples]
    heads = [PromptIds(ids=p.ids[: p.soft_start]) for p in prompts]
    tails = [PromptIds(ids=p.ids[p.soft_start:], soft_start=0, num_soft=k,
                       answer_start=p.answer_start - p.soft_start, question_ids=p.question_ids) for p in prompts]
    pad = lm.tokenizer.pad_token_id
    head = collate_prompts(heads, pad, "left").to(lm.device)  # (B, H)
    tail = collate_prompts(tails, pad, "right").to(lm.device)  # (B, T)
    with torch.no_grad():
        cache = output_cache(lm.llm(input_ids=head.input_ids, attention_mask=head.attention_mask,
                                    position_ids=head.position_ids, use_cache=True, logits_to_keep=1))
    embeds, out = lm.inputs_embeds(batch, tail)  # (B, T, d_llm), soft tokens first
    mask = torch.cat([head.attention_mask, tail.attention_mask], 1)  # (B, H + T)
    positions = tail.position_ids + head.attention_mask.sum(1, keepdim=True)  # continue after each row's head
    logits = lm.llm(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, use_cache=True,
                    **cache_kwargs(lm.llm, cache)).logits  # (B, T, V)
    return logits, tail.labels, out
