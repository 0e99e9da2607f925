"""The behaviour model blended with item-to-item co-occurrence, the blend chosen on validation targets.

    model = BlendedRecommender().fit(data, split)      # a BehaviourRecommender and an ItemKNNRecommender
    scores = model.score(histories, contexts)          # (n, n_items), like every SequenceRecommender

Why: a transformer trained on short, sparse histories (Amazon Beauty: 8.9 events per user) spreads its
probability over many plausible items, while item kNN knows exactly which items were bought together
but nothing about order or intent. Their errors differ, so a blend ranks better than either
(docs/benchmarks.md: HR@10 +5% on Amazon Beauty, +10% to +17% on MovieLens-100K over the same trained
behaviour model alone).

Two ways of blending are tried, each with several weights, and the one with the best NDCG@10 on the
split's validation targets is kept (the rule is automatic; the test targets are never seen):

- "z": each model's scores standardised per user over the catalog, then `z(behaviour) + w * z(knn)`;
- "log": a product of experts, `log softmax(behaviour) + w * log(knn share + 1e-6)`, where a user's kNN
  share of an item is its kNN score over the sum of their kNN scores.

Weight 0 is in the grid, so on validation the blend is never worse than the behaviour model alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence as Seq
from pathlib import Path

import numpy as np

from shopmind.evaluation.metrics import ranking_metrics
from shopmind.evaluation.protocol import target_ranks
from shopmind.evaluation.sequences import Sequences, Split, leave_one_out
from shopmind.exceptions import InvalidInputError
from shopmind.models.baselines import ItemKNNRecommender
from shopmind.recommend.base import SequenceRecommender
from shopmind.recommend.behaviour import BehaviourRecommender

KINDS = ("z", "log")
WEIGHTS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
SHARE_FLOOR = 1e-6  # what an item the kNN never links to the history keeps of the "log" blend


def _standardised(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    return (scores - scores.mean(axis=1, keepdims=True)) / (scores.std(axis=1, keepdims=True) + 1e-9)


def _log_softmax(scores: np.ndarray) -> np.ndarray:
    scores = scores.astype(np.float64)
    scores = scores - scores.max(axis=1, keepdims=True)
    return scores - np.log(np.exp(scores).sum(axis=1, keepdims=True))


def _log_share(knn: np.ndarray) -> np.ndarray:
    knn = knn.astype(np.float64)
    return np.log(knn / (knn.sum(axis=1, keepdims=True) + 1e-12) + SHARE_FLOOR)


def _parts(kind: str, behaviour: np.ndarray, knn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two terms of a blend: it is `first + weight * second`."""
    if kind == "z":
        return _standardised(behaviour), _standardised(knn)
    if kind == "log":
        return _log_softmax(behaviour), _log_share(knn)
    raise ValueError(f"unknown blend {kind!r}: expected one of {KINDS}")


def blend(kind: str, weight: float, behaviour: np.ndarray, knn: np.ndarray) -> np.ndarray:
    """One blend of the two models' raw scores (n, n_items)."""
    first, second = _parts(kind, behaviour, knn)
    return first + weight * second


