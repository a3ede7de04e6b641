"""The learning-rate schedule of the two training phases: alignment (optional), then joint."""

from __future__ import annotations

import math

from user_embed.config import OptimConfig


def learning_rate_factor(step: int, total: int, optim: OptimConfig) -> float:
    """Multiplier of ``optim.lr`` at ``step`` of ``total``: the alignment phase (``optim.alignment_steps``, if any;
    peak ``optim.alignment_lr``), then the joint phase (peak ``optim.lr``), each with its own linear warmup and
    cosine decay to ``min_lr_ratio`` of its peak."""
    if step < optim.alignment_steps:
        length, peak = optim.alignment_steps, (optim.alignment_lr or optim.lr) / optim.lr
    else:
        step, length, peak = step - optim.alignment_steps, total - optim.alignment_steps, 1.0
    if step < optim.warmup_steps:
        return peak * (step + 1) / (optim.warmup_steps + 1)
    progress = min(1.0, (step - optim.warmup_steps) / max(1, length - optim.warmup_steps))
    return peak * (optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
