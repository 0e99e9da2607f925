"""Alerts: when a rule's hit rate or the fraud rate jumps, tell the risk team's webhooks, with retries.

A check compares the last `window` with the `baseline` period before it, from the decision log and the
labels. A rule alerts when its hit rate in the window is at least `ratio` times its baseline rate (and
it fired at least `min_hits` times); the fraud rate alerts the same way over labelled events. Alerts are
written to an outbox table first and delivered from there, so an alert raised while a webhook is down
is retried (exponential backoff) until it is delivered or runs out of attempts, across restarts; a retry
goes only to the webhooks that have not accepted it yet, so the others do not see it twice.
Several API workers run the same loop: a unique key per rule and clock window keeps one alert when they
check at the same moment, and a worker claims an alert before posting it, so each is delivered once.
Payloads carry rule ids, counts and rates only: no pseudonym, no amount of any single event.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import Integer, func, select, update

from shopmind.exceptions import InvalidInputError
from shopmind.storage import schema

HOUR_MS = 3_600_000
CLAIM_MS = 60_000  # how long a worker holds an alert it is delivering


@dataclass(frozen=True)
class AlertPolicy:
    window_ms: int = HOUR_MS
    baseline_ms: int = 24 * HOUR_MS
    ratio: float = 3.0        # alert when the window's rate is this many times the baseline's
    min_hits: int = 10        # ...and the rule fired (or fraud was labelled) at least this often in the window
    max_attempts: int = 6
    backoff_s: float = 2.0    # first retry after this, doubling each time

    def __post_init__(self) -> None:
        # Refused here rather than met mid-check: min_hits 0 alerts on an empty window (and divided by
        # its zero decisions), a ratio of 0 alerts on every rule, an empty window cannot be keyed.
        if not self.min_hits >= 1:
            raise InvalidInputError(f"min_hits must be at least 1, got {self.min_hits!r}", field="min_hits")
        if not (math.isfinite(self.ratio) and self.ratio > 0):
            raise InvalidInputError(f"ratio must be a number above 0, got {self.ratio!r}", field="ratio")
        for name in ("window_ms", "baseline_ms"):
            if not getattr(self, name) >= 1:
                raise InvalidInputError(f"{name} must be at least 1 ms, got {getattr(self, name)!r}", field=name)


def _rates(store, start: int, end: int) -> tuple[int, dict[str, int]]:
    d = schema.risk_decisions
    with store.transaction() as conn:
        rows = conn.execute(select(d.c.rules).where(d.c.decided_ms > start, d.c.decided_ms <= end)).all()
    hits: dict[str, int] = {}
    for (text,) in rows:
        for rule_id in json.loads(text)["fired"] + json.loads(text)["shadow"]:
            hits[rule_id] = hits.get(rule_id, 0) + 1
    return len(rows), hits


def _fraud(store, start: int, end: int) -> tuple[int, int]:
    lab = schema.risk_labels
    with store.transaction() as conn:
        total, fraud = conn.execute(select(func.count(), func.sum(lab.c.fraud.cast(Integer)))
                                    .where(lab.c.labelled_ms > start, lab.c.labelled_ms <= end)).one()
    return int(total or 0), int(fraud or 0)


def _recently_raised(store, since_ms: int) -> set[tuple[str, str | None]]:
    a = schema.risk_alerts
    with store.transaction() as conn:
        return {(p["kind"], p.get("rule_id")) for (text,) in conn.execute(
            select(a.c.payload).where(a.c.created_ms > since_ms)) for p in [json.loads(text)]}


def check(store, policy: AlertPolicy = AlertPolicy(), now_ms: int | None = None) -> list[dict[str, Any]]:
    """Alerts due now (also queued in the outbox for delivery)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    w_start, b_start = now - policy.window_ms, now - policy.window_ms - policy.baseline_ms
    n_window, window_hits = _rates(store, w_start, now)
    n_base, base_hits = _rates(store, b_start, w_start)
    alerts = []
    for rule_id, hits in sorted(window_hits.items()):
        rate = hits / n_window
        base_rate = base_hits.get(rule_id, 0) / n_base if n_base else 0.0
        if hits >= policy.min_hits and (base_rate == 0.0 or rate >= policy.ratio * base_rate):
            alerts.append({"kind": "rule_hit_rate", "rule_id": rule_id, "hits": hits, "decisions": n_window,
                           "rate": round(rate, 6), "baseline_rate": round(base_rate, 6)})
    labelled, fraud = _fraud(store, w_start, now)
    base_labelled, base_fraud = _fraud(store, b_start, w_start)
    if labelled and fraud >= policy.min_hits:
        rate = fraud / labelled
        base_rate = base_fraud / base_labelled if base_labelled else 0.0
        if base_rate == 0.0 or rate >= policy.ratio * base_rate:
            alerts.append({"kind": "fraud_rate", "fraud": fraud, "labelled": labelled, "rate": round(rate, 6),
                           "baseline_rate": round(base_rate, 6)})
    if alerts:  # one alert per rule (or fraud rate) per window, however often the check runs
        recent = _recently_raised(store, now - policy.window_ms)
        alerts = [x for x in alerts if (x["kind"], x.get("rule_id")) not in recent]
    raised = []
    for alert in alerts:  # API workers may check at the same moment: the unique key keeps one row
        key = f"{alert['kind']}:{alert.get('rule_id') or ''}:{now // policy.window_ms}"
        with store.transaction() as conn:
            if store.insert_ignore(conn, "risk_alerts", [{
                    "created_ms": now, "payload": json.dumps({**alert, "window_ms": policy.window_ms, "at_ms": now}),
                    "attempts": 0, "next_ms": now, "delivered_ms": None, "last_error": None, "dedup_key": key}]):
                raised.append(alert)
    return raised


