"""Validation items of users who do not choose the model are training data (train_unused_valid), the
choosing users' are not, and test items never are: for the split, the behaviour model and the blend."""

from __future__ import annotations

import numpy as np
import pytest

from shopmind.evaluation import Sequences, evaluate_ranking, leave_one_out
from shopmind.exceptions import InvalidInputError
from shopmind.recommend.behaviour import BehaviourRecommender
from shopmind.recommend.blend import BlendedRecommender

PAIRS, FILLERS = 10, 40


def _pairs_seen_only_as_validation(users: int = 400, seed: int = 0) -> Sequences:
    """Every user: two random fillers, then a{k}, then b{k} (the validation target), then a random
    filler (the test target). b{k} follows a{k} nowhere else: only validation items can teach it."""
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(users):
        k = rng.integers(PAIRS)
        fillers = rng.choice(FILLERS, size=3, replace=False)
        lists.append([f"f{fillers[0]}", f"f{fillers[1]}", f"a{k}", f"b{k}", f"f{fillers[2]}"])
    return Sequences.from_lists([f"u{n}" for n in range(users)], lists)


def test_split_gives_unreserved_validation_items_to_training_and_never_a_test_item():
    rng = np.random.default_rng(1)
    lists = [[f"i{x}" for x in rng.integers(0, 30, rng.integers(2, 9))] for _ in range(60)]
    contexts = [[(1, 1_700_000_000 + 60 * t) for t in range(len(items))] for items in lists]
    split = leave_one_out(Sequences.from_lists([f"u{n}" for n in range(60)], lists, contexts))
    assert split.fit_sequences() is split.train  # no selection: every validation item held out

    chosen = split.reserve(10, seed=0)
    assert len(chosen.selection_users) == 10 and set(chosen.selection_users) <= set(split.eval_users)
    assert chosen.reserve(10, seed=0).selection_users.tolist() == chosen.selection_users.tolist()
    seqs, ctx = chosen.fit_sequences(), chosen.fit_context()
    for u in range(60):
        full = split.data.sequences[u]
        if split.valid_target[u] < 0:  # fewer than three events: all training, as before
            assert seqs[u].tolist() == split.train[u].tolist()
        elif u in chosen.selection_users:
            assert seqs[u].tolist() == full[:-2].tolist()
        else:
            assert seqs[u].tolist() == full[:-1].tolist()  # the validation item, never the test item
        assert len(ctx[u]) == len(seqs[u])
        # what a model reads before each target is unchanged
        assert chosen.history(u, "test").tolist() == split.history(u, "test").tolist()
    assert chosen.selection(3000).tolist() == chosen.selection_users.tolist()

    with pytest.raises(InvalidInputError, match="validation target"):
        split.with_selection(np.array([int(np.flatnonzero(split.valid_target < 0)[0])]))


@pytest.fixture(scope="module")
def pair_models():
    data = _pairs_seen_only_as_validation()
    split = leave_one_out(data)
    params = {"d_model": 32, "max_epochs": 20, "patience": 20, "dropout": 0.1, "learning_rate": 3e-3,
              "batch_size": 32, "valid_users": 100, "seed": 0}
    default = BehaviourRecommender(**params).fit(data, split)
    strict = BehaviourRecommender(**params, train_unused_valid=False).fit(data, split)
    return data, split, default, strict


def _pairs_right(model: BehaviourRecommender) -> int:
    index = {item: n for n, item in enumerate(model.item_ids_)}
    right = 0
    for k in range(PAIRS):
        history = [index["f0"], index["f1"], index[f"a{k}"]]
        scores = model.score([history])[0]
        scores[history] = -np.inf
        right += model.item_ids_[int(np.argmax(scores))] == f"b{k}"
    return right


def test_the_model_learns_what_only_unreserved_validation_items_show(pair_models):
    data, split, default, strict = pair_models
    assert len(default.selection_users_) == 100
    assert _pairs_right(default) >= PAIRS - 1
    assert _pairs_right(strict) == 0  # b{k} was never a training target
    # the choosing users' own validation items were not trained on: their validation score is an
    # honest estimate, which for a pattern learnt from the other users is high
    valid = evaluate_ranking(default.score, split, "valid", users=default.selection_users_)[0]
    assert valid.hr > 0.9 and valid.ndcg == pytest.approx(default.valid_ndcg_, abs=1e-9)


