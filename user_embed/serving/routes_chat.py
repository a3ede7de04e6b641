"""POST /v1/chat/completions: OpenAI's chat completion, personalized by the ``user`` field.

The model id picks the personalization (``user-embed``: the soft prompt when a user is named, else the
plain LLM; ``user-embed-soft``, ``user-embed-text``, ``user-embed-none``), and the ``personalization``
field overrides it. ``stream: true`` answers with server-sent events in OpenAI's chunk format, ending in
``data: [DONE]``. Temperature defaults to 0 (greedy, deterministic); a sampled request without a seed gets
a random one.
"""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter
from fastapi.responses import StreamingResponse

from user_embed.generate.common import SamplingConfig
from user_embed.serving.chat import question_of
from user_embed.serving.errors import APIError, error_body
from user_embed.serving.schemas import ChatRequest
from user_embed.serving.settings import MODELS
from user_embed.serving.worker import Job


def personalization(request: ChatRequest) -> str:
    """soft | text | none, from the model id and the ``personalization`` field."""
    if request.model not in MODELS:
        raise APIError(404, f"model '{request.model}' does not exist; this server has {', '.join(MODELS)}",
                       "model", "model_not_found")
    if request.personalization is not None:
        return request.personalization
    if request.model == "user-embed":
        return "soft" if request.user else "none"
    return request.model.removeprefix("user-embed-")


def sampling_of(request: ChatRequest, settings) -> SamplingConfig:
    max_tokens = request.max_completion_tokens or request.max_tokens or settings.default_max_tokens
    if max_tokens > settings.max_tokens_limit:
        field = "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
        raise APIError(422, f"{field}: {max_tokens} is above this server's limit of {settings.max_tokens_limit}",
                       field)
    temperature = float(request.temperature) if request.temperature is not None else 0.0
    seed = request.seed if request.seed is not None else (random.randrange(2 ** 31) if temperature > 0 else 0)
    return SamplingConfig(max_new_tokens=max_tokens, temperature=temperature,
                          top_p=float(request.top_p) if request.top_p is not None else 1.0, seed=seed,
                          stop=request.stops)


def chat_router(state) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/chat/completions")
    async def chat_completions(body: ChatRequest):
        method = personalization(body)
        if method != "none":
            if not body.user:
                raise APIError(422, f"user: personalization '{method}' needs the user id in `user`", "user")
            reason = state.users.unknown_reason(body.user)
            if reason:
                raise APIError(404, reason, "user", "user_not_found")
        question = question_of(body, state.settings)
        job = Job(body.user if method != "none" else None, question, method, sampling_of(body, state.settings),
                  asyncio.get_running_loop())
        state.worker.submit(job)
        first = await job.events.get()
        if first[0] == "error":
            raise APIError(first[1], first[2])
        prompt_tokens = first[1]
        answer = {"id": f"chatcmpl-{secrets.token_hex(12)}", "created": int(time.time()), "model": body.model}
        if body.stream:
            usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_stream(job, answer, prompt_tokens, usage, method),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        while True:
            event = await job.events.get()
            if event[0] == "error":
                raise APIError(event[1], event[2])
            if event[0] == "done":
                break
        _, reason, completion_tokens, text = event
        return {**answer, "object": "chat.completion", "system_fingerprint": None, "personalization": method,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": reason}],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}

    return router


async def _stream(job: Job, answer: dict, prompt_tokens: int, include_usage: bool, method: str) -> AsyncIterator[str]:
    """The answer as server-sent events: a role chunk, content chunks, the finish chunk, [usage], [DONE]."""

    def chunk(delta: dict, reason: str | None = None, **extra) -> str:
        body = {**answer, "object": "chat.completion.chunk", "system_fingerprint": None, "personalization": method,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}], **extra}
        return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

    yield chunk({"role": "assistant", "content": ""})
    while True:
        event = await job.events.get()
        if event[0] == "text":
            yield chunk({"content": event[1]})
        elif event[0] == "error":
            yield f"data: {json.dumps(error_body(event[1], event[2]))}\n\n"
            break
        elif event[0] == "done":
            _, reason, completion_tokens, _ = event
            yield chunk({}, reason)
            if include_usage:
                usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
                body = {**answer, "object": "chat.completion.chunk", "choices": [], "usage": usage}
                yield f"data: {json.dumps(body)}\n\n"
            break
    yield "data: [DONE]\n\n"
