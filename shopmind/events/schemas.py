"""The public contract for what a shop sends: items, users, events, orders and payments.

These Pydantic models validate every row at the boundary (HTTP and file import alike). Raw user ids
and personal data appear only here; the ingestion layer turns them into pseudonyms and ciphertext
before anything is stored.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator


def _not_bool(value: Any) -> Any:
    # JSON true/false would pass as 1/0 (Pydantic's lax mode): a flag sent into a numeric field is a
    # client bug, refused rather than stored as a plausible amount, quantity or time.
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


NotBool = BeforeValidator(_not_bool)
Id = Annotated[str, Field(min_length=1, max_length=128)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$")]
Money = Annotated[float, NotBool, Field(ge=0, le=1e9, allow_inf_nan=False)]


class EventType(str, Enum):
    view = "view"
    search = "search"
    click = "click"
    add_to_cart = "add_to_cart"
    remove_from_cart = "remove_from_cart"
    purchase = "purchase"
    rating = "rating"
    ad_impression = "ad_impression"
    ad_click = "ad_click"


_ZERO = timedelta(0)

ITEM_EVENTS = {EventType.view, EventType.click, EventType.add_to_cart, EventType.remove_from_cart,
               EventType.purchase, EventType.rating}
# The events the behaviour model learns from and is served with: a user's choices, not what the shop
# showed them (ad impressions) or took back (remove_from_cart). Training and serving read the same set.
BEHAVIOUR_EVENT_TYPES = ("view", "click", "add_to_cart", "purchase", "rating", "ad_click")


def refuse_nul(value: str) -> str:
    """A field validator's body for text stored as is: PostgreSQL cannot hold a NUL (SQLite can), so it
    is refused on every backend."""
    if "\x00" in value:
        raise ValueError("must not contain a NUL character (\\u0000)")
    return value


MAX_DEPTH = 32  # objects and lists inside attributes; a deeper one is refused, not walked


class _Row(BaseModel):
    # Unknown fields are errors: a misspelt field must not be silently dropped.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        """PostgreSQL cannot store a NUL character in text (SQLite can): it is refused in every string
        field, so a row means the same on every backend. Attributes are checked as they are bounded
        (_json_object), nested rows (an order's items) check their own fields."""
        if type(value) is str and "\x00" in value:
            raise ValueError("must not contain a NUL character (\\u0000)")
        return value


EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2100, 1, 1, tzinfo=UTC)   # the bound risk events and every millisecond column share
LATEST_MS = 4_102_444_800_000               # LATEST in milliseconds since the epoch


def _not_a_number(value: Any) -> Any:
    """A timestamp given as a number (or a string of digits) would be read as Unix time in seconds or in
    milliseconds, whichever pydantic guesses from its size: 20260105 became 1970-08-23. Refused; ISO 8601
    with a time zone says what it means."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) or (
            isinstance(value, str) and value.strip().lstrip("+-").replace(".", "", 1).isdigit()):
        raise ValueError("timestamp must be ISO 8601 with a time zone (e.g. 2026-01-05T10:00:00Z), not a number")
    return value


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp needs a time zone (e.g. 2026-01-05T10:00:00Z)")
    if value.utcoffset() != _ZERO:  # UTC is the common case: no conversion on the hot path of import
        try:
            value = value.astimezone(UTC)
        except OverflowError:  # 9999-12-31T23:00-05:00 is past the last representable time
            raise ValueError("timestamp must be between 1970 and 2100") from None
    if not EARLIEST <= value < LATEST:
        raise ValueError("timestamp must be between 1970 and 2100")
    return value


# Every event, order, payment and sign-up time: ISO 8601 with a time zone, kept in UTC, 1970 to 2100.
UtcTime = Annotated[datetime, BeforeValidator(_not_a_number), AfterValidator(_utc)]


MAX_ATTRIBUTE_VALUES = 1_000   # keys, values and list elements of one row's attributes, all levels
MAX_ATTRIBUTE_TEXT = 64 << 10  # characters of all its keys and strings together


def _json_object(value: Any) -> dict[str, Any]:
    """Attributes may arrive as a dict or (from CSV) as a JSON string. They are bounded before anything
    else walks them: a batch whose attributes held a list of thirty million numbers kept the server's
    event loop busy for 26 seconds (the NUL check and validation walk every element) while every other
    request, risk decisions included, waited. NaN and Infinity are refused: they are not JSON, and they
    came back from an export as null. So is a NUL character in any key or value (PostgreSQL cannot store
    one). Walked with a stack, not recursion: a body nested a few hundred levels deep is valid JSON and
    gets a 422, not the interpreter's recursion limit (a 500)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # JSONDecodeError, a 5,000-digit number, deep nesting
            raise ValueError("must be a JSON object") from None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object")
    count, text, stack = 0, 0, [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, str):
            refuse_nul(v)
            text += len(v)
            if text > MAX_ATTRIBUTE_TEXT:
                raise ValueError(f"must not hold more than {MAX_ATTRIBUTE_TEXT:,} characters of text")
        elif isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must not hold NaN or Infinity (not JSON)")
        elif isinstance(v, (dict, list)):
            if depth >= MAX_DEPTH:
                raise ValueError(f"must not nest objects or lists more than {MAX_DEPTH} levels deep")
            count += 2 * len(v) if isinstance(v, dict) else len(v)  # counted before any child is visited
            if count > MAX_ATTRIBUTE_VALUES:
                raise ValueError(f"must not hold more than {MAX_ATTRIBUTE_VALUES:,} keys, values and list elements")
            stack.extend((child, depth + 1) for child in ((x for pair in v.items() for x in pair)
                                                         if isinstance(v, dict) else v))
    return value


