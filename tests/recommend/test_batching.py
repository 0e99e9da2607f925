"""First visits ranked together give each user the answer they would get alone; requests that queue
while a batch runs form the next batch; a failing batch fails its own requests and nothing else."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from shopmind.evaluation import Sequences, leave_one_out
from shopmind.models.behaviour import BehaviourConfig, BehaviourModel
from shopmind.recommend.batching import StateBatcher, _Job, rank_batch
from shopmind.recommend.behaviour import BehaviourRecommender
from shopmind.recommend.index import ItemIndex


@pytest.fixture(scope="module")
def fitted():
    rng = np.random.default_rng(0)
    lists = [[f"i{int(x)}" for x in rng.integers(0, 60, rng.integers(3, 30))] for _ in range(300)]
    data = Sequences.from_lists([f"u{n}" for n in range(300)], lists)
    model = BehaviourRecommender(d_model=16, max_epochs=1, seed=0).fit(data, leave_one_out(data))
    vectors = model.item_vectors()
    return model, ItemIndex(vectors[:, :-1], vectors[:, -1]), data


def _alone(model, items, window, k, hidden):
    state = model.user_state([window])[0]
    return state, items.top_k(state, k, hidden=hidden)


def test_a_batch_ranks_each_user_as_alone(fitted):
    model, items, data = fitted
    rng = np.random.default_rng(1)
    # different lengths (left padding inside the batch), hidden items, and a k near the catalog size
    jobs = [_Job(model, items, np.asarray(data.sequences[u][-int(rng.integers(1, 40)):]), None, k,
                 sorted(set(data.sequences[u][:3].tolist())))
            for u, k in zip(range(0, 120, 10), [5, 10, 50, 55, 10, 3, 20, 10, 10, 1, 40, 10])]
    for job, (state, top) in zip(jobs, rank_batch(jobs)):
        want_state, want_top = _alone(model, items, job.window, job.k, job.hidden)
        np.testing.assert_allclose(state, want_state, rtol=1e-5, atol=1e-5)
        assert [i for i, _ in top] == [i for i, _ in want_top]
        assert not set(job.hidden) & {i for i, _ in top}
        assert len(top) == min(job.k, len(items) - len(job.hidden))
        np.testing.assert_allclose([x for _, x in top], [x for _, x in want_top], rtol=1e-4, atol=1e-5)


class _Gated:
    """A model whose first pass waits until `waiting` more requests are queued behind it."""

    def __init__(self, model, batcher, waiting):
        self.model, self.batcher, self.waiting = model, batcher, waiting
        self.batch_sizes = []
        self.threads = []  # torch threads each pass ran with
        self.entered = threading.Event()

    def user_state(self, windows, contexts=None, traced=True):
        if not self.batch_sizes:
            self.entered.set()
            for _ in range(500):
                if self.batcher._queue.qsize() >= self.waiting:
                    break
                threading.Event().wait(0.01)
        self.batch_sizes.append(len(windows))
        self.threads.append(torch.get_num_threads())
        return self.model.user_state(windows, contexts, traced)


def test_requests_that_queue_during_a_batch_form_the_next_one(fitted):
    model, items, data = fitted
    batcher = StateBatcher(max_batch=32)
    gated = _Gated(model, batcher, waiting=9)
    windows = [np.asarray(data.sequences[u][-20:]) for u in range(10)]
    results = [None] * 10

    def ask(n):
        results[n] = batcher.rank(gated, items, windows[n], None, 10, [])

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    assert gated.entered.wait(10)  # the first request is being ranked
    others = [threading.Thread(target=ask, args=(n,)) for n in range(1, 10)]
    for thread in others:
        thread.start()
    for thread in [first, *others]:
        thread.join(30)
    batcher.close()
    assert gated.batch_sizes == [1, 9]
    assert (batcher.batches_, batcher.ranked_) == (2, 10)
    for window, (state, top) in zip(windows, results):
        want_state, want_top = _alone(model, items, window, 10, [])
        np.testing.assert_allclose(state, want_state, rtol=1e-5, atol=1e-5)
        assert [i for i, _ in top] == [i for i, _ in want_top]


def test_a_request_alone_gets_idle_cores_and_a_batch_the_callers_threads(fitted):
    model, items, data = fitted
    callers = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batcher = StateBatcher(max_batch=32, idle_threads=3)
        gated = _Gated(model, batcher, waiting=4)
        window = np.asarray(data.sequences[0][-20:])
        first = threading.Thread(target=batcher.rank, args=(gated, items, window, None, 10, []))
        first.start()
        assert gated.entered.wait(10)
        others = [threading.Thread(target=batcher.rank, args=(gated, items, window, None, 10, [])) for _ in range(4)]
        for thread in others:
            thread.start()
        for thread in [first, *others]:
            thread.join(30)
        batcher.rank(gated, items, window, None, 10, [])  # alone again: the thread count came back to 3
        batcher.close()
        assert gated.batch_sizes == [1, 4, 1]
        assert gated.threads == [3, 1, 3]
    finally:
        torch.set_num_threads(callers)


class _Broken:
    def user_state(self, windows, contexts=None, traced=True):
        raise RuntimeError("model failed")


def test_a_failing_batch_fails_its_requests_and_the_batcher_goes_on(fitted):
    model, items, data = fitted
    batcher = StateBatcher(max_batch=8)
    window = np.asarray(data.sequences[0][-10:])
    with pytest.raises(RuntimeError, match="model failed"):
        batcher.rank(_Broken(), items, window, None, 5, [])
    state, top = batcher.rank(model, items, window, None, 5, [])
    assert [i for i, _ in top] == [i for i, _ in _alone(model, items, window, 5, [])[1]]
    batcher.close()
    unbatched = StateBatcher(max_batch=1)  # ranks in the caller's thread: no thread is started
    assert [i for i, _ in unbatched.rank(model, items, window, None, 5, [])[1]] == [i for i, _ in top]
    assert unbatched._thread is None


def test_the_newest_position_alone_equals_the_full_pass():
    torch.manual_seed(0)
    config = BehaviourConfig(n_items=50, max_len=20, d_model=32, n_layers=3, n_heads=2, n_time_buckets=22,
                             calendar=True)
    model = BehaviourModel(config).eval()
    items = torch.randint(1, 51, (6, 20))
    items[:3, :7] = 0  # left padding
    context = torch.randint(1, 8, (6, 20, 4))
    with torch.no_grad():
        full = model.trunk(items, context)[:, -1]
        last = model.trunk(items, context, last_only=True)
    assert last.shape == (6, 1, 32)
    torch.testing.assert_close(last[:, 0], full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.last_hidden(items, context), full, rtol=1e-5, atol=1e-5)


def test_a_request_queued_behind_the_stop_signal_is_still_answered(fitted):
    model, items, data = fitted
    batcher = StateBatcher(max_batch=8)
    window = np.asarray(data.sequences[3][-10:])
    want = batcher.rank(model, items, window, None, 5, [])  # starts the thread
    batcher._queue.put(None)  # as if close() had signalled just before a caller queued its request
    late = _Job(model, items, window, None, 5, [])
    batcher._queue.put(late)
    batcher.close()
    assert [i for i, _ in late.done.result(timeout=10)[1]] == [i for i, _ in want[1]]


@pytest.mark.parametrize("max_batch", [1, 8])
def test_several_users_queued_at_once_share_batches_and_get_their_own_answers(fitted, max_batch):
    """rank_many (the background refresh's way in): each user's answer is the one they get alone; with
    batching on, the users share batches of at most max_batch."""
    model, items, data = fitted
    batcher = StateBatcher(max_batch=max_batch)
    gated = _Gated(model, batcher, waiting=0)
    try:
        requests = [(np.asarray(data.sequences[u][-10:]), None, 10, sorted(set(data.sequences[u][:2].tolist())))
                    for u in range(20)]
        answers = batcher.rank_many(gated, items, requests)
        for (window, _, k, hidden), (state, top) in zip(requests, answers):
            want_state, want_top = _alone(model, items, window, k, hidden)
            np.testing.assert_allclose(state, want_state, rtol=1e-5, atol=1e-5)
            assert [i for i, _ in top] == [i for i, _ in want_top]
        assert sum(gated.batch_sizes) == 20 and max(gated.batch_sizes) <= max_batch
        if max_batch > 1:
            assert len(gated.batch_sizes) < 20
        assert batcher.rank_many(gated, items, []) == []
    finally:
        batcher.close()


def test_a_closed_batcher_refuses_new_work_instead_of_leaving_it_waiting(fitted):
    """Jobs queued after close() drained the queue would never be answered: they are refused."""
    model, items, data = fitted
    batcher = StateBatcher(max_batch=8)
    window = np.asarray(data.sequences[0][-5:])
    assert len(batcher.rank_many(model, items, [(window, None, 5, [])])) == 1
    batcher.close()
    with pytest.raises(RuntimeError, match="closed"):
        batcher.rank_many(model, items, [(window, None, 5, [])])
    with pytest.raises(RuntimeError, match="closed"):
        batcher.rank(model, items, window, None, 5, [])


def test_a_batch_holding_two_model_versions_ranks_each_request_with_its_own(fitted):
    """A promotion leaves requests for the old and the new version queued together. Grouping them all
    under one model passed every test (found by a mutation review): the hot-swap test only asked that no
    request failed, not what each got back."""
    old, old_items, data = fitted
    new = BehaviourRecommender(d_model=16, max_epochs=1, seed=1).fit(data, leave_one_out(data))
    vectors = new.item_vectors()
    new_items = ItemIndex(vectors[:, :-1], vectors[:, -1])
    windows = [np.asarray(data.sequences[u][-10:]) for u in range(4)]
    jobs = [_Job(model, items, window, None, 10, [])
            for window in windows for model, items in ((old, old_items), (new, new_items))]
    batcher = StateBatcher(max_batch=8)
    try:
        batcher._serve(jobs)  # one drained batch, as the batcher's thread hands it over
        for job in jobs:
            want_state, want_top = _alone(job.model, job.items, job.window, 10, [])
            state, top = job.done.result(timeout=10)
            np.testing.assert_allclose(state, want_state, rtol=1e-5, atol=1e-5)
            assert [i for i, _ in top] == [i for i, _ in want_top]
    finally:
        batcher.close()
