"""Baselines in the common interface: popularity, item-item co-occurrence kNN, implicit ALS.

They are the yardsticks for the behaviour model and the fallbacks for cold users.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from shopmind.evaluation import Sequences, Split
from shopmind.exceptions import InvalidInputError
from shopmind.recommend.base import SequenceRecommender


def _train_sequences(data: Sequences, split: Split | None) -> list[np.ndarray]:
    return split.fit_sequences() if split is not None else data.sequences


def _user_item_matrix(seqs: Sequence[np.ndarray], n_items: int) -> sp.csr_matrix:
    rows = np.repeat(np.arange(len(seqs)), [len(s) for s in seqs])
    cols = np.concatenate(seqs) if len(seqs) else np.zeros(0, dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(cols), dtype=np.float32), (rows, cols)), shape=(len(seqs), n_items))
    m.sum_duplicates()
    return m


class PopularityRecommender(SequenceRecommender):
    """Items by number of interactions; the same list for everyone (seen items excluded at ranking)."""

    def fit(self, data: Sequences, split: Split | None = None) -> "PopularityRecommender":
        seqs = _train_sequences(data, split)
        counts = np.bincount(np.concatenate(seqs), minlength=data.n_items) if seqs else np.zeros(data.n_items)
        self.counts_ = counts.astype(np.float64)
        self.item_ids_ = list(data.item_ids)
        return self

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        self._check()
        return np.broadcast_to(self.counts_, (len(histories), len(self.counts_))).copy()

    def _similarity_vectors(self) -> np.ndarray:
        return self.counts_[:, None]

    def save(self, path: Path) -> None:
        path = self._prepare(path)
        np.save(path / "counts.npy", self.counts_)
        (path / "items.json").write_text(json.dumps(self.item_ids_))

    @classmethod
    def load(cls, path: Path) -> "PopularityRecommender":
        model = cls()
        model.counts_ = np.load(Path(path) / "counts.npy")
        model.item_ids_ = json.loads((Path(path) / "items.json").read_text())
        return model


class ItemKNNRecommender(SequenceRecommender):
    """Item-item cosine similarity of co-occurrence across users, keeping each item's top neighbours.
    A history scores items by the similarity to its items, recent items weighing more."""

    def __init__(self, neighbours: int = 100, shrink: float = 10.0, recency: float = 0.8, max_history: int = 50):
        self.neighbours = neighbours
        self.shrink = shrink
        self.recency = recency
        self.max_history = max_history

    def fit(self, data: Sequences, split: Split | None = None) -> "ItemKNNRecommender":
        if self.neighbours < 1:
            raise InvalidInputError("neighbours must be at least 1", field="neighbours")
        ui = _user_item_matrix(_train_sequences(data, split), data.n_items)
        ui.data[:] = 1.0
        co = (ui.T @ ui).tocsr().astype(np.float32)
        norms = np.sqrt(co.diagonal())
        co.setdiag(0)
        co.eliminate_zeros()
        coo = co.tocoo()
        sims = coo.data / (norms[coo.row] * norms[coo.col] + self.shrink)
        sim = sp.csr_matrix((sims.astype(np.float32), (coo.row, coo.col)), shape=co.shape)
        self.similarity_ = self._top_neighbours(sim)
        self.item_ids_ = list(data.item_ids)
        return self

    def _top_neighbours(self, sim: sp.csr_matrix) -> sp.csr_matrix:
        rows, cols, vals = [], [], []
        for r in range(sim.shape[0]):
            start, end = sim.indptr[r], sim.indptr[r + 1]
            if end == start:
                continue
            data, idx = sim.data[start:end], sim.indices[start:end]
            if len(data) > self.neighbours:
                keep = np.argpartition(-data, self.neighbours - 1)[:self.neighbours]
                data, idx = data[keep], idx[keep]
            rows.append(np.full(len(idx), r))
            cols.append(idx)
            vals.append(data)
        if not rows:
            return sp.csr_matrix(sim.shape, dtype=np.float32)
        return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=sim.shape)

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        self._check()
        n_items = self.similarity_.shape[0]
        weights = sp.lil_matrix((len(histories), n_items), dtype=np.float32)
        for r, h in enumerate(histories):
            h = np.asarray(h, dtype=np.int64)[-self.max_history:]
            for age, item in enumerate(h[::-1]):
                weights[r, item] += self.recency ** age
        return np.asarray((weights.tocsr() @ self.similarity_).todense())

    def neighbour_scores(self, history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`score` for one history, sparse: the items with a non-zero score (sorted) and their scores.
        Summed from the history items' neighbour lists, O(max_history x neighbours): serving a blend
        (recommend/blend.py) needs no catalog-long vector, which a sparse product writes (2.7 ms at
        100,000 items)."""
        self._check()
        recent = np.ascontiguousarray(np.asarray(history, dtype=np.int64)[-self.max_history:][::-1])
        if not len(recent):
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        weights = self.recency ** np.arange(len(recent), dtype=np.float64)  # newest first, as in `score`
        rows = self.similarity_[recent]
        contributions = rows.data.astype(np.float64) * np.repeat(weights, np.diff(rows.indptr))
        support, where = np.unique(rows.indices, return_inverse=True)
        values = np.bincount(where, weights=contributions, minlength=len(support))
        nonzero = values != 0
        return support[nonzero], values[nonzero]

    def _similarity_vectors(self) -> np.ndarray:
        return np.asarray(self.similarity_.todense())

    def save(self, path: Path) -> None:
        path = self._prepare(path)
        sp.save_npz(path / "similarity.npz", self.similarity_)
        params = {k: v for k, v in self.__dict__.items() if not k.endswith("_")}
        (path / "model.json").write_text(json.dumps({"params": params, "items": self.item_ids_}))

    @classmethod
    def load(cls, path: Path) -> "ItemKNNRecommender":
        meta = json.loads((Path(path) / "model.json").read_text())
        model = cls(**meta["params"])
        model.similarity_ = sp.load_npz(Path(path) / "similarity.npz").tocsr()
        model.item_ids_ = meta["items"]
        return model


