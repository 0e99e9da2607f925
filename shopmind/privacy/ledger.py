"""The privacy budget ledger: every differentially private release, per purpose, and what it spent.

Each purpose that reports are released for (`analytics`, `advertising`) has a total epsilon and delta
from the settings (`dp_budget_<purpose>`, `dp_delta_budget`). Under basic composition the privacy loss
of everything released for a purpose is at most the sum of the releases' (epsilon, delta), so the
ledger adds them up and refuses a release that would pass the total, before anything is shown.

Differentially private trainings of the behaviour model are releases too: every run sees (mostly) the
same users, so a retrained model adds its (epsilon, delta) to the `model_training` purpose
(`dp_budget_training`, `dp_delta_budget_training`), and a training that would pass it is refused.

The check and the new row are one transaction. Rows of a purpose are numbered 1, 2, ... (`seq`, unique
per purpose) and carry the running total: a release reads the newest row, checks, and inserts the next
number. Two concurrent releases that read the same newest row cannot both insert the next number: the
loser's transaction fails and is retried against the new total, so a budget is never overspent.

The ledger holds no personal data (no pseudonym, no data values; the query description names only the
metric, grouping, bounds and filters), so erasure does not need to reach it and it is kept for good.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, insert, select

from shopmind.config import Settings
from shopmind.exceptions import BudgetExceededError, InvalidInputError, StorageError
from shopmind.storage import schema
from shopmind.storage.sql import SqlStore

REPORT_PURPOSES = ("analytics", "advertising")      # aggregate reports (privacy/analytics.py)
TRAINING = "model_training"                         # DP-SGD runs of the behaviour model
DP_PURPOSES = REPORT_PURPOSES + (TRAINING,)
# Budgets are sums of floats: 0.1 spent 100 times must still fit a budget of 10.
TOLERANCE = 1e-9
RETRIES = 5


@dataclass(frozen=True)
class Spend:
    """One recorded release."""

    purpose: str
    seq: int
    epsilon: float
    delta: float
    spent_epsilon: float
    spent_delta: float


def check_purpose(purpose: str, allowed: tuple[str, ...] = DP_PURPOSES) -> str:
    if purpose not in allowed:
        raise InvalidInputError(f"purpose must be one of {', '.join(allowed)}, got {purpose!r}", field="purpose")
    return purpose


def budget_of(settings: Settings, purpose: str) -> tuple[float, float]:
    """(epsilon, delta) a purpose may spend in total."""
    if check_purpose(purpose) == TRAINING:
        return settings.dp_budget_training, settings.dp_delta_budget_training
    return getattr(settings, f"dp_budget_{purpose}"), settings.dp_delta_budget


def _latest(conn, purpose: str) -> tuple[int, float, float]:
    t = schema.privacy_ledger
    row = conn.execute(
        select(t.c.seq, t.c.spent_epsilon, t.c.spent_delta).where(t.c.purpose == purpose).order_by(t.c.seq.desc()).limit(1)
    ).one_or_none()
    return (0, 0.0, 0.0) if row is None else (int(row[0]), float(row[1]), float(row[2]))


def remaining(store: SqlStore, settings: Settings, purpose: str) -> tuple[float, float]:
    """(epsilon, delta) the purpose has left. Informative only: `spend` checks again when it writes."""
    eps_budget, delta_budget = budget_of(settings, purpose)
    with store.transaction() as conn:
        _, eps, delta = _latest(conn, purpose)
    return max(eps_budget - eps, 0.0), max(delta_budget - delta, 0.0)


def spend(store: SqlStore, settings: Settings, purpose: str, epsilon: float, delta: float,
          query: dict[str, Any], actor: str) -> Spend:
    """Record a release of (epsilon, delta) for `purpose`, or raise BudgetExceededError writing nothing."""
    eps_budget, delta_budget = budget_of(settings, purpose)
    if not epsilon > 0:
        raise InvalidInputError("epsilon must be positive", field="epsilon")
    for attempt in range(RETRIES):
        try:
            with store.transaction() as conn:
                seq, spent_eps, spent_delta = _latest(conn, purpose)
                if spent_eps + epsilon > eps_budget + TOLERANCE:
                    raise BudgetExceededError(purpose, max(eps_budget - spent_eps, 0.0), epsilon)
                if spent_delta + delta > delta_budget * (1 + TOLERANCE):
                    raise BudgetExceededError(purpose, max(delta_budget - spent_delta, 0.0), delta, unit="delta")
                row = Spend(purpose, seq + 1, epsilon, delta, spent_eps + epsilon, spent_delta + delta)
                conn.execute(insert(schema.privacy_ledger).values(
                    purpose=purpose, seq=row.seq, epsilon=epsilon, delta=delta, spent_epsilon=row.spent_epsilon,
                    spent_delta=row.spent_delta, query=json.dumps(query, sort_keys=True), actor=actor[:64],
                    ts_ms=int(time.time() * 1000)))
            return row
        except StorageError:
            # Most likely a concurrent release took this seq (unique violation) or, on SQLite, wrote after
            # our read; read the new total and try again. A database that is really down fails every time.
            if attempt == RETRIES - 1:
                raise
            time.sleep(0.01 * (attempt + 1))
    raise AssertionError("unreachable")


def summary(store: SqlStore, settings: Settings) -> list[dict[str, Any]]:
    """Budget, spent and remaining epsilon and delta, and the number of releases, per purpose."""
    t = schema.privacy_ledger
    with store.transaction() as conn:
        counts = dict(conn.execute(select(t.c.purpose, func.count()).group_by(t.c.purpose)).all())
        latest = {p: _latest(conn, p) for p in DP_PURPOSES}
    rows = []
    for purpose in DP_PURPOSES:
        eps_budget, delta_budget = budget_of(settings, purpose)
        _, eps, delta = latest[purpose]
        rows.append({"purpose": purpose, "releases": int(counts.get(purpose, 0)),
                     "epsilon_budget": eps_budget, "epsilon_spent": eps, "epsilon_remaining": max(eps_budget - eps, 0.0),
                     "delta_budget": delta_budget, "delta_spent": delta, "delta_remaining": max(delta_budget - delta, 0.0)})
    return rows
