"""Multiple-choice answering by likelihood: pick the option whose tokens the LLM finds most probable.

The prompt is run once (left-padded, KV cache on); the cache is repeated per option and the
option tokens are scored in one more forward pass. Score = sum of the option tokens' log-probs.

Prompts that share a long prefix (one user's history written as text, then several questions) can
run that prefix once: :func:`prefill_shared_prefix` computes its KV cache for one row and repeats it,
and :func:`score_options` continues from it. The scores are those of the full prompts.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from user_embed.llm.cache import cache_kwargs, output_cache


def shared_prefix_length(sequences: list[list[int]]) -> int:
    """Length of the longest common prefix, kept at least one token short of the shortest sequence."""
    shortest = min(len(s) for s in sequences)
    n = 0
    while n < shortest - 1 and all(s[n] == sequences[0][n] for s in sequences):
        n += 1
    return n


@torch.no_grad()
def prefill_shared_prefix(llm, prefix_ids: list[int], batch: int, device) -> tuple[object, torch.Tensor]:
    """Run ``prefix_ids`` once → (KV cache repeated to ``batch`` rows, (batch, P) all-ones past mask)."""
    ids = torch.tensor([prefix_ids], dtype=torch.long, device=device)  # (1, P)
    cache = output_cache(llm(input_ids=ids, use_cache=True, logits_to_keep=1))
    cache.batch_repeat_interleave(batch)
    return cache, torch.ones(batch, len(prefix_ids), dtype=torch.long, device=device)


@torch.no_grad()
def score_options(llm, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                  options: list[list[list[int]]], pad_id: int, past: tuple[object, torch.Tensor] | None = None
                  ) -> list[list[float]]:
    """inputs_embeds: (B, T, d) LEFT-padded prompts; options[b][o] = token ids → scores[b][o] (sum log-prob).

    ``past`` = (KV cache, (B, P) mask) of tokens before ``inputs_embeds`` (then ``position_ids`` start at P).
    """
    batch = inputs_embeds.shape[0]
    if not bool(attention_mask[:, -1].all()):
        raise ValueError("score_options needs left-padded prompts (last column real for every row)")
    cache = None
    if past is not None:
        cache, past_mask = past
        attention_mask = torch.cat([past_mask, attention_mask], 1)  # (B, P + T)
    out = llm(inputs_embeds=inputs_embeds, attention_mask=attention_mask, position_ids=position_ids,
              **cache_kwargs(llm, cache), use_cache=True, logits_to_keep=1)  # only the last position's logits: (B, 1, V)
    first = F.log_softmax(out.logits[:, -1].float(), -1)  # (B, V)
    n_opt = max(len(o) for o in options)
    length = max(len(ids) for opts in options for ids in opts)
    if length == 1:  # every option is one token: the first step decides
        return [[float(first[b, ids[0]]) for ids in options[b]] for b in range(batch)]
    tokens = torch.full((batch * n_opt, length), pad_id, dtype=torch.long)
    mask = torch.zeros(batch * n_opt, length, dtype=torch.long)
    for b, opts in enumerate(options):
        for o, ids in enumerate(opts):
            tokens[b * n_opt + o, : len(ids)] = torch.tensor(ids)
            mask[b * n_opt + o, : len(ids)] = 1
    device = inputs_embeds.device
    tokens, mask = tokens.to(device), mask.to(device)
    cache = output_cache(out)
    cache.batch_repeat_interleave(n_opt)
    full_mask = torch.cat([attention_mask.repeat_interleave(n_opt, 0), mask], 1)  # (B·O, T + L)
    start = position_ids[:, -1:].repeat_interleave(n_opt, 0) + 1  # (B·O, 1)
    positions = start + torch.arange(length, device=device)[None]  # (B·O, L)
    step = llm(input_ids=tokens, attention_mask=full_mask, position_ids=positions, **cache_kwargs(llm, cache),
               use_cache=True)
    logp = F.log_softmax(step.logits.float(), -1)  # (B·O, L, V)
    scores = []
    for b, opts in enumerate(options):
        row = []
        for o, ids in enumerate(opts):
            r = b * n_opt + o
            total = float(first[b, ids[0]])
            for j in range(1, len(ids)):
                total += float(logp[r, j - 1, ids[j]])
            row.append(total)
        scores.append(row)
    return scores


def pick(scores: list[list[float]], options: list[list[str]]) -> list[str]:
    """The highest-scoring option per question."""
    return [opts[max(range(len(s)), key=s.__getitem__)] for s, opts in zip(scores, options)]
