"""The model worker: one thread runs every model call; an asyncio batcher groups chat requests for it.

torch's ``generate`` is not safe to run concurrently, so all model work — generation, embeddings, laying
live events over histories — runs on a single worker thread, in submission order. Chat requests wait in
an asyncio queue; the batcher takes what is queued, waits up to ``batch_window_ms`` for more (up to
``max_batch_size``), splits them into groups that can share one ``generate`` call (same personalization
and sampling settings; ``max_tokens`` may differ) and hands each group to the thread.

In a group, prompts are left-padded embeddings with each user's soft prompt spliced in (from the
:class:`EncodingCache`); the HF backend streams every new token to the request it belongs to through a
stopping criterion, which also ends the call once every row is done. The vLLM backend answers the whole
group in one engine call (the engine batches internally) and the text is sent when it is done.
A group that fails answers each of its requests with a 500; the worker goes on with the next.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from user_embed.data.collate import Example
from user_embed.generate.common import PromptEmbeds, SamplingConfig
from user_embed.generate.hf import generation_config
from user_embed.llm.soft_prompt import collate_prompts, splice_soft_prompt
from user_embed.serving.chat import TextEmitter
from user_embed.serving.errors import APIError
from user_embed.serving.metrics import Metrics
from user_embed.serving.settings import ServeSettings
from user_embed.serving.user_cache import EncodingCache

log = logging.getLogger("user_embed.serving")


@dataclass
class Job:
    """One chat request on its way through the worker; its events go to ``events``:
    ("start", prompt_tokens), ("text", delta), ("done", finish_reason, completion_tokens), ("error", status, msg)."""

    user_id: str | None
    question: str
    method: str  # soft | text | none
    sampling: SamplingConfig
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    created: float = field(default_factory=time.perf_counter)
    first_token_s: float | None = None

    def send(self, *event) -> None:
        """Hand an event to the request's coroutine (safe from the worker thread)."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    @property
    def group(self) -> tuple:
        s = self.sampling
        return self.method, s.temperature, s.top_p, s.seed, tuple(s.stop)


class TokenTap:
    """A transformers StoppingCriteria that hands each step's new tokens to the rows' emitters and stops
    a row (and with the last row, the call) once its emitter is done."""

    def __init__(self, emitters: list[TextEmitter]):
        self.emitters = emitters

    def __call__(self, input_ids: torch.Tensor, scores=None, **kwargs) -> torch.Tensor:
        for emitter, token in zip(self.emitters, input_ids[:, -1].tolist()):  # (B,) this step's tokens
            emitter.push(token)
        return torch.tensor([e.done for e in self.emitters], device=input_ids.device)


