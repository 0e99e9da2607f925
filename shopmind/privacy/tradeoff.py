"""The privacy/utility trade-off on one data set: the non-private behaviour model and DP-SGD models
at several epsilons, each with its recommendation quality and its membership-inference exposure.

Used by `shopmind privacy curve` (a shop's own export) and bench/dp_curve.py (public data sets)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from shopmind.evaluation import Sequences, evaluate_ranking, leave_one_out
from shopmind.privacy.dp_training import PrivateBehaviourRecommender
from shopmind.privacy.membership import membership_audit
from shopmind.recommend.behaviour import BehaviourRecommender


def privacy_curve(data: Sequences, epsilons: Sequence[float], dp_params: dict[str, Any] | None = None,
                  audit: bool = True, progress: Callable[[str], None] = lambda _: None,
                  seed: int = 0, item_content=None) -> list[dict[str, Any]]:
    """One row per model: the non-private one first, then one per epsilon (ascending). `item_content`
    (public item text embeddings, one row per item) goes to every model."""
    split = leave_one_out(data)
    # The non-private model trains on what the DP models train on (no validation item), so the ratio
    # measures the noise, not a difference in data.
    configs: list[tuple[str, Callable[[], Any]]] = [
        ("non-private", lambda: BehaviourRecommender(seed=seed, train_unused_valid=False))]
    for eps in sorted(epsilons):
        configs.append((f"dp eps={eps:g}",
                        lambda eps=eps: PrivateBehaviourRecommender(epsilon=eps, seed=seed, **(dp_params or {}))))
    rows = []
    for name, make in configs:
        progress(f"training {name}")
        started = time.perf_counter()
        model = make().fit(data, split=split, item_content=item_content)
        seconds = time.perf_counter() - started
        report = evaluate_ranking(model.score, split, "test")[0]
        privacy = getattr(model, "privacy_", None)
        row: dict[str, Any] = {
            "model": name, "hr@10": round(report.hr, 4), "ndcg@10": round(report.ndcg, 4),
            "epsilon": privacy["epsilon"] if privacy else None, "delta": privacy["delta"] if privacy else None,
            "noise_multiplier": privacy["noise_multiplier"] if privacy else None,
            "item_pairs": privacy.get("item_pairs") if privacy else None, "train_seconds": round(seconds, 1)}
        if audit:
            progress(f"membership audit of {name}")
            found = membership_audit(data, make, seed=seed)
            row["mia_auc"] = found["loss_attack"]["auc"]
            row["mia_auc_95ci"] = found["loss_attack"]["auc_95ci"]
            row["mia_reference_auc"] = found["reference_attack"]["auc"]
            row["mia_tpr_at_1pct_fpr"] = max(found["loss_attack"]["tpr_at_1pct_fpr"],
                                             found["reference_attack"]["tpr_at_1pct_fpr"])
        rows.append(row)
    base = rows[0]["hr@10"]
    for row in rows:
        row["hr@10_vs_non_private"] = round(row["hr@10"] / base, 3) if base else None
    return rows
