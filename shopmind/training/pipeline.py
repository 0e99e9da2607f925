"""Training from the shop's own events: consented data -> models -> registry, behind a promotion gate.

`train_all` trains the trending-popularity fallback and the behaviour model. The behaviour model is a
challenger: it is promoted only if, on the new data's leave-one-out test targets, it scores at least as
well (NDCG@10) as the current champion does on the very same targets (`gate`). Erased users are not in
the data (erasure deleted their events), and the model's lineage lists exactly the pseudonyms it saw.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from shopmind.evaluation import Sequences, evaluate_ranking, leave_one_out
from shopmind.models.popularity import TrendingPopularity
from shopmind.recommend.behaviour import BehaviourRecommender

ITEM_EVENT_TYPES = ["view", "click", "add_to_cart", "purchase", "rating", "ad_click"]
# Sequences of at least 4 events keep 2 for training after leave-one-out. Below MIN_SEQUENCES of them there
# is nothing for a sequence model to learn, and trending popularity serves alone.
MIN_SEQUENCES = 20


def shop_sequences(events: pl.DataFrame) -> tuple[Sequences, list[str]]:
    """Item events per user (or per anonymous session) in time order; returns the sequences and the
    user pseudonyms among them (the lineage)."""
    usable = events.filter(pl.col("item_id").is_not_null() & pl.col("type").is_in(ITEM_EVENT_TYPES))
    keyed = usable.with_columns(
        pl.when(pl.col("user_pseudonym").is_not_null()).then(pl.col("user_pseudonym"))
        .otherwise(pl.lit("s:") + pl.col("session_pseudonym")).alias("subject"))
    keyed = keyed.filter(pl.col("subject").is_not_null())
    seqs = Sequences.from_frame(keyed, user_col="subject", item_col="item_id", time_col="ts_ms")
    subjects = [u for u in seqs.user_ids if not u.startswith("s:")]
    return seqs, subjects


def remapped_scorer(model: Any, item_ids: Sequence[str]):
    """Score in another item index space (a champion trained on an older catalog). Items the model
    never saw score -inf; histories are translated item by item, unknown items dropped."""
    own = {item: n for n, item in enumerate(model.item_ids_)}
    to_own = np.array([own.get(i, -1) for i in item_ids], dtype=np.int64)
    known = to_own >= 0

    def score(histories):
        translated = [to_own[np.asarray(h, dtype=np.int64)] for h in histories]
        translated = [h[h >= 0] for h in translated]
        own_scores = model.score(translated)
        out = np.full((len(histories), len(item_ids)), -np.inf)
        out[:, known] = own_scores[:, to_own[known]]
        return out

    return score


@dataclass
class GateResult:
    promoted: bool
    challenger_ndcg: float
    champion_ndcg: float | None

    def as_dict(self) -> dict:
        return {"promoted": self.promoted, "challenger_ndcg@10": self.challenger_ndcg,
                "champion_ndcg@10": self.champion_ndcg}


def gate(challenger: Any, champion: Any | None, data: Sequences, tolerance: float = 0.0) -> GateResult:
    """Promote when the challenger's test NDCG@10 >= champion's on the same split, minus `tolerance`."""
    split = leave_one_out(data)
    ours = evaluate_ranking(challenger.score, split, "test", max_users=5000)[0].ndcg
    if champion is None:
        return GateResult(True, ours, None)
    theirs = evaluate_ranking(remapped_scorer(champion, data.item_ids), split, "test", max_users=5000)[0].ndcg
    return GateResult(ours >= theirs - tolerance, ours, theirs)


def train_all(shop, actor: str, time_budget_s: float | None = None, force_promote: bool = False) -> dict[str, Any]:
    """Train trending popularity and the behaviour model on personalization-consented events."""
    events = shop.training_events("personalization")
    window = [int(events["ts_ms"].min()), int(events["ts_ms"].max())] if events.height else None
    result: dict[str, Any] = {}

    started = time.perf_counter()
    trending = TrendingPopularity().fit(events, shop.items_frame())
    users = events["user_pseudonym"].drop_nulls().unique().to_list()
    result["popularity"] = {"version": shop.registry.register(
        "popularity", trending,
        card={"config": {"half_life_days": trending.half_life_days}, "data_window_ms": window,
              "n_events": events.height, "n_users": len(users), "purpose": "personalization",
              "train_seconds": round(time.perf_counter() - started, 3), "trained_by": actor},
        subjects=users), "promoted": True}

    seqs, subjects = shop_sequences(events)
    usable = sum(len(s) >= 4 for s in seqs.sequences)
    if usable < MIN_SEQUENCES:
        result["behaviour"] = {"skipped": f"{usable} sequences with 4+ item events; need {MIN_SEQUENCES}"}
        return result
    started = time.perf_counter()
    model = BehaviourRecommender(time_budget_s=time_budget_s).fit(seqs)
    train_s = time.perf_counter() - started
    champion = shop.registry.load_current("behaviour")
    verdict = gate(model, champion[1] if champion else None, seqs)
    promote = verdict.promoted or force_promote
    version = shop.registry.register(
        "behaviour", model,
        card={"config": {**model.config_.__dict__, "learning_rate": model.learning_rate,
                         "batch_size": model.batch_size},
              "data_window_ms": window, "n_sequences": len(seqs.user_ids), "n_users": len(subjects),
              "n_items": seqs.n_items, "n_interactions": seqs.n_interactions, "purpose": "personalization",
              "metrics": {"valid_ndcg@10": model.valid_ndcg_, **verdict.as_dict()},
              "best_epoch": model.best_epoch_, "train_seconds": round(train_s, 1), "trained_by": actor},
        subjects=subjects, promote=promote)
    result["behaviour"] = {"version": version, "promoted": promote, **verdict.as_dict()}
    return result
