"""The risk engine: one event in, one decision out, with the rules that fired and the model's reasons.

The engine is pure computation over state it is handed (rules, lists, thresholds, model, velocity
store); the service (risk/service.py) loads that state from the database and logs each decision
durably. Order of precedence, strongest first:

    frozen account or a freeze_account rule  ->  freeze_account
    a block rule                              ->  block
    an allow rule (e.g. an allow list)        ->  allow
    a review rule                             ->  review
    otherwise the score against thresholds:  score >= block -> block, >= review -> review, else allow

score = model probability (or 0 without a model) + the weights of enforced score rules, clipped to [0, 1].
Shadow rules are evaluated and logged but change nothing.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from shopmind.privacy.pseudonym import Pseudonymizer
from shopmind.risk.features import FEATURE_NAMES, event_features, rule_context, vector
from shopmind.risk.rules import RuleHit, RuleSet
from shopmind.risk.schemas import RiskEvent
from shopmind.risk.velocity import Observation, VelocityStore

TOP_CONTRIBUTIONS = 5
LIST_KINDS = ("user", "card", "device", "ip", "email", "terminal")


EVENT_KINDS = ("order", "payment", "login")


@dataclass(frozen=True)
class Thresholds:
    """Score thresholds: the shop-wide pair, and pairs for event kinds whose costs differ (a login has no
    amount to lose, a payment is the last chance to stop a card)."""

    review: float = 0.5
    block: float = 0.9
    version: int = 0
    by_kind: tuple[tuple[str, float, float], ...] = ()   # (kind, review, block), sorted by kind

    def pair(self, kind: str | None = None) -> tuple[float, float]:
        for k, review, block in self.by_kind:
            if k == kind:
                return review, block
        return self.review, self.block

    def decide(self, score: float, kind: str | None = None) -> str:
        review, block = self.pair(kind)
        return "block" if score >= block else "review" if score >= review else "allow"

    def as_dict(self) -> dict:
        return {"review": self.review, "block": self.block, "version": self.version,
                "by_kind": {k: {"review": r, "block": b} for k, r, b in self.by_kind}}


@dataclass
class Lists:
    """Block/allow lists: name -> (kind, set of keyed tokens)."""

    entries: dict[str, tuple[str, set[str]]] = field(default_factory=dict)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self.entries))

    def membership(self, tokens: dict[str, str], ts_ms: int | None = None) -> dict[str, bool]:
        """Is each list's kind of token on it? (`ts_ms`, the event's time, matters to lists of the past.)"""
        return {name: tokens.get(kind) in members for name, (kind, members) in self.entries.items()}


@dataclass
class Outcome:
    """Everything about one decision: the log row and the response body."""

    decision_id: str
    decision: str
    score: float
    model_score: float | None
    hits: list[RuleHit]
    shadow: list[RuleHit]
    failed: list[str]
    contributions: list[dict[str, float | str]]
    reasons: list[str]
    features: dict[str, float]
    tokens: dict[str, str]
    ts_ms: int
    latency_us: int = 0


def tokens_of(event: RiskEvent, pseudonyms: Pseudonymizer) -> dict[str, str]:
    """Keyed pseudonyms of every identifying value; the raw values go no further than this function."""
    out: dict[str, str] = {}
    if event.user_id is not None:
        out["user"] = pseudonyms.user(event.user_id)
    # Domains match ingestion's (a card is a payment "instrument"), so tokens in the orders and payments
    # tables are the same values the live path computes, and history can be replayed through the engine.
    for kind, domain, raw in (("card", "instrument", event.card), ("device", "device", event.device_id),
                              ("ip", "ip", event.ip), ("terminal", "terminal", event.terminal_id)):
        if raw is not None:
            out[kind] = pseudonyms.token(domain, raw)
    if event.email is not None:
        out["email"] = pseudonyms.token("email", event.email.strip().lower())
    return out


def _describe(name: str, value: float) -> str:
    shown = "unknown" if isinstance(value, float) and math.isnan(value) else f"{value:.4g}"
    return f"{name} = {shown}"


def _observation(event: RiskEvent, ts_ms: int, tokens: dict[str, str]) -> Observation:
    return Observation(event.event_id, ts_ms, float(event.amount),
                       {k: v for k, v in tokens.items() if k in ("user", "card", "device", "ip", "terminal")})


COMPUTE = object()  # RiskEngine.decide's default for `unusual`: compute the feature itself


class RiskEngine:
    def __init__(self, pseudonyms: Pseudonymizer, velocity: VelocityStore, rules: RuleSet, lists: Lists,
                 thresholds: Thresholds, model: Any = None, model_version: str | None = None,
                 profile: Callable[[str], dict[str, Any] | None] | None = None,
                 frozen: Callable[[str], bool] | None = None,
                 unusual: Callable[[str, RiskEvent], float | None] | None = None,
                 on_freeze: Callable[[str], None] | None = None):
        self.pseudonyms = pseudonyms
        self.velocity = velocity
        self.rules = rules
        self.lists = lists
        self.thresholds = thresholds
        self.model = model
        self.model_version = model_version
        self._profile = profile or (lambda _user: None)
        self._frozen = frozen or (lambda _user: False)
        self._on_freeze = on_freeze  # replays: the account is frozen for the user's later events, as live
        self._unusual = unusual
        if model is not None and list(model.feature_names_) != list(FEATURE_NAMES):
            raise ValueError("the risk model was trained on a different feature set; retrain it")

    def record(self, event: RiskEvent, tokens: dict[str, str]) -> None:
        """Add an event to the velocity windows without deciding it (a replay passing over events that
        were decided before, whose later neighbours must still see them)."""
        self.velocity.observe(_observation(event, event.ts_ms if event.ts_ms is not None else int(time.time() * 1000),
                                           tokens))

    @property
    def unusual_source(self) -> Callable[[str, RiskEvent], float | None] | None:
        """What computes the behaviour feature when it is not precomputed (replays: AsOfUnusualness)."""
        return self._unusual

    def unusualness(self, user: str | None, event: RiskEvent) -> float | None:
        """The behaviour-model feature of this event: None without ordered items, a user or a model."""
        return self._unusual(user, event) if (self._unusual and user and event.items) else None

    def decide(self, event: RiskEvent, record: bool = True, now_ms: int | None = None,
               tokens: dict[str, str] | None = None, unusual: float | None | object = COMPUTE) -> Outcome:
        """Decide on one event. `record=False` computes the features without adding the event to the
        velocity windows (what-if queries); replays of stored history pass the stored `tokens`; a caller
        that computed `unusualness` already (off the event loop: RiskService.decide_async) passes it."""
        started = time.perf_counter_ns()
        ts_ms = event.ts_ms if event.ts_ms is not None else (now_ms or int(time.time() * 1000))
        tokens = tokens if tokens is not None else tokens_of(event, self.pseudonyms)
        user = tokens.get("user")
        obs = _observation(event, ts_ms, tokens)
        velocity = self.velocity.observe(obs) if record else self.velocity.query(obs)
        profile = self._profile(user) if user else None
        if profile and (profile.get("signup_ms") or 0) > ts_ms:
            # the account did not exist yet at the event's time (a replay of a guest order whose user
            # signed up later): no profile, as the live decision had none, not a negative account age
            profile = None
        if unusual is COMPUTE:
            unusual = self.unusualness(user, event)
        features = event_features(event, ts_ms, velocity, profile, unusual)

        model_score: float | None = None
        contributions: list[dict[str, float | str]] = []
        if self.model is not None:
            model_score, contrib = self.model.explain(vector(features))
            for i in np.argsort(-np.abs(contrib))[:TOP_CONTRIBUTIONS]:
                if contrib[i] != 0:
                    name = FEATURE_NAMES[i]
                    contributions.append({"feature": name, "value": features[name], "contribution": float(contrib[i])})

        context = rule_context(event, features, velocity, profile, self.lists.membership(tokens, ts_ms), model_score,
                               self.lists.names)
        fired, failed = self.rules.evaluate(context)
        hits = [h for h in fired if not h.shadow]
        shadow = [h for h in fired if h.shadow]

        score = min(1.0, max(0.0, (model_score or 0.0) + sum(h.weight for h in hits if h.action == "score")))
        actions = {h.action for h in hits}
        reasons: list[str] = []
        if user and self._frozen(user):
            decision = "freeze_account"
            reasons.append("the account is frozen")
        elif "freeze_account" in actions:
            decision = "freeze_account" if user else "block"  # no account to freeze: stop the event
        elif "block" in actions:
            decision = "block"
        elif "allow" in actions:
            decision = "allow"
        elif "review" in actions:
            decision = "review"
        else:
            decision = self.thresholds.decide(score, event.kind)
            if decision != "allow":
                own = any(k == event.kind for k, _, _ in self.thresholds.by_kind)  # else the shop-wide pair decided
                reasons.append(f"score {score:.3f} is at or above the {event.kind if own else 'shop-wide'} "
                               f"{decision} threshold")
        if decision == "freeze_account" and user and record and self._on_freeze is not None:
            self._on_freeze(user)
        reasons += [f"rule {h.rule_id}: {h.description or h.action}" for h in hits]
        reasons += [f"model: {_describe(c['feature'], c['value'])} ({c['contribution']:+.2f})"  # type: ignore[arg-type]
                    for c in contributions[:3]]
        return Outcome(
            decision_id=secrets.token_hex(12), decision=decision, score=score, model_score=model_score,
            hits=hits, shadow=shadow, failed=failed, contributions=contributions, reasons=reasons,
            features=features, tokens=tokens, ts_ms=ts_ms,
            latency_us=(time.perf_counter_ns() - started) // 1000)
