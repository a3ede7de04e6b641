"""Domain checks of the Lightning Trainer settings in a `fit` / `pretrain` config, before the Trainer is built.

Lightning checks some values itself (with multi-line exceptions from deep inside the Trainer) and
silently accepts others (a negative ``gradient_clip_val``, ``accumulate_grad_batches: 0``). This checks
every numeric setting against what Lightning means by it and names key and value in one line, e.g.
``trainer.max_steps must be an integer >= 0 or -1, got -5``.
"""

from __future__ import annotations

from collections.abc import Mapping
from numbers import Integral

from user_embed.domains import check_number
from user_embed.errors import ConfigError

#: key → check_number keyword arguments (``allow`` holds Lightning's "no limit" / "default" values).
TRAINER_DOMAINS: dict[str, dict] = {
    "max_steps": {"low": 0, "integer": True, "allow": (-1,)},
    "min_steps": {"low": 0, "integer": True, "allow": (None,)},
    "max_epochs": {"low": 0, "integer": True, "allow": (-1, None)},
    "min_epochs": {"low": 0, "integer": True, "allow": (None,)},
    "accumulate_grad_batches": {"low": 1, "integer": True},
    "gradient_clip_val": {"low": 0, "allow": (None,)},
    "log_every_n_steps": {"low": 1, "integer": True, "allow": (None,)},
    "num_sanity_val_steps": {"low": 0, "integer": True, "allow": (-1, None)},
    "check_val_every_n_epoch": {"low": 1, "integer": True, "allow": (None,)},
    "num_nodes": {"low": 1, "integer": True},
}
#: Settings that are a fraction of the data (a float in [0, 1]) or a number of batches (an int >= 0).
FRACTION_OR_COUNT = ("limit_train_batches", "limit_val_batches", "limit_test_batches", "limit_predict_batches",
                     "overfit_batches")


def check_trainer_settings(settings: Mapping | None, prefix: str = "trainer") -> None:
    """Raise ConfigError for the first trainer setting outside its domain (unset keys are Lightning's defaults)."""
    if not settings:
        return
    for key, domain in TRAINER_DOMAINS.items():
        if key in settings:
            check_number(f"{prefix}.{key}", settings[key], **domain)
    for key in (*FRACTION_OR_COUNT, "val_check_interval"):
        value = settings.get(key)
        if value is None:
            continue
        if isinstance(value, Integral) and not isinstance(value, bool):
            check_number(f"{prefix}.{key}", value, low=1 if key == "val_check_interval" else 0, integer=True)
        else:
            check_number(f"{prefix}.{key}", value, low=0, high=1, low_open=key == "val_check_interval")
    clip = settings.get("gradient_clip_algorithm")
    if clip is not None and clip not in ("norm", "value"):
        raise ConfigError(f"{prefix}.gradient_clip_algorithm must be 'norm' or 'value', got {clip!r}")
