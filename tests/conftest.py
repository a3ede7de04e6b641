"""Shared fixtures: a tiny random Llama + tokenizer built in-process, and a tiny prepared data dir.

Nothing here touches the network or the model cache: the tokenizer is a word-level
tokenizer fitted on a few hundred words, with a ChatML chat template like SmolLM2's.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WORDS = (
    "which what how many is the this user watched most overall recently genre genres movie movies category options "
    "answer with one option of last items rated high low more less did watch compared earlier next first after "
    "profile history drama comedy action horror romance thriller sci-fi war western crime musical mystery fantasy "
    "animation children's documentary film-noir adventure 0 1 2 3 4 5 6 7 8 9 10 1-2 3-5 6-10 yes no a an and or "
    "to in on for by from : , . ? ( ) [ ] - | user: assistant: system: profile: fact color red blue green"
).split()


def build_tiny_llm(folder: Path, hidden: int = 64, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """Save a random 2-layer Llama (head_dim 32) + word-level ChatML tokenizer into ``folder``."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    special = ["<|pad|>", "<|unk|>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(special + ["\n"] + sorted(set(WORDS)))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split("\n", "isolated"),
                                                  pre_tokenizers.WhitespaceSplit()])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", unk_token="<|unk|>",
                                   eos_token="<|im_end|>", bos_token="<|im_start|>",
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])
    fast.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=512, pad_token_id=0, eos_token_id=vocab["<|im_end|>"],
                         bos_token_id=vocab["<|im_start|>"], tie_word_embeddings=True)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llm_dir(tmp_path_factory) -> Path:
    return build_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


def write_tiny_dataset(folder: Path, n_users: int = 24, events_per_user: int = 12, seed: int = 0,
                       user_ids: list[str] | None = None) -> Path:
    """A small valid data dir: each user prefers one genre; qa asks for it (answer = the preferred genre).

    User ``u`` is called ``user_ids[u]`` when given (default ``f"u{u}"``)."""
    import random

    from data_pipelines.io import write_tables

    rng = random.Random(seed)
    genres = ["drama", "comedy", "action", "horror"]
    items = pl.DataFrame({
        "item_id": [f"i{i}" for i in range(16)],
        "title": [f"movie {i}" for i in range(16)],
        "categories": [[genres[i % 4]] for i in range(16)],
    })
    events, users, qa, texts = [], [], [], []
    names = user_ids or [f"u{u}" for u in range(n_users)]
    for u in range(n_users):
        name = names[u]
        fav = genres[u % 4]
        other = genres[(u + 1 + u // 4) % 4] if genres[(u + 1 + u // 4) % 4] != fav else genres[(u + 2) % 4]
        picks = [i for i in range(16) if genres[i % 4] == fav]
        for t in range(events_per_user):
            item = rng.choice(picks) if rng.random() < 0.9 else rng.randrange(16)
            events.append((name, 1_000_000 + 3600 * t, "rating", f"i{item}", float(rng.randint(1, 5)), None))
        users.append((name, 20 + u, "MF"[u % 2]))
        split = "train" if u < n_users * 2 // 3 else ("val" if u < n_users * 5 // 6 else "test")
        options = [fav, other] if rng.random() < 0.5 else [other, fav]
        qa.append((name, f"which genre has this user watched most ? options : {options[0]} , {options[1]}",
                   fav, options, "top_genre", "interest_perception", 1_000_000 + 3600 * events_per_user, split))
        texts.append((name, f"this user watched most {fav}"))
    tables = {
        "events": pl.DataFrame(events, schema=["user_id", "timestamp", "source", "item_id", "value", "text"],
                               orient="row", schema_overrides={"text": pl.Utf8}),
        "items": items,
        "users": pl.DataFrame(users, schema=["user_id", "age", "gender"], orient="row"),
        "qa": pl.DataFrame(qa, schema=["user_id", "question", "answer", "options", "task", "family", "cutoff", "split"],
                           orient="row"),
        "texts": pl.DataFrame(texts, schema=["user_id", "text"], orient="row"),
    }
    return write_tables(folder, tables, {"tiny": True})


@pytest.fixture()
def tiny_data_dir(tmp_path) -> Path:
    return write_tiny_dataset(tmp_path / "data")


def build_tiny_text_encoder(folder: Path, tokenizer_dir: Path, hidden: int = 32, seed: int = 0) -> Path:
    """Save a random 1-layer BERT that reuses the tiny LLM's word-level tokenizer (a stand-in for MiniLM)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=128,
                        pad_token_id=tokenizer.pad_token_id)
    folder.mkdir(parents=True, exist_ok=True)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_text_encoder_dir(tmp_path_factory, tiny_llm_dir) -> Path:
    """A tiny BERT folder to pass as ``text_encoder`` (item texts, contrastive user texts) instead of MiniLM."""
    return build_tiny_text_encoder(tmp_path_factory.mktemp("tiny-text-encoder"), tiny_llm_dir)


@pytest.fixture(scope="session")
def real_ml100k() -> Path:
    """The offline MovieLens-100k (RecBole atomic files) from the assets cache; fetched on first use, as
    `make test` does before the suite (`user-embed assets`)."""
    from user_embed.assets import movielens_100k_dir

    return movielens_100k_dir()


@pytest.fixture()
def user_embed_home(tmp_path, monkeypatch) -> Path:
    """Point ``USER_EMBED_HOME`` (asset and text-vector caches) at a fresh tmp folder for one test."""
    home = tmp_path / "user-embed-home"
    monkeypatch.setenv("USER_EMBED_HOME", str(home))
    return home


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run torch on one thread for a test module: tiny models gain nothing from a second thread, and two
    threads spinning on a shared 2-core machine make them ten times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
