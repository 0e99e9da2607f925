"""Data-subject rights: erasure, export, consent, and (audited) reads of a user's events."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from shopmind.api.deps import Admin, Analyst, ShopDep
from shopmind.api.schemas import ConsentResponse, ErasureResponse
from shopmind.events.schemas import ConsentIn

router = APIRouter(prefix="/v1/users", tags=["privacy"])


@router.delete("/{user_id:path}", response_model=ErasureResponse, summary="Erase a user everywhere")
def erase_user(user_id: str, shop: ShopDep, key: Admin) -> ErasureResponse:
    """Removes profile, events, orders, payments, cached state and model lineage; returns the receipt.
    Repeating it is safe."""
    return ErasureResponse(**shop.erase_user(user_id, key.actor).as_dict())


@router.get("/{user_id:path}/export", summary="Everything held about a user (data-subject access)")
def export_user(user_id: str, shop: ShopDep, key: Admin) -> dict[str, Any]:
    return shop.export_user(user_id, key.actor)


@router.put("/{user_id:path}/consent", response_model=ConsentResponse, summary="Change a user's consent")
def put_consent(user_id: str, flags: ConsentIn, shop: ShopDep, key: Admin) -> ConsentResponse:
    return ConsentResponse(**shop.set_consent(user_id, flags.model_dump(), key.actor))


@router.get("/{user_id:path}/events", summary="A user's latest events (audited)")
def user_events(user_id: str, shop: ShopDep, key: Analyst,
                limit: int = Query(20, ge=1, le=500)) -> list[dict[str, Any]]:
    return shop.recent_events(user_id, key.actor, limit)
