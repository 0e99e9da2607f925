"""Prometheus metrics, labelled by route template (never by raw path: paths carry user ids)."""

from __future__ import annotations

import logging
import time

from fastapi import FastAPI, Request
from prometheus_client import CollectorRegistry, Counter, Histogram

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


def install(app: FastAPI, metrics: Metrics) -> None:
    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = request.scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            metrics.requests.labels(request.method, template, str(status)).inc()
            metrics.latency.labels(request.method, template).observe(elapsed)
            log.debug("%s %s %s %.1fms", request.method, template, status, elapsed * 1000)
