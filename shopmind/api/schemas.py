"""Response models of the HTTP API (request rows are shopmind.events.schemas)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shopmind.auth import Scope


class IngestResponse(BaseModel):
    kind: str
    received: int
    written: int
    duplicates: int
    dropped_erased: int


class RecommendedItem(BaseModel):
    item_id: str
    score: float
    reason: str


class RecommendationsResponse(BaseModel):
    model: str
    personalised: bool
    items: list[RecommendedItem]


class SimilarItemsResponse(BaseModel):
    model: str
    items: list[RecommendedItem]


class ErasureResponse(BaseModel):
    pseudonym: str
    erased_ms: int
    removed: dict[str, int]


class ConsentResponse(BaseModel):
    personalization: bool | None
    advertising: bool | None
    analytics: bool | None


class KeyCreate(BaseModel):
    # A misspelt or invented field is an error: `{"expires_in_days": 1}` was dropped, and the caller left
    # believing the key expires (keys do not expire; revoke them).
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)   # the column's width
    scopes: list[Scope] = Field(min_length=1, max_length=20)  # one scope per element ("ingest,admin" is refused)


class KeyCreated(BaseModel):
    key: str
    note: str = "Store this key now: it is not shown again."


class Health(BaseModel):
    status: str
    checks: dict[str, Any] = {}
