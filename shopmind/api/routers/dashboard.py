"""The dashboard page: a static shell (no data in it) whose script calls the API with the user's key."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import HTMLResponse, RedirectResponse

router = APIRouter(tags=["dashboard"], include_in_schema=False)
PAGE = (Path(__file__).parents[2] / "dashboard" / "index.html").read_text()


def _script_hashes(page: str) -> str:
    """CSP source expressions for the page's inline scripts, by hash: the page's own script runs, and a
    script that an injection put into the page would not (with 'unsafe-inline' it would, and could read
    the key the page holds)."""
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in scripts)


HEADERS = {
    "Content-Security-Policy": f"default-src 'self'; style-src 'unsafe-inline'; script-src {_script_hashes(PAGE)}; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "X-Frame-Options": "DENY",             # no framing (clickjacking), for browsers without frame-ancestors
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@router.get("/")
def root() -> RedirectResponse:
    return RedirectResponse("/dashboard")


@router.get("/dashboard", response_class=HTMLResponse)
def dashboard() -> HTMLResponse:
    return HTMLResponse(PAGE, headers=HEADERS)
