"""Recommendations. Users without personalization consent get non-personalised results."""

from __future__ import annotations

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from shopmind.api.deps import Recommend, ShopDep
from shopmind.api.schemas import RecommendationsResponse, SimilarItemsResponse
from shopmind.events.schemas import LATEST_MS, EventType

router = APIRouter(prefix="/v1", tags=["recommend"])


@router.get("/users/{user_id:path}/recommendations", response_model=RecommendationsResponse)
def recommendations(user_id: str, shop: ShopDep, key: Recommend,
                    k: int = Query(10, ge=1, le=200),
                    category: str | None = Query(None, max_length=500, description="category path prefix"),
                    exclude_purchased: bool = True) -> RecommendationsResponse:
    return RecommendationsResponse(**shop.recommend(user_id, k=k, category=category,
                                                    exclude_purchased=exclude_purchased))


class SessionEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, max_length=128)
    type: EventType = EventType.view
    ts_ms: int | None = Field(None, ge=0, le=LATEST_MS, description="when it happened (ms since the epoch); the model reads "
                              "the gaps between events and their hour and weekday, and treats a missing time as unknown")


class SessionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    events: list[SessionEvent] = Field(max_length=500, description="the visitor's events, oldest first")
    k: int = Field(10, ge=1, le=200)
    category: str | None = Field(None, max_length=500)


@router.post("/sessions/recommendations", response_model=RecommendationsResponse,
             summary="Recommendations for an anonymous visitor's session")
def session_recommendations(body: SessionRequest, shop: ShopDep, key: Recommend) -> RecommendationsResponse:
    events = [{"item_id": e.item_id, "type": e.type.value, "ts_ms": e.ts_ms} for e in body.events]
    return RecommendationsResponse(**shop.recommend_session(events, k=body.k, category=body.category))


@router.get("/items/{item_id:path}/similar", response_model=SimilarItemsResponse, summary="Items similar to an item")
def similar_items(item_id: str, shop: ShopDep, key: Recommend, k: int = Query(10, ge=1, le=200)) -> SimilarItemsResponse:
    return SimilarItemsResponse(**shop.similar_items(item_id, k))
