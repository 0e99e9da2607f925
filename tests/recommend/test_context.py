"""Event context (type, gap since the previous event, hour, weekday): how it is encoded, that it is cut
exactly where the items are (no target's own context leaks), and that the behaviour model learns
from it what item ids alone cannot tell."""

from __future__ import annotations

import numpy as np
import pytest

from shopmind.evaluation import Sequences, evaluate_ranking, leave_one_out
from shopmind.evaluation.sequences import EVENT_TYPES
from shopmind.models.behaviour import GAP_BUCKETS, event_features
from shopmind.recommend.behaviour import BehaviourRecommender, _windows

MONDAY = 4 * 86400  # 1970-01-05 00:00 UTC
VIEW, PURCHASE = EVENT_TYPES["view"], EVENT_TYPES["purchase"]


def test_event_features_encode_type_gap_hour_and_weekday():
    rows = np.array([[VIEW, MONDAY + 3600 * 9],            # Monday 09:00, the first event
                     [PURCHASE, MONDAY + 3600 * 9 + 30],    # 30 s later
                     [VIEW, MONDAY + 86400 * 6 + 3600 * 23],  # Sunday 23:00, almost 6 days later
                     [VIEW, 0]])                             # time unknown
    features = event_features(rows)
    assert features[:, 0].tolist() == [VIEW, PURCHASE, VIEW, VIEW]
    assert features[:, 1].tolist() == [1, 2 + 4, 2 + 19, 0]  # log2(31) = 4.95; log2(1 + 568,770) = 19.1
    assert features[:, 2].tolist() == [10, 10, 24, 0]         # hour + 1
    assert features[:, 3].tolist() == [1, 1, 7, 0]            # Monday = 1, Sunday = 7
    far = event_features(np.array([[VIEW, 1000], [VIEW, 1000 + 10**9]]))
    assert far[1, 1] == GAP_BUCKETS - 1                       # gaps past the last bucket share it
    assert event_features(np.zeros((0, 2))).shape == (0, 4)


def test_training_windows_cut_context_like_the_items():
    length = 130
    items = np.arange(length)
    context = np.stack([items % 5 + 1, 1_000_000 + 60 * items], axis=1)
    x, y, f = _windows([items], 50, 10, [context])
    assert f.shape == (len(x), 50, 4)
    real = x > 0
    assert (f[..., 0][real] == (x[real] - 1) % 5 + 1).all()   # each input's own type
    assert (f[~real] == 0).all()                               # padding has no context
    # the first input of a later window keeps its true gap (60 s) rather than "first event"
    assert (f[..., 1][real & (x > 1)] == 2 + 5).all() and (f[..., 1][x == 1] == 1).all()


def test_split_and_evaluator_hand_over_context_only_up_to_the_history():
    data = Sequences.from_lists(["a", "b"], [["i1", "i2", "i3", "i4"], ["i2", "i3", "i4", "i1", "i2"]],
                                [[(VIEW, 100 + n) for n in range(4)], [(PURCHASE, 200 + n) for n in range(5)]])
    split = leave_one_out(data)
    for user in (0, 1):
        for stage in ("valid", "test"):
            history, context = split.history(user, stage), split.history_context(user, stage)
            assert len(context) == len(history)
            assert (context == data.context[user][:len(history)]).all()
    seen = {}

    def with_context(histories, contexts=None):
        seen["contexts"] = contexts
        return np.zeros((len(histories), data.n_items))

    with_context.accepts_context = True
    evaluate_ranking(with_context, split, "test")
    assert [len(c) for c in seen["contexts"]] == [3, 4]  # never the test target's own row

    def items_only(histories):
        return np.zeros((len(histories), data.n_items))

    evaluate_ranking(items_only, split, "test")  # a scorer that does not ask gets no contexts (no TypeError)
    with pytest.raises(Exception, match="one \\[type, seconds\\] row per event"):
        Sequences(user_ids=["a"], item_ids=["i1"], sequences=[np.array([0, 0])], context=[np.zeros((1, 2))])


PRODUCTS = 12


