"""Chat prompts with a slot for the soft prompt, tokenised once per part.

The user message is ``[<soft slot>\\n][<context>\\n]<question>``, or ``<question>\\n<soft slot>`` with
``soft_position="after"``; the chat template is rendered with a placeholder at the slot and split
there, so the K soft vectors sit inside the template exactly where text would. Training,
evaluation and generation all build prompts here, so placement is always the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PLACEHOLDER = "\u241fUSER_EMBEDDING\u241f"


@dataclass
class PromptIds:
    """Token ids of one prompt (+ optional answer), with the soft slot as ``num_soft`` dummy ids."""

    ids: list[int]
    soft_start: int = -1  # index of the first soft position, -1 = none
    num_soft: int = 0
    answer_start: int = -1  # index of the first answer token, -1 = no answer
    question_ids: list[int] = field(default_factory=list)

    @property
    def prompt_length(self) -> int:
        return self.answer_start if self.answer_start >= 0 else len(self.ids)


class PromptBuilder:
    """Builds :class:`PromptIds` for questions with or without a soft slot / text context."""

    def __init__(self, tokenizer, system_prompt: str | None = "", user_label: str = "User profile:",
                 soft_position: str = "before"):
        self.tokenizer = tokenizer
        self.soft_position = soft_position
        self.system_prompt = system_prompt
        self.user_label = user_label
        self.end_ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    def _render(self, content: str) -> str:
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            messages = [{"role": "user", "content": content}]
            if self.system_prompt is not None:
                messages.insert(0, {"role": "system", "content": self.system_prompt})
            try:
                return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            except Exception:  # templates without a system role (e.g. Gemma)
                return tok.apply_chat_template(messages[-1:], tokenize=False, add_generation_prompt=True)
        return f"{content}\nAnswer:"

    def _tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def build(self, question: str, answer: str | None = None, num_soft: int = 0, context: str | None = None,
              dummy_id: int | None = None) -> PromptIds:
        """Prompt ids; ``num_soft`` > 0 reserves that many positions (filled by the soft prompt)."""
        parts = []
        slot = f"{self.user_label} {PLACEHOLDER}" if num_soft else None
        if slot and self.soft_position == "before":
            parts.append(slot)
        if context:
            parts.append(context)
        parts.append(question)
        if slot and self.soft_position == "after":
            parts.append(slot)
        text = self._render("\n".join(parts))
        bos = [self.tokenizer.bos_token_id] if self._needs_bos(text) else []
        dummy = self.tokenizer.pad_token_id if dummy_id is None else dummy_id
        if num_soft:
            before, after = text.split(PLACEHOLDER)
            head = bos + self._tokens(before)
            ids = head + [dummy] * num_soft + self._tokens(after)
            soft_start = len(head)
        else:
            ids, soft_start = bos + self._tokens(text), -1
        answer_start = -1
        if answer is not None:
            answer_start = len(ids)
            ids = ids + self._tokens(answer) + self.end_ids
        return PromptIds(ids=ids, soft_start=soft_start, num_soft=num_soft, answer_start=answer_start,
                         question_ids=self._tokens(question))

    def answer_ids(self, answer: str) -> list[int]:
        """Tokens of an answer (as scored after the prompt), without the end token."""
        return self._tokens(answer)

    def _needs_bos(self, text: str) -> bool:
        tok = self.tokenizer
        return bool(getattr(tok, "add_bos_token", False)) and tok.bos_token_id is not None and not (
            tok.bos_token and text.startswith(tok.bos_token))
