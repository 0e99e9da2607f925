"""Differentially private aggregate reports and the privacy budget (analyst scope)."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from shopmind.api.deps import Analyst, ShopDep
from shopmind.privacy.analytics import ReportQuery

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])


class ReportRequest(BaseModel):
    """A report to release. See docs/privacy.md, "Differentially private analytics"."""

    model_config = ConfigDict(extra="forbid")

    metric: Literal["count", "sum", "mean", "histogram"]
    epsilon: float = Field(gt=0, le=10, description="Privacy loss this report spends from the purpose's budget.")
    purpose: Literal["analytics", "advertising"] = "analytics"
    by: Literal["category", "type", "day", "country", "age_band", "segment"] | None = None
    value: Literal["price", "quantity", "rating"] | None = None
    bounds: tuple[float, float] | None = Field(None, description="Clamp `value` into [lower, upper].")
    bins: int = Field(10, ge=1, le=100)
    types: list[str] = Field(default_factory=list, max_length=20, description="Only these event types.")
    max_groups: int = Field(4, ge=1, le=1000, description="Groups one user may contribute to.")
    max_rows_per_group: int = Field(1, ge=1, le=1000, description="Rows one user may contribute to a group.")
    noise: Literal["laplace", "gaussian"] = "laplace"


class ReportResponse(BaseModel):
    query: dict[str, Any]
    rows: list[dict[str, Any]]
    epsilon: float
    delta: float
    threshold: int
    min_users: int
    noise_scales: dict[str, float]


@router.post("/reports", response_model=ReportResponse, summary="Release a differentially private report")
def create_report(body: ReportRequest, shop: ShopDep, key: Analyst) -> ReportResponse:
    """Groups with fewer than 50 users are never released; the report's epsilon is charged to its
    purpose's budget, and a report beyond the budget is refused with 422 (field `epsilon`)."""
    query = ReportQuery(**{**body.model_dump(), "types": tuple(body.types)})
    return ReportResponse(**shop.analytics_report(query, key.actor).as_dict())


@router.get("/budget", summary="Privacy budget per purpose: spent and remaining")
def budget(shop: ShopDep, key: Analyst) -> list[dict[str, Any]]:
    return shop.privacy_budget()
