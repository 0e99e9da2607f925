"""Ingestion: batches of events, items, users, orders and payments. Validated whole, committed whole."""

from __future__ import annotations

from typing import Any, Sequence

from fastapi import APIRouter, Request

from shopmind.api.deps import Ingest, ShopDep
from shopmind.api.schemas import IngestResponse
from shopmind.events.schemas import EventIn, ItemIn, OrderIn, PaymentIn, UserIn
from shopmind.events.validation import check_unique_ids
from shopmind.exceptions import InvalidInputError

router = APIRouter(prefix="/v1", tags=["ingest"])


def _write(shop, request: Request, kind: str, rows: Sequence[Any], actor: str) -> IngestResponse:
    if len(rows) > shop.settings.max_batch:
        raise InvalidInputError(f"batch has {len(rows)} rows; at most {shop.settings.max_batch} per request", field="body")
    check_unique_ids(kind, rows)  # what validate_rows checks after the schema, which FastAPI applied on parse
    result = shop.ingest_valid(kind, rows, actor)
    metrics = request.app.state.metrics
    metrics.ingested.labels(kind).inc(result.written)
    metrics.duplicates.labels(kind).inc(result.duplicates)
    return IngestResponse(**result.as_dict())


@router.post("/events", response_model=IngestResponse, summary="Ingest a batch of behaviour events")
def post_events(rows: list[EventIn], shop: ShopDep, key: Ingest, request: Request) -> IngestResponse:
    """Up to `max_batch` (10,000) events. Resending a batch is safe: known event ids are skipped."""
    return _write(shop, request, "events", rows, key.actor)


@router.post("/items", response_model=IngestResponse, summary="Create or update catalog items")
def post_items(rows: list[ItemIn], shop: ShopDep, key: Ingest, request: Request) -> IngestResponse:
    return _write(shop, request, "items", rows, key.actor)


@router.post("/users", response_model=IngestResponse, summary="Create or update user profiles and consent")
def post_users(rows: list[UserIn], shop: ShopDep, key: Ingest, request: Request) -> IngestResponse:
    """email, phone and address are encrypted before storage; user ids become pseudonyms."""
    return _write(shop, request, "users", rows, key.actor)


@router.post("/orders", response_model=IngestResponse, summary="Ingest orders")
def post_orders(rows: list[OrderIn], shop: ShopDep, key: Ingest, request: Request) -> IngestResponse:
    return _write(shop, request, "orders", rows, key.actor)


@router.post("/payments", response_model=IngestResponse, summary="Ingest payments")
def post_payments(rows: list[PaymentIn], shop: ShopDep, key: Ingest, request: Request) -> IngestResponse:
    return _write(shop, request, "payments", rows, key.actor)
