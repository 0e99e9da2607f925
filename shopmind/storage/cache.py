"""Online state (recent events per user or session, cached answers): in process or in Redis.

Keys are `<namespace>:<pseudonym>`; erasure deletes every namespace for a pseudonym, so any feature
that caches per-user state here is reached by erasure without registering anything extra.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse, urlunparse

from shopmind.exceptions import ConfigError, StorageError


class CacheMiss(Exception):
    """Raised by reads in cached-only mode when the answer would need the database or a model pass.
    The HTTP fast path (api/fast_routes.py) answers from the cache on the event loop and hands a
    request that raises this to the regular route, which runs it in a worker thread."""


class Cache(Protocol):
    def get(self, namespace: str, subject: str) -> Any | None: ...
    def set(self, namespace: str, subject: str, value: Any, ttl_s: float | None = None) -> None: ...
    def append_if_present(self, namespace: str, subject: str, values: list[Any], keep: int) -> None: ...
    def delete(self, namespace: str, subjects: list[str]) -> None: ...
    def erase_subject(self, subject: str) -> int: ...
    def find(self, needle: str) -> list[str]: ...
    def ping(self) -> bool: ...


class MemoryCache:
    """A bounded LRU dictionary in this process. Lost on restart: only derived state lives here."""

    def __init__(self, max_entries: int = 1_000_000):
        self._data: OrderedDict[str, tuple[float | None, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def _key(self, namespace: str, subject: str) -> str:
        return f"{namespace}:{subject}"

    def get(self, namespace: str, subject: str) -> Any | None:
        key = self._key(namespace, subject)
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            expires, payload = entry
            if expires is not None and expires < time.monotonic():
                del self._data[key]
                return None
            self._data.move_to_end(key)
            return json.loads(payload)

    def set(self, namespace: str, subject: str, value: Any, ttl_s: float | None = None) -> None:
        expires = time.monotonic() + ttl_s if ttl_s else None
        with self._lock:
            self._data[self._key(namespace, subject)] = (expires, json.dumps(value))
            self._data.move_to_end(self._key(namespace, subject))
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def append_if_present(self, namespace: str, subject: str, values: list[Any], keep: int) -> None:
        """Extend a cached list, keeping its last `keep` values. A missing list stays missing, so a
        partial list is never mistaken for the whole history (the reader loads it from the database)."""
        with self._lock:
            key = self._key(namespace, subject)
            entry = self._data.get(key)
            if entry is None:
                return
            current = (json.loads(entry[1]) + values)[-keep:]
            self._data[key] = (entry[0], json.dumps(current))

    def delete(self, namespace: str, subjects: list[str]) -> None:
        with self._lock:
            for subject in subjects:
                self._data.pop(self._key(namespace, subject), None)

    def erase_subject(self, subject: str) -> int:
        suffix = f":{subject}"
        with self._lock:
            doomed = [k for k in self._data if k.endswith(suffix)]
            for k in doomed:
                del self._data[k]
        return len(doomed)

    def find(self, needle: str) -> list[str]:
        with self._lock:
            return [k for k, (_, v) in self._data.items() if needle in k or needle in v]

    def ping(self) -> bool:
        return True


class RedisCache:
    """The same interface on Redis, shared by several API processes."""

    def __init__(self, url: str, prefix: str = "shopmind"):
        import redis

        self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._prefix = prefix

    def _key(self, namespace: str, subject: str) -> str:
        return f"{self._prefix}:{namespace}:{subject}"

    def _call(self, fn, *args, **kwargs):
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise StorageError(f"redis failed ({type(exc).__name__})") from exc

    def get(self, namespace: str, subject: str) -> Any | None:
        raw = self._call(self._r.get, self._key(namespace, subject))
        return None if raw is None else json.loads(raw)

    def set(self, namespace: str, subject: str, value: Any, ttl_s: float | None = None) -> None:
        self._call(self._r.set, self._key(namespace, subject), json.dumps(value), px=int(ttl_s * 1000) if ttl_s else None)

    def append_if_present(self, namespace: str, subject: str, values: list[Any], keep: int) -> None:
        # Stored as one JSON string so get/set stay uniform; a small Lua script keeps it atomic.
        script = (
            "local v = redis.call('GET', KEYS[1]) if not v then return 0 end "
            "local l = cjson.decode(v) for _, x in ipairs(cjson.decode(ARGV[1])) do table.insert(l, x) end "
            "local keep = tonumber(ARGV[2]) local out = {} "
            "for i = math.max(1, #l - keep + 1), #l do table.insert(out, l[i]) end "
            "redis.call('SET', KEYS[1], cjson.encode(out), 'KEEPTTL') return 1"
        )
        self._call(self._r.eval, script, 1, self._key(namespace, subject), json.dumps(values), keep)

    def delete(self, namespace: str, subjects: list[str]) -> None:
        for start in range(0, len(subjects), 1000):
            keys = [self._key(namespace, s) for s in subjects[start:start + 1000]]
            if keys:
                self._call(self._r.delete, *keys)

    def erase_subject(self, subject: str) -> int:
        keys = list(self._call(lambda: list(self._r.scan_iter(match=f"{self._prefix}:*:{subject}", count=1000))))
        if keys:
            self._call(self._r.delete, *keys)
        return len(keys)

    def find(self, needle: str) -> list[str]:
        found = []
        for key in self._call(lambda: list(self._r.scan_iter(match=f"{self._prefix}:*", count=1000))):
            value = self._r.get(key)
            if needle.encode() in key or (value and needle.encode() in value):
                found.append(key.decode())
        return found

    def ping(self) -> bool:
        try:
            return bool(self._r.ping())
        except Exception:
            return False


def parse_cache_url(url: str) -> tuple[str | None, str]:
    """(Redis URL without the query, key prefix) of redis://host:port/db[?prefix=name]; (None, prefix)
    for memory://; any other scheme is rejected by name. Shared by every store that follows cache_url."""
    parsed = urlparse(url)
    prefix = parse_qs(parsed.query).get("prefix", ["shopmind"])[0]
    if parsed.scheme == "memory":
        return None, prefix
    if parsed.scheme in {"redis", "rediss", "unix"}:
        return urlunparse(parsed._replace(query="")), prefix
    raise ConfigError(f"cache_url scheme {parsed.scheme!r} is not supported: use memory:// or redis://")


def open_cache(url: str) -> Cache:
    """memory:// or redis://host:port/db[?prefix=name]; any other scheme is rejected by name."""
    redis_url, prefix = parse_cache_url(url)
    return MemoryCache() if redis_url is None else RedisCache(redis_url, prefix=prefix)
