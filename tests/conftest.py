"""Shared fixtures: every storage test runs on SQLite and on PostgreSQL.

PostgreSQL and Redis are looked for at SHOPMIND_TEST_POSTGRES_URL / SHOPMIND_TEST_REDIS_URL (defaults:
the test machine's 127.0.0.1 services). Without them the tests that need them are skipped with the
reason, unless SHOPMIND_REQUIRE_SERVICES=1 (set by .ci/run), where a missing service fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from shopmind.auth import Scope, create_key
from shopmind.config import load_settings
from shopmind.shop import Shop

POSTGRES_URL = os.environ.get("SHOPMIND_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("SHOPMIND_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
REQUIRE = os.environ.get("SHOPMIND_REQUIRE_SERVICES") == "1"

_available: dict[str, str | None] = {}

# Tests train tiny models: one thread avoids OpenMP spin-waiting against the servers the tests start.
torch.set_num_threads(1)


def _probe_postgres() -> str | None:
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL.replace("+psycopg", ""), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
        return None
    except Exception as exc:  # any failure means: not available here
        return f"PostgreSQL not reachable at {POSTGRES_URL} ({type(exc).__name__})"


def _probe_redis() -> str | None:
    try:
        import redis

        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
        return None
    except Exception as exc:
        return f"Redis not reachable at {REDIS_URL} ({type(exc).__name__})"


def need(service: str) -> None:
    """Skip (or, in CI, fail) the calling test when `service` is not running."""
    if service not in _available:
        _available[service] = {"postgres": _probe_postgres, "redis": _probe_redis}[service]()
    reason = _available[service]
    if reason is not None:
        if REQUIRE:
            pytest.fail(f"{reason}; SHOPMIND_REQUIRE_SERVICES=1 demands it")
        pytest.skip(reason)


@pytest.fixture(autouse=True)
def _no_user_settings(monkeypatch):
    """Tests see shopmind's defaults, not the SHOPMIND_* settings of whoever runs them."""
    for name in list(os.environ):
        if name.startswith("SHOPMIND_") and not name.startswith("SHOPMIND_TEST_") and name != "SHOPMIND_REQUIRE_SERVICES":
            monkeypatch.delenv(name)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    need("postgres")
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    plain = POSTGRES_URL.replace("+psycopg", "")
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{name}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


@pytest.fixture
def redis_url() -> str:
    need("redis")
    return f"{REDIS_URL}?prefix=test{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shopmind.db'}"
    return request.getfixturevalue("postgres_url")


def make_shop(home: Path, database_url: str, **overrides) -> Shop:
    shop, _ = Shop.init(load_settings(home=home, database_url=database_url, **overrides))
    return shop


@pytest.fixture
def shop(tmp_path: Path, database_url: str) -> Iterator[Shop]:
    s = make_shop(tmp_path / "home", database_url)
    yield s
    s.close()


@pytest.fixture
def keys(shop: Shop) -> dict[str, str]:
    """One API key per scope, by scope name."""
    return {scope.value: create_key(shop.store, f"test {scope.value}", frozenset({scope})) for scope in Scope}


@pytest.fixture
def client(shop: Shop):
    from fastapi.testclient import TestClient

    from shopmind.api.main import create_app

    with TestClient(create_app(shop=shop)) as c:
        yield c


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def event(i: int, user: str | None = "user-1", kind: str = "view", item: str | None = "item-1", **extra) -> dict:
    row = {"event_id": f"ev-{i}", "user_id": user, "session_id": f"sess-{user}", "type": kind, "item_id": item,
           "ts": f"2026-01-05T10:{i // 60 % 60:02d}:{i % 60:02d}Z"}
    row.update(extra)
    return {k: v for k, v in row.items() if v is not None}
