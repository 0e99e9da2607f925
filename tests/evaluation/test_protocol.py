"""The evaluator agrees with an independent implementation (trec_eval via pytrec_eval) on the same
ranked lists, and its protocol details (split, masking, ties) hold."""

from __future__ import annotations

import numpy as np
import pytest

from shopmind.evaluation import Sequences, evaluate_ranking, leave_one_out, load_sequences, ranking_metrics
from shopmind.evaluation.protocol import ranks_and_topk

pytrec_eval = pytest.importorskip("pytrec_eval")


def _random_split(seed=0, users=300, items=120):
    rng = np.random.default_rng(seed)
    lists = [[f"i{x}" for x in rng.integers(0, items, rng.integers(2, 15))] for _ in range(users)]
    return leave_one_out(Sequences.from_lists([f"u{n}" for n in range(users)], lists))


def test_metrics_agree_with_trec_eval():
    split = _random_split()
    rng = np.random.default_rng(1)
    n_items = split.data.n_items
    table = rng.random((len(split.data.user_ids), n_items))  # continuous: no ties, one order for both

    def score(histories):
        return np.stack([table[hash_of[id(h)]] for h in histories])

    hash_of = {}
    users = split.eval_users
    histories = [split.history(int(u), "test") for u in users]
    for u, h in zip(users, histories):
        hash_of[id(h)] = int(u)
    ranks, _ = ranks_and_topk(score(histories), histories, split.test_target[users], k=10)
    hr, ndcg, mrr = ranking_metrics(ranks, 10)

    qrels, run = {}, {}
    for u, h in zip(users, histories):
        target = int(split.test_target[u])
        seen = set(h.tolist())  # a repeated target is excluded too, so trec_eval sees it as not retrieved
        qrels[f"q{u}"] = {f"d{target}": 1}
        run[f"q{u}"] = {f"d{i}": float(table[u, i]) for i in range(n_items) if i not in seen}
    measures = pytrec_eval.RelevanceEvaluator(qrels, {"recall.10", "ndcg_cut.10", "recip_rank"}).evaluate(run)
    ref_hr = np.mean([m["recall_10"] for m in measures.values()])
    ref_ndcg = np.mean([m["ndcg_cut_10"] for m in measures.values()])
    ref_mrr = np.mean([m["recip_rank"] for m in measures.values()])
    assert hr == pytest.approx(ref_hr, abs=1e-9)
    assert ndcg == pytest.approx(ref_ndcg, abs=1e-9)
    assert mrr == pytest.approx(ref_mrr, abs=1e-9)
    assert 0 < hr < 1  # a non-trivial case


def test_seen_items_are_excluded_and_a_repeated_target_is_a_miss():
    scores = np.array([[9.0, 8.0, 7.0, 6.0, 5.0]])
    ranks, top = ranks_and_topk(scores, [np.array([0])], np.array([3]), k=3)
    assert ranks.tolist() == [3] and top.tolist() == [[1, 2, 3]]  # 1 and 2 outrank it; 0 is excluded
    # The target 1 is also in the history (a repeat): it is masked like every seen item.
    ranks, top = ranks_and_topk(scores, [np.array([0, 1])], np.array([1]), k=3)
    assert ranks.tolist() == [float("inf")] and 1 not in top[0]


def test_a_scorer_that_only_favours_history_gains_nothing():
    # The leak this protocol avoids: with repeated targets left rankable, "score history items high"
    # would hit every repeat. Here every target is a repeat, so such a scorer must score zero.
    split = leave_one_out(Sequences.from_lists(["a", "b"], [["x", "y", "x", "y", "x"], ["p", "q", "p", "q"]]))

    def history_lover(histories):
        out = np.zeros((len(histories), split.data.n_items))
        for r, h in enumerate(histories):
            out[r, h] = 1.0
        return out

    assert evaluate_ranking(history_lover, split)[0].hr == 0.0


def test_ties_count_against_the_target():
    ranks, _ = ranks_and_topk(np.zeros((1, 50)), [np.array([], dtype=np.int64)], np.array([7]), k=10)
    assert ranks.tolist() == [50]


