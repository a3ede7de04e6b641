"""Request bodies as pydantic models: OpenAI's chat completion request and the live events payload.

Fields OpenAI defines but this server does not use are ignored, as OpenAI ignores unknown ones; types
are strict where a silent conversion would hide a mistake (a rating sent as ``"4"``, a timestamp as
``1.5``). Size bounds (message count, lengths) are checked against :class:`ServeSettings` in the routes.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, field_validator

PERSONALIZATIONS = ("soft", "text", "none")


class ContentPart(BaseModel):
    """One part of a message's content; only text parts are read."""

    model_config = ConfigDict(extra="ignore")
    type: Literal["text"]
    text: StrictStr


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: StrictStr | list[ContentPart] | None = None

    @property
    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore")
    include_usage: StrictBool = False


class ChatRequest(BaseModel):
    """POST /v1/chat/completions (OpenAI's shape) + the ``personalization`` extension."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr
    messages: list[Message] = Field(min_length=1)
    user: StrictStr | None = None
    """The user whose history personalizes the answer (OpenAI's end-user id)."""
    personalization: Literal["soft", "text", "none"] | None = None
    """Overrides the model id's method: soft prompt, latest events as text, or none."""
    max_tokens: StrictInt | None = Field(default=None, ge=1)
    max_completion_tokens: StrictInt | None = Field(default=None, ge=1)
    temperature: StrictFloat | StrictInt | None = Field(default=None, ge=0, le=2)
    top_p: StrictFloat | StrictInt | None = Field(default=None, gt=0, le=1)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    n: StrictInt | None = Field(default=None, ge=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None

    @field_validator("n")
    @classmethod
    def one_choice(cls, value: int | None) -> int | None:
        if value is not None and value != 1:
            raise ValueError("only n=1 is supported (one answer per request)")
        return value

    @field_validator("stop")
    @classmethod
    def few_stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop strings")
        return value

    @property
    def stops(self) -> list[str]:
        if self.stop is None:
            return []
        return [s for s in ([self.stop] if isinstance(self.stop, str) else self.stop) if s]


class EventIn(BaseModel):
    """One event of the ``events`` schema (the user id comes from the path)."""

    model_config = ConfigDict(extra="ignore")
    timestamp: StrictInt
    """Unix time in seconds."""
    item_id: StrictStr | StrictInt
    source: StrictStr = "event"
    value: StrictFloat | StrictInt | None = None
    text: StrictStr | None = None

    @field_validator("value")
    @classmethod
    def finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @field_validator("source")
    @classmethod
    def named(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class EventsIn(BaseModel):
    """POST /v1/users/{user_id}/events."""

    model_config = ConfigDict(extra="ignore")
    events: list[EventIn] = Field(min_length=1)
