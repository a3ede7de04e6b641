"""Profile fields of the ``users`` table as index/standardised tensors, per the DataSpec's vocabularies."""

from __future__ import annotations

import numpy as np
import polars as pl
import torch

from user_embed.data.spec import DataSpec


class ProfileTable:
    def __init__(self, users: pl.DataFrame, spec: DataSpec):
        self.cat_fields = list(spec.profile_cat_fields)
        self.num_fields = list(spec.profile_num_fields)
        self.row = {u: i for i, u in enumerate(users["user_id"].to_list())}
        n = len(users)
        self.cat = np.zeros((n + 1, len(self.cat_fields)), np.int64)  # last row: unknown user
        self.num = np.zeros((n + 1, len(self.num_fields)), np.float32)
        self.num_mask = np.zeros((n + 1, len(self.num_fields)), bool)
        for j, name in enumerate(self.cat_fields):
            index = {v: i + 1 for i, v in enumerate(spec.profile_cat_fields[name])}
            if name in users.columns:
                column = users[name].cast(pl.Utf8)
                self.cat[:n, j] = column.replace_strict(index, default=0, return_dtype=pl.Int64).fill_null(0).to_numpy()
        for j, name in enumerate(self.num_fields):
            mean, std = spec.profile_num_fields[name]
            if name in users.columns:
                column = users[name].cast(pl.Float64, strict=False)
                raw = column.fill_null(float("nan")).to_numpy()
                present = np.isfinite(raw)
                self.num[:n, j] = np.where(present, (np.nan_to_num(raw) - mean) / std, 0.0)
                self.num_mask[:n, j] = present

    def lookup(self, user_ids: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, F) cat indices, (B, G) standardised numbers, (B, G) presence mask; unknown users → all missing."""
        rows = np.array([self.row.get(u, len(self.row)) for u in user_ids], dtype=np.int64)
        return torch.from_numpy(self.cat[rows]), torch.from_numpy(self.num[rows]), torch.from_numpy(self.num_mask[rows])
