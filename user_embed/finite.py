"""Finding NaN and infinity in saved or loaded weights: a broken model is never exported nor loaded."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def non_finite_tensor(state: Mapping[str, torch.Tensor]) -> str | None:
    """``"tensor 'name' holds N NaN/inf values"`` for the first floating-point tensor that is not finite, else None."""
    for name, tensor in state.items():
        if not torch.is_tensor(tensor) or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        if tensor.device.type == "meta":
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            return f"tensor '{name}' holds {bad:,} NaN/inf value{'s' if bad > 1 else ''}"
    return None
