"""The public contract of risk scoring: what a shop sends and what it gets back."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from shopmind.events.schemas import LATEST_MS, NotBool, refuse_nul

DECISIONS = ("allow", "review", "block", "freeze_account")
COUNTRY = r"^[A-Z]{2}$"


class RiskItem(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    item_id: str = Field(min_length=1, max_length=128)
    price: Annotated[float, NotBool] = Field(0.0, ge=0, le=1e7)
    quantity: Annotated[int, NotBool] = Field(1, ge=1, le=10_000)

    @field_validator("item_id")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        return refuse_nul(value)  # stored as text in the decision log


SECONDS_LOOK_ALIKE = 10**11  # 1973-03-03 in milliseconds; any time in seconds until the year 5138 is below it


class RiskEvent(BaseModel):
    """An order, payment or login to decide on. Identifying values (user, card fingerprint, device, IP,
    e-mail) are turned into keyed pseudonyms on arrival; only those are stored. Surrounding whitespace is
    stripped from every string, as ingestion strips it: the same user, card or device ingested and
    decided on gets one pseudonym."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    event_id: str = Field(min_length=1, max_length=128, description="The shop's id of this order/payment/login; "
                                                                     "deciding the same id twice counts it once.")
    kind: Literal["order", "payment", "login"]
    ts_ms: Annotated[int, NotBool] | None = Field(None, ge=0, le=LATEST_MS, description="Event time (ms since 1970, UTC; from 1973 on: a smaller number is seconds); default: now. "
                                                                   "Refused more than 5 minutes ahead of the "
                                                                   "server's clock.")
    user_id: str | None = Field(None, min_length=1, max_length=128)
    amount: Annotated[float, NotBool] = Field(0.0, ge=0, le=1e9)
    currency: str = Field("EUR", pattern=r"^[A-Z]{3}$")
    card: str | None = Field(None, min_length=1, max_length=128, description="Payment instrument fingerprint.")
    device_id: str | None = Field(None, min_length=1, max_length=128)
    ip: str | None = Field(None, min_length=1, max_length=64)
    terminal_id: str | None = Field(None, min_length=1, max_length=128, description="Merchant terminal or store.")
    email: str | None = Field(None, min_length=3, max_length=254)
    ip_country: str | None = Field(None, pattern=COUNTRY)
    shipping_country: str | None = Field(None, pattern=COUNTRY)
    billing_country: str | None = Field(None, pattern=COUNTRY)
    items: list[RiskItem] = Field(default_factory=list, max_length=500)

    @field_validator("event_id")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        return refuse_nul(value)  # stored as text in the decision log

    @field_validator("ts_ms")
    @classmethod
    def _milliseconds(cls, value: int | None) -> int | None:
        """A time in seconds (1.7e9 today) reads as January 1970 in milliseconds and was decided, its velocity
        windows and label timeline in 1970 (found by a review): refused, as ingestion refuses numeric
        timestamps."""
        if value is not None and value < SECONDS_LOOK_ALIKE:
            raise ValueError("ts_ms must be milliseconds since 1970 (this looks like seconds: it is before 1973)")
        return value

    @field_validator("email")
    @classmethod
    def _email_shape(cls, value: str | None) -> str | None:
        if value is not None and (value.count("@") != 1 or not value.split("@")[1]):
            raise ValueError("email must look like name@domain")
        return value


class RuleFired(BaseModel):
    rule_id: str
    version: int
    action: str
    weight: float
    description: str


class Contribution(BaseModel):
    feature: str
    value: float | None = Field(description="The feature's value; null where it was unknown (missing).")
    contribution: float = Field(description="Log-odds this feature added to the model score along the event's "
                                "paths through the trees (path attribution); exact TreeSHAP values: "
                                "GET /v1/risk/decisions/{id}?exact=true.")


class RiskDecision(BaseModel):
    decision_id: str
    event_id: str
    decision: Literal["allow", "review", "block", "freeze_account"]
    score: float = Field(description="Model probability plus enforced rule weights, clipped to [0, 1].")
    model_score: float | None
    reasons: list[str]
    rules: list[RuleFired]
    shadow_rules: list[RuleFired]
    failed_rules: list[str]
    contributions: list[Contribution]
    case_id: str | None
    model_version: str | None
    rules_version: int
    latency_ms: float
