"""The dashboard page: a static shell (no data in it) whose script calls the API with the user's key."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

router = APIRouter(tags=["dashboard"], include_in_schema=False)
PAGE = (Path(__file__).parents[2] / "dashboard" / "index.html").read_text()


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(PAGE, headers={"Content-Security-Policy": "default-src 'self'; style-src 'unsafe-inline'; "
                                                                  "script-src 'unsafe-inline'; connect-src 'self'"})
