"""Dependencies shared by the routers: the Shop, and API-key auth with scopes."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from shopmind.auth import Principal, Scope
from shopmind.shop import Shop

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer sm_<id>_<secret>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: sm_<id>_<secret>")


# The dependencies are `async def` on purpose: they never block (key checks are cached in memory and
# touch the database once per key every few seconds), and FastAPI runs every plain `def` dependency in
# a worker thread, a hop that cost more CPU than a cached recommendation.


async def get_shop(request: Request) -> Shop:
    return request.app.state.shop


ShopDep = Annotated[Shop, Depends(get_shop)]


async def _principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Principal:
    presented = bearer.credentials if bearer is not None else header
    return request.app.state.keys.verify(presented)


def require(scope: Scope):
    """Dependency factory: the caller's key must carry `scope` (admin carries every scope)."""

    async def check(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        principal.require(scope)
        return principal

    check.scope = scope  # read by route_scopes, for the check made before a body is read
    return check


def route_scopes(routes: list[Any]) -> list[tuple[APIRoute, frozenset[Scope]]]:
    """Each API route with the scopes its dependencies require, so that api/fast_routes.py can refuse a
    key without them before it reads a body: FastAPI reads and parses a request's body before any
    dependency runs, and a large one holds the event loop for seconds (every other request waits)."""
    def needed(dependant: Any) -> set[Scope]:
        found = {getattr(dependant.call, "scope", None)}
        for child in dependant.dependencies:
            found |= needed(child)
        return found

    return [(route, frozenset(needed(route.dependant) - {None})) for route in routes if isinstance(route, APIRoute)]


async def any_key(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
    return principal


AnyKey = Annotated[Principal, Depends(any_key)]
Admin = Annotated[Principal, Depends(require(Scope.admin))]
Ingest = Annotated[Principal, Depends(require(Scope.ingest))]
Recommend = Annotated[Principal, Depends(require(Scope.recommend))]
Analyst = Annotated[Principal, Depends(require(Scope.analyst))]
