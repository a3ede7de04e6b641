"""create_app: the FastAPI application over a PersonalizedLM and its users.

FastAPI (on uvicorn) because it gives OpenAI-shaped JSON validation (pydantic), server-sent events and
an asyncio loop in which requests can wait for the one model thread cheaply; the model itself runs on
:class:`~user_embed.serving.worker.ModelWorker`'s thread.

Routes: ``POST /v1/chat/completions``, ``POST /v1/users/{id}/events``, ``GET /v1/users/{id}/embedding``,
``GET /v1/models``, ``GET /metrics`` (all behind the API key when one is set) and ``GET /health``.
"""

from __future__ import annotations

import dataclasses
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI

from user_embed.serving.errors import install_error_handlers
from user_embed.serving.event_log import EventLog
from user_embed.serving.guard import Guard
from user_embed.serving.live_users import LiveUsers
from user_embed.serving.metrics import Metrics
from user_embed.serving.routes_chat import chat_router
from user_embed.serving.routes_meta import health_router, meta_router
from user_embed.serving.routes_users import users_router
from user_embed.serving.settings import ServeSettings
from user_embed.serving.user_cache import EncodingCache
from user_embed.serving.worker import ModelWorker
from user_embed.store import UserStore


@dataclass
class ServerState:
    """What the routes share."""

    lm: object
    users: LiveUsers
    settings: ServeSettings
    metrics: Metrics
    cache: EncodingCache
    worker: ModelWorker


def live_users(lm, users: LiveUsers | UserStore, settings: ServeSettings) -> LiveUsers:
    """``users`` as LiveUsers; a UserStore read from a folder logs its events to ``<folder>/live_events``
    (or ``settings.events_dir``); one built from frames keeps a log only with ``events_dir``."""
    if isinstance(users, LiveUsers):
        return users
    folder = settings.events_dir
    if folder is None and users.origin != "frames" and Path(users.origin).is_dir():
        folder = Path(users.origin) / "live_events"
    return LiveUsers(users, lm.embedder.spec, EventLog(folder) if folder is not None else None)


def create_app(lm, users: LiveUsers | UserStore, settings: ServeSettings | None = None, **overrides) -> FastAPI:
    """The HTTP app for ``lm`` (a PersonalizedLM) over ``users``; ``overrides`` replace ServeSettings fields."""
    settings = dataclasses.replace(settings or ServeSettings(), **overrides)
    lm.eval()
    if settings.backend == "vllm":
        lm.backend("vllm")  # one clear line when vLLM is missing, before serving
    live = live_users(lm, users, settings)
    metrics = Metrics()
    cache = EncodingCache(lm, live, settings.cache_size)
    metrics.cache = cache
    state = ServerState(lm, live, settings, metrics, cache, ModelWorker(lm, live, cache, settings, metrics))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await state.worker.start()
        yield
        await state.worker.stop()

    app = FastAPI(title="user_embed", description="Personalized answers through user embeddings "
                  "(OpenAI-compatible)", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.server = state
    install_error_handlers(app)
    for router in (health_router(state), chat_router(state), users_router(state), meta_router(state)):
        app.include_router(router)
    app.add_middleware(Guard, limit=settings.max_body_bytes, metrics=metrics, api_key=settings.api_key)
    return app