def webhook_fingerprint(url: str) -> str:
    """What the outbox keeps of a webhook: its URL may carry a secret token, so only a hash is stored."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


def deliver(store, webhooks: list[str], policy: AlertPolicy = AlertPolicy(), now_ms: int | None = None,
            client: Any = None) -> dict[str, int]:
    """Post every due, undelivered alert to each webhook that has not accepted it yet; a failure schedules
    a retry with backoff."""
    import httpx

    def clock() -> int:  # read again for each claim and outcome: posting to a slow hook takes seconds each
        return now_ms if now_ms is not None else int(time.time() * 1000)

    now = clock()
    a = schema.risk_alerts
    with store.transaction() as conn:
        due = conn.execute(select(a).where(a.c.delivered_ms.is_(None), a.c.attempts < policy.max_attempts,
                                           a.c.next_ms <= now).order_by(a.c.id)).all()
    http = client or httpx.Client(timeout=5.0)
    delivered = failed = 0
    try:
        for alert in due:
            # Claim it first: another API worker delivering at the same time skips a claimed alert, and
            # a worker that dies holding the claim leaves it due again when the claim runs out.
            claimed_until = clock() + CLAIM_MS  # a claim made late in a long run still lasts its minute
            with store.transaction() as conn:
                claimed = conn.execute(update(a).where(a.c.id == alert.id, a.c.next_ms == alert.next_ms,
                                                       a.c.delivered_ms.is_(None))
                                       .values(next_ms=claimed_until)).rowcount
            if not claimed:
                continue
            accepted = set(json.loads(alert.delivered_to or "[]"))
            error = None
            for url in webhooks:
                fingerprint = webhook_fingerprint(url)
                if fingerprint in accepted:
                    continue
                try:
                    response = http.post(url, content=alert.payload, headers={"Content-Type": "application/json"})
                    if response.status_code >= 300:
                        error = f"HTTP {response.status_code}"
                    else:
                        accepted.add(fingerprint)
                except Exception as exc:  # a bad URL or a refused connection: retry later, go on
                    error = type(exc).__name__
            attempts, ended = alert.attempts + 1, clock()
            outcome = {"attempts": attempts, "last_error": error, "delivered_to": json.dumps(sorted(accepted))}
            if error is None:
                outcome["delivered_ms"] = ended
                delivered += 1
            else:  # the backoff runs from the failure, not from the start of this run
                outcome["next_ms"] = ended + int(policy.backoff_s * 1000 * 2 ** (attempts - 1))
                failed += 1
            with store.transaction() as conn:  # only while the claim holds: after it ran out, another worker owns it
                conn.execute(update(a).where(a.c.id == alert.id, a.c.next_ms == claimed_until).values(**outcome))
    finally:
        if client is None:
            http.close()
    return {"delivered": delivered, "failed": failed, "due": len(due)}


def policy_dict(policy: AlertPolicy) -> dict[str, Any]:
    return asdict(policy)