def _signal_data(signal: str, users: int = 300, seed: int = 0) -> Sequences:
    """Product p is followed by its alternative a<p> or its accessory c<p>; which one only the event's
    context says: its type (view vs purchase), the gap since the previous event (seconds vs days), or
    its hour (morning vs evening). Item ids alone leave it a coin toss."""
    rng = np.random.default_rng(seed)
    lists, contexts = [], []
    for _ in range(users):
        items, rows, now = [], [], 1_700_000_000 - 1_700_000_000 % 86400  # a midnight
        for _ in range(6):
            p, second = int(rng.integers(PRODUCTS)), bool(rng.integers(2))
            kind, gap, hour = VIEW, 20, 9
            if signal == "type" and second:
                kind = PURCHASE
            if signal == "gap" and second:
                gap = 3 * 86400
            if signal == "hour" and second:
                hour = 20
            now += gap
            if signal == "hour":
                now = now - now % 86400 + 86400 + hour * 3600  # next day, at that hour
            items += [f"p{p}", f"{'c' if second else 'a'}{p}"]
            rows += [(kind, now), (VIEW, now + 30)]
            now += 30
        lists.append(items)
        contexts.append(rows)
    return Sequences.from_lists([f"u{n}" for n in range(users)], lists, contexts)


def _small(**params) -> BehaviourRecommender:
    defaults = {"d_model": 32, "max_epochs": 25, "patience": 25, "dropout": 0.1, "learning_rate": 3e-3,
                "batch_size": 32}
    return BehaviourRecommender(**{**defaults, **params})


def _probe(signal: str, second: bool, p: int) -> np.ndarray:
    """A one-event history: product p with the context that means `second` (see _signal_data)."""
    day = 1_800_000_000 - 1_800_000_000 % 86400
    if signal == "type":
        return np.array([[VIEW, day + 3600 * 9], [PURCHASE if second else VIEW, day + 3600 * 9 + 20]])
    if signal == "gap":
        return np.array([[VIEW, day], [VIEW, day + (3 * 86400 if second else 20)]])
    return np.array([[VIEW, day - 86400 + 3600 * 9], [VIEW, day + 3600 * (20 if second else 9)]])


@pytest.mark.parametrize("signal", ["type", "gap", "hour"])
def test_the_model_learns_what_only_the_context_tells(signal):
    data = _signal_data(signal)
    model = _small().fit(data)
    assert model.reads_context
    index = {item: n for n, item in enumerate(model.item_ids_)}
    right = 0
    for p in range(PRODUCTS):
        for second in (False, True):
            # the event before p sets the gap (and the day); p itself is the last event
            history = [index[f"a{(p + 1) % PRODUCTS}"], index[f"p{p}"]]
            scores = model.score([history], contexts=[_probe(signal, second, p)])[0]
            scores[history] = -np.inf
            right += model.item_ids_[int(np.argmax(scores))] == f"{'c' if second else 'a'}{p}"
    assert right >= 0.9 * 2 * PRODUCTS, f"{right} of {2 * PRODUCTS} right from the {signal}"


def test_without_context_the_model_cannot_tell_and_says_so():
    data = _signal_data("type")
    blind = _small(use_context=False, max_epochs=3).fit(data)
    assert not blind.reads_context
    history = [[0, 1]]
    a = blind.score(history, contexts=[_probe("type", False, 0)])
    b = blind.score(history, contexts=[_probe("type", True, 0)])
    np.testing.assert_array_equal(a, b)  # contexts are ignored, not half-read
    stripped = Sequences(data.user_ids, data.item_ids, data.sequences)
    assert not _small(max_epochs=1).fit(stripped).reads_context  # no context in the data: none in the model


def test_a_context_model_survives_save_and_load(tmp_path):
    data = _signal_data("type", users=120)
    model = _small(max_epochs=3).fit(data)
    model.save(tmp_path / "m")
    again = BehaviourRecommender.load(tmp_path / "m")
    assert again.reads_context
    contexts = [_probe("type", True, 0), _probe("type", False, 1)]
    np.testing.assert_allclose(again.score([[0, 1], [2, 3]], contexts=contexts),
                               model.score([[0, 1], [2, 3]], contexts=contexts), rtol=1e-5, atol=1e-5)
