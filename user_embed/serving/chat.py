"""From OpenAI chat messages to the model's question, and from generated tokens back to text deltas.

The model was trained on one user turn (``[soft prompt] question``) under its recorded system prompt, so a
conversation becomes that turn: the last message must come from the user; earlier messages (a request's
system message included) are written before it as ``role: content`` lines. The soft prompt and the text
history take the same place they took in training.

:class:`TextEmitter` turns one row's token ids into the text deltas a stream sends: it decodes what it has,
holds back a tail that could still become a stop string (or half a UTF-8 character), and stops at
end-of-sequence or at the first stop string, exactly where ``PersonalizedLM.decode`` cuts.
"""

from __future__ import annotations

from collections.abc import Callable

from user_embed.generate.common import cut_at_stop
from user_embed.serving.errors import APIError
from user_embed.serving.schemas import ChatRequest
from user_embed.serving.settings import ServeSettings


def question_of(request: ChatRequest, settings: ServeSettings) -> str:
    """The conversation as one question; APIError (422) for empty, too many or too long messages."""
    messages = request.messages
    if len(messages) > settings.max_messages:
        raise APIError(422, f"messages: {len(messages)} messages, at most {settings.max_messages}", "messages")
    total = 0
    for i, message in enumerate(messages):
        length = len(message.text)
        if length > settings.max_message_chars:
            raise APIError(422, f"messages[{i}].content: {length} characters, at most {settings.max_message_chars}",
                           f"messages[{i}].content")
        total += length
    if total > settings.max_total_chars:
        raise APIError(422, f"messages: {total} characters in all, at most {settings.max_total_chars}", "messages")
    last = messages[-1]
    if last.role != "user":
        raise APIError(422, f"messages[{len(messages) - 1}].role: the last message must come from the user, "
                            f"got '{last.role}'", f"messages[{len(messages) - 1}].role")
    if not last.text.strip():
        raise APIError(422, f"messages[{len(messages) - 1}].content: empty message",
                       f"messages[{len(messages) - 1}].content")
    earlier = [f"{m.role}: {m.text.strip()}" for m in messages[:-1] if m.text.strip()]
    return "\n".join(earlier + [last.text.strip()])


class TextEmitter:
    """Incremental detokenisation of one generated row, with end-of-sequence and stop strings."""

    def __init__(self, decode: Callable[[list[int]], str], eos_ids: list[int], stop: list[str],
                 on_text: Callable[[str], None], max_tokens: int):
        self.decode, self.eos, self.stop, self.on_text = decode, set(eos_ids), stop, on_text
        self.max_tokens = max_tokens
        self.ids: list[int] = []
        self.sent = ""
        self.final: str | None = None  # the whole answer once done (what ``PersonalizedLM.decode`` returns)
        self.finish_reason: str | None = None

    @property
    def done(self) -> bool:
        return self.finish_reason is not None

    def push(self, token: int) -> None:
        if self.done:
            return
        if token in self.eos:
            self._finish(self.decode(self.ids), "stop")
            return
        self.ids.append(token)
        text = self.decode(self.ids)
        cut = cut_at_stop(text, self.stop)
        if cut != text:
            self._finish(cut, "stop")
            return
        self._send(text[: len(text) - self._held_back(text)])
        if len(self.ids) >= self.max_tokens:  # this row's budget (rows of one batch may differ)
            self._finish(cut, "length")

    def close(self) -> None:
        """The generation ended (token budget spent) without an end token or stop string."""
        if not self.done:
            self._finish(cut_at_stop(self.decode(self.ids), self.stop), "length")

    @property
    def text(self) -> str:
        return self.final if self.final is not None else self.sent

    def _finish(self, text: str, reason: str) -> None:
        self._send(text, final=True)
        self.final, self.finish_reason = text, reason

    def _send(self, text: str, final: bool = False) -> None:
        if not final:
            text = text.rstrip("\ufffd")  # half a multi-byte character: wait for the rest
        if text.startswith(self.sent) and len(text) > len(self.sent):
            delta, self.sent = text[len(self.sent):], text
            self.on_text(delta)

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        held = 0
        for stop in self.stop:
            for n in range(min(len(stop) - 1, len(text)), 0, -1):
                if text.endswith(stop[:n]):
                    held = max(held, n)
                    break
        return held