class ModelWorker:
    """Batches chat requests and runs all model work on one thread."""

    def __init__(self, lm, users, cache: EncodingCache, settings: ServeSettings, metrics: Metrics):
        self.lm, self.users, self.cache, self.settings, self.metrics = lm, users, cache, settings, metrics
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="user-embed-model")
        self.queue: asyncio.Queue | None = None
        self._task: asyncio.Task | None = None

    # ---- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.queue = asyncio.Queue()
        self._task = asyncio.create_task(self._batcher())
        if self.settings.backend == "vllm":
            await self.run(lambda: self.lm.backend("vllm").prepare())  # build the engine before serving

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=True)

    async def run(self, fn, *args):
        """Run ``fn(*args)`` on the model thread, after the work already submitted."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def submit(self, job: Job) -> None:
        assert self.queue is not None, "the worker is not started"
        self.queue.put_nowait(job)

    # ---- batching ------------------------------------------------------------------------------
    async def _batcher(self) -> None:
        loop = asyncio.get_running_loop()
        limit, window = self.settings.max_batch_size, self.settings.batch_window_ms / 1000
        while True:
            jobs = [await self.queue.get()]
            while len(jobs) < limit and not self.queue.empty():
                jobs.append(self.queue.get_nowait())
            deadline = loop.time() + window
            while len(jobs) < limit and (left := deadline - loop.time()) > 0:
                try:
                    jobs.append(await asyncio.wait_for(self.queue.get(), left))
                except asyncio.TimeoutError:
                    break
            groups: dict[tuple, list[Job]] = {}
            for job in jobs:
                groups.setdefault(job.group, []).append(job)
            for group in groups.values():
                try:
                    await self.run(self._generate, group)
                except Exception as exc:  # never let the batcher die
                    log.exception("generation failed")
                    for job in group:
                        job.send("error", 500, f"internal error: {type(exc).__name__}")

    # ---- on the model thread ------------------------------------------------------------------
    def _prompt(self, job: Job):
        lm = self.lm
        context = None
        if job.method == "text":
            writer = self.users.history_writer(self.settings.history_events)
            context = writer(Example(job.user_id, job.question, "", []))
        prompt = lm.prompts.build(job.question, num_soft=lm.num_tokens if job.method == "soft" else 0, context=context)
        if len(prompt.ids) + job.sampling.max_new_tokens > lm.max_positions:
            raise APIError(422, f"messages: the prompt is {len(prompt.ids)} tokens and max_tokens "
                                f"{job.sampling.max_new_tokens}; together they exceed the LLM's {lm.max_positions} "
                                "positions", "messages")
        return prompt

    @torch.no_grad()
    def _generate(self, jobs: list[Job]) -> None:
        accepted, prompts = [], []
        for job in jobs:
            try:
                prompts.append(self._prompt(job))
                accepted.append(job)
            except APIError as exc:
                job.send("error", exc.status, exc.message)
        if not accepted:
            return
        self.metrics.batch(len(accepted))
        lm = self.lm
        emitters = []
        try:
            batch = collate_prompts(prompts, lm.tokenizer.pad_token_id, "left").to(lm.device)
            embeds = lm.llm.get_input_embeddings()(batch.input_ids)  # (B, T, d_llm)
            if accepted[0].method == "soft":
                examples = [Example(job.user_id, job.question, "", []) for job in accepted]
                soft = self.cache.soft_prompts(examples, batch)  # (B, K, d_llm)
                embeds = splice_soft_prompt(embeds, batch.soft_mask, soft)
            for job, prompt in zip(accepted, prompts):
                job.send("start", len(prompt.ids))
                emitters.append(TextEmitter(self._decode, lm.eos_ids, job.sampling.stop, self._sender(job),
                                            job.sampling.max_new_tokens))
            sampling = SamplingConfig(max_new_tokens=max(j.sampling.max_new_tokens for j in accepted),
                                      temperature=accepted[0].sampling.temperature, top_p=accepted[0].sampling.top_p,
                                      seed=accepted[0].sampling.seed)
            if self.settings.backend == "hf":
                self._hf(embeds, batch.attention_mask, sampling, emitters)
            else:
                self._vllm(embeds, batch.attention_mask, sampling, emitters)
        except Exception as exc:
            log.exception("generation failed for a batch of %d", len(accepted))
            for job in accepted:
                job.send("error", 500, f"generation failed: {type(exc).__name__}")
            return
        for job, prompt, emitter in zip(accepted, prompts, emitters):
            emitter.close()
            self.metrics.tokens(len(prompt.ids), len(emitter.ids))
            job.send("done", emitter.finish_reason, len(emitter.ids), emitter.text)

    def _hf(self, embeds: torch.Tensor, mask: torch.Tensor, sampling: SamplingConfig,
            emitters: list[TextEmitter]) -> None:
        from transformers import StoppingCriteriaList

        lm = self.lm
        config = generation_config(lm.tokenizer, lm.eos_ids, sampling)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sampling.seed)
            lm.llm.generate(inputs_embeds=embeds, attention_mask=mask, generation_config=config,
                            stopping_criteria=StoppingCriteriaList([TokenTap(emitters)]))

    def _vllm(self, embeds: torch.Tensor, mask: torch.Tensor, sampling: SamplingConfig,
              emitters: list[TextEmitter]) -> None:
        rows = self.lm.backend("vllm").generate_tokens(PromptEmbeds(embeds, mask), sampling)
        for emitter, tokens in zip(emitters, rows):
            for token in tokens:
                emitter.push(token)
                if emitter.done:
                    break

    def _decode(self, ids: list[int]) -> str:
        return self.lm.tokenizer.decode(ids, skip_special_tokens=True)

    def _sender(self, job: Job):
        def send(delta: str) -> None:
            if job.first_token_s is None:
                job.first_token_s = time.perf_counter() - job.created
                self.metrics.first_token(job.first_token_s)
            job.send("text", delta)

        return send

    # ---- other model work (call through :meth:`run`) -------------------------------------------
    @torch.no_grad()
    def embedding(self, user_id: str, question: str | None) -> torch.Tensor:
        """The pooled user vector (user_dim,), or for a question the soft prompt averaged over K (d_llm,)."""
        if question is None:
            return self.cache.user_vector(user_id).float().cpu()
        example = Example(user_id, question, "", [])
        prompt = self.lm.prompt_batch([example], with_answers=False)
        return self.cache.soft_prompts([example], prompt)[0].mean(0).float().cpu()  # (d_llm,)

    def apply_events(self, user_id: str, rows: list[dict]) -> int:
        """Lay acknowledged events over the user's history and drop the stale encoding; the new version."""
        self.users.apply(user_id, rows)
        self.cache.invalidate(user_id)
        return self.users.version(user_id)
