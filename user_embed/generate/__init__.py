"""Personalized generation: one function over two backends (HF ``generate`` and vLLM ``prompt_embeds``).

>>> from user_embed.generate import Request, SamplingConfig, generate, load
>>> personalizer = load("runs/quickstart/embedder", "data/ml-100k")        # doctest: +SKIP
>>> results = generate(personalizer, [Request("196", "Which genre do I like most?")],
...                    backend="hf", sampling=SamplingConfig(max_new_tokens=32))  # doctest: +SKIP
>>> results[0].answer                                                        # doctest: +SKIP

Requests that cannot be answered (unknown user, empty question) come back with ``error``
set and do not stop the others.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from user_embed.errors import UserError
from user_embed.generate.common import BACKENDS, Personalizer, Request, Result, SamplingConfig

__all__ = ["BACKENDS", "Personalizer", "Request", "Result", "SamplingConfig", "generate", "load"]


def load(checkpoint: str | Path, data_dir: str | Path, llm: str | None = None, device: str = "cpu",
         system_prompt: str | None = None) -> Personalizer:
    """Load an embedder, the LLM it was trained for and the users' data once (see :class:`Personalizer`)."""
    return Personalizer(checkpoint, data_dir, llm=llm, device=device, system_prompt=system_prompt)


def _backend(name: str):
    if name == "hf":
        from user_embed.generate import hf

        return hf
    if name == "vllm":
        from user_embed.generate import vllm

        vllm.import_vllm()  # fail early with the install hint
        return vllm
    raise UserError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")


def generate(personalizer: Personalizer, requests: Iterable[Request], backend: str = "hf",
             sampling: SamplingConfig | None = None, batch_size: int = 8, progress: bool = False) -> list[Result]:
    """Answer each request for its user; results come back in request order, bad ones with ``error`` set.

    Args:
        personalizer: from :func:`load`.
        requests: (user_id, question) pairs.
        backend: ``hf`` (transformers ``generate``) or ``vllm`` (``prompt_embeds``; needs vLLM installed).
        sampling: max tokens, temperature (0 = greedy), top-p, seed, stop strings.
        batch_size: requests embedded and generated together.
        progress: show a progress bar (tqdm, on stderr).
    """
    if batch_size <= 0:
        raise UserError(f"batch_size must be > 0, got {batch_size}")
    module = _backend(backend)
    sampling = sampling or SamplingConfig()
    requests = list(requests)
    results: list[Result] = [Result(r.user_id, r.question) for r in requests]
    valid = []
    for index, request in enumerate(requests):
        results[index].error = personalizer.check(request)
        if results[index].error is None:
            valid.append(index)
    batches = [valid[i:i + batch_size] for i in range(0, len(valid), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(requests), unit="q", desc=f"generate ({backend})")
        bar.update(len(requests) - len(valid))
    try:
        for batch in batches:
            _answer_batch(module, personalizer, requests, results, batch, sampling)
            if bar is not None:
                bar.update(len(batch))
    finally:
        if bar is not None:
            bar.close()
    return results


def _answer_batch(module, personalizer: Personalizer, requests: list[Request], results: list[Result],
                  batch: list[int], sampling: SamplingConfig) -> None:
    """Fill ``results`` for one batch; if the batch fails, retry its rows one by one to isolate the bad one."""
    try:
        tokens, lengths, seconds = module.generate_batch(personalizer, [requests[i] for i in batch], sampling)
    except (ValueError, RuntimeError) as exc:  # e.g. a prompt longer than the model allows
        if len(batch) == 1:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            results[batch[0]].error = f"{type(exc).__name__}: {message}"
            return
        for index in batch:
            _answer_batch(module, personalizer, requests, results, [index], sampling)
        return
    for index, raw, length in zip(batch, tokens, lengths):
        answer, ids = personalizer.decode(raw, sampling.stop)
        result = results[index]
        result.answer, result.token_ids, result.output_tokens = answer, ids, len(ids)
        result.prompt_tokens, result.latency_s = length, seconds
