"""Online state (recent events per user or session, cached answers): in process or in Redis.

Keys are `<namespace>:<pseudonym>`; erasure deletes every namespace for a pseudonym, so any feature
that caches per-user state here is reached by erasure without registering anything extra.

Values derived from the database are written with `fill`, not `set`. A request can read a user's rows
just before an erasure (or a consent change) commits and write what it read just after the cache was
cleared, which would put the erased (or withdrawn) data back. So clearing a user first puts up a
`fence` on the subject (every namespace for an erasure, the consent namespace for a consent change),
for longer than any request or refresh job runs, and `fill` writes nothing behind a fence. The check
and the write are one atomic step (a lock here, a script in Redis), and the fence goes up before the
entries are deleted: a fill either lands before the deletion, which removes it, or sees the fence.
A fence names its pseudonym until it expires (at most ERASURE_FENCE_S), and holds nothing else.

Lists that grow with new events (a user's recent events, their purchases) have a second race: a reader
reads the rows, a new event commits and is appended to the cached list, or finds none to append to,
and the reader then fills the list it read, without that event. So every change to such a list
(`append_if_present`, `delete`) bumps the subject's *generation* in that namespace, and a reader that
took `generation()` before its read fills with it: `fill(..., generation=g)` writes nothing if the list
changed since. A generation lives for GENERATION_TTL_S after its last change (far longer than a read),
names its pseudonym and holds nothing else; erasure deletes it with the rest, and no change bumps it
while the subject's erasure fence is up. A generation that comes back after expiring starts from the
clock (microseconds), never from a number a reader may still hold; a reader that saw none fills only
if none has come up since, so the one case left is a read longer than GENERATION_TTL_S.
"""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse, urlunparse

from shopmind.exceptions import ConfigError, StorageError


ERASURE_FENCE_S = 600.0     # how long an erased subject's entries may not be refilled: far longer than
                            # any request or background refresh that read their rows before the erasure
CHANGE_FENCE_S = 5.0        # the same for cached consent flags after a consent change: a request fills
                            # them right after its read, and a short fence keeps profile updates from
                            # turning the cache off for long

GENERATION_TTL_S = 60.0     # how long a list's generation outlives its last change: far longer than any
                            # read from the database and the fill that follows it
NO_CHECK = object()         # fill's default: no generation to compare

# fill: one atomic step in Redis. KEYS[1] the entry, KEYS[2] and KEYS[3] the subject's fences (all
# namespaces, this namespace), KEYS[4] its generation in this namespace; ARGV value, TTL in ms (0:
# none), the generation read before ("*": not checked, "": none was up).
_FILL_LUA = """
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 0 end
if ARGV[3] ~= '*' and (redis.call('GET', KEYS[4]) or '') ~= ARGV[3] then return 0 end
if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
else redis.call('SET', KEYS[1], ARGV[1]) end
return 1
"""

# bump generations: KEYS[1..n] the generations, KEYS[n+1..2n] the subjects' erasure fences, KEYS[2n+1..3n]
# entries to delete (ARGV[3] = 1) or nothing; ARGV[1] n, ARGV[2] TTL in ms. A missing generation starts
# from the clock in microseconds (a double holds it exactly), so no number is ever reused.
_BUMP_LUA = """
local n = tonumber(ARGV[1])
local t = redis.call('TIME')
local seed = string.format('%.0f', tonumber(t[1]) * 1000000 + tonumber(t[2]))
for i = 1, n do
  if redis.call('EXISTS', KEYS[n + i]) == 0 then
    if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('INCR', KEYS[i]) else redis.call('SET', KEYS[i], seed) end
    redis.call('PEXPIRE', KEYS[i], ARGV[2])
  end
  if ARGV[3] == '1' then redis.call('DEL', KEYS[2 * n + i]) end
end
return n
"""

