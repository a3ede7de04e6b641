"""Frozen text encoder (mean-pooled HF encoder, default offline MiniLM) with an on-disk vector cache.

``encode_texts(texts, model)`` returns (N, d) float32 vectors. Vectors are cached per
(model, text) under ``$USER_EMBED_HOME/vectors/<model-hash>/`` so each distinct text is
encoded once across runs; a cache file is written atomically.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch


def _cache_root() -> Path:
    from user_embed.assets import cache_home

    return cache_home() / "vectors"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


class TextEncoderModel:
    """Mean-pooled, L2-normalised sentence vectors from any HF encoder (frozen, eval mode)."""

    def __init__(self, name_or_path: str = "default", max_length: int = 256, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        from user_embed.assets import resolve_model

        self.path = resolve_model(name_or_path, "text_encoder")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path, use_safetensors=True).eval()
        self.max_length, self.batch_size = max_length, batch_size
        self.dim = int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: list[str]) -> np.ndarray:
        out = []
        for start in range(0, len(texts), self.batch_size):
            chunk = texts[start:start + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**enc).last_hidden_state  # (b, T, d)
            mask = enc["attention_mask"].unsqueeze(-1).float()  # (b, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (b, d)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
        return np.concatenate(out, 0).astype(np.float32) if out else np.zeros((0, self.dim), np.float32)


def encode_texts(texts: list[str], name_or_path: str = "default", use_cache: bool = True) -> np.ndarray:
    """(N, d) vectors for ``texts``; cached on disk by (model path, text)."""
    from user_embed.assets import resolve_model

    path = str(resolve_model(name_or_path, "text_encoder"))
    cache_file = _cache_root() / _digest(path)[:16] / "vectors.npz"
    cached: dict[str, np.ndarray] = {}
    if use_cache and cache_file.exists():
        with np.load(cache_file) as data:
            cached = dict(zip(data["keys"].tolist(), data["vectors"]))
    keys = [_digest(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts) if k not in cached}.items())
    if missing:
        model = TextEncoderModel(path)
        vectors = model.encode([t for _, t in missing])
        cached.update({k: v for (k, _), v in zip(missing, vectors)})
        if use_cache:
            _save(cache_file, cached)
    if not texts:
        return np.zeros((0, len(next(iter(cached.values()))) if cached else 0), np.float32)
    return np.stack([cached[k] for k in keys]).astype(np.float32)


def _save(path: Path, cached: dict[str, np.ndarray]) -> None:
    from data_pipelines.io import atomic_file

    with atomic_file(path, "wb") as out:
        np.savez(out, keys=np.array(list(cached)), vectors=np.stack(list(cached.values())))
