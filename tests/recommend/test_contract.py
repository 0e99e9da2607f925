"""One contract, every model: fit/score/recommend/similar/save/load on sequences with a known answer."""

from __future__ import annotations

import numpy as np
import pytest

from shopmind.evaluation import Sequences, evaluate_ranking, leave_one_out
from shopmind.exceptions import InvalidInputError, NotFittedError
from shopmind.models.baselines import ALSRecommender, ItemKNNRecommender, PopularityRecommender
from shopmind.recommend.behaviour import BehaviourRecommender
from shopmind.recommend.blend import BlendedRecommender

N_ITEMS = 60


def chains(users=400, seed=0) -> Sequences:
    """Each user walks a chain: item i is followed by i+1 (mod N). A sequence model can learn this
    exactly; popularity cannot (all items are equally popular)."""
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(users):
        start, length = rng.integers(0, N_ITEMS), rng.integers(5, 12)
        lists.append([f"i{(start + n) % N_ITEMS}" for n in range(length)])
    return Sequences.from_lists([f"u{n}" for n in range(users)], lists)


MODELS = {
    "popularity": lambda: PopularityRecommender(),
    "itemknn": lambda: ItemKNNRecommender(neighbours=20),
    "als": lambda: ALSRecommender(factors=16, iterations=5),
    "behaviour": lambda: BehaviourRecommender(d_model=32, max_epochs=30, patience=30, dropout=0.1,
                                              learning_rate=3e-3, batch_size=64),
    "blend": lambda: BlendedRecommender(BehaviourRecommender(d_model=32, max_epochs=30, patience=30, dropout=0.1,
                                                             learning_rate=3e-3, batch_size=64),
                                        ItemKNNRecommender(neighbours=20)),
}


@pytest.fixture(scope="module")
def data():
    return chains()


@pytest.fixture(scope="module")
def fitted(data):
    split = leave_one_out(data)
    return {name: make().fit(data, split) for name, make in MODELS.items()}, split


@pytest.mark.parametrize("name", MODELS)
def test_unfitted_models_say_so(name):
    with pytest.raises(NotFittedError):
        MODELS[name]().score([np.array([1, 2])])


@pytest.mark.parametrize("name", MODELS)
def test_scores_recommendations_and_similar_items(name, fitted):
    models, split = fitted
    model = models[name]
    scores = model.score([np.array([1, 2, 3]), np.array([], dtype=np.int64)])
    assert scores.shape == (2, N_ITEMS)
    recs = model.recommend_history([1, 2, 3], k=5)
    assert len(recs) == 5 and not {1, 2, 3} & {i for i, _ in recs}
    assert [s for _, s in recs] == sorted((s for _, s in recs), reverse=True)
    similar = model.similar_items(4, k=3)
    assert len(similar) == 3 and 4 not in {i for i, _ in similar}


@pytest.mark.parametrize("name", MODELS)
def test_save_and_load_give_the_same_scores(name, fitted, tmp_path):
    models, _ = fitted
    model = models[name]
    model.save(tmp_path / name)
    again = type(model).load(tmp_path / name)
    histories = [np.array([5, 6, 7]), np.array([40])]
    np.testing.assert_allclose(again.score(histories), model.score(histories), rtol=1e-5, atol=1e-5)
    assert again.item_ids_ == model.item_ids_


def test_sequence_models_learn_the_chain_and_popularity_does_not(fitted):
    models, split = fitted
    hr = {name: evaluate_ranking(m.score, split, "test")[0].hr for name, m in models.items()}
    assert hr["behaviour"] > 0.9, hr
    assert hr["popularity"] < 0.4, hr
    # The transformer knows the order; co-occurrence only knows the neighbourhood.
    model = models["behaviour"]
    index = {item: n for n, item in enumerate(model.item_ids_)}
    nxt = model.recommend_history([index["i10"], index["i11"], index["i12"]], k=1)[0][0]
    assert model.item_ids_[nxt] == "i13"
    # the same from raw ids, as a shop's session would send them (unknown items are skipped)
    session = model.recommend_session(["i10", {"item_id": "i11", "type": "view"}, "never-seen", "i12"], k=3)
    assert session[0][0] == "i13" and len(session) == 3 and not {"i10", "i11", "i12"} & {i for i, _ in session}
    with pytest.raises(InvalidInputError, match="item_id"):
        model.recommend_session([{"type": "view"}])


@pytest.mark.parametrize("step", [1, 10, 25, 50])
@pytest.mark.parametrize("length", [2, 5, 50, 51, 52, 75, 76, 130, 1000])
def test_training_windows_use_each_interaction_once_with_context(length, step):
    from shopmind.recommend.behaviour import _windows

    x, y, _ = _windows([np.arange(length)], 50, step)
    assert sorted((y[y > 0] - 1).tolist()) == list(range(1, length))  # every next item a target, once
    for inputs, targets in zip(x, y):
        first = np.flatnonzero(inputs)[0]
        assert (inputs[first:] - 1 == np.arange(inputs[first] - 1, inputs[first] - 1 + 50 - first)).all()  # in order
        if inputs[first] != 1:  # a window that does not start at the beginning of the history
            assert (np.flatnonzero(targets) - first + 1).min() >= 50 - step  # at least max_len - step of context


def test_item_noise_replaces_real_inputs_only_at_its_rate():
    import torch

    from shopmind.recommend.behaviour import _substitute_items

    torch.manual_seed(0)
    items = torch.zeros(400, 50, dtype=torch.long)
    items[:, 25:] = torch.randint(1, 1001, (400, 25))          # left padding, then 25 real events each
    assert torch.equal(_substitute_items(items, 0.0, 1000), items)
    noisy = _substitute_items(items, 0.2, 1000)
    assert (noisy[:, :25] == 0).all()                          # padding stays padding
    changed = (noisy != items).float()[:, 25:].mean().item()
    assert 0.18 < changed < 0.22                               # 10,000 draws: 0.2 +- 0.008 (two sd: 0.004 each)
    assert ((noisy[:, 25:] >= 1) & (noisy[:, 25:] <= 1000)).all()


def test_the_regularisers_are_parameters_that_survive_save_and_load(tmp_path):
    model = BehaviourRecommender(max_epochs=1, label_smoothing=0.1, item_noise=0.1, d_model=16).fit(chains(60))
    model.save(tmp_path / "m")
    again = BehaviourRecommender.load(tmp_path / "m")
    assert (again.label_smoothing, again.item_noise) == (0.1, 0.1)
