"""The background refresh of users' behaviour-model states (recommend/refresh.py): its queue, its
batching, its failures and its part in erasure. With a trained model inside the shop:
tests/recommend/test_serving.py."""

from __future__ import annotations

import threading

from shopmind.recommend.refresh import StateRefresher


class Recorder:
    def __init__(self, gate: threading.Event | None = None, fail: bool = False):
        self.batches: list[list[str]] = []
        self.discarded: list[str] = []
        self.started = threading.Event()
        self.gate, self.fail = gate, fail

    def compute(self, users: list[str]) -> int:
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(5)
        self.batches.append(list(users))
        if self.fail:
            raise RuntimeError("model unavailable")
        return len(users)

    def discard(self, users: list[str]) -> None:
        self.discarded.extend(users)


def test_users_are_queued_once_and_refreshed_in_batches():
    gate = threading.Event()
    rec = Recorder(gate)
    refresher = StateRefresher(rec.compute, rec.discard, batch=3)
    try:
        refresher.submit(["a"])
        assert rec.started.wait(5)  # "a" is being computed; the rest queue behind it
        refresher.submit(["b", "c", "b", "d", "c"])
        assert refresher.pending() == 4  # b, c, d once each, and the running job
        gate.set()
        assert refresher.wait_idle(5)
        assert rec.batches == [["a"], ["b", "c", "d"]]
        assert refresher.stats["submitted"] == 4 and refresher.stats["computed"] == 4
    finally:
        refresher.close()


def test_a_full_queue_drops_new_users_and_counts_them():
    gate = threading.Event()
    rec = Recorder(gate)
    refresher = StateRefresher(rec.compute, rec.discard, max_pending=2, batch=10)
    try:
        refresher.submit(["a"])
        assert rec.started.wait(5)
        refresher.submit(["b", "c", "d", "e"])
        assert refresher.stats["dropped"] == 2
        gate.set()
        assert refresher.wait_idle(5)
        assert rec.batches == [["a"], ["b", "c"]]
    finally:
        refresher.close()


def test_a_failed_refresh_is_counted_and_the_worker_goes_on():
    rec = Recorder(fail=True)
    refresher = StateRefresher(rec.compute, rec.discard)
    try:
        refresher.submit(["a", "b"])
        assert refresher.wait_idle(5) and refresher.stats["failed"] == 2
        rec.fail = False
        refresher.submit(["c"])
        assert refresher.wait_idle(5) and rec.batches[-1] == ["c"] and refresher.stats["computed"] == 1
    finally:
        refresher.close()


def test_erasure_takes_a_user_out_of_the_queue_and_undoes_a_running_refresh():
    """A user erased while waiting is never refreshed; one erased while their refresh runs has what it
    wrote removed when it ends (it may have read their events before the database was erased); an
    erased user's later events are not refreshed either while the mark lasts."""
    gate = threading.Event()
    rec = Recorder(gate)
    refresher = StateRefresher(rec.compute, rec.discard, batch=1)
    try:
        refresher.submit(["running", "waiting", "kept"])
        assert rec.started.wait(5)
        assert refresher.erase_subject("waiting") == {"state_refresher.queued": 1}
        assert refresher.erase_subject("running") == {"state_refresher.queued": 0}
        gate.set()
        assert refresher.wait_idle(5)
        assert rec.batches == [["running"], ["kept"]]
        assert rec.discarded == ["running"] and refresher.stats["discarded"] == 1
        refresher.submit(["waiting"])
        assert refresher.wait_idle(5) and rec.batches == [["running"], ["kept"]] and rec.discarded == ["running"]
    finally:
        refresher.close()


def test_a_closed_refresher_takes_no_more_work():
    rec = Recorder()
    refresher = StateRefresher(rec.compute, rec.discard)
    refresher.close()
    refresher.submit(["a"])
    assert refresher.pending() == 0 and rec.batches == []


def test_erasure_marks_expire_oldest_first():
    """Marks last ERASED_KEEP_S: a user erased long ago is refreshed again when new events arrive (a
    returning customer), one erased recently is not."""
    from shopmind.recommend.refresh import ERASED_KEEP_S

    clock = [1000.0]
    rec = Recorder()
    refresher = StateRefresher(rec.compute, rec.discard, clock=lambda: clock[0])
    try:
        refresher.erase_subject("old")
        clock[0] += ERASED_KEEP_S / 2
        refresher.erase_subject("recent")
        clock[0] += ERASED_KEEP_S / 2 + 1  # "old" is past its mark now, "recent" is not
        refresher.submit(["old", "recent"])  # an expired mark no longer holds, even before it is pruned
        assert refresher.wait_idle(5)
        assert rec.batches == [["old"]]
        refresher.erase_subject("third")  # setting a mark prunes the expired ones
        assert list(refresher._erased) == ["recent", "third"]
    finally:
        refresher.close()


def test_a_failed_clean_up_after_an_erasure_is_retried_and_the_worker_survives():
    """If removing what a job wrote for a user erased meanwhile fails (the cache is unreachable), it is
    counted and retried, and the worker keeps refreshing others."""
    gate = threading.Event()
    rec = Recorder(gate)
    failures = [1]

    def flaky_discard(users):
        if failures[0]:
            failures[0] -= 1
            raise ConnectionError("cache unreachable")
        rec.discarded.extend(users)

    refresher = StateRefresher(rec.compute, flaky_discard, batch=1)
    try:
        refresher.submit(["erased"])
        assert rec.started.wait(5)
        refresher.erase_subject("erased")
        gate.set()
        assert refresher.wait_idle(5)  # idle only once the retried clean-up succeeded
        assert refresher.stats["discard_failed"] == 1 and rec.discarded == ["erased"]
        assert refresher.stats["discarded"] == 1
        refresher.submit(["other"])
        assert refresher.wait_idle(5)
        assert rec.batches == [["erased"], ["other"]] and rec.discarded == ["erased"]
        assert refresher.pending() == 0
    finally:
        refresher.close()


def test_the_worker_rests_as_long_as_it_worked():
    """At duty 0.5 the refresh takes at most about half of one core: three jobs of 50 ms each take at
    least 250 ms (two rests between them); the rest ends at once when the refresher is closed."""
    import time

    class Slow(Recorder):
        def compute(self, users):
            time.sleep(0.05)
            return super().compute(users)

    rec = Slow()
    refresher = StateRefresher(rec.compute, rec.discard, batch=1, duty=0.5)
    try:
        started = time.perf_counter()
        refresher.submit(["a", "b", "c"])
        assert refresher.wait_idle(5)
        assert time.perf_counter() - started >= 0.24 and rec.batches == [["a"], ["b"], ["c"]]
    finally:
        closing = time.perf_counter()
        refresher.close()
        assert time.perf_counter() - closing < 1.0
    import pytest

    with pytest.raises(ValueError, match="duty"):
        StateRefresher(rec.compute, rec.discard, duty=0)
