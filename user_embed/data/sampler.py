"""A resumable shuffle for training: the order of epoch ``e`` depends only on ``(seed, e)``, and a run
resumed from a mid-epoch checkpoint continues with the first batch it had not trained on.

A plain ``DataLoader(shuffle=True, generator=…)`` draws each epoch's order from a generator that
is not saved in checkpoints, so a resumed run sees other batches than the run it continues.
Here Lightning saves :meth:`ResumableSampler.state_dict` (epoch and batches consumed) through
:class:`ResumableDataLoader` and restores it before the first batch is drawn.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler


class ResumableSampler(Sampler[int]):
    """Indices ``0 … size-1`` in an order fixed by ``(seed, epoch)``; skips batches already trained on after a resume.

    Lightning calls :meth:`set_epoch` at each epoch start; when nothing does (e.g. wrapped by a
    distributed sampler), each new iteration moves to the next epoch by itself. The training loop
    counts batches it consumed with :meth:`mark_consumed` (the loader prefetches, so the sampler
    cannot tell by itself).
    """

    def __init__(self, size: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        self.size, self.batch_size, self.seed, self.shuffle = size, batch_size, seed, shuffle
        self.epoch = 0
        self.consumed = 0  # batches of the current epoch handed to training
        self._skip = 0
        self._epoch_fixed = False  # set_epoch / load_state_dict chose the epoch of the next iteration
        self._iterated = False

    @property
    def num_batches(self) -> int:
        return math.ceil(self.size / self.batch_size)

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._epoch_fixed = int(epoch), True

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[int]:
        if self._iterated and not self._epoch_fixed:
            self.epoch += 1
        self._iterated, self._epoch_fixed = True, False
        skip, self._skip = self._skip, 0
        self.consumed = skip
        return iter(self.order(self.epoch)[skip * self.batch_size:])

    def mark_consumed(self) -> None:
        self.consumed += 1

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.consumed, "seed": self.seed, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        epoch, batches = int(state.get("epoch", 0)), int(state.get("batches", 0))
        if batches >= self.num_batches:  # saved after the last batch of an epoch
            epoch, batches = epoch + 1, 0
        self.epoch, self._skip, self._epoch_fixed = epoch, batches, True


class ResumableDataLoader(DataLoader):
    """A DataLoader that Lightning saves and restores (``state_dict``/``load_state_dict`` of its sampler)."""

    def state_dict(self) -> dict:
        sampler = self.sampler
        return sampler.state_dict() if isinstance(sampler, ResumableSampler) else {}

    def load_state_dict(self, state: dict) -> None:
        if state and isinstance(self.sampler, ResumableSampler):
            self.sampler.load_state_dict(state)
