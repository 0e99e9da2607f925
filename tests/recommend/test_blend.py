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


@pytest.mark.parametrize("kind", ["z", "log"])
def test_served_top_k_is_the_blends_own_ranking(kind):
    """Serving scores only the model's own top k and the kNN's support; that must give exactly the
    blend's ranking over the whole catalog (hidden and filtered items left out)."""
    from shopmind.recommend.blend import attach_blend
    from shopmind.recommend.index import ItemIndex

    data = baskets(users=300, seed=1)
    split = leave_one_out(data)
    model = BehaviourRecommender(d_model=16, max_epochs=2, seed=0).fit(data, split)
    attach_blend(model, data, split, kinds=(kind,), weights=(1.0,))  # forced on: validation may not want it
    assert model.blend_ is not None and model.blend_.kind == kind
    vectors = model.item_vectors()
    items = ItemIndex(vectors[:, :-1], vectors[:, -1])
    allowed = np.arange(data.n_items) % 3 != 0
    for user in range(0, 300, 37):
        history = split.history(user, "test")
        offline = model.score([history])[0].astype(np.float64)
        state = model.user_state([history])[0]
        for mask in (None, allowed):
            best = offline.copy()
            best[history] = -np.inf
            if mask is not None:
                best[~mask] = -np.inf
            want = [int(i) for i in np.argsort(-best, kind="stable")[:5]]
            served = model.blend_.top_k(items, state, history, 5, hidden=set(history.tolist()), allowed=mask)
            got = [i for i, _ in served]
            # the same items in the same order; only items whose scores tie may trade places
            assert np.allclose(best[got], best[want], atol=1e-4), (got, want)
            shift = np.array([x for _, x in served]) - offline[got]   # "log" leaves out a per-user constant
            assert np.allclose(shift, shift[0] if kind == "log" else 0.0, atol=1e-3), shift


def test_an_attached_blend_is_saved_loaded_and_scored(tmp_path):
    from shopmind.recommend.blend import attach_blend

    data = baskets(users=200, seed=2)
    split = leave_one_out(data)
    model = BehaviourRecommender(d_model=16, max_epochs=1, seed=0).fit(data, split)
    alone = model.score([np.array([1, 2])])
    attach_blend(model, data, split, weights=(0.5,))
    blended = model.score([np.array([1, 2])])
    assert not np.allclose(blended, alone)
    np.testing.assert_allclose(model.score([np.array([1, 2])], blended=False), alone, rtol=1e-6)
    model.save(tmp_path / "m")
    again = BehaviourRecommender.load(tmp_path / "m")
    np.testing.assert_allclose(again.score([np.array([1, 2])]), blended, rtol=1e-5, atol=1e-6)
    # validation that prefers the model alone attaches nothing
    attach_blend(model, data, split, weights=(0.0,))
    assert model.blend_ is None
