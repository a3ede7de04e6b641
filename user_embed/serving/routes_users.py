"""The users' endpoints: append live events, read a user's embedding.

``POST /v1/users/{user_id}/events`` with ``{"events": [{"timestamp", "item_id", "source"?, "value"?,
"text"?}, ...]}`` checks every row (422 naming the first bad row and field; nothing is written then),
writes the batch durably to the events log, lays it over the user's history and drops the user's cached
encoding, then answers 201: the user's next request reads the new events. A new user id starts a history.

``GET /v1/users/{user_id}/embedding[?question=…]`` returns the pooled user vector, or with a question the
question-conditioned soft prompt averaged over its K vectors.
"""

from __future__ import annotations

import asyncio
import unicodedata

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from user_embed.errors import UserError
from user_embed.serving.errors import APIError
from user_embed.serving.schemas import EventsIn

MAX_USER_ID_CHARS = 256


def check_user_id(user_id: str) -> str:
    if not user_id.strip():
        raise APIError(422, "user_id: empty", "user_id")
    if len(user_id) > MAX_USER_ID_CHARS:
        raise APIError(422, f"user_id: {len(user_id)} characters, at most {MAX_USER_ID_CHARS}", "user_id")
    if any(unicodedata.category(c) == "Cc" for c in user_id):
        raise APIError(422, "user_id: contains control characters", "user_id")
    return user_id


def users_router(state) -> APIRouter:
    router = APIRouter()

    @router.post("/v1/users/{user_id}/events", status_code=201)
    async def append_events(user_id: str, body: EventsIn):
        users, settings = state.users, state.settings
        check_user_id(user_id)
        if len(body.events) > settings.max_events_per_request:
            raise APIError(422, f"events: {len(body.events)} events, at most {settings.max_events_per_request} "
                                "per request", "events")
        if users.log is None:
            raise APIError(503, "this server keeps no events log (start it on a data folder or with events_dir)")
        rows = users.check(body.events)
        new_user = user_id not in users
        try:
            await asyncio.to_thread(users.record, user_id, rows)  # durable (fsync) before anything else
        except UserError as exc:
            raise APIError(503, str(exc)) from exc
        version = await state.worker.run(state.worker.apply_events, user_id, rows)
        state.metrics.events(len(rows))
        return JSONResponse({"object": "user.events", "user": user_id, "appended": len(rows), "new_user": new_user,
                             "live_events": len(users.live.get(user_id, [])), "version": version}, status_code=201)

    @router.get("/v1/users/{user_id}/embedding")
    async def embedding(user_id: str, question: str | None = None):
        users, settings = state.users, state.settings
        check_user_id(user_id)
        reason = users.unknown_reason(user_id)
        if reason:
            raise APIError(404, reason, "user_id", "user_not_found")
        if question is not None:
            if not question.strip():
                raise APIError(422, "question: empty", "question")
            if len(question) > settings.max_message_chars:
                raise APIError(422, f"question: {len(question)} characters, at most {settings.max_message_chars}",
                               "question")
            question = question.strip()
        vector = await state.worker.run(state.worker.embedding, user_id, question)
        return {"object": "user.embedding", "user": user_id, "question": question,
                "kind": "user_vector" if question is None else "soft_prompt_mean", "dimension": int(vector.numel()),
                "version": users.version(user_id), "embedding": [round(float(x), 7) for x in vector.tolist()]}

    return router
