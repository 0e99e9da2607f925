"""The contract every recommender follows (like implicit's RecommenderBase).

    model.fit(sequences, split=None) -> model      # learn; fitted state ends in `_`
    model.score(histories) -> (n, n_items) array    # scores for each time-ordered history of item indices
    model.recommend_history(history, k)             # top-k (item index, score), seen items excluded
    model.similar_items(item, k)                    # top-k (item index, similarity)
    model.save(path) / Model.load(path)

Items are dense indices into `item_ids_` (the raw catalog ids). tests/recommend/test_contract.py runs
the same checks against every model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shopmind.exceptions import InvalidInputError, NotFittedError


class SequenceRecommender(ABC):
    """Shared behaviour; subclasses implement fit, score, _similarity_vectors, save and load."""

    def _check(self) -> None:
        if not hasattr(self, "item_ids_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(sequences) first")

    @abstractmethod
    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """(len(histories), n_items) scores."""

    def recommend_history(self, history: Sequence[int], k: int = 10, exclude_seen: bool = True,
                          allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k items for one history. `allowed` is an optional boolean mask over items (filters)."""
        self._check()
        if k < 1:
            raise InvalidInputError("k must be at least 1", field="k")
        hist = np.asarray(history, dtype=np.int64)
        scores = np.asarray(self.score([hist])[0], dtype=np.float64)
        if exclude_seen and len(hist):
            scores[hist] = -np.inf
        if allowed is not None:
            scores[~allowed] = -np.inf
        k = min(k, int(np.isfinite(scores).sum()))
        if k == 0:
            return []
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(i), float(scores[i])) for i in top]

    @abstractmethod
    def _similarity_vectors(self) -> np.ndarray:
        """One vector per item; similar_items compares them by cosine."""

    def similar_items(self, item: int, k: int = 10) -> list[tuple[int, float]]:
        """Items closest to `item` by cosine similarity of the model's item representations."""
        self._check()
        vectors = self._similarity_vectors()
        norms = np.linalg.norm(vectors, axis=1) + 1e-12
        sims = (vectors @ vectors[item]) / (norms * norms[item])
        sims[item] = -np.inf
        k = min(k, len(sims) - 1)
        top = np.argpartition(-sims, k - 1)[:k]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(i), float(sims[i])) for i in top]

    @staticmethod
    def _prepare(path: Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        return path
