"""LightningDataModule over the unified parquet tables (events, items, users, qa, texts).

``setup()`` reads and validates the tables (a :class:`~user_embed.store.UserStore` + ``qa``), builds (or
reuses) the :class:`DataSpec`,
computes frozen text vectors (item texts for ``text`` sources, user texts for the
contrastive loss; cached on disk), and serves :class:`UserBatch` es of QA examples per split.
Users with no events before a cutoff get an empty history (profile-only embedding), by rule.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import DataLoader

from data_pipelines.schema import read_table
from user_embed.data.collate import Collator, Example
from user_embed.data.history import UserHistories
from user_embed.data.questions import questions_by_split
from user_embed.data.sampler import ResumableDataLoader, ResumableSampler
from user_embed.data.spec import DataSpec
from user_embed.domains import check_number, check_positive
from user_embed.errors import ConfigError
from user_embed.store import UserStore

log = logging.getLogger(__name__)


class UserDataModule(L.LightningDataModule):
    def __init__(self, data_dir: str = "data/ml-100k", batch_size: int = 16, eval_batch_size: int = 32,
                 max_history: int = 50, text_encoder: str = "default", item_text_vectors: bool = True,
                 contrastive_texts: bool = True, tasks: list[str] | None = None,
                 max_eval_per_task: int | None = None, max_eval_users: int | None = None,
                 profile_fields: list[str] | None = None, seed: int = 0, num_workers: int = 0):
        """
        Args:
            data_dir: folder written by ``user-embed prepare`` (events/items/users/qa[/texts].parquet).
            batch_size: training questions per batch.
            eval_batch_size: questions per validation/test batch.
            max_history: events per user read from before each question's cutoff (most recent kept).
            text_encoder: frozen text encoder for item texts and user texts (``default`` = offline MiniLM).
            item_text_vectors: compute item text vectors (needed by ``text`` sources).
            contrastive_texts: load the ``texts`` table's vectors for the contrastive loss.
            tasks: only these UserQA tasks (None = all).
            max_eval_per_task: cap on val/test questions per task (None = all), chosen with ``seed``.
            max_eval_users: cap on val/test users (None = all), chosen with ``seed``; each chosen user
                keeps all their questions, so a text baseline can share one history prefix per user.
            profile_fields: profile columns of ``users`` to use (None = all).
            seed: fixes shuffling and evaluation subsets.
            num_workers: DataLoader workers.
        """
        super().__init__()
        check_positive("data", integer=True, batch_size=batch_size, eval_batch_size=eval_batch_size,
                       max_history=max_history)
        for name, cap in (("max_eval_per_task", max_eval_per_task), ("max_eval_users", max_eval_users)):
            check_number(f"data.{name}", cap, low=0, low_open=True, integer=True, allow=(None,))
        check_number("data.num_workers", num_workers, low=0, integer=True)
        check_number("data.seed", seed, integer=True)
        self.data_dir = Path(data_dir)
        self.batch_size, self.eval_batch_size, self.max_history = batch_size, eval_batch_size, max_history
        self.text_encoder, self.item_text_vectors, self.contrastive_texts = text_encoder, item_text_vectors, contrastive_texts
        self.tasks, self.max_eval_per_task, self.profile_fields = tasks, max_eval_per_task, profile_fields
        self.max_eval_users, self.seed, self.num_workers = max_eval_users, seed, num_workers
        self.spec: DataSpec | None = None
        self.examples: dict[str, list[Example]] = {}
        self.collator: Collator | None = None
        self.store: UserStore | None = None
        self.tables: dict[str, pl.DataFrame] = {}
        self.stats: dict = {}

    @property
    def text_dim(self) -> int | None:
        """Width of the contrastive texts' vectors (None without contrastive texts)."""
        vectors = self.collator.user_text_vectors if self.collator is not None else None
        return len(next(iter(vectors.values()))) if vectors else None

    def use_spec(self, spec: DataSpec) -> None:
        """Reuse a trained embedder's vocabularies instead of building new ones from this data."""
        self.spec = spec

    def setup(self, stage: str | None = None) -> None:
        if self.collator is not None:
            return
        if not self.data_dir.is_dir():
            raise ConfigError(f"data.data_dir '{self.data_dir}' does not exist "
                              f"(build it with `user-embed prepare movielens-100k --out {self.data_dir}`)")
        store = UserStore.from_folder(self.data_dir)
        qa = read_table(self.data_dir, "qa")
        self.store = store
        self.tables = {"events": store.events, "items": store.items, "users": store.users, "qa": qa,
                       **({"texts": store.texts} if store.texts is not None else {})}
        if self.spec is None:
            self.spec = DataSpec.from_tables(store.events, store.items, store.users, self.profile_fields)
        spec = self.spec
        if self.item_text_vectors and self.text_encoder not in spec.item_vectors:
            self._attach_item_vectors(spec, store.items)
        user_vectors = None
        if self.contrastive_texts and store.texts is not None and len(store.texts):
            user_vectors = self._user_text_vectors(store.texts)
        self.collator = store.collator(spec, self.max_history, user_vectors)
        histories = store.histories(spec)
        self.examples = self._examples(qa)
        self.stats = {"unknown_item_events": histories.unknown_item_events,
                      "examples": {k: len(v) for k, v in self.examples.items()},
                      "users_without_events": int((~store.users["user_id"].is_in(list(histories.offsets))).sum()),
                      "truncation": self._truncation(histories)}
        rank_zero_info(f"data {self.data_dir}: {self.stats}")

    def _truncation(self, histories: UserHistories) -> dict:
        """How many questions see a history cut to the most recent ``max_history`` events (policy "recent"),
        and how many see no event at all before their cutoff (profile-only soft prompt)."""
        cut = empty = 0
        for examples in self.examples.values():
            for ex in examples:
                window = histories.window(ex.user_id, ex.cutoff, self.max_history)
                cut += window.truncated > 0
                empty += len(window.items) == 0
        return {"policy": "recent", "max_history": self.max_history, "questions_truncated": cut,
                "questions_without_events": empty}

    def _attach_item_vectors(self, spec: DataSpec, items: pl.DataFrame) -> None:
        from user_embed.text_vectors import encode_texts

        if not spec.item_texts:  # spec loaded from a checkpoint: rebuild texts in the spec's item order
            fresh = DataSpec.from_tables(pl.DataFrame({"value": [1.0]}), items, pl.DataFrame({"user_id": ["-"]}))
            by_id = dict(zip(fresh.item_ids, fresh.item_texts))
            spec.item_texts = [by_id.get(i, i) for i in spec.item_ids]
        vectors = encode_texts(spec.item_texts, self.text_encoder)  # (n_items, d_text)
        table = torch.zeros(spec.num_items, vectors.shape[1])  # rows 0 (pad) and 1 (unknown) stay zero
        table[2:] = torch.from_numpy(vectors)
        spec.item_vectors[self.text_encoder] = table
        spec.text_dims[self.text_encoder] = int(vectors.shape[1])

    def _user_text_vectors(self, texts: pl.DataFrame) -> dict[str, np.ndarray]:
        from user_embed.text_vectors import encode_texts

        first = texts.unique("user_id", keep="first", maintain_order=True)
        vectors = encode_texts(first["text"].to_list(), self.text_encoder)
        return dict(zip(first["user_id"].to_list(), vectors))

    def _examples(self, qa: pl.DataFrame) -> dict[str, list[Example]]:
        return questions_by_split(qa, self.tasks, self.max_eval_per_task, self.max_eval_users, self.seed,
                                  source=str(self.data_dir / "qa.parquet"), categories=self.spec.categories)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if self.collator is None:
            self.setup()
        examples = self.examples.get(split) or []
        if not examples:
            raise ConfigError(f"no '{split}' questions in {self.data_dir / 'qa.parquet'}")
        # An own generator: starting an epoch never draws from the global RNG (which dropout uses), so
        # a resumed run's random stream matches the uninterrupted run's.
        generator = torch.Generator().manual_seed(self.seed)
        if not shuffle:
            return DataLoader(examples, batch_size=self.eval_batch_size, shuffle=False, collate_fn=self.collator,
                              num_workers=self.num_workers, generator=generator, drop_last=False)
        # The shuffle depends only on (seed, epoch) and resumes mid-epoch from a checkpoint (see data/sampler.py).
        self._train_sampler = ResumableSampler(len(examples), self.batch_size, self.seed)
        return ResumableDataLoader(examples, batch_size=self.batch_size, sampler=self._train_sampler,
                                   collate_fn=self.collator, num_workers=self.num_workers, generator=generator,
                                   drop_last=False)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Count training batches consumed, so a checkpoint knows where in the epoch the run is."""
        sampler = getattr(self, "_train_sampler", None)
        trainer = getattr(self, "trainer", None)
        if sampler is not None and trainer is not None and trainer.training:
            sampler.mark_consumed()
        return batch

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
