"""Next-item pre-training data: users' event sequences cut into windows, and held-out targets.

Protocols (``protocol``):

* ``user_disjoint`` (default) — users are split into train / val / test; the encoder trains on
  train users' whole sequences and is evaluated on the last ``eval_last`` events of each
  held-out user, predicted from the events before them. ``split: qa`` reuses the UserQA split
  of ``qa.parquet`` (so pre-training never sees the downstream test users); ``split: random``
  draws ``val_fraction`` / ``test_fraction`` of users with ``seed``.
* ``leave_last_out`` — every user's last ``eval_last`` events are test targets, the
  ``eval_last`` before them validation targets, the rest trains (the SASRec protocol).

Training windows: each training sequence is cut from its end into windows of ``max_len + 1``
events that overlap by one, so every event after a user's first is a target exactly once and
no event is dropped. Truncation policy ``recent``: an evaluation target is predicted from the
``max_len`` most recent events before it; the events before that are not read and are counted.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import polars as pl
import torch
from torch.utils.data import DataLoader

from data_pipelines.report import RowReport
from data_pipelines.schema import read_table
from user_embed.data.collate import gap_buckets
from user_embed.data.history import UserHistories, category_table
from user_embed.data.spec import PAD, UNKNOWN_ITEM, DataSpec
from user_embed.domains import check_number
from user_embed.encoders.base import SourceInputs
from user_embed.errors import ConfigError

log = logging.getLogger(__name__)

PROTOCOLS = ("user_disjoint", "leave_last_out")
USER_SPLITS = ("qa", "random")


@dataclass
class NextItemBatch:
    """inputs: (B, L) histories; targets: (B, L) the item after each input position (0 = none).

    seen: (2, nnz) long (row, item) pairs of items each row's user had before its last target
    (evaluation batches only, to exclude them from the ranking); None for training batches.
    """

    inputs: SourceInputs
    targets: torch.Tensor
    seen: torch.Tensor | None = None

    def to(self, device) -> "NextItemBatch":
        seen = self.seen.to(device) if self.seen is not None else None
        return NextItemBatch(self.inputs.to(device), self.targets.to(device), seen)

    def __len__(self) -> int:
        return self.targets.shape[0]


@dataclass
class EventLog:
    """All events as flat arrays sorted by (user, time); user ``u`` owns rows ``starts[u]:ends[u]``."""

    items: np.ndarray  # (n,) item index (1 = unknown item)
    values: np.ndarray  # (n,) standardised value, 0 where missing
    has_value: np.ndarray  # (n,) bool
    timestamps: np.ndarray  # (n,) int64
    users: list[str]
    starts: np.ndarray  # (U,)
    ends: np.ndarray  # (U,)
    unknown_item_events: int = 0

    @classmethod
    def from_events(cls, events: pl.DataFrame, spec: DataSpec) -> "EventLog":
        histories = UserHistories(events, spec)
        users = list(histories.offsets)
        bounds = np.array([histories.offsets[u] for u in users], dtype=np.int64).reshape(-1, 2)
        return cls(histories.items, histories.values.astype(np.float32), histories.has_value,
                   histories.timestamps.astype(np.int64), users, bounds[:, 0], bounds[:, 1],
                   histories.unknown_item_events)


def training_windows(starts: np.ndarray, ends: np.ndarray, max_len: int) -> np.ndarray:
    """(N, 2) rows (user start, window end): windows of ``max_len + 1`` events cut from each sequence's end."""
    lengths = ends - starts
    counts = np.where(lengths >= 2, -(-(lengths - 1) // max_len), 0)  # ceil((n - 1) / max_len)
    owner = np.repeat(np.arange(len(starts)), counts)
    step = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # 0, 1, … within a user
    return np.stack([starts[owner], ends[owner] - step * max_len], 1).astype(np.int64)


def eval_targets(starts: np.ndarray, ends: np.ndarray, last: int, skip: int = 0) -> np.ndarray:
    """(N, 2) rows (user start, target + 1) for the ``last`` events before the final ``skip`` of each user.

    Targets need at least one earlier event to predict from.
    """
    offsets = np.arange(last, 0, -1)  # last … 1
    targets = (ends - skip)[:, None] - offsets[None, :]  # (U, last)
    owner_starts = np.broadcast_to(starts[:, None], targets.shape)
    keep = targets >= owner_starts + 1
    return np.stack([owner_starts[keep], targets[keep] + 1], 1).astype(np.int64)


class NextItemCollator:
    """Rows (start, end) → a :class:`NextItemBatch` of right-aligned windows of the ``max_len + 1`` events before ``end``."""

    def __init__(self, log_: EventLog, categories: np.ndarray, max_len: int, with_seen: bool):
        self.log, self.categories, self.max_len, self.with_seen = log_, categories, max_len, with_seen

    def __call__(self, rows: list[np.ndarray]) -> NextItemBatch:
        pairs = np.stack(rows)  # (B, 2)
        starts, ends = pairs[:, 0], pairs[:, 1]
        index = ends[:, None] - (self.max_len + 1) + np.arange(self.max_len + 1)[None, :]  # (B, L+1)
        valid = index >= starts[:, None]
        safe = np.where(valid, index, 0)
        items = np.where(valid, self.log.items[safe], PAD)  # (B, L+1)
        inputs_valid = valid[:, :-1]  # (B, L)
        targets = np.where(inputs_valid, items[:, 1:], PAD)
        targets[targets == UNKNOWN_ITEM] = PAD  # unknown items are never targets
        reference = self.log.timestamps[ends - 1][:, None]  # predict at the time of the last target
        gaps = np.where(inputs_valid, gap_buckets(reference, self.log.timestamps[safe[:, :-1]]), 0)
        input_items = items[:, :-1]
        inputs = SourceInputs(
            items=torch.from_numpy(input_items), categories=torch.from_numpy(self.categories[input_items]),
            values=torch.from_numpy(np.where(inputs_valid, self.log.values[safe[:, :-1]], 0).astype(np.float32)),
            has_value=torch.from_numpy(inputs_valid & self.log.has_value[safe[:, :-1]]),
            gaps=torch.from_numpy(gaps.astype(np.int64)), mask=torch.from_numpy(inputs_valid))
        seen = self._seen(starts, ends - 1) if self.with_seen else None
        return NextItemBatch(inputs, torch.from_numpy(targets.astype(np.int64)), seen)

    def _seen(self, starts: np.ndarray, stops: np.ndarray) -> torch.Tensor:
        """(2, nnz) (row, item) for every event of each row's user in [start, stop)."""
        lengths = stops - starts
        rows = np.repeat(np.arange(len(starts)), lengths)
        position = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths) + np.arange(lengths.sum())
        return torch.from_numpy(np.stack([rows, self.log.items[position]]).astype(np.int64))


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.rows[index]


class NextItemDataModule(L.LightningDataModule):
    def __init__(self, data_dir: str = "data/ml-100k", protocol: str = "user_disjoint", split: str = "qa",
                 val_fraction: float = 0.1, test_fraction: float = 0.1, eval_last: int = 1, batch_size: int = 128,
                 eval_batch_size: int = 256, max_len: int | None = None, strict: bool = False, seed: int = 0,
                 num_workers: int = 0):
        """
        Args:
            data_dir: folder written by ``user-embed prepare`` (events/items/users[/qa].parquet).
            protocol: ``user_disjoint`` (held-out users) or ``leave_last_out`` (every user's last events).
            split: for ``user_disjoint``: ``qa`` (the UserQA user split of qa.parquet) or ``random``.
            val_fraction: share of users for validation (``split: random``).
            test_fraction: share of users for testing (``split: random``).
            eval_last: held-out last events per evaluated user (each predicted from the events before it).
            batch_size: training windows per batch.
            eval_batch_size: evaluation targets per batch.
            max_len: events per window; None = the encoder's ``max_len`` (set by ``run_pretrain``).
            strict: raise on the first user that cannot be used instead of counting it.
            seed: fixes the random user split and the shuffling.
            num_workers: DataLoader workers.
        """
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ConfigError(f"data.protocol '{protocol}' is unknown; known: {PROTOCOLS}")
        if split not in USER_SPLITS:
            raise ConfigError(f"data.split '{split}' is unknown; known: {USER_SPLITS}")
        if min(batch_size, eval_batch_size, eval_last) <= 0 or (max_len is not None and max_len <= 0):
            raise ConfigError("data.batch_size, data.eval_batch_size, data.eval_last and data.max_len must be > 0")
        if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(f"data.val_fraction {val_fraction} + data.test_fraction {test_fraction} must be in [0, 1)")
        check_number("data.num_workers", num_workers, low=0, integer=True)
        check_number("data.seed", seed, integer=True)
        self.data_dir, self.protocol, self.split = Path(data_dir), protocol, split
        self.val_fraction, self.test_fraction, self.eval_last = val_fraction, test_fraction, eval_last
        self.batch_size, self.eval_batch_size, self.max_len = batch_size, eval_batch_size, max_len
        self.strict, self.seed, self.num_workers = strict, seed, num_workers
        self.spec: DataSpec | None = None
        self.log: EventLog | None = None
        self.rows: dict[str, np.ndarray] = {}
        self.stats: dict = {}
        self._categories: np.ndarray | None = None

    # ---- building ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.log is not None:
            return
        if self.max_len is None:
            raise ConfigError("data.max_len is not set (run_pretrain sets it to the encoder's max_len)")
        if not self.data_dir.is_dir():
            raise ConfigError(f"data.data_dir '{self.data_dir}' does not exist "
                              f"(build it with `user-embed prepare movielens-100k --out {self.data_dir}`)")
        events, items, users = (read_table(self.data_dir, name) for name in ("events", "items", "users"))
        self.spec = DataSpec.from_tables(events, items, users)
        self._categories = category_table(self.spec, items)
        self.log = EventLog.from_events(events, self.spec)
        split = self._user_splits()
        starts, ends = self.log.starts, self.log.ends
        if self.protocol == "leave_last_out":
            holdout = 2 * self.eval_last
            train_ends = np.maximum(ends - holdout, starts)
            self.rows = {"train": training_windows(starts, train_ends, self.max_len),
                         "val": eval_targets(starts, ends, self.eval_last, skip=self.eval_last),
                         "test": eval_targets(starts, ends, self.eval_last)}
        else:
            is_train = split == "train"
            self.rows = {"train": training_windows(starts[is_train], ends[is_train], self.max_len)}
            for name in ("val", "test"):
                chosen = split == name
                self.rows[name] = eval_targets(starts[chosen], ends[chosen], self.eval_last)
        unknown_targets = {}
        for name in ("val", "test"):
            known = self.log.items[self.rows[name][:, 1] - 1] != UNKNOWN_ITEM
            unknown_targets[name] = int((~known).sum())
            self.rows[name] = self.rows[name][known]
        self.stats = self._stats(split, unknown_targets)
        log.info("pre-training data: %s", self.stats)

    def _user_splits(self) -> np.ndarray:
        """'train' | 'val' | 'test' per user of the event log (user-disjoint protocol)."""
        users = pl.DataFrame({"user_id": self.log.users, "events": self.log.ends - self.log.starts})
        report = RowReport("users", read=users.height, strict=self.strict, source=str(self.data_dir / "events.parquet"))
        usable = report.drop(users, pl.col("events") < 2, "fewer than 2 events (nothing to predict)", ["user_id"])
        self.stats["users"] = report.as_dict()
        if self.protocol == "leave_last_out":
            split = np.full(len(self.log.users), "all", dtype=object)
        elif self.split == "qa":
            qa = read_table(self.data_dir, "qa", required=False)
            if qa is None:
                raise ConfigError(f"{self.data_dir / 'qa.parquet'} not found: data.split 'qa' reuses the UserQA user "
                                  f"split; use data.split 'random' for data without UserQA questions")
            rank = {"train": 0, "val": 1, "test": 2}
            per_user = qa.group_by("user_id").agg(pl.col("split").replace_strict(rank, return_dtype=pl.Int8).max())
            names = dict(zip(per_user["user_id"].to_list(), per_user["split"].to_list()))
            split = np.array([("train", "val", "test")[names.get(u, 0)] for u in self.log.users])
        else:
            rng = np.random.default_rng(self.seed)
            order = rng.permutation(len(self.log.users))
            n_test = int(round(self.test_fraction * len(order)))
            n_val = int(round(self.val_fraction * len(order)))
            split = np.full(len(order), "train", dtype=object)
            split[order[:n_test]] = "test"
            split[order[n_test:n_test + n_val]] = "val"
        unusable = ~np.isin(np.array(self.log.users), usable["user_id"].to_numpy())
        return np.where(unusable, "none", split).astype(str)

    def _stats(self, split: np.ndarray, unknown_targets: dict[str, int]) -> dict:
        rows = self.rows
        train_targets = int(np.minimum(rows["train"][:, 1] - rows["train"][:, 0] - 1, self.max_len).sum())
        truncation = {}
        for name in ("val", "test"):
            history = rows[name][:, 1] - 1 - rows[name][:, 0]  # events before each target
            cut = np.maximum(history - self.max_len, 0)
            truncation[name] = {"targets_truncated": int((cut > 0).sum()), "events_not_read": int(cut.sum())}
        return {
            **self.stats,
            "protocol": self.protocol,
            "split": self.split if self.protocol == "user_disjoint" else "per-user time split",
            "users_per_split": {s: int((split == s).sum()) for s in ("train", "val", "test", "all") if (split == s).any()},
            "eval_last": self.eval_last,
            "items": len(self.spec.item_ids),
            "unknown_item_events": self.log.unknown_item_events,
            "train_windows": len(rows["train"]),
            "train_targets": train_targets,
            "eval_targets": {s: len(rows[s]) for s in ("val", "test")},
            "eval_targets_skipped_unknown_item": unknown_targets,
            "truncation": {"policy": "recent", "max_len": self.max_len,
                           "train": "none: sequences are cut into windows of max_len + 1 events, every event is used",
                           **truncation},
        }

    # ---- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str) -> DataLoader:
        if self.log is None:
            self.setup()
        training = split == "train"
        rows = self.rows[split]
        if not len(rows) and split != "val":
            raise ConfigError(f"no {split} targets in {self.data_dir} (protocol {self.protocol}, split {self.split})")
        collate = NextItemCollator(self.log, self._categories, self.max_len, with_seen=not training)
        return DataLoader(_Rows(rows), batch_size=self.batch_size if training else self.eval_batch_size,
                          shuffle=training, collate_fn=collate, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(self.seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self):
        return self._loader("val") if len(self.rows.get("val", [])) else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")
