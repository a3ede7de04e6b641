"""Domain checks for numeric settings: one helper that names the key and the value when a number is out of range.

Every config dataclass (``user_embed.config``), the data modules and the trainer settings of
`user-embed fit` / `pretrain` check their numbers with :func:`check_number`, so a NaN learning rate, a
negative weight decay or a dropout of 5 is refused before anything is built, in one line such as
``optim.lr must be a finite number > 0, got nan``. Booleans are not numbers here (YAML ``yes`` is not 1).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from user_embed.errors import ConfigError


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high:g}"
    return ""


def check_number(key: str, value: object, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 allow: tuple = ()) -> None:
    """Raise ConfigError naming ``key`` and ``value`` unless ``value`` is a finite number in the interval.

    ``low_open`` / ``high_open`` exclude the bound itself; ``integer`` wants an integer; ``allow`` lists
    extra accepted values (e.g. ``(-1, None)`` for Lightning's "no limit").
    """
    if any(value is a or (a is not None and not isinstance(value, bool) and value == a) for a in allow):
        return
    kind = "an integer" if integer else "a finite number"
    domain = _interval(low, high, low_open, high_open)
    extra = "".join(f" or {a!r}" for a in allow)
    expected = f"{kind}{' ' + domain if domain else ''}{extra}"
    is_number = isinstance(value, Integral if integer else Real) and not isinstance(value, bool)
    if not is_number or not math.isfinite(float(value)):
        raise ConfigError(f"{key} must be {expected}, got {value!r}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        raise ConfigError(f"{key} must be {expected}, got {value!r}")


def check_positive(owner: str, *, integer: bool = False, **values: object) -> None:
    """Each value a finite number (``integer``: an integer) > 0, named ``owner.name`` in the message."""
    for name, value in values.items():
        check_number(f"{owner}.{name}", value, low=0, low_open=True, integer=integer)


def check_fraction(key: str, value: object, *, high_open: bool = False) -> None:
    """A ratio in [0, 1] (``high_open``: [0, 1), e.g. a dropout probability)."""
    check_number(key, value, low=0, high=1, high_open=high_open)
