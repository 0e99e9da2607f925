"""A differentially private item co-occurrence table: which items people take one after the other.

Why it exists: on a catalog whose items are many and each touched by few users (Amazon Beauty: 12,101
items, 8.9 events per user), DP-SGD spreads its noise over a vector per item and the behaviour model
falls to the level of popularity (docs/benchmarks.md). What users share, and what survives noise, is
the strong pairs: items many people take within a step or two of each other. This releases those once,
with the Gaussian mechanism, and the DP behaviour model blends them in (privacy/dp_training.py).

The release, user-level like DP-SGD here:
- each user contributes their latest `max_len` items (the events DP-SGD reads from them), as unordered
  pairs of different items at most `window` steps apart, a pair weighing 1/distance;
- the user's whole contribution is scaled down to L2 norm at most 1 (the clipping: adding or removing
  one user moves the table by at most 1 in L2, whatever their history);
- every cell of the upper triangle (every possible pair, not only the observed ones) gets Gaussian noise
  of standard deviation `noise_multiplier`, and only cells above `threshold` x that deviation are kept.

Noising all n(n-1)/2 cells would cost 73 million draws for Beauty and 5 billion for a 100,000-item
catalog. The cells no user touched are drawn exactly as if noised one by one, without visiting them:
how many exceed the threshold is Binomial(cells, tail probability), which ones is uniform among them,
and their values follow the Gaussian's tail (`_untouched_survivors`). The released table has the same
distribution, so the same guarantee, and costs time in the pairs users touched plus the survivors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp
from scipy.special import ndtr, ndtri

from shopmind.exceptions import InvalidInputError


def user_pairs(sequence: np.ndarray, window: int, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """One user's contribution: their unordered pairs within `window` steps as (i, j) rows with i < j,
    and the pairs' weights, scaled down to L2 norm at most 1."""
    seq = np.asarray(sequence, dtype=np.int64)[-max_len:]
    pairs: dict[tuple[int, int], float] = {}
    for gap in range(1, window + 1):
        for a, b in zip(seq[:-gap].tolist(), seq[gap:].tolist()):
            if a != b:
                key = (a, b) if a < b else (b, a)
                pairs[key] = pairs.get(key, 0.0) + 1.0 / gap
    if not pairs:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    weights = np.fromiter(pairs.values(), dtype=np.float64, count=len(pairs))
    weights /= max(1.0, float(np.linalg.norm(weights)))
    return np.array(list(pairs.keys()), dtype=np.int64), weights


def true_table(sequences: Sequence[np.ndarray], n_items: int, window: int, max_len: int) -> sp.coo_matrix:
    """The sum of every user's clipped contribution, upper triangle (before noise)."""
    keys, weights = [], []
    for seq in sequences:
        k, w = user_pairs(seq, window, max_len)
        keys.append(k)
        weights.append(w)
    keys_all = np.concatenate(keys) if keys else np.zeros((0, 2), dtype=np.int64)
    weights_all = np.concatenate(weights) if weights else np.zeros(0)
    table = sp.coo_matrix((weights_all, (keys_all[:, 0], keys_all[:, 1])), shape=(n_items, n_items))
    table.sum_duplicates()
    return table


