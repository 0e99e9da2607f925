"""Trending items: recency-weighted popularity, global and per category, from the shop's events.

The serving fallback for cold users and for users without personalization consent, and the source of
"popular in <category>" reasons. Scores are interaction counts weighted by event type and decayed with
a half-life, so what is popular now outranks what was popular months ago.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import polars as pl

from shopmind.exceptions import InvalidInputError, NotFittedError

DEFAULT_WEIGHTS = {"view": 1.0, "click": 1.0, "add_to_cart": 3.0, "purchase": 5.0, "rating": 2.0, "ad_click": 1.0}


@dataclass
class Recommendation:
    item_id: str
    score: float
    reason: str


class TrendingPopularity:
    """Most popular items overall or within a category (prefix of the category path)."""

    def __init__(self, half_life_days: float = 14.0, weights: dict[str, float] | None = None):
        self.half_life_days = half_life_days
        self.weights = weights

    def fit(self, events: pl.DataFrame, items: pl.DataFrame | None = None) -> "TrendingPopularity":
        """events: item_id, type, ts_ms. items (optional): item_id, category."""
        missing = {"item_id", "type", "ts_ms"} - set(events.columns)
        if missing:
            raise InvalidInputError(f"events frame lacks columns {sorted(missing)}", field="events")
        weights = self.weights or DEFAULT_WEIGHTS
        if self.half_life_days <= 0:
            raise InvalidInputError("half_life_days must be positive", field="half_life_days")
        usable = events.filter(pl.col("item_id").is_not_null() & pl.col("type").is_in(list(weights)))
        latest = usable["ts_ms"].max() if usable.height else 0
        decay = np.log(2) / (self.half_life_days * 86_400_000)
        scored = (
            usable.with_columns(
                (pl.col("type").replace_strict(weights, return_dtype=pl.Float64)
                 * (-(latest - pl.col("ts_ms")) * decay).exp()).alias("w"))
            .group_by("item_id").agg(pl.col("w").sum().alias("score"), pl.len().alias("interactions"))
        )
        if items is not None and "category" in items.columns:
            scored = scored.join(items.select("item_id", "category"), on="item_id", how="left")
        else:
            scored = scored.with_columns(pl.lit("").alias("category"))
        scored = scored.with_columns(pl.col("category").fill_null("")).sort(["score", "item_id"], descending=[True, False])
        self.item_ids_ = scored["item_id"].to_list()
        self.scores_ = scored["score"].to_numpy().astype(np.float64)
        self.interactions_ = scored["interactions"].to_numpy().astype(np.int64)
        self.categories_ = scored["category"].to_list()
        self.n_events_ = usable.height
        return self

    def _check(self) -> None:
        if not hasattr(self, "item_ids_"):
            raise NotFittedError("TrendingPopularity is not fitted: call fit(events) first")

    def recommend(self, k: int = 10, category: str | None = None, exclude: Iterable[str] = ()) -> list[Recommendation]:
        self._check()
        if k < 1:
            raise InvalidInputError("k must be at least 1", field="k")
        excluded = set(exclude)
        out: list[Recommendation] = []
        for idx, item in enumerate(self.item_ids_):
            if item in excluded:
                continue
            cat = self.categories_[idx]
            if category and not (cat == category or cat.startswith(category + " > ")):
                continue
            where = f"in {category}" if category else (f"in {cat.split(' > ')[0]}" if cat else "in the shop")
            out.append(Recommendation(item, float(self.scores_[idx]),
                                      f"popular {where}: {int(self.interactions_[idx])} recent interaction"
                                      + ("" if int(self.interactions_[idx]) == 1 else "s")))
            if len(out) == k:
                break
        return out

    def save(self, path: Path) -> None:
        self._check()
        path.mkdir(parents=True, exist_ok=True)
        pl.DataFrame({"item_id": self.item_ids_, "score": self.scores_, "interactions": self.interactions_,
                      "category": self.categories_}).write_parquet(path / "popularity.parquet")
        (path / "params.json").write_text(json.dumps({"half_life_days": self.half_life_days,
                                                      "weights": self.weights, "n_events": self.n_events_}))

    @classmethod
    def load(cls, path: Path) -> "TrendingPopularity":
        params = json.loads((path / "params.json").read_text())
        model = cls(half_life_days=params["half_life_days"], weights=params["weights"])
        frame = pl.read_parquet(path / "popularity.parquet")
        model.item_ids_ = frame["item_id"].to_list()
        model.scores_ = frame["score"].to_numpy()
        model.interactions_ = frame["interactions"].to_numpy()
        model.categories_ = frame["category"].to_list()
        model.n_events_ = params["n_events"]
        return model
