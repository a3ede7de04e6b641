"""Checking a ``--device`` string before any model is loaded: one line for a made-up or unavailable device."""

from __future__ import annotations

from user_embed.errors import UserError

KNOWN = "cpu, cuda, cuda:N, mps"


def check_device(name: str | None, flag: str = "--device") -> str | None:
    """``name`` if torch knows the device and it is available here; UserError naming the flag otherwise."""
    if name is None:
        return None
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"{flag} {name!r}: not a device name (expected {KNOWN})") from None
    if device.type == "cpu":
        return name
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{flag} {name!r}: CUDA is not available on this machine (use --device cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{flag} {name!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
        return name
    if device.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise UserError(f"{flag} {name!r}: MPS is not available on this machine (use --device cpu)")
        return name
    raise UserError(f"{flag} {name!r}: device type '{device.type}' is not supported here (expected {KNOWN})")
