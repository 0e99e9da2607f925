"""The serving index: exact answers for small catalogs, filters and hidden items honoured, and an
approximate index that is only used when its measured recall is high."""

from __future__ import annotations

import numpy as np
import pytest

from shopmind.recommend.index import ItemIndex


def _brute_force(vectors, bias, state, k, allowed=None, hidden=()):
    scores = vectors @ state + bias
    order = [int(i) for i in np.argsort(-scores, kind="stable")
             if int(i) not in set(hidden) and (allowed is None or allowed[i])]
    return order[:k]


def test_exact_top_k_with_filters_and_hidden_items():
    rng = np.random.default_rng(0)
    vectors, bias = rng.standard_normal((500, 8)).astype(np.float32), rng.standard_normal(500).astype(np.float32)
    index = ItemIndex(vectors, bias)
    assert index.ann is None and index.recall_ == 1.0
    state = rng.standard_normal(8).astype(np.float32)
    hidden = _brute_force(vectors, bias, state, 3)  # hide the three best: the next ones must move up
    allowed = rng.random(500) < 0.1
    assert [i for i, _ in index.top_k(state, 10)] == _brute_force(vectors, bias, state, 10)
    assert [i for i, _ in index.top_k(state, 10, hidden=hidden)] == _brute_force(vectors, bias, state, 10, hidden=hidden)
    got = [i for i, _ in index.top_k(state, 10, allowed=allowed, hidden=hidden)]
    assert got == _brute_force(vectors, bias, state, 10, allowed, hidden) and all(allowed[i] for i in got)
    assert len(index.top_k(state, 1000, allowed=allowed)) == allowed.sum()  # never padded with filtered items
    similar = [i for i, _ in index.similar(7, 5)]
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cos = unit @ unit[7]
    cos[7] = -np.inf
    assert similar == [int(i) for i in np.argsort(-cos)[:5]]


@pytest.mark.slow
def test_approximate_index_is_used_only_with_measured_high_recall():
    rng = np.random.default_rng(1)
    n, d = 60_000, 32
    centres = rng.standard_normal((300, d))
    clustered = (centres[rng.integers(0, 300, n)] + 0.5 * rng.standard_normal((n, d))).astype(np.float32)
    bias = (0.3 * rng.standard_normal(n)).astype(np.float32)
    index = ItemIndex(clustered, bias, ann_min_items=50_000)
    assert index.ann is not None and index.recall_ >= 0.98
    states = clustered[rng.integers(0, n, 50)] + clustered[rng.integers(0, n, 50)]
    overlap = [len({i for i, _ in index.top_k(s, 10)} & set(_brute_force(clustered, bias, s, 10))) / 10 for s in states]
    assert np.mean(overlap) >= 0.95  # held-out queries agree with the exact scan as well as the probes did
    # A filter always takes the exact path: every allowed item is reachable.
    allowed = np.zeros(n, dtype=bool)
    allowed[rng.choice(n, 20, replace=False)] = True
    assert [i for i, _ in index.top_k(states[0], 20, allowed=allowed)] == _brute_force(clustered, bias, states[0], 20, allowed)
    # Vectors without structure would need most lists probed: the exact scan is kept instead.
    noise = rng.standard_normal((n, d)).astype(np.float32)
    assert ItemIndex(noise, bias, ann_min_items=50_000).ann is None


def _clustered(rng, n, d):
    centres = rng.standard_normal((50, d))
    vectors = (centres[rng.integers(0, 50, n)] + 0.7 * rng.standard_normal((n, d))).astype(np.float32) * 0.1
    return vectors, (0.05 * rng.standard_normal(n)).astype(np.float32)


