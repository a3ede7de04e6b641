"""FiniteGuard: a Lightning callback that stops training at the first non-finite loss or gradient.

A NaN or infinite loss (a learning rate too high, an overflow, a broken input) would otherwise train
on, every weight would turn NaN, and ``on_fit_end`` would export a broken embedder with exit status 0.
The guard checks the loss before each backward pass and the gradients before each optimizer step, so
the weights are never updated with a non-finite value; it raises :class:`TrainingDiverged` (a user
error: one line, exit status 2), the fit stops, and nothing is exported (``on_fit_end`` never runs).

Under fp16 mixed precision the gradient scaler skips steps with inf/NaN gradients by design, so the
gradient check is left to it there. With several processes the loss check runs only on one process
(a rank raising alone would leave the others waiting); the gradients, all-reduced, are checked on all.
A default callback of `user-embed fit` and `user-embed pretrain`.
"""

from __future__ import annotations

import math

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from user_embed.errors import UserError


class TrainingDiverged(UserError):
    """The loss or a gradient became NaN or infinite; training stopped before any weight took the value."""


def _non_finite(tensor: torch.Tensor) -> str:
    """How a tensor with non-finite entries is broken: ``nan``, ``inf`` or ``-inf`` (the first kind found)."""
    values = tensor.detach().float().reshape(-1)
    bad = values[~torch.isfinite(values)]
    if not len(bad) or math.isnan(float(bad[0])):
        return "nan"
    return "inf" if float(bad[0]) > 0 else "-inf"


class FiniteGuard(Callback):
    """Raises :class:`TrainingDiverged` at the first non-finite training loss or gradient."""

    def __init__(self, check_gradients: bool = True):
        self.check_gradients = check_gradients

    def _stop(self, trainer: Trainer, what: str) -> None:
        raise TrainingDiverged(
            f"training stopped at step {trainer.global_step}: {what}; nothing was exported. Lower the learning "
            "rate (optim.lr), enable gradient clipping (trainer.gradient_clip_val) or check the data")

    def on_before_backward(self, trainer: Trainer, pl_module: LightningModule, loss: torch.Tensor) -> None:
        if trainer.world_size == 1 and torch.is_tensor(loss) and not torch.isfinite(loss.detach()).all():
            self._stop(trainer, f"the training loss is {_non_finite(loss)}")

    def on_before_optimizer_step(self, trainer: Trainer, pl_module: LightningModule, optimizer) -> None:
        if not self.check_gradients or getattr(trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16: the gradient scaler skips non-finite steps itself
        named = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
        if not named:
            return
        finite = torch.stack([torch.isfinite(g).all() for _, g in named]).all()
        if bool(finite):
            return
        name, grad = next((n, g) for n, g in named if not torch.isfinite(g).all())
        self._stop(trainer, f"the gradient of {name} is {_non_finite(grad)}")
