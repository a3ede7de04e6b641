"""GET /health (no key needed), GET /v1/models and GET /metrics (Prometheus text, or ``?format=json``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from user_embed.serving.errors import APIError
from user_embed.serving.settings import MODELS


def health_router(state) -> APIRouter:
    router = APIRouter()

    @router.get("/health")
    async def health():
        return {"status": "ok", "backend": state.settings.backend, "users": len(state.users),
                "soft_tokens": state.lm.num_tokens}

    return router


def meta_router(state) -> APIRouter:
    router = APIRouter()

    @router.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "user_embed",
                                            "description": text} for name, text in MODELS.items()]}

    @router.get("/v1/models/{model}")
    async def model(model: str):
        if model not in MODELS:
            raise APIError(404, f"model '{model}' does not exist; this server has {', '.join(MODELS)}", "model",
                           "model_not_found")
        return {"id": model, "object": "model", "created": 0, "owned_by": "user_embed", "description": MODELS[model]}

    @router.get("/metrics")
    async def metrics(format: str = "prometheus"):
        if format == "json":
            return state.metrics.to_json()
        if format != "prometheus":
            raise APIError(422, f"format: '{format}' is not one of prometheus, json", "format")
        return PlainTextResponse(state.metrics.to_prometheus(), media_type="text/plain; version=0.0.4")

    return router
