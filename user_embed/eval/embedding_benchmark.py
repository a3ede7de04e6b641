"""The embedding benchmark: is the user embedding a good representation beyond prompting the LLM?

:func:`run_embedding_benchmark` builds every representation of the benchmark's users
(:mod:`user_embed.eval.representations`) and measures each one the same way: linear probes on profile
and behaviour targets (:mod:`user_embed.eval.probes`), user↔text retrieval and recommendation from the
vector (:mod:`user_embed.eval.retrieval`); for the main embedder also the question-conditioned vector
against the generic one on each target that has an instruction. Returns one JSON-ready dict::

    {"users": {...}, "representations": {"<name>": {"dim", "what", "seconds"}},
     "probes": {"<target>": {"<representation>" | "majority": {"score", "low", "high", "accuracy", ...}}},
     "retrieval": {"<representation>": {"recall@1", "recall@5", "recall@10", "mrr", "protocol", ...}},
     "recommendation": {"<representation>" | "popularity": {"recall@10", "ndcg@10"}},
     "instruction_aware": {"<target>": {"question": {...}, "generic": {...}, "instruction": "..."}},
     "targets": {"<target>": {"kind", "source", "classes", "users"}}, "skipped_targets": {...}, "seconds": {...}}
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from user_embed.errors import UserError
from user_embed.eval import representations as reps
from user_embed.eval.embedding_targets import (Target, behaviour_targets, benchmark_users, profile_targets,
                                               select_targets)
from user_embed.eval.probes import majority, probe
from user_embed.eval.retrieval import mapped_retrieval, next_items, ranking_metrics, recommendation, retrieval_metrics

if TYPE_CHECKING:
    from user_embed.embedder import UserEmbedder
    from user_embed.model.personalized_lm import PersonalizedLM

GENERIC_INSTRUCTION = "Describe this user."


@dataclass
class EmbedderEntry:
    """A trained embedder to benchmark under ``name``; ``vector`` picks its head or its fused features."""

    name: str
    embedder: UserEmbedder
    vector: str = "head"


def run_embedding_benchmark(data_dir: str | Path, embedders: list[EmbedderEntry],
                            encoders: dict[str, str | Path] | None = None, lm: PersonalizedLM | None = None,
                            target_names: list[str] | None = None, folds: int = 5, seed: int = 0,
                            text_encoder: str = "default", baselines: bool = True, noun: str = "item") -> dict:
    """Benchmark the embedders (the first is the main one; ``lm`` wraps it for question-conditioned vectors),
    pre-trained sequence encoders ``{name: checkpoint}`` and, with ``baselines``, the category histogram,
    mean text vector and random projection, on the users of ``data_dir``'s UserQA splits."""
    from user_embed.data.spec import DataSpec
    from user_embed.store import UserStore
    from user_embed.text_vectors import encode_texts

    if folds < 2:
        raise UserError(f"folds must be at least 2, got {folds}")
    started = time.perf_counter()
    store = UserStore.from_folder(data_dir)
    users = benchmark_users(data_dir)
    held, train, ids = users.held_out, users.train, users.all
    spec = DataSpec.from_tables(store.events, store.items, store.users)
    found, skipped = profile_targets(store.users, held, folds)
    behaviour, skipped_behaviour = behaviour_targets(store.events, store.items, held, users.cutoffs, folds, noun)
    targets = select_targets(found + behaviour, {**skipped, **skipped_behaviour}, target_names, str(data_dir))

    vectors, described, seconds = {}, {}, {}
    def add(name: str, what: str, build) -> None:
        start = time.perf_counter()
        vectors[name] = np.asarray(build(), dtype=np.float32)  # (len(ids), d)
        seconds[name] = round(time.perf_counter() - start, 2)
        described[name] = {"dim": int(vectors[name].shape[1]), "what": what, "seconds": seconds[name]}

    for entry in embedders:
        add(entry.name, f"trained embedder ({'user head' if entry.vector == 'head' else 'pooled features'})",
            lambda e=entry: reps.embedder_vectors(e.embedder, store, ids, users.cutoffs, e.vector))
    for name, checkpoint in (encoders or {}).items():
        add(name, f"pre-trained encoder state ({Path(checkpoint).name})",
            lambda c=checkpoint: reps.sequence_encoder_state(c, store, ids, users.cutoffs))
    if baselines:
        item_vectors = encode_texts(spec.item_texts, text_encoder)  # (n_items, d_text), cached on disk
        add("category_histogram", "share of each category in the history + log(1 + events)",
            lambda: reps.category_histogram(store.events, store.items, ids, users.cutoffs))
        add("mean_text_vector", "mean frozen text vector of the history's items",
            lambda: reps.mean_text_vector(store.events, spec.item_ids, item_vectors, ids, users.cutoffs))
        add("random_projection", "Gaussian random projection of the bag of items",
            lambda: reps.random_projection(store.events, spec.item_ids, ids, users.cutoffs, seed=seed))
    position = {u: i for i, u in enumerate(ids)}
    held_rows, train_rows = [position[u] for u in held], [position[u] for u in train]

    result: dict = {"users": {"train": len(train), "held_out": len(held), "held_out_splits": ["val", "test"]},
                    "representations": described, "folds": folds, "seed": seed,
                    "targets": {t.name: {"kind": t.kind, "source": t.source, "classes": t.classes,
                                         "users": sum(label is not None for label in t.labels)} for t in targets},
                    "skipped_targets": {**skipped, **skipped_behaviour}}
    start = time.perf_counter()
    result["probes"] = {t.name: {"majority": majority(t, folds, seed),
                                 **{name: probe(v[held_rows], t, folds, seed) for name, v in vectors.items()}}
                        for t in targets}
    seconds["probes"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    result["retrieval"] = _retrieval(store, train, held, vectors, train_rows, held_rows, embedders, text_encoder,
                                     seed)
    seconds["retrieval"] = round(time.perf_counter() - start, 2)

    start = time.perf_counter()
    future, seen = next_items(store.events, ids, users.cutoffs, spec.item_ids)  # (N, n_items) each
    counts = reps.item_bag(store.events, spec.item_ids, train, users.cutoffs).sum(0).A1 + future[train_rows].sum(0)
    result["recommendation"] = {"popularity": ranking_metrics(np.broadcast_to(counts, (len(held_rows), len(counts))),
                                                              future[held_rows], seen[held_rows])}
    for name, v in vectors.items():
        result["recommendation"][name] = recommendation(v[train_rows], future[train_rows], v[held_rows],
                                                        future[held_rows], seen[held_rows])
    seconds["recommendation"] = round(time.perf_counter() - start, 2)

    if lm is not None and embedders:
        start = time.perf_counter()
        result["instruction_aware"] = _instruction_aware(lm, store, held, users.cutoffs, targets, folds, seed)
        seconds["instruction_aware"] = round(time.perf_counter() - start, 2)
    seconds["total"] = round(time.perf_counter() - started, 2)
    result["seconds"] = seconds
    return result


def _retrieval(store, train: list[str], held: list[str], vectors: dict[str, np.ndarray], train_rows: list[int],
               held_rows: list[int], embedders: list[EmbedderEntry], text_encoder: str, seed: int) -> dict:
    """Each representation's user↔text retrieval among the held-out users (see :mod:`retrieval`)."""
    import torch

    from user_embed.text_vectors import encode_texts

    if store.texts is None or not len(store.texts):
        return {}
    texts = store.texts.unique("user_id", keep="first", maintain_order=True)
    by_user = dict(zip(texts["user_id"].to_list(), texts["text"].to_list()))
    keep_train = [r for u, r in zip(train, train_rows) if u in by_user]
    keep_held = [(u, r) for u, r in zip(held, held_rows) if u in by_user]
    held_ids, held_rows = [u for u, _ in keep_held], [r for _, r in keep_held]
    train_ids = [u for u in train if u in by_user]
    out = {}
    spaces = {e.name: e.embedder for e in embedders if e.embedder.text_space is not None and e.vector == "head"}
    encoders = {name: e.text_space_config["text_encoder"] for name, e in spaces.items()}
    text_vectors = {}
    for encoder in {text_encoder, *encoders.values()}:
        text_vectors[encoder] = encode_texts([by_user[u] for u in train_ids + held_ids], encoder)
    train_texts, held_texts = text_vectors[text_encoder][: len(train_ids)], text_vectors[text_encoder][len(train_ids):]
    ridge_protocol = "ridge map to the text vectors, fitted on train users"
    for name, v in vectors.items():
        ridge = {**mapped_retrieval(v[keep_train], train_texts, v[held_rows], held_texts, seed),
                 "protocol": ridge_protocol}
        if name in spaces:
            t = torch.from_numpy(text_vectors[encoders[name]][len(train_ids):])
            similarity = spaces[name].text_similarity(torch.from_numpy(v[held_rows]), t).numpy()
            out[name] = {**retrieval_metrics(similarity, seed), "protocol": "the embedder's contrastive space"}
            out[f"{name}_linear_map"] = ridge
        else:
            out[name] = ridge
    return out


def _instruction_aware(lm: PersonalizedLM, store, held: list[str], cutoffs: dict[str, int], targets: list[Target],
                       folds: int, seed: int) -> dict:
    """Per target with an instruction: probes on the soft prompt conditioned on it vs on a generic instruction."""
    generic = reps.question_vectors(lm, store, held, cutoffs, GENERIC_INSTRUCTION)  # (N, d_llm)
    out = {}
    for target in targets:
        if not target.instruction:
            continue
        asked = reps.question_vectors(lm, store, held, cutoffs, target.instruction)  # (N, d_llm)
        out[target.name] = {"instruction": target.instruction, "generic_instruction": GENERIC_INSTRUCTION,
                            "question": probe(asked, target, folds, seed), "generic": probe(generic, target, folds,
                                                                                            seed)}
    return out