def _untouched_survivors(n_items: int, touched: np.ndarray, sigma: float, threshold: float,
                         rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The untouched upper-triangle cells whose noise alone exceeds threshold x sigma, drawn exactly:
    their number, their positions (uniform among untouched cells) and their values (the tail)."""
    cells = n_items * (n_items - 1) // 2 - len(touched)
    tail = float(ndtr(-threshold))
    count = int(rng.binomial(cells, tail)) if cells > 0 else 0
    chosen: set[int] = set()
    touched_set = set(touched.tolist())
    while len(chosen) < count:
        i = rng.integers(0, n_items, size=2 * (count - len(chosen)) + 16)
        j = rng.integers(0, n_items, size=len(i))
        for a, b in zip(i.tolist(), j.tolist()):
            if a < b:  # uniform over ordered draws with a < b is uniform over the upper triangle
                key = a * n_items + b
                if key not in touched_set and key not in chosen:
                    chosen.add(key)
                    if len(chosen) == count:
                        break
    keys = np.fromiter(chosen, dtype=np.int64, count=count)
    # inverse-CDF sampling of N(0, 1) conditioned on exceeding the threshold
    u = rng.uniform(size=count)
    values = -ndtri((1.0 - u) * tail) * sigma
    return keys, values


def private_cooccurrence(sequences: Sequence[np.ndarray], n_items: int, noise_multiplier: float,
                         rng: np.random.Generator, threshold: float = 4.0, window: int = 2,
                         max_len: int = 50) -> tuple[sp.csr_matrix, dict]:
    """The released table, symmetric (n_items x n_items, CSR), and what may be said about it (the
    parameters and how many pairs survived: a function of the noisy output, so free to publish)."""
    if noise_multiplier <= 0 or not math.isfinite(noise_multiplier):
        raise InvalidInputError("noise_multiplier must be a positive number", field="noise_multiplier")
    for name, bad, rule in (("threshold", not threshold > 0, "positive"), ("window", window < 1, "at least 1"),
                            ("max_len", max_len < 2, "at least 2")):
        if bad:
            raise InvalidInputError(f"{name} must be {rule}", field=name)
    table = true_table(sequences, n_items, window, max_len)
    touched = table.row.astype(np.int64) * n_items + table.col
    noisy = table.data + rng.standard_normal(len(table.data)) * noise_multiplier
    keep = noisy > threshold * noise_multiplier
    extra_keys, extra_values = _untouched_survivors(n_items, touched, noise_multiplier, threshold, rng)
    rows = np.concatenate([table.row[keep], extra_keys // n_items])
    cols = np.concatenate([table.col[keep], extra_keys % n_items])
    values = np.concatenate([noisy[keep], extra_values]).astype(np.float32)
    upper = sp.coo_matrix((values, (rows, cols)), shape=(n_items, n_items))
    released = (upper + upper.T).tocsr()
    return released, {"noise_multiplier": float(noise_multiplier), "threshold_sigmas": float(threshold),
                      "window": window, "max_events_per_user": max_len, "clipping_l2": 1.0,
                      "released_pairs": int(len(values))}


def release_noise_multiplier(epsilon: float, delta: float, accountant: str = "prv") -> float:
    """The noise of one Gaussian release (sensitivity 1) that alone gives (epsilon, delta)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1.0, steps=1,
                                      accountant=accountant, epsilon_tolerance=0.005))


def composed_noise_multiplier(epsilon: float, delta: float, release_sigma: float | None, sample_rate: float,
                              steps: int, accountant: str = "prv", tolerance: float = 0.01) -> float:
    """The DP-SGD noise multiplier that, composed with one release of noise `release_sigma` (None: no
    release), gives (epsilon, delta) in total under `accountant` (bisection, as Opacus's
    get_noise_multiplier)."""
    from opacus.accountants.utils import create_accountant

    def composed(sigma: float) -> float:
        acc = create_accountant(mechanism=accountant)
        acc.history = ([] if release_sigma is None else [(release_sigma, 1.0, 1)]) + [(sigma, sample_rate, steps)]
        return float(acc.get_epsilon(delta=delta))

    low, high = 0.0, 10.0
    while composed(high) > epsilon:
        high *= 2
        if high > 2 ** 12:
            raise InvalidInputError("the release alone leaves too little of epsilon for the training: lower "
                                    "cooccurrence_share or raise epsilon", field="epsilon")
    for _ in range(60):  # each halves the interval; `high` always satisfies the budget
        mid = (low + high) / 2
        eps = composed(mid)
        if eps < epsilon:
            high = mid
            if epsilon - eps <= tolerance:
                break
        else:
            low = mid
    return high
