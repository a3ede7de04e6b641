"""Errors in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``, and their FastAPI handlers.

Every failure the server answers — bad JSON, a wrong type, an unknown user, a missing key, a body too
large, an internal error — comes back in this shape, so OpenAI clients raise their usual exceptions.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("user_embed.serving")

ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
               405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
               500: "server_error", 503: "server_error"}


class APIError(Exception):
    """An error answered as JSON with ``status`` (message names the field or id; ``param`` the field)."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


def error_body(status: int, message: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"),
                      "param": param, "code": code}}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


def field_path(loc: tuple) -> str:
    """A pydantic location as a field path, e.g. ('body', 'messages', 0, 'content') → 'messages[0].content'."""
    out = ""
    for part in loc:
        if part in ("body", "query", "path") and not out:
            continue
        if isinstance(part, int):
            out += f"[{part}]"
        elif not isinstance(part, str) or part.startswith(("function-", "union[")) or part in ("str", "list[str]"):
            continue  # pydantic's names of union members, not fields
        else:
            out += f".{part}" if out else part
    return out or "body"


def validation_message(exc: RequestValidationError) -> tuple[int, str, str | None]:
    """(status, message, param) for the first problem of a request that failed validation."""
    problems = exc.errors()
    if not problems:
        return 422, "invalid request", None
    first = problems[0]
    if first.get("type") == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return 400, f"the request body is not valid JSON{': ' + str(detail) if detail else ''}", None
    path = field_path(tuple(first.get("loc", ())))
    if path == "body" and first.get("type") in ("model_attributes_type", "dict_type", "missing"):
        return 422, "the request body must be a JSON object", None
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return 422, f"{path}: {message}", path


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error in OpenAI's shape; an unexpected exception becomes a 500 and is logged."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.param, exc.code)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message, param = validation_message(exc)
        return error_response(status, message, param, "invalid_value" if status == 422 else "invalid_json")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "error"
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.method} {request.url.path}"
        return error_response(exc.status_code, message, headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("request %s %s failed", request.method, request.url.path)
        return error_response(500, f"internal error: {type(exc).__name__}")
