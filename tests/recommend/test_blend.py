"""The blend of the behaviour model and item kNN: its choice is made on validation targets, is
consistent with what it then scores, and picks up co-occurrence the behaviour model has not learnt."""

from __future__ import annotations

import numpy as np
import pytest

from shopmind.evaluation import Sequences, evaluate_ranking, leave_one_out
from shopmind.exceptions import InvalidInputError
from shopmind.models.baselines import ItemKNNRecommender
from shopmind.recommend.behaviour import BehaviourRecommender
from shopmind.recommend.blend import BlendedRecommender, blend

CLUSTERS, PER_CLUSTER = 12, 8


def baskets(users=600, seed=0) -> Sequences:
    """Each user views items of one cluster in random order: which items go together is all there is
    to learn (co-occurrence), the order says nothing."""
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(users):
        cluster = rng.integers(CLUSTERS)
        items = rng.permutation(PER_CLUSTER)[:rng.integers(4, PER_CLUSTER + 1)]
        lists.append([f"c{cluster}-{i}" for i in items])
    return Sequences.from_lists([f"u{n}" for n in range(users)], lists)


@pytest.fixture(scope="module")
def fitted():
    data = baskets()
    split = leave_one_out(data)
    # one short epoch: the transformer has barely started, the co-occurrence counts are complete
    weak = BehaviourRecommender(d_model=16, max_epochs=1, batch_size=256, learning_rate=1e-4, seed=0)
    return BlendedRecommender(weak, ItemKNNRecommender(neighbours=20)).fit(data, split), split


def test_the_choice_is_the_best_validation_ndcg_and_is_what_it_scores(fitted):
    model, split = fitted
    best = max(model.blend_scores_.values())
    assert model.valid_ndcg_ == pytest.approx(best, abs=1e-5)
    assert model.blend_scores_[f"{model.kind_} {model.weight_:g}"] == pytest.approx(best, abs=1e-5)
    # the score function ranks the validation targets exactly as the choice measured
    assert evaluate_ranking(model.score, split, "valid")[0].ndcg == pytest.approx(model.valid_ndcg_, abs=1e-9)
    # weight 0 is the behaviour model alone (standardising per user keeps each user's order)
    alone = evaluate_ranking(model.behaviour_.score, split, "valid")[0].ndcg
    assert model.blend_scores_["z 0"] == pytest.approx(alone, abs=1e-5)


def test_blend_picks_up_co_occurrence_the_weak_model_missed(fitted):
    model, split = fitted
    assert model.weight_ > 0
    hr_blend = evaluate_ranking(model.score, split, "test")[0].hr
    hr_alone = evaluate_ranking(model.behaviour_.score, split, "test")[0].hr
    assert hr_blend > hr_alone + 0.2, (hr_blend, hr_alone)


def test_the_estimators_passed_in_stay_unfitted(fitted):
    weak = BehaviourRecommender(d_model=16, max_epochs=1)
    BlendedRecommender(weak, ItemKNNRecommender(neighbours=5), weights=(0.0, 1.0)).fit(baskets(users=80))
    assert not hasattr(weak, "model_")


def test_bad_parameters_are_refused_before_training():
    with pytest.raises(InvalidInputError, match="kinds"):
        BlendedRecommender(kinds=("mean",)).fit(baskets(users=50))
    with pytest.raises(InvalidInputError, match="weights"):
        BlendedRecommender(weights=(-1.0,)).fit(baskets(users=50))
    with pytest.raises(ValueError, match="unknown blend"):
        blend("mean", 1.0, np.zeros((1, 3)), np.zeros((1, 3)))


def test_log_blend_without_neighbours_keeps_the_behaviour_order():
    behaviour = np.array([[3.0, 1.0, 2.0, 0.5]])
    out = blend("log", 2.0, behaviour, np.zeros_like(behaviour))
    assert list(np.argsort(-out[0])) == list(np.argsort(-behaviour[0]))