class BlendedRecommender(SequenceRecommender):
    """A behaviour model and item kNN, blended by the rule that ranks the validation targets best."""

    def __init__(self, behaviour: BehaviourRecommender | None = None, knn: ItemKNNRecommender | None = None,
                 kinds: Seq[str] = KINDS, weights: Seq[float] = WEIGHTS, valid_users: int = 10_000, seed: int = 0,
                 prefit: bool = False):
        self.behaviour = behaviour
        self.knn = knn
        self.kinds = tuple(kinds)
        self.weights = tuple(weights)
        self.valid_users = valid_users
        self.seed = seed
        self.prefit = prefit  # `behaviour` is already fitted on this split: only the kNN and the choice are fitted

    def fit(self, data: Sequences, split: Split | None = None) -> "BlendedRecommender":
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds or not self.weights or min(self.weights) < 0:
            raise InvalidInputError(f"kinds must be some of {KINDS} and weights non-negative numbers",
                                    field="params")
        split = split or leave_one_out(data)
        if self.prefit:
            if self.behaviour is None or not hasattr(self.behaviour, "model_"):
                raise InvalidInputError("prefit needs a fitted behaviour model", field="behaviour")
            self.behaviour_ = self.behaviour
        else:  # copies, as scikit-learn's meta-estimators clone theirs: the estimators passed in stay unfitted
            self.behaviour_ = copy.deepcopy(self.behaviour or BehaviourRecommender(seed=self.seed)).fit(data, split)
        # The network's own selection, when it has one: weights are chosen on validation targets
        # neither component trained on, and kNN counts the same training data as the network.
        selection = getattr(self.behaviour_, "selection_users_", None)
        if selection is not None and split.selection_users is None and getattr(self.behaviour_, "train_unused_valid", False):
            split = split.with_selection(selection)
        self.knn_ = copy.deepcopy(self.knn or ItemKNNRecommender()).fit(data, split)
        self.item_ids_ = self.behaviour_.item_ids_
        self.blend_scores_ = self._choose(split)
        return self

    def _choose(self, split: Split) -> dict[str, float]:
        """Every (kind, weight)'s validation NDCG@10; keeps the best (the first of equals: weight 0
        comes first, so a blend must beat the behaviour model alone to be chosen)."""
        users = split.selection(self.valid_users, self.seed)
        grid = [(k, w) for k in self.kinds for w in self.weights]
        ranks: dict[tuple[str, float], list[np.ndarray]] = {g: [] for g in grid}
        context = split.data.context is not None and self.behaviour_.reads_context
        for start in range(0, len(users), 256):
            chunk = users[start:start + 256]
            histories = [split.history(int(u), "valid") for u in chunk]
            contexts = [split.history_context(int(u), "valid") for u in chunk] if context else None
            behaviour, knn = self.behaviour_.score(histories, contexts, blended=False), self.knn_.score(histories)
            for kind in self.kinds:
                first, second = _parts(kind, behaviour, knn)
                for weight in self.weights:  # only the target's rank: NDCG needs no top-k list
                    ranks[(kind, weight)].append(target_ranks(first + weight * second, histories,
                                                              split.valid_target[chunk]))
        ndcg = {g: ranking_metrics(np.concatenate(r), 10)[1] if r else 0.0 for g, r in ranks.items()}
        best = max(grid, key=lambda g: (ndcg[g], -grid.index(g)))
        self.kind_, self.weight_, self.valid_ndcg_ = best[0], float(best[1]), float(ndcg[best])
        return {f"{k} {w:g}": round(float(v), 5) for (k, w), v in ndcg.items()}

    @property
    def reads_context(self) -> bool:
        self._check()
        return self.behaviour_.reads_context

    def score(self, histories: Seq[np.ndarray], contexts: Seq[np.ndarray] | None = None) -> np.ndarray:
        self._check()
        return blend(self.kind_, self.weight_, self.behaviour_.score(histories, contexts, blended=False),
                     self.knn_.score(histories))

    score.accepts_context = True  # the evaluator hands over contexts (evaluation/protocol.py)

    def _similarity_vectors(self) -> np.ndarray:
        return self.behaviour_.item_vectors()[:, :-1]

    def save(self, path: Path) -> None:
        self._check()
        path = self._prepare(path)
        self.behaviour_.save(path / "behaviour")
        self.knn_.save(path / "knn")
        (path / "model.json").write_text(json.dumps({
            "params": {"kinds": self.kinds, "weights": self.weights, "valid_users": self.valid_users,
                       "seed": self.seed, "prefit": self.prefit},
            "kind": self.kind_, "weight": self.weight_, "valid_ndcg": self.valid_ndcg_,
            "blend_scores": self.blend_scores_}))

    @classmethod
    def load(cls, path: Path) -> "BlendedRecommender":
        path = Path(path)
        meta = json.loads((path / "model.json").read_text())
        model = cls(**meta["params"])
        model.behaviour_ = BehaviourRecommender.load(path / "behaviour")
        model.knn_ = ItemKNNRecommender.load(path / "knn")
        model.kind_, model.weight_, model.valid_ndcg_ = meta["kind"], meta["weight"], meta["valid_ndcg"]
        model.blend_scores_ = meta["blend_scores"]
        model.item_ids_ = model.behaviour_.item_ids_
        return model