def test_the_blend_chooses_on_the_models_selection_and_counts_the_same_training_data(pair_models):
    data, split, default, strict = pair_models
    chosen = BlendedRecommender(default, prefit=True).fit(data)
    reserved = split.with_selection(default.selection_users_)
    assert chosen.valid_ndcg_ == pytest.approx(
        evaluate_ranking(chosen.score, reserved, "valid", users=default.selection_users_)[0].ndcg, abs=1e-9)
    index = {item: n for n, item in enumerate(data.item_ids)}
    knn = chosen.knn_.score([[index["a3"]]])[0]
    assert knn[index["b3"]] > 0  # a3 and b3 co-occur only through unreserved validation items
    strict_blend = BlendedRecommender(strict, prefit=True).fit(data)
    assert strict_blend.knn_.score([[index["a3"]]])[0][index["b3"]] == 0


def _pairs_seen_only_as_test(users: int = 400, seed: int = 0) -> Sequences:
    """Like the data above, but b{k} is each user's newest event (the test target)."""
    rng = np.random.default_rng(seed)
    lists = []
    for _ in range(users):
        k = rng.integers(PAIRS)
        fillers = rng.choice(FILLERS, size=2, replace=False)
        lists.append([f"f{fillers[0]}", f"f{fillers[1]}", f"a{k}", f"b{k}"])
    return Sequences.from_lists([f"u{n}" for n in range(users)], lists)


def test_a_holdout_split_trains_everyone_elses_newest_event_and_gates_on_the_holdout():
    from shopmind.training.pipeline import gate, holdout_users

    data = _pairs_seen_only_as_test()
    split = leave_one_out(data)
    held = holdout_users(split, 100)
    holdout = split.with_holdout(held)
    seqs = holdout.fit_sequences()
    for u in range(len(data.sequences)):
        expected = data.sequences[u][:-2] if u in held else data.sequences[u]
        assert seqs[u].tolist() == expected.tolist()
    params = {"d_model": 32, "max_epochs": 15, "patience": 15, "dropout": 0.1, "learning_rate": 3e-3,
              "batch_size": 32, "seed": 0}
    served = BehaviourRecommender(**params).fit(data, holdout)
    benchmark = BehaviourRecommender(**params, valid_users=100).fit(data, split)  # test items never train
    assert served.selection_users_.tolist() == held.tolist()
    assert _pairs_right(served) >= PAIRS - 1 and _pairs_right(benchmark) == 0
    # the gate judges on the holdout's newest events only, which neither model trained on
    verdict = gate(served, benchmark, data, split=holdout)
    assert verdict.challenger_ndcg == pytest.approx(
        evaluate_ranking(served.score, split, "test", users=held)[0].ndcg, abs=1e-9)
    assert verdict.promoted and verdict.challenger_ndcg > verdict.champion_ndcg + 0.5
    # off, nothing but `train` is trained on, whatever the split
    strict = BehaviourRecommender(**{**params, "max_epochs": 1}, train_unused_valid=False).fit(data, holdout)
    assert strict.selection_users_.tolist() == split.eval_users.tolist()


def test_the_holdout_is_stable_as_a_shop_grows():
    from shopmind.training.pipeline import holdout_users

    small = _pairs_seen_only_as_test(users=300, seed=1)
    grown = Sequences.from_lists(
        small.user_ids + [f"new{n}" for n in range(300)],
        [[small.item_ids[i] for i in s] for s in small.sequences] + [["f1", "f2", "a1", "b1"]] * 300)
    before = {small.user_ids[u] for u in holdout_users(leave_one_out(small), 100)}
    after = {grown.user_ids[u] for u in holdout_users(leave_one_out(grown), 100)}
    assert len(before) == len(after) == 100
    # an old user only ever leaves the holdout: never joins it after a champion trained on their events
    assert {u for u in after if not u.startswith("new")} <= before
    assert any(u.startswith("new") for u in after)
