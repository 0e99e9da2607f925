"""Plain-ASGI paths for the two routes that shop traffic hits on every page or order.

FastAPI's routing, dependency resolution, threadpool hop and response-model re-validation cost about
1.5 ms of CPU per request on this machine: more than a risk decision (about 1 ms) and several times a
cached recommendation (about 0.3 ms). These handlers answer the same contract without that stack:

- `POST /v1/risk/decisions`: the same API-key check and scope, the same `RiskEvent` validation, the
  same `RiskDecision` response (api/routers/risk.py holds the reference implementation and documents the
  route in /openapi.json). Only a body declared `application/json` that validates is decided here; any
  other body (another or no Content-Type, a byte-order mark, anything the validation refuses) goes on,
  replayed, to the route, which answers it, 422 or decision, as it answers without this path.
- `GET /v1/users/{user_id}/recommendations`: answered on the event loop when everything it needs is
  already in memory or the cache (`Shop.recommend(cached_only=True)`: consent, recent events, the
  user's state and candidates for the live model); on a cache miss (a first visit, a new event, a new
  category) `Shop.recommend` runs in a worker thread, as the route would run it. Whatever would be an
  error answer goes on, untouched, to the FastAPI route in api/routers/recommend.py, the only place
  that builds one: a query it would reject, a key it would refuse, no model (the route repeats the
  call, which has no side effects beyond filling caches). So the contract has one definition, and the
  fast path can only be faster, never different.
"""

from __future__ import annotations

import functools
import json
import logging
from types import SimpleNamespace
from typing import Any
from urllib.parse import parse_qsl, unquote_to_bytes

import anyio.to_thread
from pydantic import ValidationError
from starlette.routing import Match

from shopmind.api.errors import STATUS
from shopmind.api.schemas import RecommendationsResponse
from shopmind.auth import Principal, Scope
from shopmind.exceptions import InvalidInputError, ShopmindError
from shopmind.risk.schemas import RiskEvent
from shopmind.storage.cache import CacheMiss

log = logging.getLogger("shopmind.api")
RISK_PATH = "/v1/risk/decisions"
MAX_BODY = 1 << 20            # a risk decision's body
MAX_REQUEST_BODY = 64 << 20   # any request's: a batch of 10,000 rows with long texts fits
EARLY_SCOPE_CHECK = 64 << 10  # a body larger than this (or of undeclared length) is read only for a key of its route's scope
API_PREFIX = "/v1/"           # every route under it needs an API key
RISK_ROUTE = SimpleNamespace(path=RISK_PATH)  # what the metrics middleware labels requests with
RECOMMEND_ROUTE = SimpleNamespace(path="/v1/users/{user_id}/recommendations")
USERS, RECOMMENDATIONS = "/v1/users/", "/recommendations"
BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}
MAX_K, MAX_CATEGORY = 200, 500  # the bounds api/routers/recommend.py declares


