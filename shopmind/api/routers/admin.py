"""Operations: health, readiness, metrics, stats, models and API keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from shopmind.api.deps import Admin, Analyst, AnyKey, ShopDep
from shopmind.api.schemas import Health, KeyCreate, KeyCreated
from shopmind.auth import create_key
from shopmind.training.registry import MODEL_KINDS

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="Liveness (any valid key)")
def healthz(key: AnyKey) -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, summary="Readiness: database and cache reachable")
def readyz(shop: ShopDep, key: AnyKey, response: Response) -> Health:
    checks = {"database": shop.store.ping(), "cache": shop.cache.ping(),
              "model": shop.registry.current_version("popularity")}
    ready = checks["database"] and checks["cache"]
    if not ready:
        response.status_code = 503
    return Health(status="ready" if ready else "not ready", checks=checks)


@router.get("/metrics", summary="Prometheus metrics (analyst scope)")
def metrics(request: Request, key: Analyst) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/stats", summary="Row counts and events by type (analyst scope)")
def stats(shop: ShopDep, key: Analyst) -> dict[str, Any]:
    return shop.stats()


@router.get("/v1/models/{name}", summary="A kind's versions (behaviour, popularity), or one version's cards")
def model_versions(name: str, shop: ShopDep, key: Analyst) -> dict[str, Any]:
    """`/v1/models/behaviour` lists versions with their cards; `/v1/models/<version>` returns that
    version's card per kind, including its privacy guarantee (epsilon, delta, accountant, noise,
    clipping, sampling rate, epochs, users) when it was trained with DP-SGD."""
    if name in MODEL_KINDS:
        return {"current": shop.registry.current_version(name), "versions": shop.registry.versions(name)}
    return {"version": name, "cards": shop.registry.find_version(name)}


@router.post("/v1/keys", response_model=KeyCreated, summary="Create an API key (admin)")
def new_key(body: KeyCreate, shop: ShopDep, key: Admin) -> KeyCreated:
    return KeyCreated(key=create_key(shop.store, body.name, frozenset(body.scopes)))