# fence: each KEYS[i] up for ARGV[1] ms, never shortening a longer fence (an erasure's) already up.
_FENCE_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('PTTL', key) < tonumber(ARGV[1]) then redis.call('SET', key, 1, 'PX', ARGV[1]) end
end
return #KEYS
"""


class CacheMiss(Exception):
    """Raised by reads in cached-only mode when the answer would need the database or a model pass.
    The HTTP fast path (api/fast_routes.py) answers from the cache on the event loop and hands a
    request that raises this to the regular route, which runs it in a worker thread."""


class Cache(Protocol):
    def get(self, namespace: str, subject: str) -> Any | None: ...
    def set(self, namespace: str, subject: str, value: Any, ttl_s: float | None = None) -> None: ...
    def fill(self, namespace: str, subject: str, value: Any, ttl_s: float | None = None,
             generation: Any = NO_CHECK) -> bool: ...
    def generation(self, namespace: str, subject: str) -> int | None: ...
    def fence(self, subjects: list[str], ttl_s: float, namespace: str | None = None) -> None: ...
    def append_if_present(self, namespace: str, subject: str, values: list[Any], keep: int | None,
                          order: int | None = None) -> None: ...
    def delete(self, namespace: str, subjects: list[str]) -> None: ...
    def erase_subject(self, subject: str) -> int: ...
    def find(self, needle: str) -> list[str]: ...
    def ping(self) -> bool: ...


class MemoryCache:
    """A bounded LRU dictionary in this process. Lost on restart: only derived state lives here."""

    def __init__(self, max_entries: int = 1_000_000):
        self._data: OrderedDict[str, tuple[float | None, str]] = OrderedDict()
        self._fences: dict[tuple[str, str], float] = {}   # (namespace or "", subject) -> when it comes down
        self._generations: dict[str, tuple[int, float]] = {}  # entry key -> (generation, when it expires)
        self._generations_prune_at = 10_000
        self._prune_at = 10_000
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

    def fill(self, namespace: str, subject: str, value: Any, ttl_s: float | None = None,
             generation: Any = NO_CHECK) -> bool:
        """`set` a value read from the database, unless the subject is fenced or (with `generation`, what
        `generation()` said before the read) the list changed since; whether it was written."""
        payload = json.dumps(value)
        expires = time.monotonic() + ttl_s if ttl_s else None
        key = self._key(namespace, subject)
        with self._lock:
            now = time.monotonic()
            for fence in (("", subject), (namespace, subject)):
                until = self._fences.get(fence)
                if until is not None:
                    if until > now:
                        return False
                    del self._fences[fence]
            if generation is not NO_CHECK and self._generation(key, now) != generation:
                return False
            self._data[key] = (expires, payload)
            self._data.move_to_end(key)
            while len(self._data) > self._max:
                self._data.popitem(last=False)
        return True

    def fence(self, subjects: list[str], ttl_s: float, namespace: str | None = None) -> None:
        now = time.monotonic()
        with self._lock:
            for subject in subjects:
                fence = (namespace or "", subject)
                self._fences[fence] = max(self._fences.get(fence, 0.0), now + ttl_s)
            if len(self._fences) > self._prune_at:  # expired fences go in bulk, amortised over the calls
                self._fences = {s: t for s, t in self._fences.items() if t > now}
                self._prune_at = max(10_000, 2 * len(self._fences))

    def generation(self, namespace: str, subject: str) -> int | None:
        """The list's change count (None: unchanged for GENERATION_TTL_S); take it before reading the
        rows a `fill` will write."""
        with self._lock:
            return self._generation(self._key(namespace, subject), time.monotonic())

    def _generation(self, key: str, now: float) -> int | None:
        held = self._generations.get(key)
        return held[0] if held is not None and held[1] > now else None

    def _bump(self, key: str, subject: str, now: float) -> None:
        """A change to the list under `key` (the lock held): readers that read before it may not fill.
        Not behind the subject's erasure fence (fills are refused there anyway, and the generation
        would name an erased pseudonym)."""
        fenced = self._fences.get(("", subject))
        if fenced is not None and fenced > now:
            return
        current = self._generation(key, now)
        self._generations[key] = (time.monotonic_ns() // 1000 if current is None else current + 1,
                                  now + GENERATION_TTL_S)
        if len(self._generations) > self._generations_prune_at:  # expired ones go in bulk, amortised
            self._generations = {k: g for k, g in self._generations.items() if g[1] > now}
            self._generations_prune_at = max(10_000, 2 * len(self._generations))

    def append_if_present(self, namespace: str, subject: str, values: list[Any], keep: int | None,
                          order: int | None = None) -> None:
        """Extend a cached list, keeping its last `keep` values (all of them with None). A missing list
        stays missing, so a partial list is never mistaken for the whole history (the reader loads it
        from the database).
        Values already in the list are not added again: a reader may have read them from the database
        between their commit and this append, and a client may resend a batch. Either way the list's
        generation moves on. With `order`, the list is sorted by each value's element `order` (a time),
        and a value extends it in place only if it is strictly later than the list's last one. Any other
        drops the list, so the next reader loads it from the database: a late event (it would be read as
        the newest); a value equal to one in the list (without an event id, a resent event and a second
        real one look alike, and the database holds both); a tie (the database orders ties its own way)."""
        with self._lock:
            key = self._key(namespace, subject)
            self._bump(key, subject, time.monotonic())
            entry = self._data.get(key)
            if entry is None:
                return
            current = json.loads(entry[1])
            for value in values:
                if order is not None and current and value[order] <= current[-1][order]:
                    del self._data[key]
                    return
                if value not in current:
                    current.append(value)
            self._data[key] = (entry[0], json.dumps(current[-keep:] if keep is not None else current))

    def delete(self, namespace: str, subjects: list[str]) -> None:
        with self._lock:
            now = time.monotonic()
            for subject in subjects:
                key = self._key(namespace, subject)
                self._bump(key, subject, now)
                self._data.pop(key, None)

    def erase_subject(self, subject: str) -> int:
        self.fence([subject], ERASURE_FENCE_S)
        suffix = f":{subject}"
        with self._lock:
            doomed = [k for k in self._data if k.endswith(suffix)]
            for k in doomed:
                del self._data[k]
            for k in [k for k in self._generations if k.endswith(suffix)]:  # the fence stops fills now
                del self._generations[k]
        return len(doomed)

    def find(self, needle: str) -> list[str]:
        with self._lock:
            return ([k for k, (_, v) in self._data.items() if needle in k or needle in v]
                    + [f"generation {k}" for k in self._generations if needle in k])

    def ping(self) -> bool:
        return True


class RedisCache:
    """The same interface on Redis, shared by several API processes."""

    def __init__(self, url: str, prefix: str = "shopmind"):
        import redis

        try:
            self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        except ValueError as exc:  # a port that is not a number, an unknown option: the URL, not the server
            raise ConfigError(f"cache_url is not a usable Redis URL ({str(exc).split(':')[0]})") from None
        self._prefix = prefix
        self._fill = self._fence = self._bump_script = None

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

    def _fence_key(self, subject: str, namespace: str | None = None) -> str:
        # outside the "<prefix>:*:<subject>" pattern that erase_subject deletes: the fence must outlive it
        return f"{self._prefix}-fence:{namespace}:{subject}" if namespace else f"{self._prefix}-fence::{subject}"

    def _generation_key(self, namespace: str, subject: str) -> str:
        # inside the "<prefix>:*:<subject>" pattern: erasure deletes it (its fence stops fills meanwhile)
        return f"{self._prefix}:gen.{namespace}:{subject}"

    def generation(self, namespace: str, subject: str) -> int | None:
        raw = self._call(self._r.get, self._generation_key(namespace, subject))
        return None if raw is None else int(raw)

    def fill(self, namespace: str, subject: str, value: Any, ttl_s: float | None = None,
             generation: Any = NO_CHECK) -> bool:
        if self._fill is None:
            self._fill = self._r.register_script(_FILL_LUA)
        expected = "*" if generation is NO_CHECK else "" if generation is None else str(int(generation))
        written = self._call(self._fill, keys=[self._key(namespace, subject), self._fence_key(subject),
                                               self._fence_key(subject, namespace),
                                               self._generation_key(namespace, subject)],
                             args=[json.dumps(value), int(ttl_s * 1000) if ttl_s else 0, expected])
        return bool(written)

    def fence(self, subjects: list[str], ttl_s: float, namespace: str | None = None) -> None:
        if self._fence is None:
            self._fence = self._r.register_script(_FENCE_LUA)
        for start in range(0, len(subjects), 1000):
            keys = [self._fence_key(s, namespace) for s in subjects[start:start + 1000]]
            if keys:
                self._call(self._fence, keys=keys, args=[int(ttl_s * 1000)])

    def _bump(self, namespace: str, subjects: list[str], delete: bool = False) -> None:
        if self._bump_script is None:
            self._bump_script = self._r.register_script(_BUMP_LUA)
        keys = ([self._generation_key(namespace, s) for s in subjects] + [self._fence_key(s) for s in subjects]
                + [self._key(namespace, s) for s in subjects])
        self._call(self._bump_script, keys=keys, args=[len(subjects), int(GENERATION_TTL_S * 1000), int(delete)])

    def append_if_present(self, namespace: str, subject: str, values: list[Any], keep: int | None,
                          order: int | None = None) -> None:
        # Stored as one JSON string so get/set stay uniform; a small Lua script keeps it atomic. The
        # generation moves on first (a reader that fills in between is refused, and the append then
        # finds nothing or the list it read, which it extends). `order` as in MemoryCache.
        self._bump(namespace, [subject])
        script = (
            "local v = redis.call('GET', KEYS[1]) if not v then return 0 end "
            "local l = cjson.decode(v) local seen = {} for _, y in ipairs(l) do seen[cjson.encode(y)] = true end "
            "local o = tonumber(ARGV[3]) "
            "for _, x in ipairs(cjson.decode(ARGV[1])) do local k = cjson.encode(x) "
            "if o > 0 and #l > 0 and x[o] <= l[#l][o] then redis.call('DEL', KEYS[1]) return 0 end "
            "if not seen[k] then seen[k] = true table.insert(l, x) end end "
            "local keep = tonumber(ARGV[2]) if keep == 0 then keep = #l end local out = {} "
            "for i = math.max(1, #l - keep + 1), #l do table.insert(out, l[i]) end "
            "redis.call('SET', KEYS[1], cjson.encode(out), 'KEEPTTL') return 1"
        )
        self._call(self._r.eval, script, 1, self._key(namespace, subject), json.dumps(values), keep or 0,
                   0 if order is None else order + 1)

    def delete(self, namespace: str, subjects: list[str]) -> None:
        for start in range(0, len(subjects), 1000):  # bumps and deletions, one script per 1,000
            if subjects[start:start + 1000]:
                self._bump(namespace, subjects[start:start + 1000], delete=True)

    def erase_subject(self, subject: str) -> int:
        self.fence([subject], ERASURE_FENCE_S)
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
