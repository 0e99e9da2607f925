"""Ranking metrics from the rank of each user's single held-out item (leave-one-out has one relevant
item per user, so HR@k = share with rank <= k, NDCG@k = mean of 1/log2(rank+1) where rank <= k,
MRR = mean of 1/rank over the full ranking)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class RankingReport:
    users: int
    hr: float
    ndcg: float
    mrr: float
    coverage: float
    k: int

    def as_dict(self) -> dict:
        d = asdict(self)
        k = d.pop("k")
        return {"users": d["users"], f"hr@{k}": d["hr"], f"ndcg@{k}": d["ndcg"], "mrr": d["mrr"],
                f"coverage@{k}": d["coverage"]}


def ranking_metrics(ranks: np.ndarray, k: int = 10) -> tuple[float, float, float]:
    """HR@k, NDCG@k and MRR from 1-based ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        return 0.0, 0.0, 0.0
    hit = ranks <= k
    hr = float(hit.mean())
    ndcg = float(np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0).mean())
    mrr = float((1.0 / ranks).mean())
    return hr, ndcg, mrr
