"""Backtests and threshold tuning: what would a rules + model version have decided on past events?

A backtest replays stored orders and payments, oldest first, through a fresh engine (its own in-process
velocity windows, the chosen model version, the current rules and thresholds) and writes nothing. It
reports the decisions against the known labels and what they would have cost under the shop's cost
model, and suggests the review/block thresholds that would have cost least on that period.
"""

from __future__ import annotations

import json
import logging
from bisect import bisect_left
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np
from scipy.ndimage import minimum_filter1d
from sqlalchemy import select

from shopmind.events.schemas import BEHAVIOUR_EVENT_TYPES
from shopmind.risk.engine import Lists, RiskEngine, Thresholds
from shopmind.risk.schemas import RiskEvent
from shopmind.risk.velocity import MemoryVelocityStore
from shopmind.storage import schema

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CostModel:
    """What each outcome costs the shop, in the order currency (set per shop; defaults are examples)."""

    review_cost: float = 3.0          # analyst time per reviewed order
    margin: float = 0.25              # share of a good order's amount lost when it is blocked
    reviewed_fraud_caught: float = 0.9  # analysts stop this share of the fraud they review


def history(shop, since_ms: int = 0, until_ms: int | None = None) -> Iterator[tuple[RiskEvent, dict[str, str], bool, str | None]]:
    """Stored orders and payments as (event, stored tokens, fraud label, fraud pattern), oldest first."""
    o, p = schema.orders, schema.payments
    until = until_ms if until_ms is not None else 2**62
    with shop.store.transaction() as conn:
        rows = [("order", r) for r in conn.execute(select(o).where(o.c.ts_ms <= until))]
        rows += [("payment", r) for r in conn.execute(select(p).where(p.c.ts_ms <= until))]
    rows.sort(key=lambda kr: kr[1].ts_ms)
    skipped = 0
    for kind, r in rows:
        if r.ts_ms < since_ms:
            continue
        try:
            items = json.loads(r.items) if kind == "order" else []
            event = RiskEvent(
                event_id=f"{kind}:{r.order_id if kind == 'order' else r.payment_id}", kind=kind, ts_ms=r.ts_ms,
                amount=r.amount, currency=r.currency, ip_country=getattr(r, "ip_country", None),
                shipping_country=getattr(r, "shipping_country", None),
                items=[{"item_id": str(i["item_id"]), "price": float(i.get("price") or 0),
                        "quantity": int(i.get("quantity") or 1)} for i in items if i.get("item_id")])
        except (ValueError, TypeError, AttributeError):  # stored before ingestion checked the risk bounds
            skipped += 1
            continue
        tokens = {"user": r.user_pseudonym} if r.user_pseudonym else {}
        if r.instrument_token:
            tokens["card"] = r.instrument_token
        if kind == "order" and r.device_token:
            tokens["device"] = r.device_token
        yield event, tokens, bool(r.label_fraud), r.fraud_pattern
    if skipped:
        log.warning("%d stored orders or payments are outside the risk engine's bounds and were not replayed",
                    skipped)


def behaviour_versions_as_of(registry) -> list[tuple[int, str]]:
    """Every behaviour version with the time of the newest event it can have trained on, oldest first:
    its data window's end, or (a DP model's card keeps no window) the time it was registered."""
    seen = []
    for card in registry.versions("behaviour"):
        window = card.get("data_window_ms")
        seen.append((int(window[1]) if window else int(card["created_ms"]), card["version"]))
    return sorted(seen)