def test_batched_bfloat16_scan_returns_the_exact_answer():
    rng = np.random.default_rng(2)
    vectors, bias = _clustered(rng, 30_000, 48)
    index = ItemIndex(vectors, bias, coarse_min_items=20_000, check_speed=False)  # on any processor
    assert index.coarse is not None
    states = (vectors[rng.integers(0, 30_000, 24)] + vectors[rng.integers(0, 30_000, 24)]) * 3
    hiddens = [_brute_force(vectors, bias, s, n % 7)
               for n, s in enumerate(states)]  # hide some of the best: the answer must move up
    ks = [10, 100, 1, 50] * 6
    got = index.top_k_many(states, ks, hiddens)
    for state, k, hidden, answer in zip(states, ks, hiddens, got):
        assert [i for i, _ in answer] == _brute_force(vectors, bias, state, k, hidden=hidden)
        exact = vectors @ state + bias
        assert np.allclose([x for _, x in answer], exact[[i for i, _ in answer]], atol=1e-5)  # exact, not bfloat16
    assert index.unproven < len(states) // 4  # the bound proves most answers; the rest were rescanned
    # An unprovable bound rescans every user exactly: same answers.
    index._slack, before = 1e9, index.unproven
    rescanned = index.top_k_many(states, ks, hiddens)
    assert [[i for i, _ in a] for a in rescanned] == [[i for i, _ in b] for b in got]
    assert index.unproven == before + len(states)


def test_bfloat16_scan_is_refused_when_its_error_exceeds_the_bound(monkeypatch):
    import shopmind.recommend.index as index_module

    rng = np.random.default_rng(3)
    vectors, bias = _clustered(rng, 20_000, 16)
    monkeypatch.setattr(index_module, "BF16_SLACK", 1e-9)  # as if the kernel rounded far worse than assumed
    index = ItemIndex(vectors, bias, coarse_min_items=20_000, check_speed=False)
    assert index.coarse is None
    state = vectors[0] * 3
    assert [i for i, _ in index.top_k_many(np.stack([state, state]), [10, 10], [[], []])[0]] == \
        _brute_force(vectors, bias, state, 10)


def test_bfloat16_scan_is_kept_only_where_it_races_faster_than_float32(monkeypatch):
    import shopmind.recommend.index as index_module

    rng = np.random.default_rng(4)
    vectors, bias = _clustered(rng, 20_000, 16)
    states = np.stack([vectors[1] * 3, vectors[2] * 3, vectors[3] * 3])
    expected = [_brute_force(vectors, bias, s, 10) for s in states]
    for f32_s, bf16_s, kept in ((1.0, 3.0, False), (1.0, 0.5, True)):
        calls = iter([f32_s, bf16_s])  # the race times float32 first, then bfloat16
        monkeypatch.setattr(index_module, "_fastest", lambda run, repeats=3: (run(), next(calls))[1])
        index = ItemIndex(vectors, bias, coarse_min_items=20_000)
        assert (index.coarse is not None) is kept and index.coarse_speedup_ == pytest.approx(f32_s / bf16_s)
        got = index.top_k_many(states, [10] * 3, [[]] * 3)
        assert [[i for i, _ in a] for a in got] == expected  # the same exact answer either way
    # Unpatched, the race runs for real and records what it measured on this processor.
    monkeypatch.undo()
    assert ItemIndex(vectors, bias, coarse_min_items=20_000).coarse_speedup_ > 0


def test_sampled_threshold_top_k_equals_a_full_sort():
    from shopmind.recommend.index import best

    rng = np.random.default_rng(4)
    scores = rng.standard_normal(100_000).astype(np.float32)
    scores[rng.choice(100_000, 90_000, replace=False)] = -np.inf   # a narrow filter
    scores[:50] = scores[50]                                       # ties
    for values in (scores, rng.standard_normal(100_000).astype(np.float32), np.sort(scores)):
        for k in (1, 10, 130, 3000):
            top, got = best(values, k)
            assert np.array_equal(got, np.sort(values)[::-1][:k]) and np.array_equal(values[top], got)


class _Stub:
    """What the recommendation service reads of a fitted behaviour model to build its catalog."""

    def __init__(self, vectors):
        self.item_ids_ = [f"i{n}" for n in range(len(vectors))]
        self._vectors = vectors

    def item_vectors(self):
        return self._vectors