class ItemIn(_Row):
    item_id: Id
    title: Annotated[str, Field(min_length=1, max_length=500)]
    description: Annotated[str, Field(max_length=10_000)] = ""
    category: Annotated[str, Field(max_length=500)] = ""
    brand: Annotated[str, Field(max_length=200)] = ""
    price: Money | None = None
    currency: CurrencyCode = "EUR"
    stock: Annotated[int, NotBool, Field(ge=0, le=10**12)] | None = None
    consumable: bool = False  # bought again and again (groceries, cosmetics): not excluded once purchased
    attributes: dict[str, Any] = Field(default_factory=dict)

    _attrs = field_validator("attributes", mode="before")(lambda cls, v: _json_object(v))


class UserIn(_Row):
    """A customer profile. email, phone and address are encrypted before storage."""

    user_id: Id
    email: Annotated[str, Field(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None = None
    phone: Annotated[str, Field(max_length=40, pattern=r"^\+?[0-9 ()./-]{4,40}$")] | None = None
    address: Annotated[str, Field(max_length=1000)] | None = None
    country: CountryCode | None = None
    age_band: Annotated[str, Field(max_length=20)] | None = None
    consent_personalization: bool | None = None
    consent_advertising: bool | None = None
    consent_analytics: bool | None = None
    signup_ts: UtcTime | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)

    _attrs = field_validator("attributes", mode="before")(lambda cls, v: _json_object(v))


class EventIn(_Row):
    event_id: Id
    user_id: Id | None = None
    session_id: Id | None = None
    type: EventType
    item_id: Id | None = None
    query: Annotated[str, Field(max_length=1000)] | None = None
    price: Money | None = None
    quantity: Annotated[int, NotBool, Field(ge=1, le=100_000)] | None = None
    rating: Annotated[float, NotBool, Field(ge=0, le=5)] | None = None
    device: Annotated[str, Field(max_length=32)] | None = None
    country: CountryCode | None = None
    ts: UtcTime
    ad_id: Id | None = None
    campaign_id: Id | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "EventIn":
        if self.user_id is None and self.session_id is None:
            raise ValueError("user_id: an event needs a user_id or a session_id")
        if self.type in ITEM_EVENTS and self.item_id is None:
            raise ValueError(f"item_id: a {self.type.value} event needs an item_id")
        if self.type is EventType.search and not self.query:
            raise ValueError("query: a search event needs a query")
        if self.type is EventType.rating and self.rating is None:
            raise ValueError("rating: a rating event needs a rating")
        return self


class OrderItemIn(_Row):
    """One line of an order; the bounds are the risk engine's (risk/schemas.py RiskItem), so every stored
    order can be replayed through it."""

    item_id: Annotated[str, Field(min_length=1, max_length=128)]
    quantity: Annotated[int, NotBool, Field(ge=1, le=10_000)] = 1
    price: Annotated[float, NotBool, Field(ge=0, le=1e7, allow_inf_nan=False)] = 0.0

    @field_validator("item_id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value  # numeric item ids in CSV/JSON exports


class OrderIn(_Row):
    order_id: Id
    user_id: Id
    ts: UtcTime
    amount: Money
    currency: CurrencyCode = "EUR"
    items: list[OrderItemIn] = Field(default_factory=list, max_length=500)
    shipping_country: CountryCode | None = None
    ip_country: CountryCode | None = None
    device_id: Id | None = None
    payment_instrument: Id | None = None
    label_fraud: bool | None = None
    fraud_pattern: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("items", mode="before")
    @classmethod
    def _items(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value) if value else []
            except (ValueError, RecursionError):  # as attributes: deep nesting was a RecursionError, a 500
                raise ValueError("must be a JSON list of {item_id, quantity, price}") from None
        if not isinstance(value, list):
            raise ValueError("must be a JSON list of {item_id, quantity, price}")
        return value


class PaymentIn(_Row):
    payment_id: Id
    order_id: Id | None = None
    user_id: Id | None = None
    ts: UtcTime
    amount: Money
    currency: CurrencyCode = "EUR"
    payment_instrument: Id | None = None
    method: Annotated[str, Field(max_length=32)] | None = None
    status: Annotated[str, Field(max_length=32)] | None = None
    label_fraud: bool | None = None
    fraud_pattern: Annotated[str, Field(max_length=64)] | None = None



class ConsentIn(_Row):
    personalization: bool | None = None
    advertising: bool | None = None
    analytics: bool | None = None


ROW_MODELS: dict[str, type[_Row]] = {
    "items": ItemIn,
    "users": UserIn,
    "events": EventIn,
    "orders": OrderIn,
    "payments": PaymentIn,
}