class AsOfUnusualness:
    """The behaviour-model feature for replays, point in time: from each user's events *before* the
    event's time (the live path reads the user's latest events, which for a past event would include its
    future), computed by the newest behaviour version that trained only on events before it. A version
    that saw the event or anything after it would have learnt the order itself and later behaviour, and
    make a replayed order look more usual than it looked live; an event that no version predates has no
    feature (LightGBM's missing value), and is counted in `stats`."""

    def __init__(self, shop, versions: list[tuple[int, str]]):
        self.shop = shop
        self.seen_until = [t for t, _ in versions]
        self.versions = [v for _, v in versions]
        self.stats = {"behaviour_feature": 0, "no_behaviour_version_before": 0}
        self._loaded: tuple[str, Any, Any] | None = None  # replays run oldest first: one version at a time
        e = schema.events
        # the events and the order live serving reads (Shop.recent_items): the model's event types only,
        # equal times in event-id order
        frame = shop.store.frame(select(e.c.user_pseudonym, e.c.item_id, e.c.type, e.c.ts_ms)
                                 .where(e.c.item_id.is_not(None), e.c.user_pseudonym.is_not(None),
                                        e.c.type.in_(BEHAVIOUR_EVENT_TYPES))
                                 .order_by(e.c.user_pseudonym, e.c.ts_ms, shop.store.in_code_point_order(e.c.event_id)))
        self.by_user: dict[str, tuple[list[int], list[tuple[str, str, int]]]] = {}
        for user, item, kind, ts in frame.iter_rows():
            times, items = self.by_user.setdefault(user, ([], []))
            times.append(ts)
            items.append((item, kind, ts))

    def _version(self, ts_ms: int) -> tuple[str, Any, Any] | None:
        j = bisect_left(self.seen_until, ts_ms) - 1  # the newest whose data ended strictly before
        if j < 0:
            return None
        name = self.versions[j]
        if self._loaded is None or self._loaded[0] != name:
            model = self.shop.registry.load_version("behaviour", name)
            self._loaded = (name, model, self.shop.recommender.build_catalog(model))
        return self._loaded

    def __call__(self, pseudonym: str, event: RiskEvent) -> float | None:
        ts = event.ts_ms or 0
        version = self._version(ts)
        if version is None:
            self.stats["no_behaviour_version_before"] += 1
            return None
        times, items = self.by_user.get(pseudonym, ([], []))
        k = bisect_left(times, ts)
        if k == 0:
            return None
        value = self.shop.recommender.unusualness(items[max(0, k - 51):k], [it.item_id for it in event.items],
                                                  version=version)
        self.stats["behaviour_feature"] += value is not None
        return value


def as_of_unusualness(shop) -> AsOfUnusualness | None:
    """The replays' behaviour-model feature (AsOfUnusualness); None when no behaviour model serves (live
    decisions then have no such feature either, and a risk model must not learn one they never get)."""
    if shop.registry.current_version("behaviour") is None:
        return None
    return AsOfUnusualness(shop, behaviour_versions_as_of(shop.registry))


def behaviour_feature_counts(engine: RiskEngine, since: dict[str, int] | None = None) -> dict[str, int]:
    """What the engine's AsOfUnusualness counted (minus `since`, its counts at an earlier point)."""
    source = engine.unusual_source
    stats = source.stats if isinstance(source, AsOfUnusualness) else {"behaviour_feature": 0,
                                                                      "no_behaviour_version_before": 0}
    return {k: v - (since or {}).get(k, 0) for k, v in stats.items()}


@dataclass
class ListsAsOf(Lists):
    """Block/allow lists as they stood when each replayed event happened: an entry counts from the moment
    it was added. A card put on a block list after its chargeback was on no list when it paid, so a replay
    must not stop those payments with it (a backtest that did would report fraud caught that the live
    service could not have caught). Entries removed since are not known here (a removal says the entry was
    a mistake) and count for no event."""

    added_ms: dict[str, dict[str, int]] = field(default_factory=dict)  # list name -> token -> when added

    def membership(self, tokens: dict[str, str], ts_ms: int | None = None) -> dict[str, bool]:
        if ts_ms is None:
            raise ValueError("a list of the past needs the event's time")
        out = {}
        for name, (kind, _members) in self.entries.items():
            added = self.added_ms.get(name, {}).get(tokens.get(kind))  # type: ignore[arg-type]
            out[name] = added is not None and added <= ts_ms
        return out

    @classmethod
    def load(cls, shop, names: Iterable[str]) -> "ListsAsOf":
        """The stored entries of the lists `names` (the live engine's, which its rules were compiled
        against; a list that rules read and that has no entries left is kept, empty) with their times."""
        e = schema.risk_list_entries
        names = set(names)
        lists = cls(entries={name: ("", set()) for name in names})
        with shop.store.transaction() as conn:
            for name, kind, token, added in conn.execute(select(e.c.list_name, e.c.kind, e.c.token, e.c.added_ms)
                                                         .where(e.c.list_name.in_(names))):
                members = lists.entries[name][1]
                members.add(token)
                lists.entries[name] = (kind, members)
                lists.added_ms.setdefault(name, {})[token] = int(added)
        return lists


