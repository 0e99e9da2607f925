"""Storage: `open(url)` picks the relational backend (SQLite or PostgreSQL) from the URL scheme;
`open_cache(url)` picks the online-state backend (memory or Redis)."""

from shopmind.storage.cache import Cache, MemoryCache, RedisCache, open_cache
from shopmind.storage.sql import SqlStore


def open(url: str, migrate: bool = True) -> SqlStore:  # noqa: A001 - mirrors Gorse's storage.Open(url)
    store = SqlStore(url)
    if migrate:
        store.migrate_or_explain()
    return store


__all__ = ["Cache", "MemoryCache", "RedisCache", "SqlStore", "open", "open_cache"]
