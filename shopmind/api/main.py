"""The FastAPI application: wires routers, auth, errors and metrics around one Shop."""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import FastAPI

from shopmind import __version__
from shopmind.api import errors, metrics
from shopmind.api.fast_routes import FastRoutes
from shopmind.api.routers import admin, analytics, dashboard, ingest, privacy, recommend, risk
from shopmind.auth import KeyVerifier
from shopmind.config import Settings, load_settings
from shopmind.shop import Shop

log = logging.getLogger(__name__)
SERVING_GC_THRESHOLD = 50_000


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


def create_app(settings: Settings | None = None, shop: Shop | None = None) -> FastAPI:
    """Build the app. With `shop` given, the caller owns it (tests); otherwise it opens one at startup."""
    settings = settings or (shop.settings if shop else load_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        owned = shop is None
        # A risk decision or a recommendation allocates a few thousand short-lived objects, so with
        # CPython's default (a young collection every 700 allocations) collections ran during most
        # requests and scanned the long-lived velocity windows and caches: risk decisions measured p50
        # 0.96 / p99 2.61 ms in process with the default and 0.73 / 1.69 ms with this (bench/risk_latency.py).
        gc.set_threshold(SERVING_GC_THRESHOLD, 20, 100)
        app.state.shop = shop or Shop.open(settings)
        # Worker threads for the sync routes: anyio's default of 40 let that many requests contend for
        # the GIL at once, and a first-visit recommendation (a run of short torch and numpy calls, each
        # giving up and taking back the GIL) then waited most of its time for it: 84 first visits/s
        # with 40 threads, 148/s with 4 or 2, on this 2-core machine (bench/recommend_latency.py).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.api_threads
        app.state.keys = KeyVerifier(app.state.shop.store)
        app.state.metrics.watch_refresher(app.state.shop.refresher)
        app.state.shop.follow_erasures()  # erasures by the CLI or another worker reach this process's memory
        alerts = asyncio.create_task(_risk_alerts(app.state.shop)) if settings.risk_alert_webhooks else None
        yield
        if alerts is not None:
            alerts.cancel()
        if owned:
            app.state.shop.close()

    docs = settings.docs_public
    app = FastAPI(title="shopmind", version=__version__, lifespan=lifespan,
                  docs_url="/docs" if docs else None, redoc_url=None, openapi_url="/openapi.json" if docs else None,
                  description="Self-hosted, privacy-first AI engine for e-commerce. "
                              "Every route needs an API key (Authorization: Bearer or X-API-Key) with the right scope.")
    app.state.metrics = metrics.Metrics()
    app.add_middleware(FastRoutes, state=app.state)  # inside the metrics middleware, which counts it
    metrics.install(app, app.state.metrics)
    errors.install(app)
    for module in (ingest, recommend, risk, privacy, analytics, admin, dashboard):
        app.include_router(module.router)
    return app