def _key(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The key as the FastAPI dependencies read it: from the first Authorization and the first X-API-Key
    header (Starlette's `headers.get`), the bearer token first."""
    authorization = next((value for name, value in headers if name == b"authorization"), None)
    api_key = next((value for name, value in headers if name == b"x-api-key"), None)
    if authorization is not None and authorization[:7].lower() == b"bearer ":
        bearer = authorization[7:].decode("latin-1").strip()
        if bearer:  # empty: fall back to X-API-Key, as FastAPI does
            return bearer
    return api_key.decode("latin-1").strip() if api_key is not None else None


def recommendation_query(query_string: bytes) -> dict[str, Any] | None:
    """k, category and exclude_purchased as the FastAPI route would read them, or None for anything
    this parser is not sure about (the route then answers, with its own 422 where one is due)."""
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    names = [name for name, _ in pairs]
    if len(set(names)) != len(names):
        return None
    params: dict[str, Any] = {"k": 10, "category": None, "exclude_purchased": True}
    for name, value in pairs:
        if name == "k":
            # a few digits at most: int() refuses strings over 4,300 digits (a ValueError, a 500)
            if not (value.isascii() and value.isdigit() and len(value) <= 6) or not 1 <= int(value) <= MAX_K:
                return None
            params["k"] = int(value)
        elif name == "category":
            if not value or len(value) > MAX_CATEGORY:
                return None
            params["category"] = value
        elif name == "exclude_purchased":
            if value.lower() not in BOOLEANS:
                return None
            params["exclude_purchased"] = BOOLEANS[value.lower()]
    return params


class FastRoutes:
    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state  # the FastAPI app's state: shop and key verifier, set at startup

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            path, method, original = scope["path"], scope["method"], receive
            if path.startswith(API_PREFIX):
                # The key before the body: FastAPI reads and parses a body before any dependency runs,
                # so without this anyone who reaches the port could make the server buffer and parse
                # large bodies (each route still checks the key's scope).
                try:
                    principal = self.state.keys.verify(_key(scope["headers"]))
                except ShopmindError as exc:
                    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
                    await _send_json(send, status, {"detail": str(exc)}, auth=status == 401)
                    return
                if "\ufffd" in path and not _utf8_path(scope):
                    # The server decodes a path with replacement: m%FCller and m%E4ller both became m\ufffdller,
                    # one user for consent, export and erasure (found by a review). Refused, as a body is.
                    await _send_json(send, 422, {"detail": "the path is not valid UTF-8 once percent-decoded",
                                                 "field": "path"})
                    return
                declared = _content_length(scope["headers"])
                if declared is None and _chunked(scope["headers"]):
                    # No length declared (a chunked upload): read the body here, up to the limit, so that
                    # one past it gets the same 413 as a declared one. Raised from inside `receive`, the
                    # error would reach FastAPI's body parsing, which answers any error there with 400.
                    # A request with neither header has no body (a GET): nothing to read.
                    receive = await _read_body(receive, MAX_REQUEST_BODY)
                    if receive is None:
                        declared = MAX_REQUEST_BODY + 1
                if declared is not None and declared > MAX_REQUEST_BODY:
                    await _send_json(send, 413, {"detail": f"request body is larger than {MAX_REQUEST_BODY} bytes",
                                                 "field": "body"})
                    return
                large = (declared or 0) > EARLY_SCOPE_CHECK or receive is not original  # small ones parse in microseconds
                refusal = self._scope_refusal(scope, principal) if large else None
                if refusal is not None:
                    await _send_json(send, 403, {"detail": refusal})
                    return
                if method == "POST" and path == RISK_PATH and _plain_json(scope["headers"]):
                    receive = await self._risk_decision(scope, receive, send, principal)
                    if receive is None:
                        return
                if method == "GET" and path.startswith(USERS) and path.endswith(RECOMMENDATIONS):
                    user_id = path[len(USERS):-len(RECOMMENDATIONS)]
                    if user_id and "/" not in user_id and await self._recommendations(scope, send, user_id, principal):
                        return
        await self.app(scope, receive, send)

    def _scope_refusal(self, scope, principal: Principal) -> str | None:
        """Why the key lacks what the route this request reaches requires (None: it does not), checked before its body
        is read: FastAPI reads and parses a body before any dependency runs, so a key of the wrong scope
        could hold the event loop for as long as a large body takes to parse (3 s for 57 MiB, found
        by a review). A request that reaches no route is left to FastAPI (404 or 405, body unread)."""
        for route, needed in getattr(self.state, "route_scopes", ()):
            match, _ = route.matches(scope)
            if match is Match.FULL:
                for required in needed:
                    try:
                        principal.require(required)
                    except ShopmindError as exc:
                        return str(exc)
                return None
        return None

    async def _recommendations(self, scope, send, user_id: str, principal: Principal) -> bool:
        """True when answered; False hands the request to the FastAPI route."""
        params = recommendation_query(scope["query_string"])
        if params is None:
            return False
        shop = self.state.shop
        try:
            principal.require(Scope.recommend)
            try:
                answer = shop.recommend(user_id, cached_only=True, **params)
            except CacheMiss:  # database reads or a model pass: in a worker thread, as the route would
                answer = await anyio.to_thread.run_sync(functools.partial(shop.recommend, user_id, **params))
        except ShopmindError:
            return False
        scope["route"] = RECOMMEND_ROUTE
        await _send_raw(send, 200, RecommendationsResponse.model_validate(answer).model_dump_json().encode())
        return True

    async def _risk_decision(self, scope, receive, send, principal: Principal):
        """None when answered; otherwise a `receive` that replays the body to the FastAPI route, for a
        body the validation refuses: the route builds that 422 itself, so the two cannot disagree."""
        scope["route"] = RISK_ROUTE
        try:
            principal.require(Scope.risk)
            body = await _body(receive)
            try:
                event = RiskEvent.model_validate_json(body)
            except ValidationError:
                scope.pop("route", None)  # the route labels it as it matches
                return _replay({"type": "http.request", "body": body, "more_body": False}, receive)
            decision = await self.state.shop.risk.decide_async(event, principal.actor)
            await _send_raw(send, 200, decision.model_dump_json().encode())
        except ShopmindError as exc:
            status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
            body_out: dict[str, Any] = {"detail": str(exc)}
            if isinstance(exc, InvalidInputError) and exc.field:
                body_out["field"] = exc.field
            if status >= 500:
                log.error("request failed: %s", type(exc).__name__)
            await _send_json(send, status, body_out, auth=status == 401)
        return None


def _utf8_path(scope) -> bool:
    raw = scope.get("raw_path")
    if raw is None:  # a server that does not give the raw path: what it decoded is all there is
        return True
    try:
        unquote_to_bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A Content-Type of application/json (parameters aside): the only body the fast path decides. The
    route's rules for the others (none, `+json` types, text) are FastAPI's and change between its
    versions (0.165 refuses a body without a Content-Type that 0.110 read as JSON)."""
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"application/json"
    return False


def _replay(first: dict[str, Any], receive):
    """A `receive` that hands on `first` (a body already read, as one message), then whatever comes after."""
    pending = [first]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


def _content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    for name, value in headers:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _chunked(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name == b"transfer-encoding" for name, _ in headers)


async def _read_body(receive, limit: int):
    """Read a request body of undeclared length whole; return a `receive` that hands it on in one
    message (then passes on what comes after, such as a disconnect), or None once it passes `limit`
    bytes (the rest is not read). The server enforces a declared Content-Length itself."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away mid-body: passed on as it came
            first = message
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            break
    return _replay(first, receive)


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


async def _send_json(send, status: int, body: dict[str, Any], auth: bool = False) -> None:
    await _send_raw(send, status, json.dumps(body).encode(), auth)


async def _send_raw(send, status: int, payload: bytes, auth: bool = False) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    if auth:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
