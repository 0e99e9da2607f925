"""The baselines score users the way their libraries trained them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from shopmind.evaluation import Sequences, leave_one_out
from shopmind.models.baselines import ALSRecommender


def test_als_user_step_solves_the_objective_implicit_trained_with():
    """The user vectors of evaluated histories must be those implicit's own user step gives on the same
    item factors (its confidence is alpha * r; with the paper's 1 + alpha * r every vector was off by
    about 1%)."""
    from implicit.cpu.als import AlternatingLeastSquares

    rng = np.random.default_rng(0)
    lists = [[f"i{x}" for x in rng.integers(0, 60, rng.integers(3, 20))] for _ in range(400)]
    data = Sequences.from_lists([f"u{n}" for n in range(400)], lists)
    split = leave_one_out(data)
    model = ALSRecommender(factors=16).fit(data, split)
    reference = AlternatingLeastSquares(factors=16, regularization=model.regularization, alpha=model.alpha,
                                        iterations=1)
    reference.item_factors = model.item_factors_.copy()
    reference.user_factors = np.zeros((1, 16), dtype=np.float32)
    for user in split.eval_users[:5]:
        history = split.history(int(user), "test")
        items, counts = np.unique(history, return_counts=True)
        row = sp.csr_matrix((counts.astype(np.float32), (np.zeros(len(items), int), items)), shape=(1, data.n_items))
        np.testing.assert_allclose(model._user_vectors([history])[0], reference.recalculate_user(0, row),
                                   rtol=1e-3, atol=1e-4)