def history_engine(shop, velocity, model=None, model_version: str | None = None) -> RiskEngine:
    """An engine over the live rules and thresholds, and the lists as of each event, for replaying the
    past (as-of features). An account a replayed decision freezes stays frozen for its later events, as
    live; freezes made by analysts are not replayed (the table keeps only the current state)."""
    live = shop.risk.engine()
    lists = ListsAsOf.load(shop, live.lists.names)
    frozen: set[str] = set()
    return RiskEngine(shop.pseudonyms, velocity, live.rules, lists, live.thresholds,
                      model=model if model is not None else live.model,
                      model_version=model_version or live.model_version, profile=shop.risk._profile,
                      unusual=as_of_unusualness(shop), frozen=frozen.__contains__, on_freeze=frozen.add)


def decision_cost(decisions: np.ndarray, fraud: np.ndarray, amounts: np.ndarray, cost: CostModel) -> float:
    """What these decisions cost under the cost model (freeze_account counts as a block)."""
    stopped = np.isin(decisions, ("block", "freeze_account"))
    reviewed = decisions == "review"
    allowed = decisions == "allow"
    fraud_loss = amounts[allowed & fraud].sum() + (1 - cost.reviewed_fraud_caught) * amounts[reviewed & fraud].sum()
    return float(fraud_loss + cost.margin * amounts[stopped & ~fraud].sum() + cost.review_cost * reviewed.sum())


def by_thresholds(scores: np.ndarray, review: float, block: float) -> np.ndarray:
    return np.where(scores >= block, "block", np.where(scores >= review, "review", "allow"))


def tune_thresholds(scores: np.ndarray, fraud: np.ndarray, amounts: np.ndarray, cost: CostModel,
                    current: tuple[float, float], max_review_share: float = 0.05,
                    also: Iterable[tuple[float, float]] = ()) -> dict[str, float]:
    """The (review, block) pair with the least cost over these events (those no rule decided), sending at
    most `max_review_share` of them to review (the analysts' capacity); the current pair, and the pairs
    in `also`, are candidates whatever they review, and the current pair is kept when nothing beats it.

    Every settable pair is searched: each distinct score as either threshold (`score >= t` then splits the
    events between that score and the one below), and 1.0 while no score reaches it (a threshold that then
    applies to no event; thresholds stop at 1, and 1.0 blocks a score of 1.0). The cost of the cheapest
    pair is recomputed from the decisions it makes, so the reported cost is that of the reported pair."""
    scores, fraud, amounts = np.asarray(scores, dtype=np.float64), np.asarray(fraud, dtype=bool), np.asarray(amounts)
    best = {"review": float(current[0]), "block": float(current[1]),
            "cost": decision_cost(by_thresholds(scores, *current), fraud, amounts, cost)}
    candidates = [*also]
    if len(scores):
        candidates.append(_cheapest_pair(scores, fraud, amounts, cost, max_review_share))
    for review, block in candidates:
        c = decision_cost(by_thresholds(scores, review, block), fraud, amounts, cost)
        if c < best["cost"]:
            best = {"review": float(review), "block": float(block), "cost": c}
    return best


