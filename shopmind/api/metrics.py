"""Prometheus metrics, labelled by route template (never by raw path: paths carry user ids)."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("shopmind.access")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("shopmind_http_requests_total", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram(
            "shopmind_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10), registry=self.registry)
        self.ingested = Counter("shopmind_rows_ingested_total", "Rows written by ingestion", ["kind"],
                                registry=self.registry)
        self.duplicates = Counter("shopmind_rows_duplicate_total", "Rows skipped as already ingested", ["kind"],
                                  registry=self.registry)
        self._refresher = None

    def watch_refresher(self, refresher) -> None:
        """Export the background state refresh's counts (recommend/refresh.py), read at scrape time."""
        if self._refresher is None:
            self.registry.register(_RefresherCollector(self))
        self._refresher = refresher  # the latest app startup's shop


class _RefresherCollector:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        refresher = self.metrics._refresher
        counts = CounterMetricFamily("shopmind_state_refresh_users", "Users handled by the background state "
                                     "refresh, by outcome", labels=["outcome"])
        for outcome, n in sorted(refresher.stats.items()):
            counts.add_metric([outcome], n)
        yield counts
        yield GaugeMetricFamily("shopmind_state_refresh_pending", "Users waiting for a state refresh",
                                value=refresher.pending())


METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class MetricsMiddleware:
    """Counts and times every request. A plain ASGI middleware: Starlette's BaseHTTPMiddleware (what
    `@app.middleware("http")` builds) cost about 3 ms of CPU per request here, more than a cached
    recommendation itself."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        finally:
            # the router sets the route on the scope; its template without convertors ({user_id:path}
            # reads {user_id}), as the fast paths label theirs
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in METHODS else "other"  # clients choose it: bounded
            self.metrics.requests.labels(method, template, str(status)).inc()
            self.metrics.latency.labels(method, template).observe(elapsed)
            log.debug("%s %s %s %.1fms", scope["method"], template, status, elapsed * 1000)


def install(app: FastAPI, metrics: Metrics) -> None:
    app.add_middleware(MetricsMiddleware, metrics=metrics)
