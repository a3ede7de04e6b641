"""DataSpec: the vocabularies and statistics that fix an embedder's input layout.

Built once from the training data (``DataSpec.from_tables``), saved inside every embedder's
``config.json``, and reused at inference so the same item/category/profile value always maps
to the same index. Index 0 is padding; for items, 1 is "unknown item".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import polars as pl
import torch

PAD, UNKNOWN_ITEM = 0, 1
GAP_BUCKETS = 24  # log2(seconds/3600) buckets: < 1 hour … ≈ 2^22 hours


@dataclass
class DataSpec:
    item_ids: list[str]
    categories: list[str]
    max_categories: int = 1
    value_mean: float = 0.0
    value_std: float = 1.0
    profile_cat_fields: dict[str, list[str]] = field(default_factory=dict)
    profile_num_fields: dict[str, list[float]] = field(default_factory=dict)  # name -> [mean, std]
    text_dims: dict[str, int] = field(default_factory=dict)
    item_texts: list[str] = field(default_factory=list, repr=False)
    item_vectors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # runtime only

    @property
    def num_items(self) -> int:
        """Rows of the item table including padding (0) and unknown (1)."""
        return len(self.item_ids) + 2

    @property
    def num_categories(self) -> int:
        return len(self.categories) + 1

    def to_json(self) -> dict:
        data = asdict(self)
        data.pop("item_vectors")
        data.pop("item_texts")
        return data

    @classmethod
    def from_json(cls, data: dict) -> "DataSpec":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def from_tables(cls, events: pl.DataFrame, items: pl.DataFrame, users: pl.DataFrame,
                    profile_fields: list[str] | None = None, max_categories: int = 8) -> "DataSpec":
        item_ids = sorted(items["item_id"].to_list())
        categories = sorted(items["categories"].explode().drop_nulls().unique().to_list())
        longest = items["categories"].list.len().max() or 1
        values = events["value"].drop_nulls().drop_nans() if events["value"].dtype.is_float() else events["value"].drop_nulls()
        mean = float(values.mean()) if len(values) else 0.0
        std = float(values.std()) if len(values) > 1 else 1.0
        cat_fields: dict[str, list[str]] = {}
        num_fields: dict[str, list[float]] = {}
        columns = [c for c in users.columns if c != "user_id"]
        if profile_fields is not None:
            columns = [c for c in columns if c in profile_fields]
        for column in columns:
            series = users[column]
            if series.dtype.is_numeric():
                clean = series.cast(pl.Float64).drop_nulls().drop_nans()
                m = float(clean.mean()) if len(clean) else 0.0
                s = float(clean.std()) if len(clean) > 1 else 1.0
                num_fields[column] = [m, s if s and math.isfinite(s) and s > 0 else 1.0]
            else:
                cat_fields[column] = sorted(series.cast(pl.Utf8).drop_nulls().unique().to_list())
        titles = dict(zip(items["item_id"].to_list(), items["title"].to_list()))
        cats = dict(zip(items["item_id"].to_list(), items["categories"].to_list()))
        texts = [f"{titles[i]} ({', '.join(cats[i] or [])})" if cats[i] else titles[i] for i in item_ids]
        return cls(item_ids=item_ids, categories=categories, max_categories=min(int(longest), max_categories),
                   value_mean=mean, value_std=std if std and math.isfinite(std) and std > 0 else 1.0,
                   profile_cat_fields=cat_fields, profile_num_fields=num_fields, item_texts=texts)
