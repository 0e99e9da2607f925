"""Membership-inference audit: can an attacker tell whether a user's history was in the training set?

Users are split at random into three disjoint groups: members (the audited model trains on them),
non-members (held out) and a reference group (a second model of the same kind trains on them, the
"shadow" the attacker would build from public or bought data). For each member and non-member the
attack looks at the next-item loss of the model on the user's own sequence:

- loss attack: a lower loss means "member" (Yeom et al. 2018);
- reference attack: the target model's loss minus the reference model's loss on the same user, which
  removes how predictable the user is anyway (the one-reference offline variant of Carlini et al.'s
  LiRA, 2022). It is the stronger of the two on recommenders.

The models train under the leave-one-out protocol, which keeps each user's last two events out of
training, so the losses are taken on what a member's training data was: the sequence without its last
two events (for members and non-members alike). Scoring the held-out events too would mix targets
the model never saw into the members' losses and pull the AUC towards 0.5.

Reported for each: the attack AUC with a bootstrap 95% interval, and the true-positive rate at a 1%
false-positive rate. For a model trained with (epsilon, delta)-DP, any attack obeys
TPR <= e^epsilon * FPR + delta (Kairouz et al. 2015), which `dp_tpr_bound` gives for the plot.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from shopmind.evaluation import Sequences
from shopmind.exceptions import InvalidInputError

MAX_POSITIONS = 10  # next-item targets scored per user (the latest ones of their training sequence)
TRAINED_CUT = 2     # leave-one-out keeps each user's last two events (validation, test) out of training


def sequence_losses(model, sequences: list[np.ndarray], max_positions: int = MAX_POSITIONS) -> np.ndarray:
    """Mean next-item cross-entropy of `model` over the last `max_positions` targets of each sequence."""
    histories, targets, owners = [], [], []
    for row, seq in enumerate(sequences):
        seq = np.asarray(seq, dtype=np.int64)
        for t in range(max(1, len(seq) - max_positions), len(seq)):
            histories.append(seq[:t])
            targets.append(int(seq[t]))
            owners.append(row)
    losses = np.zeros(len(sequences))
    counts = np.zeros(len(sequences))
    for start in range(0, len(histories), 256):
        scores = np.asarray(model.score(histories[start:start + 256]), dtype=np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        log_norm = np.log(np.exp(scores).sum(axis=1))
        chunk = slice(start, start + len(scores))
        picked = scores[np.arange(len(scores)), targets[chunk]]
        np.add.at(losses, owners[chunk], log_norm - picked)
        np.add.at(counts, owners[chunk], 1)
    return losses / np.maximum(counts, 1)


def auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> float:
    """P(member score > non-member score), ties counted half (Mann-Whitney U / n1 n0)."""
    both = np.concatenate([member_scores, nonmember_scores])
    ranks = _average_ranks(both)
    n1, n0 = len(member_scores), len(nonmember_scores)
    return float((ranks[:n1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    sorted_values = values[order]
    # ties get the mean of their ranks
    boundaries = np.flatnonzero(np.diff(sorted_values)) + 1
    for group in np.split(np.arange(len(values)), boundaries):
        if len(group) > 1:
            ranks[order[group]] = ranks[order[group]].mean()
    return ranks


def tpr_at_fpr(member_scores: np.ndarray, nonmember_scores: np.ndarray, fpr: float = 0.01) -> float:
    threshold = np.quantile(nonmember_scores, 1 - fpr)
    return float(np.mean(member_scores > threshold))


def dp_tpr_bound(epsilon: float, delta: float, fpr: np.ndarray) -> np.ndarray:
    """The highest TPR any membership attack can reach at each FPR against an (epsilon, delta)-DP model."""
    fpr = np.asarray(fpr, dtype=np.float64)
    return np.minimum(1.0, np.minimum(np.exp(epsilon) * fpr + delta, 1 - np.exp(-epsilon) * (1 - delta - fpr)))


def _report(members: np.ndarray, nonmembers: np.ndarray, rng: np.random.Generator, n_bootstrap: int) -> dict:
    samples = [auc(rng.choice(members, len(members)), rng.choice(nonmembers, len(nonmembers)))
               for _ in range(n_bootstrap)]
    return {"auc": round(auc(members, nonmembers), 4),
            "auc_95ci": [round(float(np.quantile(samples, 0.025)), 4), round(float(np.quantile(samples, 0.975)), 4)],
            "tpr_at_1pct_fpr": round(tpr_at_fpr(members, nonmembers), 4)}


def membership_audit(data: Sequences, make_model: Callable[[], Any], max_users: int = 2000,
                     n_bootstrap: int = 500, seed: int = 0) -> dict[str, Any]:
    """Train `make_model()` on a random third of the users and attack it (see the module docstring).

    Returns both attacks' figures, the group sizes, and the audited model (as "model")."""
    eligible = np.array([r for r, s in enumerate(data.sequences) if len(s) >= TRAINED_CUT + 2])
    if len(eligible) < 30:
        raise InvalidInputError(f"{len(eligible)} users with {TRAINED_CUT + 2}+ events; the audit needs at least 30",
                                field="sequences")
    rng = np.random.default_rng(seed)
    groups = np.array_split(rng.permutation(eligible), 3)
    member_rows, nonmember_rows, reference_rows = groups
    target = make_model().fit(data.subset(member_rows))
    reference = make_model().fit(data.subset(reference_rows))
    member_rows, nonmember_rows = member_rows[:max_users], nonmember_rows[:max_users]
    audited = {name: [data.sequences[r][:-TRAINED_CUT] for r in rows] for name, rows in
               (("members", member_rows), ("nonmembers", nonmember_rows))}
    target_loss = {k: sequence_losses(target, v) for k, v in audited.items()}
    reference_loss = {k: sequence_losses(reference, v) for k, v in audited.items()}
    return {
        "members": len(member_rows), "nonmembers": len(nonmember_rows), "reference_users": len(reference_rows),
        "loss_attack": _report(-target_loss["members"], -target_loss["nonmembers"], rng, n_bootstrap),
        "reference_attack": _report(reference_loss["members"] - target_loss["members"],
                                    reference_loss["nonmembers"] - target_loss["nonmembers"], rng, n_bootstrap),
        "model": target,
    }
