"""Risk decisions (scope `risk`) and the risk team's controls (scope `risk_admin`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Optional

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from shopmind.api.deps import ShopDep, require
from shopmind.auth import Principal, Scope
from shopmind.risk.rules import Rule
from shopmind.risk.schemas import RiskDecision, RiskEvent

router = APIRouter(prefix="/v1/risk", tags=["risk"])
Risk = Annotated[Principal, Depends(require(Scope.risk))]
RiskAdmin = Annotated[Principal, Depends(require(Scope.risk_admin))]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    expression: str = Field(min_length=1, max_length=2000, description="A CEL expression over the documented "
                                                                       "variables (docs/risk.md).")
    action: Literal["score", "allow", "review", "block", "freeze_account"] = "score"
    weight: Optional[float] = Field(None, ge=-1, le=1, description="Required for action `score`: added to the "
                                    "score, in [-1, 1] and not 0. Ignored by the other actions.")
    mode: Literal["enforce", "shadow"] = "shadow"
    description: str = Field("", max_length=500)


class ListIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["user", "card", "device", "ip", "email", "terminal"]
    values: list[Annotated[str, Field(min_length=1, max_length=254)]] = Field(min_length=1, max_length=10_000)


class ThresholdsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    review: float = Field(ge=0, le=1)
    block: float = Field(ge=0, le=1)
    kind: Optional[Literal["order", "payment", "login"]] = Field(
        None, description="Set this event kind's pair; without it, the shop-wide pair.")


class VerdictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    verdict: Literal["fraud", "legitimate"]


class LabelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: str = Field(min_length=1, max_length=128)
    fraud: StrictBool  # "yes" or 1 was read as true: a label trains the model, so only true or false
    source: Literal["chargeback", "analyst", "import"] = "chargeback"


class AccountIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field("", max_length=200)


@router.post("/decisions", response_model=RiskDecision, summary="Decide on an order, payment or login")
async def decide(body: RiskEvent, shop: ShopDep, key: Risk) -> RiskDecision:
    """The decision is committed to the decision log before this returns; review decisions open a case."""
    return await shop.risk.decide_async(body, key.actor)


@router.get("/decisions/{decision_id}", summary="A logged decision with its features")
def get_decision(decision_id: str, shop: ShopDep, key: RiskAdmin,
                 exact: bool = Query(False, description="Add `exact_contributions`: TreeSHAP values of the "
                                     "logged features under the model version that decided (milliseconds).")
                 ) -> dict[str, Any]:
    return shop.risk.decision(decision_id, exact=exact)


@router.get("/rules", summary="Active rules (latest version of each)")
def list_rules(shop: ShopDep, key: RiskAdmin) -> list[dict[str, Any]]:
    return [r.as_dict() for r in shop.risk.rules()]


@router.put("/rules/{rule_id}", summary="Create a rule or a new version of it (audited)")
def put_rule(rule_id: str, body: RuleIn, shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    """New rules default to shadow mode: evaluated and logged, not enforced, until set to enforce."""
    fields = body.model_dump()
    fields["weight"] = fields["weight"] or 0.0  # absent: no weight, which a score rule is refused for
    return shop.risk.put_rule(Rule(rule_id=rule_id, **fields), key.actor).as_dict()


@router.delete("/rules/{rule_id}", status_code=204, summary="Deactivate a rule (audited)")
def delete_rule(rule_id: str, shop: ShopDep, key: RiskAdmin) -> None:
    shop.risk.delete_rule(rule_id, key.actor)


@router.get("/rules/{rule_id}/history", summary="Every version of a rule")
def rule_history(rule_id: str, shop: ShopDep, key: RiskAdmin) -> list[dict[str, Any]]:
    return shop.risk.rule_history(rule_id)


@router.get("/lists", summary="Lists and their sizes")
def lists(shop: ShopDep, key: RiskAdmin) -> list[dict[str, Any]]:
    return shop.risk.lists()


@router.post("/lists/{list_name}", summary="Add values to a block or allow list (stored as keyed tokens)")
def add_to_list(list_name: str, body: ListIn, shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    return {"list_name": list_name, "added": shop.risk.add_to_list(list_name, body.kind, body.values, key.actor)}


@router.post("/lists/{list_name}/remove", summary="Take values off a list (audited)")
def remove_from_list(list_name: str, body: ListIn, shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    return {"list_name": list_name,
            "removed": shop.risk.remove_from_list(list_name, body.kind, body.values, key.actor)}


@router.get("/thresholds", summary="Score thresholds for review and block, shop-wide and per event kind")
def get_thresholds(shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    return shop.risk.thresholds().as_dict()


@router.put("/thresholds", summary="Set the shop-wide thresholds, or one event kind's (audited)")
def put_thresholds(body: ThresholdsIn, shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    return shop.risk.set_thresholds(body.review, body.block, key.actor, kind=body.kind).as_dict()


@router.delete("/thresholds/{kind}",
               summary="Remove an event kind's thresholds: it follows the shop-wide pair (audited)")
def delete_kind_thresholds(kind: Literal["order", "payment", "login"], shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    return shop.risk.set_thresholds(None, None, key.actor, kind=kind).as_dict()


@router.get("/cases", summary="Cases by status")
def cases(shop: ShopDep, key: RiskAdmin, status: Literal["open", "fraud", "legitimate"] = "open",
          limit: int = 100) -> list[dict[str, Any]]:
    return shop.risk.cases(status, min(max(limit, 1), 1000))


@router.post("/cases/{case_id}/verdict", summary="Resolve a case; the verdict becomes the label")
def resolve(case_id: str, body: VerdictIn, shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    return shop.risk.resolve_case(case_id, body.verdict, key.actor)


@router.post("/labels", summary="Late labels (chargebacks) for decided events")
def labels(body: list[LabelIn], shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    return {"labelled": shop.risk.add_labels([b.model_dump() for b in body], key.actor)}


@router.post("/accounts/{user_id:path}/freeze", summary="Freeze an account (audited)")
def freeze(user_id: str, body: AccountIn, shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    shop.risk.freeze(user_id, key.actor, body.reason)
    return {"frozen": True}


@router.post("/accounts/{user_id:path}/unfreeze", summary="Unfreeze an account (audited)")
def unfreeze(user_id: str, body: AccountIn, shop: ShopDep, key: RiskAdmin) -> dict[str, Any]:
    shop.risk.unfreeze(user_id, key.actor, body.reason)
    return {"frozen": False}
