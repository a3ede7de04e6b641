"""TorchThreads: a Lightning callback that pins the number of CPU threads torch computes with.

On the CPU the thread count changes results: a reduction split over 1 or 2 threads sums in another
order, so the same seed gives last-bit differences from the first step, and after hundreds of steps
different weights and metrics (measured on the quickstart: 130 of 140 tensors differ after 24 steps
with 1 vs 2 threads). torch's default is the machine's core count, so without a pin the same config
and seed reproduce only on machines with as many cores. The pin is set when the callback is built
(LightningCLI builds callbacks before the data module computes text vectors) and again at setup.
Machines whose CPUs have other vector units (AVX2 vs AVX-512) may still differ in the last bits.
"""

from __future__ import annotations

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from user_embed.errors import ConfigError


class TorchThreads(Callback):
    """``torch.set_num_threads(num_threads)`` (intra-op) for the whole run, so results do not depend on the
    machine's core count."""

    def __init__(self, num_threads: int = 2):
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ConfigError(f"TorchThreads.num_threads must be an integer >= 1, got {num_threads!r}")
        self.num_threads = num_threads
        torch.set_num_threads(num_threads)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        torch.set_num_threads(self.num_threads)