def _cheapest_pair(scores: np.ndarray, fraud: np.ndarray, amounts: np.ndarray, cost: CostModel,
                   max_review_share: float) -> tuple[float, float]:
    """The least costly settable (review, block) pair that reviews at most `max_review_share` of the
    events, in O(n log n): one sort, then running sums over the sorted events.

    With the events sorted by score, a threshold is a cut: the events from position `i` on have a score
    of at least the i-th lowest. Cutting at r for review and b >= r for block costs
        allowed[:r] + reviewed[r:b] + blocked[b:] = (A[r] - R[r]) + (R[b] + B[n] - B[b])
    with A, R and B the running sums of what each event costs allowed, reviewed and blocked. For each
    block cut the best review cut is the least A - R over the cuts at most `cap` events below it (the
    review capacity): a sliding-window minimum."""
    n = len(scores)
    order = np.argsort(scores, kind="stable")
    s, f, a = scores[order], fraud[order], amounts[order]

    def running(per_event: np.ndarray) -> np.ndarray:  # running[i]: the total over the i lowest scores
        return np.concatenate([[0.0], np.cumsum(per_event)])

    allowed = running(np.where(f, a, 0.0))
    reviewed = running(cost.review_cost + np.where(f, (1 - cost.reviewed_fraud_caught) * a, 0.0))
    blocked = running(np.where(f, 0.0, cost.margin * a))
    threshold = np.concatenate([s, [1.0]])             # the threshold that cuts at each position
    cuts = np.flatnonzero(np.concatenate([[True], s[1:] != s[:-1]]))  # where a distinct score starts
    if s[-1] < 1.0:
        cuts = np.append(cuts, n)                      # 1.0 is above every score: nothing past it
    # the review cut's part of the cost, at the positions that are cuts (elsewhere no threshold cuts)
    review_part = np.full(n + 1, np.inf)
    review_part[cuts] = (allowed - reviewed)[cuts]
    cap = int(max_review_share * n + 1e-9)             # events the analysts can take (n * share, whole)
    best_review_part = _sliding_min(review_part, cap + 1)[cuts]
    total = best_review_part + (reviewed + blocked[n] - blocked)[cuts]
    block_cut = int(cuts[int(np.argmin(total))])
    low = max(0, block_cut - cap)
    review_cut = low + int(np.argmin(review_part[low:block_cut + 1]))
    return float(threshold[review_cut]), float(threshold[block_cut])


