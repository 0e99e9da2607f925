"""The FastAPI application: wires routers, auth, errors and metrics around one Shop."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import threading
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from shopmind import __version__
from shopmind.api import errors, metrics
from shopmind.api.deps import route_scopes
from shopmind.api.fast_routes import FastRoutes
from shopmind.api.routers import admin, analytics, dashboard, ingest, privacy, recommend, risk
from shopmind.auth import KeyVerifier
from shopmind.config import Settings, load_settings
from shopmind.shop import Shop

log = logging.getLogger(__name__)
# (young, middle, old) collection thresholds of a server: see create_app's lifespan for why
SERVING_GC_THRESHOLDS = (10_000, 10, 100)


def _start_warm_up(shop: Shop) -> None:
    threading.Thread(target=_warm_states, args=(shop,), name="shopmind-warm-states", daemon=True).start()


def _warm_states(shop: Shop) -> None:
    """Shop.warm_states, off the startup path; a failure costs only the warm-up (logged without ids)."""
    try:
        queued = shop.warm_states()
        if queued:
            log.info("warming the behaviour states of %d recently active users in the background", queued)
    except Exception as exc:  # noqa: BLE001 - serving goes on without it
        log.warning("state warm-up failed: %s", type(exc).__name__)


async def _risk_alerts(shop: Shop) -> None:
    """Check for risk alerts and deliver the outbox to the webhooks, every risk_alert_interval_s."""
    from shopmind.risk import alerts

    while True:
        await asyncio.sleep(shop.settings.risk_alert_interval_s)
        try:
            await asyncio.to_thread(alerts.check, shop.store)
            await asyncio.to_thread(alerts.deliver, shop.store, shop.settings.risk_alert_webhooks)
        except Exception as exc:  # a failing check must not stop the service; the next one retries
            log.warning("risk alert check failed: %s", type(exc).__name__)


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, models, catalog, the shop's stores) out of the cycle
    collector's reach, so a full collection later scans only what serving created since.

    Why: an opened shop holds a few hundred thousand tracked objects that live as long as the process,
    and every full collection walked all of them while holding the GIL, stalling whatever request was
    running (one full collection took 588 ms unfrozen and 453 ms frozen: docs/benchmarks.md, "Decision
    latency"). Reference counting still frees frozen objects; only reference cycles among them are
    never collected, so a model replaced by a later promotion can keep its cycles (once: models loaded
    after startup are not frozen). Only a server that opened its own shop freezes: tests build many
    apps in one process."""
    gc.collect()
    gc.freeze()


def create_app(settings: Settings | None = None, shop: Shop | None = None) -> FastAPI:
    """Build the app. With `shop` given, the caller owns it (tests); otherwise it opens one at startup."""
    settings = settings or (shop.settings if shop else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = shop is None
        # A risk decision or a recommendation allocates a few thousand short-lived objects. CPython's
        # default (700, 10, 10) collected during most requests and ran a full collection of the
        # long-lived velocity windows and caches every few thousand decisions (about 300 ms each
        # once they hold a million objects). A young threshold of 50,000 (until 2026-12-07) made young
        # collections rare but let the middle generation grow to a million objects: one middle
        # collection held the GIL for 240-365 ms. 10,000 young, 10 middle, 100 old: no collection
        # over 38 ms in nine runs, and less time in the collector than with either where compared
        # (docs/benchmarks.md, "Decision latency", 2026-12-07; bench/gc_thresholds.py).
        gc.set_threshold(*SERVING_GC_THRESHOLDS)
        app.state.shop = shop or Shop.open(settings)
        if owned and settings.serve_gc_freeze:
            freeze_startup_objects()
        # Worker threads for the sync routes: anyio's default of 40 let that many requests contend for
        # the GIL at once, and a first-visit recommendation (a run of short torch and numpy calls, each
        # giving up and taking back the GIL) then waited most of its time for it: 84 first visits/s
        # with 40 threads, 148/s with 4 or 2, on this 2-core machine (bench/recommend_latency.py).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        app.state.keys = KeyVerifier(app.state.shop.store)
        app.state.metrics.watch_refresher(app.state.shop.refresher)
        app.state.shop.follow_erasures()  # erasures by the CLI or another worker reach this process's memory
        if owned:  # the served shop: recently active users' states, computed in the background (docs/risk.md)
            served = app.state.shop
            served.risk.watch()  # rules, lists, thresholds and models changed elsewhere, looked for every 5 s
            _start_warm_up(served)
            # a promotion (or rollback) found on a later request leaves every cached state stale: again
            served.registry.on_switch = lambda kind, _version: _start_warm_up(served) if kind == "behaviour" else None
        alerts = asyncio.create_task(_risk_alerts(app.state.shop)) if settings.risk_alert_webhooks else None
        yield
        if alerts is not None:
            alerts.cancel()
        if owned:
            app.state.shop.close()

    docs = settings.docs_public
    app = FastAPI(title="shopmind", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json" if docs else None,
                  description="Self-hosted, privacy-first AI engine for e-commerce. "
                              "Every route needs an API key (Authorization: Bearer or X-API-Key) with the right scope.")
    app.state.metrics = metrics.Metrics()
    app.add_middleware(FastRoutes, state=app.state)  # inside the metrics middleware, which counts it
    metrics.install(app, app.state.metrics)
    errors.install(app)
    routers = [module.router for module in (ingest, recommend, risk, privacy, analytics, admin, dashboard)]
    for router in routers:
        app.include_router(router)
    # the fast path's scope check before a body is read, over the routes in the order FastAPI matches them
    app.state.route_scopes = route_scopes([route for router in routers for route in router.routes])
    if docs:
        _add_docs(app)
    return app


DOCS_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}


def _add_docs(app: FastAPI) -> None:
    """`/docs` with Swagger UI's files served from the installed fastapi-offline package. FastAPI's own page
    loads them (and a favicon) from public CDNs: blank on an offline host, and each visit tells a third
    party that someone opened this shop's API docs."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse, Response

    static = Path(fastapi_offline.__file__).parent / "static"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="shopmind - API",
                                   swagger_js_url="/docs/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/swagger-ui.css", swagger_favicon_url="data:,")

    def asset(name: str, media_type: str):
        read = functools.cache(lambda: (static / name).read_bytes())  # 1.5 MB: on first use, not per app

        async def serve() -> Response:
            return Response(read(), media_type=media_type, headers={"cache-control": "public, max-age=86400"})

        return serve

    for name, media_type in DOCS_ASSETS.items():
        app.add_api_route(f"/docs/{name}", asset(name, media_type), methods=["GET"], include_in_schema=False)
