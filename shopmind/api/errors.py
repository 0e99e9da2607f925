"""The one place shopmind errors become HTTP responses. Bodies never echo raw ids or personal data."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shopmind.events.files import json_problem
from shopmind.events.validation import _field_and_message
from shopmind.exceptions import (
    AuthError,
    BatchValidationError,
    BodyTooLarge,
    ConfigError,
    InvalidInputError,
    NotFoundError,
    ScopeError,
    ShopmindError,
    StorageError,
)

log = logging.getLogger("shopmind.api")

STATUS = [
    (ScopeError, 403), (AuthError, 401), (BatchValidationError, 422), (BodyTooLarge, 413), (InvalidInputError, 422),
    (NotFoundError, 404), (StorageError, 503), (ConfigError, 500),
]


def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    """FastAPI's parse errors, reshaped to shopmind's contract: one entry per bad row and field."""
    errors = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":  # its location is a character offset, not a row
            errors.append({"index": None, "field": "body", "message": f"invalid JSON: {err.get('msg', '')}"})
            continue
        loc = list(err.get("loc", ()))
        where = loc.pop(0) if loc else "body"
        index = loc.pop(0) if loc and isinstance(loc[0], int) else None
        field, message = _field_and_message({"loc": loc, "msg": err.get("msg", "invalid")})
        if where == "body" and index is None and not loc:  # the body as a whole (an object, not a list)
            field = "body"
        errors.append({"index": index, "field": field if where == "body" else f"{where}.{field}", "message": message})
    rows = sorted({e["index"] for e in errors if e["index"] is not None})
    summary = f"{len(rows)} invalid row(s), nothing was written" if rows else "invalid request"
    return JSONResponse(status_code=422, content={"detail": summary, "errors": errors})


async def _http_error(request: Request, exc: StarletteHTTPException):
    """FastAPI answers a JSON body its parser cannot read (not UTF-8, nested past the recursion limit, a
    number of thousands of digits) with a bare 400 naming nothing; it is bad input in the body like any
    invalid JSON, so it gets the same 422 naming the field."""
    cause = exc.__cause__
    if exc.status_code == 400 and isinstance(cause, (ValueError, RecursionError)):
        return JSONResponse(status_code=422, content={"detail": "invalid request", "errors": [
            {"index": None, "field": "body", "message": f"invalid JSON: {json_problem(cause)}"}]})
    return await http_exception_handler(request, exc)


def _shopmind_error(request: Request, exc: ShopmindError) -> JSONResponse:
    status = next((code for kind, code in STATUS if isinstance(exc, kind)), 500)
    body: dict = {"detail": str(exc)}
    if isinstance(exc, BatchValidationError):
        body["errors"] = [e.as_dict() for e in exc.errors]
    elif isinstance(exc, InvalidInputError) and exc.field:
        body["field"] = exc.field
    if status >= 500:
        log.error("request failed: %s", type(exc).__name__)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(ShopmindError, _shopmind_error)