def _sliding_min(values: np.ndarray, width: int) -> np.ndarray:
    """out[i] = min(values[max(0, i - width + 1):i + 1]): SciPy's running minimum, its window shifted to
    end at i (an origin of (width - 1) // 2 moves the centred window that far left)."""
    return minimum_filter1d(values, size=width, mode="constant", cval=np.inf, origin=(width - 1) // 2)


def backtest(shop, since_ms: int = 0, until_ms: int | None = None, model_version: str | None = None,
             cost: CostModel = CostModel()) -> dict[str, Any]:
    from shopmind.exceptions import InvalidInputError

    if until_ms is not None and since_ms > until_ms:  # an empty report that looked like a quiet period
        raise InvalidInputError("until is before since: nothing would be replayed", field="until")
    live = shop.risk.engine()
    model = None
    if model_version is not None:
        from shopmind.risk.model import RiskModel
        from shopmind.training.registry import VERSION_PATTERN

        if not VERSION_PATTERN.fullmatch(model_version):
            raise InvalidInputError("model_version must look like v20260101-120000-1", field="model_version")
        shop.registry.card("risk", model_version)  # NotFoundError naming the version if there is none
        model = RiskModel.load(shop.registry.root / "risk" / model_version / "model")
    engine = history_engine(shop, MemoryVelocityStore(), model, model_version)
    scores, fraud, amounts, decisions, by_rule, kinds = [], [], [], [], [], []
    rule_hits: dict[str, dict[str, Any]] = {}  # per rule, shadow or enforced: what it would have caught
    counted_from = None  # the behaviour-feature counts cover the reported events only
    for event, tokens, label, _pattern in history(shop, 0, until_ms):
        reported = event.ts_ms is not None and event.ts_ms >= since_ms
        if reported and counted_from is None:
            counted_from = behaviour_feature_counts(engine)
        out = engine.decide(event, tokens=tokens)  # earlier events only warm the windows
        if reported:
            scores.append(out.score)
            fraud.append(label)
            amounts.append(event.amount)
            decisions.append(out.decision)
            by_rule.append(any(h.action != "score" for h in out.hits) or "the account is frozen" in out.reasons)
            kinds.append(event.kind)
            for hit in (*out.hits, *out.shadow):
                counts = rule_hits.setdefault(hit.rule_id, {
                    "version": hit.version, "action": hit.action, "mode": "shadow" if hit.shadow else "enforce",
                    "hits": 0, "fraud_hits": 0, "hit_amount": 0.0, "fraud_hit_amount": 0.0})
                counts["hits"] += 1
                counts["hit_amount"] += event.amount
                if label:
                    counts["fraud_hits"] += 1
                    counts["fraud_hit_amount"] += event.amount
    if counted_from is None:
        counted_from = behaviour_feature_counts(engine)  # nothing reported: nothing counted
    s, f, a = np.array(scores), np.array(fraud, dtype=bool), np.array(amounts)
    n_fraud = int(f.sum())
    d, ruled = np.array(decisions, dtype=object), np.array(by_rule, dtype=bool)
    event_kinds = np.array(kinds, dtype=object)
    trained_until = None
    if engine.model_version is not None:
        trained_until = shop.registry.card("risk", engine.model_version).get("cutoff_ms")
    stopped = np.isin(d, ("block", "freeze_account"))
    reviewed = d == "review"
    thresholds = live.thresholds
    shared, by_kind = _suggestions(s, f, a, d, ruled, event_kinds, cost, thresholds)
    return {
        "events": int(len(s)), "fraud": n_fraud, "model_version": engine.model_version,
        "in_sample": trained_until is not None and since_ms < trained_until,  # optimistic figures if true
        "rules_version": live.rules.version, "thresholds": thresholds.as_dict(),
        "decisions": {k: int((d == k).sum()) for k in ("allow", "review", "block", "freeze_account")},
        "fraud_stopped": int((stopped & f).sum()), "fraud_reviewed": int((reviewed & f).sum()),
        "fraud_allowed": int(((d == "allow") & f).sum()),
        "good_blocked": int((stopped & ~f).sum()), "good_reviewed": int((reviewed & ~f).sum()),
        "fraud_amount_stopped": float(a[stopped & f].sum()), "fraud_amount_reviewed": float(a[reviewed & f].sum()),
        "fraud_amount_allowed": float(a[(d == "allow") & f].sum()),
        "cost": decision_cost(d, f, a, cost) if len(s) else 0.0,
        "cost_model": asdict(cost),
        "decided_by_rules": int(ruled.sum()),
        # each rule's hits over the reported events against their labels, shadow rules as if enforced:
        # what step 3 of "shadow to enforcement" compares (docs/risk.md)
        "rules": {rule: {**c, "hit_amount": round(c["hit_amount"], 2),
                         "fraud_hit_amount": round(c["fraud_hit_amount"], 2),
                         "precision": round(c["fraud_hits"] / c["hits"], 4),
                         "recall": round(c["fraud_hits"] / n_fraud, 4) if n_fraud else None}
                  for rule, c in sorted(rule_hits.items())},
        # orders that had the behaviour-model feature, and those no version trained before them
        **behaviour_feature_counts(engine, counted_from),
        # thresholds only decide what no rule decided; the rules' share of the cost stays as it is
        "suggested_thresholds": shared,
        # the same per event kind (set with `shopmind risk thresholds --kind`): each kind's cost alone
        "suggested_thresholds_by_kind": by_kind,
    }


def _suggestions(s, f, a, d, ruled, kinds, cost: CostModel, thresholds: Thresholds
                 ) -> tuple[dict[str, float] | None, dict[str, dict[str, float] | None]]:
    """The shared suggestion, and each event kind's. A kind's search reviews at most 5% of that kind's
    events, where the shared pair may review more of one kind (5% of all events): the shared pair is
    a candidate for every kind too, so the kinds tuned separately never cost more in total than it."""
    shared = _suggest(s, f, a, d, ruled, cost, (thresholds.review, thresholds.block))
    also = [(shared["review"], shared["block"])] if shared is not None else []
    by_kind = {kind: _suggest(*(x[kinds == kind] for x in (s, f, a, d, ruled)), cost, thresholds.pair(kind), also)
               for kind in sorted(set(kinds.tolist()))}
    return shared, by_kind


def _suggest(s, f, a, d, ruled, cost: CostModel, current: tuple[float, float],
             also: Iterable[tuple[float, float]] = ()) -> dict[str, float] | None:
    free = ~ruled
    if not free.any() or not f[free].any():
        return None
    best = tune_thresholds(s[free], f[free], a[free], cost, current, also=also)
    best["cost"] += decision_cost(d[ruled], f[ruled], a[ruled], cost)
    return best
