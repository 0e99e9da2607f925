"""Only catalog items that no history holds are served by their content alone after training."""

from __future__ import annotations

import numpy as np
import torch

from shopmind.evaluation import Sequences, leave_one_out
from shopmind.recommend.behaviour import BehaviourRecommender


def test_held_out_only_items_keep_their_training_and_untouched_items_get_content_alone():
    """A benchmark's catalog is its data's items, so items held only in held-out positions are exactly
    the held-out targets: resetting them (zero id vector, median bias) lifted every test target that
    training never showed (3 of 943 on MovieLens-100K). Only items no history holds at all are reset."""
    rng = np.random.default_rng(0)
    lists = []
    for u in range(300):
        items = [f"i{x}" for x in rng.integers(0, 100, 6)]
        if u % 3 == 0:
            items[-1] = f"t{u // 3 % 30}"  # 30 items that occur only as test targets
        lists.append(items)
    base = Sequences.from_lists([f"u{n}" for n in range(300)], lists)
    data = Sequences(base.user_ids, base.item_ids + ["untouched"], base.sequences)  # in the catalog only
    split = leave_one_out(data)
    content = rng.normal(size=(data.n_items, 8)).astype(np.float32)
    model = BehaviourRecommender(d_model=16, max_epochs=1, patience=1, seed=0, train_unused_valid=False).fit(
        data, split, item_content=content).model_
    ids, bias = model.trunk.item_emb.weight.detach(), model.heads["next_item"].bias.detach()
    untouched = data.n_items  # row 0 is padding
    test_only = torch.tensor([data.item_ids.index(f"t{k}") + 1 for k in range(30)])
    others = torch.ones(data.n_items + 1, dtype=torch.bool)
    others[0] = others[untouched] = False
    assert torch.all(ids[untouched] == 0) and bias[untouched] == bias[others].median()
    assert torch.all(ids[test_only].abs().sum(dim=1) > 0)
    assert not torch.any(bias[test_only] == bias[others].median())
