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
After each job the worker rests as long as the job took (`duty` 0.5): the refresh uses at most about
half of one core however fast events arrive; past that, users wait, then are dropped, and their next
request computes its own answer, as without the refresh.

Erasure: the refresher is an erasable store, registered before the database and the cache (and a
pseudonym-key rotation forgets the old pseudonyms here before it drops their cache entries).
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
    """`compute(pseudonyms)`: compute and cache those users' states, return how many were computed;
    `discard(pseudonyms)`: remove everything cached about them (used after a concurrent erasure).
    `clock`: monotonic seconds (tests pass their own)."""

    name = "state refresher"

    def __init__(self, compute: Callable[[list[str]], int], discard: Callable[[list[str]], None],
                 max_pending: int = 10_000, batch: int = 16, duty: float = 0.5,
                 clock: Callable[[], float] = time.monotonic):
        if not 0 < duty <= 1:
            raise ValueError("duty must be in (0, 1]")
        self._compute = compute
        self.duty = duty
        self._discard = discard
        self.max_pending = max_pending
        self.batch = batch
        self._clock = clock
        self._pending: OrderedDict[str, None] = OrderedDict()
        self._erased: dict[str, float] = {}   # pseudonym -> clock time of its erasure, oldest first
        self._undiscarded: set[str] = set()   # erased during a job whose clean-up failed: retried
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False
        self.stats = {"submitted": 0, "computed": 0, "dropped": 0, "failed": 0, "discarded": 0,
                      "discard_failed": 0}

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
            if self._pending or self._undiscarded:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name="shopmind-state-refresh", daemon=True)
                    self._thread.start()
                self._cond.notify()

    def pending(self) -> int:
        with self._cond:
            return len(self._pending) + (1 if self._busy else 0)

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every submitted user was handled and every clean-up done (tests and benchmarks);
        False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._pending or self._busy or self._undiscarded:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        with self._cond:
            queued = self._pending.pop(pseudonym, "absent") is None
            now = self._clock()
            self._erased.pop(pseudonym, None)
            self._erased[pseudonym] = now  # at the end: the marks stay in the order they were set
            while self._erased:  # expired marks, oldest first: O(1) per erasure, also over a whole rotation
                oldest = next(iter(self._erased))
                if now - self._erased[oldest] <= ERASED_KEEP_S:
                    break
                del self._erased[oldest]
        return {"state_refresher.queued": int(queued)}

    def _marked(self, pseudonym: str) -> bool:
        """Erased within ERASED_KEEP_S (call with the lock held)."""
        at = self._erased.get(pseudonym)
        return at is not None and self._clock() - at <= ERASED_KEEP_S

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
                while not self._pending and not self._undiscarded and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                users = [self._pending.popitem(last=False)[0] for _ in range(min(self.batch, len(self._pending)))]
                users = [p for p in users if not self._marked(p)]
                retry, self._undiscarded = sorted(self._undiscarded), set()
                self._busy = True
            started = time.perf_counter()
            try:
                self._job(users, retry)
            finally:  # whatever happened, the worker stays usable and waiters are woken
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()
            # Rest in proportion to the work: at most `duty` of one core, whatever the ingestion rate.
            rest = (time.perf_counter() - started) * (1 / self.duty - 1)
            if rest > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._closed, timeout=rest)

    def _job(self, users: list[str], retry: list[str]) -> None:
        try:
            computed = self._compute(users) if users else 0
        except Exception as exc:  # a refresh is an optimisation: the request computes its own answer
            computed = 0
            log.warning("state refresh of %d users failed: %s", len(users), type(exc).__name__)
            with self._cond:
                self.stats["failed"] += len(users)
        with self._cond:
            self.stats["computed"] += computed
            erased = sorted({p for p in users if self._marked(p)} | set(retry))
        if not erased:
            return
        # erased while this job ran: what it may have written must not outlive the erasure
        try:
            self._discard(erased)
        except Exception as exc:  # e.g. the cache is unreachable: kept and retried with the next job
            log.error("removing the refresh of %d erased users failed: %s", len(erased), type(exc).__name__)
            with self._cond:
                self.stats["discard_failed"] += len(erased)
                self._undiscarded.update(erased)
            time.sleep(0.5)  # no busy loop while the cache is down
        else:
            with self._cond:
                self.stats["discarded"] += len(erased)