class ItemBlend:
    """A blend attached to a behaviour model for serving (`attach_blend`): the kNN, the rule and its
    weight. The model's `score` applies it; serving ranks with `top_k`."""

    def __init__(self, knn: ItemKNNRecommender, kind: str, weight: float, valid_grid: dict[str, float]):
        self.knn, self.kind, self.weight = knn, kind, weight
        self.valid_grid = valid_grid  # every candidate rule and weight's validation NDCG@10

    def apply(self, behaviour_scores: np.ndarray, histories: Seq[np.ndarray]) -> np.ndarray:
        return blend(self.kind, self.weight, behaviour_scores, self.knn.score(histories))

    def top_k(self, items, state: np.ndarray, history: np.ndarray, k: int, hidden=(),
              allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
        """The k best items of the blend for one user, as `ItemIndex.top_k` does for the model alone:
        one exact scan of the behaviour scores, the kNN's row, the blend over the catalog. The kNN
        row is zero off its support (at most 50 history items x their neighbours), so the blend is the
        behaviour scores, rescaled and shifted, plus a correction on the support only. Under the "log"
        rule the scores leave out the softmax's per-user normaliser (the order is the same)."""
        behaviour = items.scores(state)  # float32: two passes over the catalog below, no more
        support, values = self.knn.neighbour_scores(history)
        if self.kind == "z":
            n = len(behaviour)
            b_mean = float(behaviour.mean(dtype=np.float64))
            b_std = float(behaviour.std(dtype=np.float64)) + 1e-9
            k_mean = float(values.sum()) / n
            k_std = float(np.sqrt(max(float((values ** 2).sum()) / n - k_mean ** 2, 0.0))) + 1e-9
            scores = behaviour * np.float32(1.0 / b_std)
            scores += np.float32(-b_mean / b_std - self.weight * k_mean / k_std)
            scores[support] += (self.weight * values / k_std).astype(np.float32)
        else:
            floor = np.log(SHARE_FLOOR)
            scores = behaviour + np.float32(self.weight * floor)
            share = values / (float(values.sum()) + 1e-12) + SHARE_FLOOR
            scores[support] += (self.weight * (np.log(share) - floor)).astype(np.float32)
        return items.best_of(scores, k, allowed, hidden)

    def save(self, path: Path) -> None:
        path = Path(path)
        self.knn.save(path / "knn")
        (path / "blend.json").write_text(json.dumps({"kind": self.kind, "weight": self.weight,
                                                     "valid_grid": self.valid_grid}))

    @classmethod
    def load(cls, path: Path) -> "ItemBlend":
        meta = json.loads((Path(path) / "blend.json").read_text())
        return cls(ItemKNNRecommender.load(Path(path) / "knn"), meta["kind"], meta["weight"], meta["valid_grid"])


def attach_blend(model: BehaviourRecommender, data: Sequences, split: Split | None = None,
                 **params) -> BehaviourRecommender:
    """Fit item kNN beside a fitted behaviour model and, when validation prefers a blend to the model
    alone, attach it (`model.blend_`): the model's scores and its served rankings become the blend's.
    Not for DP-trained models: the co-occurrence counts carry no DP guarantee."""
    if getattr(model, "privacy_", None) is not None:
        raise InvalidInputError("a DP-trained model cannot be blended with (non-private) item kNN", field="model")
    chosen = BlendedRecommender(model, prefit=True, **params).fit(data, split)
    model.blend_ = (ItemBlend(chosen.knn_, chosen.kind_, chosen.weight_, chosen.blend_scores_)
                    if chosen.weight_ > 0 else None)
    return model
