"""Users' behaviour-model states (and recommendation candidates), computed in the background when
their events arrive.

A risk decision on an order reads how unusual the ordered items are for the user (risk/engine.py), which
needs the trunk's state after the user's latest events: a transformer pass, most of the decision's cost
when the state is not cached (docs/risk.md). A checkout follows the user's browsing by seconds, so
computing the state when the browsing events are ingested, off the request path, lets the order's
decision find it cached. The cache entry is the one `RecommendationService.unusualness` reads and writes
(namespace "state", keyed by the hash of the exact model input), so a state is only ever used for the
history it was computed from: a refresh that has not finished, or was dropped, costs the decision its
own pass, never a wrong feature.

The same holds for recommendations: a new event makes a user's cached answer stale, and the refresh
recomputes it for users who consented to personalisation (Shop._refresh_states decides what each user
gets), so their next request is answered from the cache.

One worker thread, a queue of pseudonyms (a user already waiting is not queued twice; above
`max_pending` new users are dropped and counted, so a bulk load cannot grow it without bound), and up
to `batch` users per pass (one pass over 16 users costs far less than 16 passes: docs/benchmarks.md).

Erasure: the refresher is an erasable store, registered before the database and the cache.
`erase_subject` drops the user from the queue and marks them for ERASED_KEEP_S: a marked user is not
refreshed, and a job that was running when the mark was set removes the state it wrote, so no refresh
that read the user's events before the erasure can leave a state behind it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)

ERASED_KEEP_S = 600.0  # how long an erasure mark is kept: far longer than any job runs


class StateRefresher:
    """`compute(pseudonyms)`: compute and cache those users' states, return how many passes ran;
    `discard(pseudonyms)`: remove their cached states (used after a concurrent erasure)."""

    name = "state refresher"

    def __init__(self, compute: Callable[[list[str]], int], discard: Callable[[list[str]], None],
                 max_pending: int = 10_000, batch: int = 16):
        self._compute = compute
        self._discard = discard
        self.max_pending = max_pending
        self.batch = batch
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._erased: dict[str, float] = {}   # pseudonym -> monotonic time of its erasure
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self.stats = {"submitted": 0, "computed": 0, "dropped": 0, "failed": 0, "discarded": 0}

    def submit(self, pseudonyms: Iterable[str]) -> None:
        with self._cond:
            if self._closed:
                return
            for p in pseudonyms:
                if p in self._pending:
                    continue
                if len(self._pending) >= self.max_pending:
                    self.stats["dropped"] += 1
                    continue
                self._pending[p] = None
                self.stats["submitted"] += 1
            if self._pending:
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name="shopmind-state-refresh", daemon=True)
                    self._thread.start()
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + (1 if self._busy else 0)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every submitted user was handled (tests and benchmarks); False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        with self._cond:
            queued = self._pending.pop(pseudonym, "absent") is None
            now = time.monotonic()
            self._erased[pseudonym] = now
            for p, at in list(self._erased.items()):
                if now - at > ERASED_KEEP_S:
                    del self._erased[p]
        return {"state_refresher.queued": int(queued)}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._pending.clear()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                users = [self._pending.popitem(last=False)[0] for _ in range(min(self.batch, len(self._pending)))]
                users = [p for p in users if p not in self._erased]
                self._busy = True
            try:
                computed = self._compute(users) if users else 0
            except Exception as exc:  # a refresh is an optimisation: the decision computes its own state
                computed = 0
                log.warning("state refresh of %d users failed: %s", len(users), type(exc).__name__)
                with self._cond:
                    self.stats["failed"] += len(users)
            with self._cond:
                self.stats["computed"] += computed
                erased = [p for p in users if p in self._erased]
            if erased:  # erased while this job ran: what it may have written must not outlive the erasure
                try:
                    self._discard(erased)
                finally:
                    with self._cond:
                        self.stats["discarded"] += len(erased)
            with self._cond:
                self._busy = False
                self._cond.notify_all()
