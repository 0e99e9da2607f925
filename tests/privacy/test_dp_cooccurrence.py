"""The DP release of item pairs: each user's contribution is bounded, the cells nobody touched are drawn
exactly as if each had been noised, the accountant composes the release with DP-SGD, and the private
behaviour model blends the released pairs in, saves and serves them."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy.stats import chisquare, norm

from shopmind.evaluation import Sequences
from shopmind.exceptions import InvalidInputError
from shopmind.privacy.dp_cooccurrence import (
    _untouched_survivors,
    composed_noise_multiplier,
    private_cooccurrence,
    release_noise_multiplier,
    true_table,
    user_pairs,
)
from shopmind.privacy.dp_training import PrivateBehaviourRecommender


@pytest.mark.parametrize("seq", [[1, 2], [1, 2, 1, 2, 1, 2, 1, 2], list(range(60)), [5, 5, 5, 5], [3, 9, 3]])
def test_a_users_contribution_is_bounded_and_unordered(seq):
    keys, weights = user_pairs(np.array(seq), window=2, max_len=50)
    assert np.linalg.norm(weights) <= 1.0 + 1e-12  # the sensitivity the noise is calibrated for
    assert (keys[:, 0] < keys[:, 1]).all() if len(keys) else True  # unordered, never an item with itself
    assert len({tuple(k) for k in keys.tolist()}) == len(keys)  # each pair once, its weights summed
    if len(set(seq)) == 1:
        assert len(keys) == 0
    # only the latest max_len items count: events before them cannot move the table
    assert (keys.max(initial=0) < 60) and (len(seq) <= 50 or keys.min() >= len(seq) - 50)


def test_pairs_are_within_the_window_and_nearer_pairs_weigh_more():
    keys, weights = user_pairs(np.array([0, 1, 2, 3]), window=2, max_len=50)
    pairs = dict(zip(map(tuple, keys.tolist()), weights))
    assert set(pairs) == {(0, 1), (1, 2), (2, 3), (0, 2), (1, 3)}  # (0, 3) is three steps apart
    assert pairs[(0, 1)] == pytest.approx(2 * pairs[(0, 2)])


def test_untouched_cells_are_drawn_as_if_each_had_been_noised():
    """Count, positions and values of the untouched survivors match noising every cell one by one:
    Binomial(cells, tail) survivors, uniform over the untouched cells, values from the Gaussian's tail."""
    n, sigma, threshold = 40, 2.0, 1.0
    touched = np.array([0 * n + 1, 3 * n + 7, 10 * n + 39], dtype=np.int64)
    cells = n * (n - 1) // 2 - len(touched)
    tail = norm.sf(threshold)
    rng = np.random.default_rng(11)
    counts, positions, values = [], [], []
    for _ in range(400):
        keys, vals = _untouched_survivors(n, touched, sigma, threshold, rng)
        counts.append(len(keys))
        positions.append(keys)
        values.append(vals)
        assert len(np.unique(keys)) == len(keys) and not np.isin(keys, touched).any()
        assert ((keys // n) < (keys % n)).all()
    counts = np.array(counts)
    assert abs(counts.mean() - cells * tail) < 4 * np.sqrt(cells * tail * (1 - tail) / len(counts))
    assert counts.var() == pytest.approx(cells * tail * (1 - tail), rel=0.2)
    values = np.concatenate(values) / sigma
    assert values.min() > threshold
    expected_mean = norm.pdf(threshold) / tail  # E[Z | Z > threshold]
    assert values.mean() == pytest.approx(expected_mean, abs=4 * values.std() / np.sqrt(len(values)))
    hits = np.bincount(np.concatenate(positions), minlength=n * n)
    upper = [a * n + b for a in range(n) for b in range(a + 1, n) if a * n + b not in set(touched.tolist())]
    assert chisquare(hits[upper]).pvalue > 1e-3  # uniform over the untouched cells


def test_shared_pairs_survive_and_a_single_users_pair_does_not():
    common = [np.array([0, 1, 2]) for _ in range(300)]  # 300 users take 0, 1, 2 in a row
    lone = [np.array([7, 8])]                           # one user takes 7 then 8
    table, facts = private_cooccurrence(common + lone, 20, noise_multiplier=1.0, rng=np.random.default_rng(0))
    assert (table != table.T).nnz == 0  # symmetric
    assert table[0, 1] > 100 and table[1, 2] > 100 and table[7, 8] == 0
    assert facts["released_pairs"] == table.nnz // 2 and facts["clipping_l2"] == 1.0
    exact = true_table(common + lone, 20, 2, 50)
    assert exact.tocsr()[7, 8] == pytest.approx(1.0)  # the lone user's pair was in the data, and hidden
    with pytest.raises(InvalidInputError, match="noise_multiplier"):
        private_cooccurrence(common, 20, noise_multiplier=0.0, rng=np.random.default_rng(0))


def test_released_pairs_carry_gaussian_noise_of_the_stated_multiplier():
    """What a released cell holds is its clipped sum plus N(0, sigma^2) noise, sigma the noise multiplier
    (sensitivity 1 after clipping). The other tests passed with the noise taken out, the threshold alone
    hiding a lone user's pair (found by a review of the tests)."""
    sigma = 2.0
    sequences = [np.array([2 * p, 2 * p + 1]) for p in range(40) for _ in range(100)]  # 40 pairs, 100 users each
    exact = true_table(sequences, 80, 2, 50).tocsr()
    rows, cols = exact.nonzero()
    residuals = []
    for seed in range(10):
        released, _ = private_cooccurrence(sequences, 80, noise_multiplier=sigma, rng=np.random.default_rng(seed))
        residuals += [float(released[r, c] - exact[r, c]) for r, c in zip(rows, cols)]
    assert len(residuals) == 400 and exact[0, 1] == pytest.approx(100.0)  # far over the threshold: all kept
    assert 0.85 < np.std(residuals) / sigma < 1.15
    assert abs(np.mean(residuals)) < 4 * sigma / np.sqrt(len(residuals))


def test_the_accountant_composes_the_release_with_dp_sgd():
    warnings.simplefilter("ignore")
    from opacus.accountants import PRVAccountant

    delta = 1e-4
    alone = release_noise_multiplier(4.0, delta)
    acc = PRVAccountant()
    acc.history = [(alone, 1.0, 1)]
    assert acc.get_epsilon(delta=delta) == pytest.approx(4.0, abs=0.01)
    sigma = composed_noise_multiplier(8.0, delta, alone, sample_rate=0.05, steps=60)
    acc.history = [(alone, 1.0, 1), (sigma, 0.05, 60)]
    total = acc.get_epsilon(delta=delta)
    assert 7.98 <= total <= 8.0
    acc.history = [(sigma, 0.05, 60)]
    assert acc.get_epsilon(delta=delta) < 8.0  # the network alone spends less: the release costs budget


def test_the_private_model_blends_the_released_pairs_and_keeps_them(tmp_path):
    rng = np.random.default_rng(5)
    # 400 users; half of them take item 1 right after item 0: a pair strong enough to survive the noise
    seqs = [np.concatenate([rng.integers(2, 40, size=3), [0, 1], rng.integers(2, 40, size=3)]).astype(np.int64)
            if n % 2 else rng.integers(2, 40, size=8).astype(np.int64) for n in range(400)]
    data = Sequences([f"u{n}" for n in range(400)], [f"i{n}" for n in range(40)], seqs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PrivateBehaviourRecommender(epsilon=8.0, epochs=1, batch_size=64, d_model=16, threads=1).fit(data)
    privacy = model.privacy_
    assert privacy["epsilon"] <= 8.0 and privacy["item_pairs"]["epsilon_alone"] == 6.0
    assert privacy["item_pairs"]["n_users"] == privacy["n_users"] and "composed" in privacy["mechanism"]
    assert model.blend_ is not None and model.blend_.knn.similarity_[0, 1] > 0
    top = [item for item, _ in model.recommend_session(["i0"], k=1)]
    assert top == ["i1"]  # the released pair ranks first after item 0
    model.save(tmp_path / "m")
    loaded = type(model).load(tmp_path / "m")
    histories = [np.array([0]), np.array([5, 6, 7])]
    assert np.allclose(loaded.score(histories), model.score(histories))
    assert loaded.privacy_ == privacy
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = PrivateBehaviourRecommender(epsilon=8.0, epochs=1, batch_size=64, d_model=16, threads=1,
                                            cooccurrence_share=0).fit(data)
    assert alone.blend_ is None and alone.privacy_["item_pairs"] is None
    assert alone.privacy_["noise_multiplier"] < privacy["noise_multiplier"]  # all of epsilon went to DP-SGD
    for share in (1.0, -0.1):
        with pytest.raises(InvalidInputError, match="cooccurrence_share"):
            PrivateBehaviourRecommender(cooccurrence_share=share).fit(data)


def test_the_cli_refuses_pair_options_that_cannot_apply_before_any_work():
    from typer.testing import CliRunner

    from shopmind.cli.main import app

    alone = CliRunner().invoke(app, ["train", "--pairs-share", "0.5"])  # without --dp
    assert alone.exit_code == 2 and "--pairs-share" in alone.output
    secure = CliRunner().invoke(app, ["train", "--dp", "--secure-mode"])  # the default share is not 0
    assert secure.exit_code == 2 and "--pairs-share 0" in secure.output
    too_big = CliRunner().invoke(app, ["train", "--dp", "--pairs-share", "1"])
    assert too_big.exit_code == 2 and "pairs-share" in too_big.output


@pytest.mark.parametrize("share", [0.0, 0.5])
def test_the_recorded_epsilon_stays_within_target_when_the_loader_runs_one_step_fewer(share):
    """93 batches an epoch: Opacus's Poisson loader samples at rate 1/93, as its accountant records, in
    int(1 / (1 / 93)) = 92 steps. With or without the pair release, the noise is planned for the steps the
    accountant records, and the recorded epsilon lands within 0.05 below the target. The card records the
    rate that was used and accounted (it recorded 1/92, so its figures did not reproduce its epsilon)."""
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 30, size=6).astype(np.int64) for _ in range(372)]
    data = Sequences([f"u{n}" for n in range(372)], [f"i{n}" for n in range(30)], seqs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = PrivateBehaviourRecommender(epsilon=2.0, epochs=3, batch_size=4, d_model=8, threads=1,
                                            cooccurrence_share=share).fit(data)
    assert 1.95 <= model.privacy_["epsilon"] <= 2.0, model.privacy_
    assert model.privacy_["sample_rate"] == 1 / 93 and model.privacy_["steps"] == 3 * 92
