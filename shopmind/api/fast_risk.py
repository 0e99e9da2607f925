"""A plain-ASGI path for `POST /v1/risk/decisions`, the one route that checkout traffic hits per order.

FastAPI's routing, dependency resolution and response-model re-validation cost about 1.5 ms of CPU per
request on this machine, more than the risk decision itself (about 1 ms). This handler answers that one
route with the same contract: the same API-key check and scope, the same `RiskEvent` validation and
422 body, the same `RiskDecision` response; everything else goes on to FastAPI, which also still
documents the route in /openapi.json (api/routers/risk.py holds the reference implementation).
"""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace
from typing import Any

from pydantic import ValidationError

from shopmind.api.errors import STATUS
from shopmind.auth import Scope
from shopmind.events.validation import _field_and_message
from shopmind.exceptions import InvalidInputError, ShopmindError
from shopmind.risk.schemas import RiskEvent

log = logging.getLogger("shopmind.api")
PATH = "/v1/risk/decisions"
MAX_BODY = 1 << 20
ROUTE = SimpleNamespace(path=PATH)  # what the metrics middleware labels requests with


def _key(headers: list[tuple[bytes, bytes]]) -> str | None:
    bearer = api_key = None
    for name, value in headers:
        if name == b"authorization" and value[:7].lower() == b"bearer ":
            bearer = value[7:].decode("latin-1").strip() or None  # empty: fall back to X-API-Key, as FastAPI does
        elif name == b"x-api-key":
            api_key = value.decode("latin-1").strip()
    return bearer if bearer is not None else api_key


class FastRiskDecisions:
    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: shop and key verifier, set at startup

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = ROUTE
        try:
            principal = self.state.keys.verify(_key(scope["headers"]))
            principal.require(Scope.risk)
            body = await self._body(receive)
            try:
                event = RiskEvent.model_validate_json(body)
            except ValidationError as exc:
                errors = []
                for err in exc.errors():
                    field, message = _field_and_message({"loc": err.get("loc", ()), "msg": err.get("msg", "invalid")})
                    errors.append({"index": None, "field": field, "message": message})
                await self._send(send, 422, {"detail": "invalid request", "errors": errors})
                return
            decision = await self.state.shop.risk.decide_async(event, principal.actor)
            await self._send_raw(send, 200, decision.model_dump_json().encode())
        except ShopmindError as exc:
            status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
            body_out: dict[str, Any] = {"detail": str(exc)}
            if isinstance(exc, InvalidInputError) and exc.field:
                body_out["field"] = exc.field
            if status >= 500:
                log.error("request failed: %s", type(exc).__name__)
            await self._send(send, status, body_out, auth=status == 401)

    @staticmethod
    async def _body(receive) -> bytes:
        chunks, size = [], 0
        while True:
            message = await receive()
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY:
                raise InvalidInputError(f"request body is larger than {MAX_BODY} bytes", field="body")
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _send(self, send, status: int, body: dict[str, Any], auth: bool = False) -> None:
        await self._send_raw(send, status, json.dumps(body).encode(), auth)

    @staticmethod
    async def _send_raw(send, status: int, payload: bytes, auth: bool = False) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if auth:
            headers.append((b"www-authenticate", b"Bearer"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
