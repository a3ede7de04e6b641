"""Row accounting for imports: rows read = kept + dropped (by reason), printed and saved.

Every pipeline step that can drop rows records it here, so nothing is dropped silently.
With ``strict=True`` the first droppable row raises :class:`DataError` instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from data_pipelines.errors import UserError


class DataError(UserError):
    """User data cannot be used; the message names file, column and row where it applies."""


@dataclass
class RowReport:
    """Counts for one input table. ``read == kept + sum(dropped.values())`` always holds."""

    name: str
    read: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    strict: bool = False
    source: str = ""

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())

    def drop(self, df: pl.DataFrame, bad: pl.Expr, reason: str, example_cols: list[str] | None = None) -> pl.DataFrame:
        """Remove rows where ``bad`` is true, counting them under ``reason``."""
        bad = bad.fill_null(True)
        flagged = df.with_row_index("__row").filter(bad)
        n = flagged.height
        if n:
            if self.strict:
                first = flagged.row(0, named=True)
                row = first.pop("__row")
                shown = {k: first[k] for k in (example_cols or list(first)[:4]) if k in first}
                where = f"{self.source}: " if self.source else ""
                raise DataError(f"{where}row {row}: {reason} ({shown}); rerun without --strict to drop and count such rows")
            self.dropped[reason] = self.dropped.get(reason, 0) + n
        return df.filter(~bad) if n else df

    def as_dict(self) -> dict:
        return {"read": self.read, "kept": self.kept, "dropped": dict(self.dropped)}

    def line(self) -> str:
        drops = ", ".join(f"{k}: {v}" for k, v in self.dropped.items()) or "none"
        return f"{self.name}: read {self.read:,}, kept {self.kept:,}, dropped {self.read - self.kept:,} ({drops})"
