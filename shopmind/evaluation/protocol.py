"""Full-ranking evaluation of any scorer under one protocol.

A scorer is a function `score(histories) -> scores` taking a list of item-index arrays (each user's
history, time-ordered) and returning a float array of shape (len(histories), n_items). Every model,
ours and the peers', is evaluated by handing it the same histories, so the protocol cannot differ.
A scorer that can read event context (types, times) says so with an attribute `accepts_context =
True` and is called `score(histories, contexts=...)` when the data carries context; the contexts
end exactly where the histories do, so the target's own type and time are never shown.

Items in the user's history are excluded from the ranking, the target included: when the held-out item
is a repeat of something already seen, it cannot be recommended and counts as a miss. (Keeping a
repeated target rankable would leak it: a scorer that just favours history items would find it among
the few unmasked ones. On repeat-heavy data report the share of repeat targets beside the metrics.)
Ties are broken against the target: rank = 1 + number of other candidate items scoring at least as
high. A model that scores everything equal therefore gets the worst rank, never a lucky one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from shopmind.evaluation.metrics import RankingReport, ranking_metrics
from shopmind.evaluation.sequences import Split, sample_users

ScoreFn = Callable[[Sequence[np.ndarray]], np.ndarray]


def target_ranks(scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray) -> np.ndarray:
    """1-based ranks of the targets (inf when the target cannot be ranked), seen items excluded.
    Masks `scores` in place (seen items -inf); pass a copy to keep the original."""
    rows = np.arange(len(targets))
    for r, hist in enumerate(histories):
        if len(hist):
            scores[r, hist] = -np.inf
    target_scores = scores[rows, targets].copy()  # -inf for a repeat: it cannot be hit
    scores[rows, targets] = -np.inf  # the target is compared, not counted against itself
    # Every item not strictly below the target ranks against it; a NaN (a diverged model) is never
    # below anything, so NaN scores cannot win: one comparison, no separate pass for NaNs.
    ranks = 1.0 + scores.shape[1] - (scores < target_scores[:, None]).sum(axis=1)
    ranks[np.isneginf(target_scores) | np.isnan(target_scores)] = np.inf  # excluded or unscorable: a miss
    scores[rows, targets] = target_scores
    return ranks


def ranks_and_topk(scores: np.ndarray, histories: Sequence[np.ndarray], targets: np.ndarray,
                   k: int) -> tuple[np.ndarray, np.ndarray]:
    """1-based ranks of the targets (inf when the target cannot be ranked) and the top-k item lists,
    after excluding seen items."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    ranks = target_ranks(scores, histories, targets)
    top = np.argpartition(-scores, kth=min(k, scores.shape[1] - 1), axis=1)[:, :k]
    order = np.take_along_axis(-scores, top, axis=1).argsort(axis=1, kind="stable")
    return ranks, np.take_along_axis(top, order, axis=1)


def evaluate_ranking(score: ScoreFn, split: Split, stage: str = "test", k: int = 10,
                     batch_size: int = 256, max_users: int | None = None,
                     seed: int = 0, users: np.ndarray | None = None) -> tuple[RankingReport, np.ndarray, np.ndarray]:
    """Evaluate `score` on the split's `stage` ('valid' or 'test'): on `users` when given, else on
    `max_users` eval users sampled with `seed` (all when fewer). Returns the report, the ranks and
    the top-k lists (rows in the order of the evaluated users)."""
    if stage not in ("valid", "test"):
        raise ValueError("stage must be 'valid' or 'test'")
    targets_all = split.valid_target if stage == "valid" else split.test_target
    if users is None:
        users = sample_users(split.eval_users, max_users, seed)
    with_context = split.data.context is not None and getattr(score, "accepts_context", False)
    all_ranks, all_top = [], []
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        histories = [split.history(int(u), stage) for u in chunk]
        targets = targets_all[chunk]
        if with_context:
            scores = np.asarray(score(histories, contexts=[split.history_context(int(u), stage) for u in chunk]))
        else:
            scores = np.asarray(score(histories))
        if scores.shape != (len(chunk), split.data.n_items):
            raise ValueError(f"scorer returned shape {scores.shape}, expected {(len(chunk), split.data.n_items)}")
        ranks, top = ranks_and_topk(scores, histories, targets, k)
        all_ranks.append(ranks)
        all_top.append(top)
    ranks = np.concatenate(all_ranks) if all_ranks else np.zeros(0)
    top = np.concatenate(all_top) if all_top else np.zeros((0, k), dtype=np.int64)
    hr, ndcg, mrr = ranking_metrics(ranks, k)
    coverage = float(len(np.unique(top)) / split.data.n_items) if top.size else 0.0
    return RankingReport(users=len(users), hr=hr, ndcg=ndcg, mrr=mrr, coverage=coverage, k=k), ranks, top
