"""Train each model on one data set under the protocol and report metrics, time and memory.

Used by `shopmind evaluate` and bench/recommend_quality.py. Peak memory is the growth of the process's
resident set while the model trains and is evaluated (ru_maxrss before and after), so run one model per
process when the figure matters (the bench does).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Callable

from shopmind.evaluation.protocol import evaluate_ranking
from shopmind.evaluation.sequences import Sequences, leave_one_out


def model_factories() -> dict[str, Callable[[], object]]:
    """The default configuration of each model, by name."""
    from shopmind.models.baselines import ALSRecommender, ItemKNNRecommender, PopularityRecommender
    from shopmind.recommend.behaviour import BehaviourRecommender
    from shopmind.recommend.blend import BlendedRecommender

    def blend(**behaviour_params) -> BlendedRecommender:  # parameters go to its behaviour model
        return BlendedRecommender(BehaviourRecommender(**behaviour_params), seed=behaviour_params.get("seed", 0))

    return {
        "popularity": PopularityRecommender,
        "itemknn": ItemKNNRecommender,
        "als": ALSRecommender,
        "behaviour": BehaviourRecommender,
        "blend": blend,
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def evaluate_models(data: Sequences, names: list[str] | None = None, k: int = 10,
                    progress: Callable[[str], None] | None = None) -> list[dict]:
    factories = model_factories()
    names = names or list(factories)
    unknown = [n for n in names if n not in factories]
    if unknown:
        from shopmind.exceptions import InvalidInputError

        raise InvalidInputError(f"unknown model(s) {unknown}: expected some of {sorted(factories)}", field="models")
    split = leave_one_out(data)
    # The validation figure of every model on the users the behaviour model chooses its epoch on: their
    # validation items train no model, while other users' may (train_unused_valid), which would inflate it.
    from shopmind.recommend.behaviour import BehaviourRecommender

    defaults = BehaviourRecommender()
    valid_users = split.selection(defaults.valid_users, defaults.seed)
    rows = []
    for name in names:
        if progress:
            progress(name)
        before = _rss_mb()
        started = time.perf_counter()
        model = factories[name]().fit(data, split)
        train_s = time.perf_counter() - started
        report = evaluate_ranking(model.score, split, "test", k=k)[0]
        valid = evaluate_ranking(model.score, split, "valid", k=k, users=valid_users)[0]
        rows.append({"model": name, **report.as_dict(), f"valid_ndcg@{k}": valid.ndcg,
                     "train_seconds": round(train_s, 2), "peak_rss_growth_mb": round(_rss_mb() - before, 1),
                     "users_total": len(data.user_ids), "items": data.n_items,
                     "interactions": data.n_interactions})
    return rows
