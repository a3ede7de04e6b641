"""The training objective of the inference model: the joint loss of a batch and the pieces it is made of.

``joint_loss`` = AR cross-entropy on answer tokens + ``option_alignment_weight`` × option alignment +
``contrastive_weight`` × user↔text InfoNCE; in the alignment phase the option alignment (+ contrastive)
alone, without running the LLM. The answer logits come from one of two equivalent paths (same loss, same
gradients; tested):
* :func:`answer_logits` runs whole left-padded prompts once and keeps logits only for the positions
  that predict answer tokens;
* :func:`answer_logits_after_frozen_prefix` (soft prompt after the question, no LoRA) runs the tokens
  before the soft slot without gradients and continues from their KV cache, so back-propagation covers
  only the soft tokens, what follows them and the answer.

Every function takes the inference model (``PersonalizedLM``) as ``lm``.
"""

from __future__ import annotations

import torch

from user_embed.data.collate import Example, UserBatch
from user_embed.llm.cache import cache_kwargs, output_cache
from user_embed.llm.prompt import PromptIds
from user_embed.llm.soft_prompt import IGNORE_INDEX, collate_prompts
from user_embed.losses import ContrastiveLoss, answer_loss, option_alignment_loss
from user_embed.named_categories import name_embeddings


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


def joint_loss(lm, batch: UserBatch, contrastive: ContrastiveLoss | None = None, contrastive_weight: float = 0.0,
               option_alignment_weight: float = 0.0, option_alignment_scale: float = 10.0,
           frozen_prefix: bool | None = None, alignment_only: bool = False) -> dict[str, torch.Tensor]:
    """qa_loss (+ option_alignment_loss, + contrastive_loss) and their weighted sum ``loss``.

    ``frozen_prefix`` (default: when the soft prompt sits after the question and no LoRA trains) runs the
    tokens before the soft slot without gradients and continues from their KV cache: same loss, less backward.
    ``alignment_only`` (the alignment phase) skips the LLM: option alignment (+ contrastive) only.
    """
    if frozen_prefix is None:
        frozen_prefix = lm.prompts.soft_position == "after" and not lm.trains_llm
    if alignment_only:  # the embedder alone: option alignment (+ contrastive), no LLM forward pass
        out = lm.embedder_output(batch, lm.prompt_batch(batch.examples, with_answers=False))
        losses, total = {}, 0.0
    else:
        logits, labels, out = (answer_logits_after_frozen_prefix if frozen_prefix else answer_logits)(lm, batch)
        losses = {"qa_loss": answer_loss(logits, labels)}
        total = losses["qa_loss"]
    weight = 1.0 if alignment_only else option_alignment_weight
    if weight > 0:
        aligned = option_alignment(lm, batch.examples, out.soft_prompt, option_alignment_scale)
        if aligned is not None:
            losses["option_alignment_loss"], losses["option_alignment_accuracy"] = aligned
            total = total + weight * aligned[0]
    if contrastive is not None and batch.text_vectors is not None:
        losses["contrastive_loss"] = contrastive(out.user_vector, batch.text_vectors, batch.user_index)
        total = total + contrastive_weight * losses["contrastive_loss"]
    losses["loss"] = total
    return losses


def option_alignment(lm, examples: list[Example], soft_prompt: torch.Tensor, scale: float = 10.0):
    """(loss, accuracy) of the option-alignment loss over the questions whose options hold their answer;
    None when no question in the batch has such options (e.g. free-text answers)."""
    rows = [i for i, ex in enumerate(examples) if ex.answer in ex.choices]
    if not rows:
        return None
    vectors = option_vectors(lm, [o for i in rows for o in examples[i].choices])
    width = max(len(examples[i].choices) for i in rows)
    option_embeds = soft_prompt.new_zeros(len(rows), width, soft_prompt.shape[-1])  # (R, O, d_llm)
    option_mask = torch.zeros(len(rows), width, dtype=torch.bool, device=soft_prompt.device)  # (R, O)
    for r, i in enumerate(rows):
        options = examples[i].choices
        option_embeds[r, : len(options)] = torch.stack([vectors[o] for o in options])
        option_mask[r, : len(options)] = True
    answers = torch.tensor([examples[i].choices.index(examples[i].answer) for i in rows],
                           device=soft_prompt.device)  # (R,)
    return option_alignment_loss(soft_prompt[rows], option_embeds, option_mask, answers, scale)

def option_vectors(lm, options: list[str]) -> dict[str, torch.Tensor]:
    """Each option's mean input-token embedding under the frozen LLM, computed once per option text."""
    cache = lm.option_vector_cache
    new = sorted({o for o in options if o not in cache})
    if new:
        embedding = lm.llm.get_input_embeddings()
        for option, vector in zip(new, name_embeddings(lm.tokenizer, embedding, new)):
            cache[option] = vector.to(embedding.weight.device)
    return cache
