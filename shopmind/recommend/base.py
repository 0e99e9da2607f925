"""The contract every recommender follows (like implicit's RecommenderBase).

    model.fit(sequences, split=None) -> model      # learn; fitted state ends in `_`
    model.score(histories) -> (n, n_items) array    # scores for each time-ordered history of item indices
    model.recommend_history(history, k)             # top-k (item index, score), seen items excluded
    model.recommend_session(events, k)              # the same from raw item ids (and event types, times)
    model.similar_items(item, k)                    # top-k (item index, similarity)
    model.save(path) / Model.load(path)

Items are dense indices into `item_ids_` (the raw catalog ids). tests/recommend/test_contract.py runs
the same checks against every model.

There is no `model.recommend(user)`: a fitted model holds no user's history (model files carry no
personal data, and erasing a user needs no change to them). Recommendations for a known user are
`Shop.recommend(user_id, k, category=...)`, which reads the user's latest events from the store, checks
consent, applies filters and explains each item; for data outside a shop, pass the user's events to
`recommend_session`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from shopmind.evaluation.sequences import EVENT_TYPES
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
                          allowed: np.ndarray | None = None,
                          context: np.ndarray | None = None) -> list[tuple[int, float]]:
        """Top-k items for one history. `allowed` is an optional boolean mask over items (filters);
        `context`, the history's [type code, unix seconds] rows, goes to models that read it."""
        self._check()
        if k < 1:
            raise InvalidInputError("k must be at least 1", field="k")
        hist = np.asarray(history, dtype=np.int64)
        reads = context is not None and getattr(self.score, "accepts_context", False)
        scores = np.asarray(self.score([hist], **({"contexts": [context]} if reads else {}))[0], dtype=np.float64)
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

    def recommend_session(self, events: Sequence[str | dict], k: int = 10,
                          exclude_seen: bool = True) -> list[tuple[str, float]]:
        """Top-k (item id, score) after a sequence of events, oldest first: each an item id, or a dict
        with `item_id` and optionally `type` (view, purchase, ...) and `ts_ms`, which a model trained
        with event context reads. Items the model does not know are skipped."""
        self._check()
        lookup = getattr(self, "item_index_", None)
        if lookup is None:
            lookup = self.item_index_ = {item: n for n, item in enumerate(self.item_ids_)}
        rows = [e if isinstance(e, dict) else {"item_id": e} for e in events]
        if any(not isinstance(r.get("item_id"), str) for r in rows):
            raise InvalidInputError("every event needs an item_id (a string)", field="events")
        known = [r for r in rows if r["item_id"] in lookup]
        history = np.array([lookup[r["item_id"]] for r in known], dtype=np.int64)
        context = np.array([(EVENT_TYPES.get(r.get("type") or "view", 0), (r.get("ts_ms") or 0) // 1000)
                            for r in known], dtype=np.int64).reshape(-1, 2)
        top = self.recommend_history(history, k, exclude_seen, context=context)
        return [(self.item_ids_[i], s) for i, s in top]

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