class ALSRecommender(SequenceRecommender):
    """Implicit-feedback matrix factorisation (Hu, Koren & Volinsky 2008) via the `implicit` package.
    A history's user vector is solved on the fly from the item factors, so any history can be scored."""

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, seed: int = 0):
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed

    def fit(self, data: Sequences, split: Split | None = None) -> "ALSRecommender":
        from implicit.cpu.als import AlternatingLeastSquares

        ui = _user_item_matrix(_train_sequences(data, split), data.n_items)
        model = AlternatingLeastSquares(factors=self.factors, regularization=self.regularization, alpha=self.alpha,
                                        iterations=self.iterations, random_state=self.seed,
                                        calculate_training_loss=False)
        model.fit(ui, show_progress=False)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float32)
        self.item_ids_ = list(data.item_ids)
        return self

    def _user_vectors(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        """Solve (Y^T C Y + reg I) x = Y^T C p for each history (the ALS user step)."""
        Y = self.item_factors_.astype(np.float64)
        yty = Y.T @ Y
        reg = self.regularization * np.eye(Y.shape[1])
        out = np.zeros((len(histories), Y.shape[1]))
        for r, h in enumerate(histories):
            items, counts = np.unique(np.asarray(h, dtype=np.int64), return_counts=True)
            if len(items) == 0:
                continue
            # implicit (0.5 and later) trains with confidence c = alpha * r on observed items, not the
            # paper's 1 + alpha * r; the user step has to solve the objective the item factors came from
            conf = self.alpha * counts
            Yi = Y[items]
            A = yty + (Yi.T * (conf - 1.0)) @ Yi + reg
            b = (Yi.T * conf).sum(axis=1)
            out[r] = np.linalg.solve(A, b)
        return out

    def score(self, histories: Sequence[np.ndarray]) -> np.ndarray:
        self._check()
        return self._user_vectors(histories) @ self.item_factors_.T

    def _similarity_vectors(self) -> np.ndarray:
        return self.item_factors_

    def save(self, path: Path) -> None:
        path = self._prepare(path)
        np.save(path / "item_factors.npy", self.item_factors_)
        params = {k: v for k, v in self.__dict__.items() if not k.endswith("_")}
        (path / "model.json").write_text(json.dumps({"params": params, "items": self.item_ids_}))

    @classmethod
    def load(cls, path: Path) -> "ALSRecommender":
        meta = json.loads((Path(path) / "model.json").read_text())
        model = cls(**meta["params"])
        model.item_factors_ = np.load(Path(path) / "item_factors.npy")
        model.item_ids_ = meta["items"]
        return model
