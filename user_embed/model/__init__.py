"""The inference model: :class:`PersonalizedLM` (embedder + frozen LLM + tokenizer + prompt builder)."""

from user_embed.model.personalized_lm import METHODS, PersonalizedLM

__all__ = ["METHODS", "PersonalizedLM"]