def test_leave_one_out_split_and_loader(tmp_path):
    path = tmp_path / "seq.txt"
    path.write_text("u1 a b c d\nu2 a b\nu3 c\nu3 d\nu3 e\n")  # u3 in `user item` lines
    data = load_sequences(path)
    split = leave_one_out(data)
    idx = {name: n for n, name in enumerate(data.item_ids)}
    assert split.train[0].tolist() == [idx["a"], idx["b"]]
    assert split.valid_target[0] == idx["c"] and split.test_target[0] == idx["d"]
    assert split.valid_target[1] == -1  # fewer than three interactions: training only
    assert split.test_target[2] == idx["e"] and split.eval_users.tolist() == [0, 2]
    assert split.history(0, "test").tolist() == [idx["a"], idx["b"], idx["c"]]


def test_evaluate_ranking_rewards_an_oracle_and_not_noise():
    split = _random_split(seed=3)

    def oracle(histories):
        out = np.zeros((len(histories), split.data.n_items))
        for r, h in enumerate(histories):
            out[r, lookup[id(h)]] = 1.0
        return out

    lookup = {}
    original = split.history

    def history(user, stage):
        h = original(user, stage)
        lookup[id(h)] = int(split.test_target[user])
        return h

    split.history = history
    report, ranks, _ = evaluate_ranking(oracle, split, "test")
    fresh = np.mean([split.test_target[u] not in original(int(u), "test") for u in split.eval_users])
    assert 0 < fresh < 1  # the data has both new and repeated targets
    assert report.hr == pytest.approx(fresh) and report.mrr == pytest.approx(fresh)  # repeats are misses
    noise = evaluate_ranking(lambda hs: np.random.default_rng(0).random((len(hs), split.data.n_items)), split)[0]
    assert noise.hr < 0.3


def test_nan_scores_never_win():
    """A diverged model (NaN scores) must not look perfect: a NaN target is a miss, and a NaN elsewhere
    ranks against the target."""
    from shopmind.evaluation.protocol import target_ranks

    histories = [np.array([0]), np.array([0])]
    all_nan = np.full((2, 5), np.nan)
    assert np.isinf(target_ranks(all_nan, histories, np.array([1, 2]))).all()
    scores = np.array([[0.0, 0.9, np.nan, 0.1, 0.2], [0.0, 0.9, 0.5, 0.1, 0.2]])
    assert target_ranks(scores, histories, np.array([1, 1])).tolist() == [2.0, 1.0]


def test_the_reported_validation_figure_is_on_users_whose_validation_items_no_model_trains_on():
    """`shopmind evaluate` reports valid NDCG@10 on the behaviour model's selection users only: with more
    users than that, the others' validation items are training data for the behaviour model and the blend."""
    from shopmind.evaluation.harness import evaluate_models

    rng = np.random.default_rng(0)
    data = Sequences([f"u{n}" for n in range(6000)], [f"i{n}" for n in range(40)],
                     [rng.choice(40, size=5, replace=False).astype(np.int64) for _ in range(6000)])
    split = leave_one_out(data)
    row = evaluate_models(data, ["popularity"])[0]
    from shopmind.models.baselines import PopularityRecommender

    model = PopularityRecommender().fit(data, split)
    on_selection = evaluate_ranking(model.score, split, "valid", users=split.selection(5000, 0))[0].ndcg
    on_everyone = evaluate_ranking(model.score, split, "valid")[0].ndcg
    assert row["valid_ndcg@10"] == on_selection != on_everyone


def test_events_at_the_same_time_keep_their_order():
    """A user's newest event must be the same event from one training to the next (the holdout's gate
    judges it): events with equal times keep the order they arrive in. (Polars' multi-column sort is
    not stable unless asked: on a frame this size it reorders most ties.)"""
    import polars as pl

    n = 200_000
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"user": rng.integers(0, 500, n), "item": np.arange(n) % 1000, "ts": rng.integers(0, 3, n),
                          "arrival": np.arange(n)})
    data = Sequences.from_frame(frame.with_columns(pl.col("item").cast(pl.Utf8)), user_col="user", item_col="item",
                                time_col="ts")
    expected = frame.sort("ts", maintain_order=True).group_by("user", maintain_order=True).agg("item")
    want = {str(u): items for u, items in zip(expected["user"].to_list(), expected["item"].to_list())}
    for user, seq in zip(data.user_ids, data.sequences):
        assert [int(data.item_ids[i]) for i in seq] == want[user]
