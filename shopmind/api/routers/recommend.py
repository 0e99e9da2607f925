"""Recommendations. Users without personalization consent get non-personalised results."""

from __future__ import annotations

from fastapi import APIRouter, Query

from shopmind.api.deps import Recommend, ShopDep
from shopmind.api.schemas import RecommendationsResponse

router = APIRouter(prefix="/v1", tags=["recommend"])


@router.get("/users/{user_id}/recommendations", response_model=RecommendationsResponse)
def recommendations(user_id: str, shop: ShopDep, key: Recommend,
                    k: int = Query(10, ge=1, le=200),
                    category: str | None = Query(None, max_length=500, description="category path prefix"),
                    exclude_purchased: bool = True) -> RecommendationsResponse:
    return RecommendationsResponse(**shop.recommend(user_id, k=k, category=category,
                                                    exclude_purchased=exclude_purchased))
