"""Point-in-time features of one risk event, for the model (a fixed vector) and for rules (a CEL context).

Every feature is computed from what is known when the event is decided: the event itself, the velocity
windows up to and including its timestamp, the user's profile, and the behaviour model's view of the
user's history. The vector is stored with the decision, so the model is later trained on exactly what
it would have seen (no leakage from the future by construction).
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import numpy as np

from shopmind.risk import rules as rule_vars
from shopmind.risk.schemas import RiskEvent
from shopmind.risk.velocity import ENTITIES, feature_names as velocity_feature_names

EVENT_FEATURES = (
    "amount", "log_amount", "kind_order", "kind_payment", "kind_login", "hour", "weekday", "n_items",
    "ip_vs_shipping", "ip_vs_billing", "shipping_vs_billing", "ip_vs_user_country", "shipping_vs_user_country",
    "account_age_days", "new_device", "new_card", "amount_to_user_mean_30d", "amount_to_card_mean_30d",
    "behaviour_unusual",
)
VELOCITY_FEATURES = tuple(velocity_feature_names())
FEATURE_NAMES = EVENT_FEATURES + VELOCITY_FEATURES
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}

def _split(name: str) -> tuple[str, str, bool]:
    entity = next(e for e in ENTITIES if name.startswith(e + "_"))
    key = name[len(entity) + 1:]
    return entity, key, key.startswith(("count_", "distinct_"))


_SPLIT = {name: _split(name) for name in VELOCITY_FEATURES}  # velocity name -> (entity, field, is a count)


def _differs(a: str | None, b: str | None) -> float:
    return float(a is not None and b is not None and a != b)


def _ratio_to_earlier(amount: float, total: float, count: float) -> float:
    """The amount over the mean of the entity's earlier events in the window (NaN without history)."""
    if count is None or count <= 1:
        return math.nan
    earlier = (total - amount) / (count - 1)
    return amount / earlier if earlier > 0 else math.nan


def event_features(event: RiskEvent, ts_ms: int, velocity: dict[str, float], profile: dict[str, Any] | None,
                   unusual: float | None) -> dict[str, float]:
    """The model's features as a name -> value dict (NaN where unknown)."""
    when = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    user_country = (profile or {}).get("country")
    signup_ms = (profile or {}).get("signup_ms")
    out: dict[str, float] = dict.fromkeys(FEATURE_NAMES, math.nan)
    out.update(velocity)
    out.update({
        "amount": event.amount,
        "log_amount": math.log1p(event.amount),
        "kind_order": float(event.kind == "order"),
        "kind_payment": float(event.kind == "payment"),
        "kind_login": float(event.kind == "login"),
        "hour": float(when.hour),
        "weekday": float(when.weekday()),
        "n_items": float(sum(item.quantity for item in event.items)),
        "ip_vs_shipping": _differs(event.ip_country, event.shipping_country),
        "ip_vs_billing": _differs(event.ip_country, event.billing_country),
        "shipping_vs_billing": _differs(event.shipping_country, event.billing_country),
        "ip_vs_user_country": _differs(event.ip_country, user_country),
        "shipping_vs_user_country": _differs(event.shipping_country, user_country),
        "account_age_days": (ts_ms - signup_ms) / 86_400_000 if signup_ms else math.nan,
        "new_device": float(velocity["device_count_30d"] == 1) if "device_count_30d" in velocity else math.nan,
        "new_card": float(velocity["card_count_30d"] == 1) if "card_count_30d" in velocity else math.nan,
        "amount_to_user_mean_30d": _ratio_to_earlier(event.amount, velocity.get("user_sum_30d", 0.0),
                                                     velocity.get("user_count_30d", 0)),
        "amount_to_card_mean_30d": _ratio_to_earlier(event.amount, velocity.get("card_sum_30d", 0.0),
                                                     velocity.get("card_count_30d", 0)),
        "behaviour_unusual": math.nan if unusual is None else unusual,
    })
    return out


def vector(features: dict[str, float]) -> np.ndarray:
    return np.fromiter((features[name] for name in FEATURE_NAMES), dtype=np.float64, count=len(FEATURE_NAMES))


def logged_vector(logged: dict[str, float | None]) -> list[float]:
    """The model's row for features as the decision log stores them (JSON: null for unknown, and a
    feature added after the decision is absent): NaN for both."""
    return [math.nan if logged.get(name) is None else logged[name] for name in FEATURE_NAMES]  # type: ignore[misc]


_TEMPLATES: dict[tuple[str, ...], dict[str, Any]] = {}


def rule_context(event: RiskEvent, features: dict[str, float], velocity: dict[str, float],
                 profile: dict[str, Any] | None, lists: dict[str, bool], model_score: float | None,
                 list_names: tuple[str, ...]) -> dict[str, Any]:
    """The CEL context: `event`, one map per entity (velocity without the prefix), `lists`, `model`.
    Every documented field is present (zeros where unknown), so rules never fail on a missing key."""
    template = _TEMPLATES.get(list_names)
    if template is None:
        template = _TEMPLATES[list_names] = rule_vars.sample_context(list_names)
    context = {name: dict(values) for name, values in template.items()}  # one level deep is enough
    for name, value in velocity.items():
        entity, key, integral = _SPLIT[name]
        context[entity][key] = int(value) if integral else float(value)
    ev = context["event"]
    ev.update({
        "kind": event.kind, "amount": float(event.amount), "currency": event.currency,
        "n_items": int(features["n_items"]), "hour": int(features["hour"]), "weekday": int(features["weekday"]),
        "ip_country": event.ip_country or "", "shipping_country": event.shipping_country or "",
        "billing_country": event.billing_country or "", "user_country": (profile or {}).get("country") or "",
        "email_domain": event.email.split("@")[1].lower() if event.email else "",
        "new_device": features["new_device"] == 1.0, "new_card": features["new_card"] == 1.0,
        "account_age_days": -1.0 if math.isnan(features["account_age_days"]) else float(features["account_age_days"]),
    })
    context["lists"].update(lists)
    context["model"] = {"score": -1.0 if model_score is None else float(model_score),
                        "unusual": -1.0 if math.isnan(features["behaviour_unusual"]) else float(features["behaviour_unusual"])}
    return context