def test_the_bf16_scan_setting_reaches_the_served_index(monkeypatch):
    import polars as pl

    from shopmind.recommend.service import RecommendationService

    monkeypatch.setattr(ItemIndex, "_bf16_is_faster", lambda self, seed: True)  # whatever this processor does
    rng = np.random.default_rng(5)
    vectors, bias = _clustered(rng, 20_000, 8)
    model = _Stub(np.hstack([vectors, bias[:, None]]))
    frame = pl.DataFrame({"item_id": model.item_ids_, "title": model.item_ids_, "category": ["c"] * 20_000,
                          "consumable": [False] * 20_000})
    monkeypatch.setenv("SHOPMIND_RECOMMEND_BF16_SCAN", "false")
    from shopmind.config import load_settings

    assert load_settings().recommend_bf16_scan is False  # the environment variable a user sets
    served = {flag: RecommendationService(None, lambda: frame, bf16_scan=flag)._catalog("v1", model).items
              for flag in (True, False)}
    assert served[True].coarse is not None and served[False].coarse is None


def test_rank_fraction_is_exact_on_small_catalogs_and_sampled_within_its_error_on_large_ones():
    """The risk engine's unusualness: the share of the catalog scoring above an item. Up to RANK_SAMPLE
    items it is the exact share; above, an estimate from a fixed sample of RANK_SAMPLE items, whose
    standard error is at most 0.5 / 64, and which still puts the best item at 0 and the worst near 1."""
    from shopmind.recommend.index import RANK_SAMPLE

    rng = np.random.default_rng(3)
    # the third catalog's items get better with their index, as a catalog sorted by popularity would: a
    # sample of the first RANK_SAMPLE items instead of a spread one would be far off there
    for n, trend in ((1_000, 0.0), (40_000, 0.0), (40_000, 4.0)):
        vectors = rng.standard_normal((n, 16)).astype(np.float32)
        bias = (rng.standard_normal(n) + trend * np.linspace(-1, 1, n)).astype(np.float32)
        index = ItemIndex(vectors, bias, ann_min_items=10**9, coarse_min_items=10**9)
        state = rng.standard_normal(16).astype(np.float32)
        scores = index.scores(state)
        order = np.argsort(-scores)
        targets = [int(order[0]), int(order[-1])] + rng.choice(n, 60, replace=False).tolist()
        exact = np.array([(scores > scores[t]).mean() for t in targets])
        got = np.array([index.rank_fraction(state, [t]) for t in targets])
        assert got[0] == 0.0 and got[1] >= 0.999  # the best item has nothing above it, the worst all the others
        if n <= RANK_SAMPLE:
            assert np.array_equal(got, exact)
        else:
            errors = np.abs(got - exact)
            assert errors.max() < 4 * 0.5 / np.sqrt(RANK_SAMPLE) and errors.mean() < 0.01
            assert np.abs(got - exact).sum() > 0  # really a sample: an exact scan would match to the bit
        assert index.rank_fraction(state, targets[2:12]) == pytest.approx(got[2:12].mean())  # several items: the mean
        same = ItemIndex(vectors, bias, ann_min_items=10**9, coarse_min_items=10**9)
        assert same.rank_fraction(state, targets[:20]) == index.rank_fraction(state, targets[:20])  # a fixed sample


def test_the_bfloat16_proof_allows_for_the_rounding_error_it_cannot_see():
    """An item that bfloat16 rounding scores low (both coordinates rounded against it) can be the true
    best while items exactly on bfloat16's grid fill the candidates. The proof must then fail and rescan;
    a proof without its error margin accepted the wrong item, and no test noticed (found by a mutation
    review: the tests checked only a margin that made the answer right anyway, and one of 1e9)."""
    g = 2.0 ** -7  # bfloat16's spacing in [1, 2)
    hidden_best = [1 + 2.49 * g, 1 + 0.51 * g]  # exact score 1.98 g for the query (1, -1); bfloat16: g
    on_grid = [1 + g, 1 - 0.5 * g]              # 1.5 g exactly, in float32 and bfloat16 alike
    vectors = np.array([hidden_best] + [on_grid] * 60 + [[1.0, 1.5]] * 40, dtype=np.float32)
    index = ItemIndex(vectors, np.zeros(len(vectors), dtype=np.float32), coarse_min_items=50, check_speed=False)
    assert index.coarse is not None
    states = np.array([[1.0, -1.0]] * 2, dtype=np.float32)  # two users: the batched bfloat16 path
    answers = index.top_k_many(states, [1, 1], [[], []])
    assert [[i for i, _ in a] for a in answers] == [[0], [0]]
    assert index.unproven == 2  # the bound could not prove the candidates: rescanned exactly
