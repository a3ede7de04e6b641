"""Personalized generation over two backends (HF ``generate`` and vLLM ``prompt_embeds``), same results.

Use it through the inference model:

>>> lm = PersonalizedLM.from_pretrained("runs/quickstart/embedder")                       # doctest: +SKIP
>>> users = UserStore.from_folder("data/ml-100k")                                        # doctest: +SKIP
>>> lm.generate(users, ["196"], ["Which genre do I like most?"], backend="vllm")          # doctest: +SKIP

:func:`answer_requests` is the request loop behind ``PersonalizedLM.generate_results``: requests that
cannot be answered (unknown user, empty question, a prompt too long) come back with ``error`` set and
do not stop the others.
"""

from __future__ import annotations

import time

from user_embed.errors import UserError
from user_embed.generate.common import BACKENDS, PromptEmbeds, Request, Result, SamplingConfig

__all__ = ["BACKENDS", "PromptEmbeds", "Request", "Result", "SamplingConfig", "answer_requests"]


def answer_requests(lm, users, requests: list[Request], method: str, backend: str, sampling: SamplingConfig,
                    batch_size: int = 8, progress: bool = False, history_events: int = 50) -> list[Result]:
    """Answer each request for its user with ``lm`` (a PersonalizedLM); results in request order.

    Args:
        lm: the inference model.
        users: the UserStore holding the requests' users.
        requests: (user_id, question) pairs.
        method: soft | none | text | bm25 (see PersonalizedLM).
        backend: ``hf`` (transformers ``generate``) or ``vllm`` (``prompt_embeds``; needs vLLM installed).
        sampling: max tokens, temperature (0 = greedy), top-p, seed, stop strings.
        batch_size: requests embedded and generated together.
        progress: show a progress bar (tqdm, on stderr).
        history_events: events written out by the text methods.
    """
    if batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {batch_size}")
    engine = lm.backend(backend)
    results = [Result(r.user_id, r.question if isinstance(r.question, str) else None) for r in requests]
    valid = []
    for index, request in enumerate(requests):
        results[index].error = lm.request_error(users, request, method)
        if results[index].error is None:
            valid.append(index)
    if valid:
        engine.prepare()  # e.g. the vLLM engine, built outside the requests' timing
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), unit="q", desc=f"generate ({backend})")
        bar.update(len(requests) - len(valid))
    try:
        for start in range(0, len(valid), batch_size):
            batch = valid[start:start + batch_size]
            _answer_batch(lm, users, engine, requests, results, batch, method, sampling, history_events)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return results


def _answer_batch(lm, users, engine, requests: list[Request], results: list[Result], batch: list[int], method: str,
                  sampling: SamplingConfig, history_events: int) -> None:
    """Fill ``results`` for one batch; if the batch fails, retry its rows one by one to isolate the bad one."""
    start = time.perf_counter()
    try:
        examples = lm.examples(users, [str(requests[i].user_id) for i in batch], [requests[i].question for i in batch],
                               [requests[i].cutoff for i in batch], require_users=method != "none")
        prompts = lm.prompt_embeds(users, examples, method, lm.contexts(users, examples, method, history_events))
        tokens = engine.generate_tokens(prompts, sampling)
    except (ValueError, RuntimeError) as exc:  # e.g. a prompt longer than the model allows
        if len(batch) == 1:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            results[batch[0]].error = f"{type(exc).__name__}: {message}"
            return
        for index in batch:
            _answer_batch(lm, users, engine, requests, results, [index], method, sampling, history_events)
        return
    seconds = time.perf_counter() - start
    for index, raw, length in zip(batch, tokens, prompts.lengths):
        answer, ids = lm.decode(raw, sampling.stop)
        result = results[index]
        result.answer, result.token_ids, result.output_tokens = answer, ids, len(ids)
        result.prompt_tokens, result.latency_s = length, seconds
