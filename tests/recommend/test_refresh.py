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
