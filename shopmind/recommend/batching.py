"""Concurrent first visits ranked together: one transformer pass and one catalog scan per batch.

A first visit (or the next request after a new event) costs a transformer pass over the user's window
and a scan of every item. Alone, both are dominated by overheads that do not grow with the number of
users: the scan streams the whole (d + 1, n) item matrix from memory for a single row, and the pass
pays PyTorch's per-module dispatch for a (1, T, d) tensor. Done for B users at once, the matrix is
streamed once for all of them and the pass's dispatch is paid once. At 100,000 items x 257 floats on
one core here, the scan with its top k (recommend/index.py: bfloat16 for a batch, proven exact, on a
processor with bfloat16 instructions) cost 7.6 ms for one user, 2.3 ms per user at 4, 0.9 at 16 and
0.65 at 32 (docs/recommend.md).

No request waits for a batch to fill. One thread ranks whatever has queued while it was busy with the
previous batch, so an idle service answers each request on its own at once, and a loaded one batches
exactly as many requests as arrived during one batch's work. The answers are the same as ranking each
user alone (up to float rounding of a different matrix shape): histories are left-padded, and the
trunk gives padded positions no weight (tests/recommend/test_batching.py).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class _Job:
    model: Any
    items: Any                      # the model version's ItemIndex
    window: np.ndarray              # item indices, oldest first
    context: np.ndarray | None      # [type code, unix seconds] rows, or None
    k: int
    hidden: list[int]
    done: Future = field(default_factory=Future)


def top_k(model, items, state: np.ndarray, window: np.ndarray, k: int, hidden,
          allowed: np.ndarray | None = None) -> list[tuple[int, float]]:
    """The model's k best items for one user state: the blend's when one is attached (recommend/blend.py)."""
    item_blend = getattr(model, "blend_", None)
    if item_blend is None:
        return items.top_k(state, k, allowed=allowed, hidden=hidden)
    return item_blend.top_k(items, state, window, k, hidden=hidden, allowed=allowed)


def rank_batch(jobs: list[_Job], traced: bool = True) -> list[tuple[np.ndarray, list[tuple[int, float]]]]:
    """(state, best k items without hidden ones) for each job; every job has the same model and index.
    `traced`: the model pass as one TorchScript call (recommend/serving_pass.py)."""
    model, items = jobs[0].model, jobs[0].items
    contexts = [job.context for job in jobs]
    states = model.user_state([job.window for job in jobs], None if any(c is None for c in contexts) else contexts,
                              traced=traced).astype(np.float32)
    if getattr(model, "blend_", None) is not None or items.ann is not None:
        # The blend adds per-user neighbour lists and the item index answers one query at a time:
        # the pass is shared, the ranking is not.
        return [(state, top_k(model, items, state, job.window, job.k, job.hidden))
                for state, job in zip(states, jobs)]
    tops = items.top_k_many(states, [job.k for job in jobs], [job.hidden for job in jobs])
    return list(zip(states, tops))


class StateBatcher:
    """Ranks users for the recommendation service, batching requests that arrive together.

    `max_batch` bounds one batch (scores take max_batch x catalog floats of memory); 1 ranks each
    request in the caller's thread, without the batching thread. `idle_threads`: torch threads for a
    request that arrives alone at an empty queue (default: up to 4 cores); batches keep the caller's
    thread count, so a loaded service does not oversubscribe its cores. `traced_pass`: the model pass
    as one TorchScript call, which drops the GIL once instead of at every torch call."""

    def __init__(self, max_batch: int = 32, idle_threads: int | None = None, traced_pass: bool = True):
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.max_batch = max_batch
        self.traced_pass = traced_pass
        self.idle_threads = idle_threads if idle_threads is not None else min(4, os.cpu_count() or 1)
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self.batches_ = 0      # batches ranked, and the users in them: how much batching happened
        self.ranked_ = 0

    def rank(self, model, items, window: np.ndarray, context: np.ndarray | None, k: int,
             hidden: list[int]) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """This user's trunk state and best k items (never a hidden one)."""
        return self.rank_many(model, items, [(window, context, k, hidden)])[0]

    def rank_many(self, model, items, requests: list[tuple[np.ndarray, np.ndarray | None, int, list[int]]]
                  ) -> list[tuple[np.ndarray, list[tuple[int, float]]]]:
        """`rank` for several users at once, (window, context, k, hidden) each: queued together, so they
        share batches (with each other and with requests waiting meanwhile)."""
        jobs = [_Job(model, items, window, context, k, hidden) for window, context, k, hidden in requests]
        if not jobs:
            return []
        if self.max_batch == 1:
            return [self._run([job])[0] for job in jobs]
        with self._lock:  # after close() nothing is queued: a job behind the final drain would wait forever
            if self._closed:
                raise RuntimeError("the ranking batcher is closed")
            self._start_locked()
            for job in jobs:
                self._queue.put(job)
        return [job.done.result() for job in jobs]

    def close(self) -> None:
        """Stop the batching thread once the queued requests are ranked."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
        if thread is not None:
            self._queue.put(None)
            thread.join()
        leftovers = []  # requests that a caller queued behind the stop signal: ranked here, not dropped
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                leftovers.append(job)
        if leftovers:
            self._serve(leftovers)

    def _start_locked(self) -> None:
        if self._thread is None:
            # A new thread starts with OpenMP's default thread count, not the one the caller set
            # (torch.set_num_threads is per thread): the model pass would spin on both cores.
            self._thread = threading.Thread(target=self._loop, args=(torch.get_num_threads(),),
                                            name="shopmind-rank", daemon=True)
            self._thread.start()

    def _run(self, jobs: list[_Job]) -> list[tuple[np.ndarray, list[tuple[int, float]]]]:
        self.batches_ += 1
        self.ranked_ += len(jobs)
        return rank_batch(jobs, self.traced_pass)

    def _loop(self, torch_threads: int) -> None:
        torch.set_num_threads(torch_threads)
        while True:
            job = self._queue.get()
            if job is None:
                return
            batch = [job]
            stop = False
            while len(batch) < self.max_batch:  # whatever queued meanwhile, without waiting for more
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            # A request alone in an empty queue has the machine to itself: its pass and scan may use
            # more cores (the scan is memory-bound: 7.3 ms on one thread, 3.9 on two, at 100,000 x 257).
            alone = len(batch) == 1 and self._queue.empty() and self.idle_threads > torch_threads
            if alone:
                torch.set_num_threads(self.idle_threads)
            try:
                self._serve(batch)
            finally:
                if alone:
                    torch.set_num_threads(torch_threads)
            if stop:
                return

    def _serve(self, batch: list[_Job]) -> None:
        """Rank a batch and hand each waiting request its answer or the error."""
        # One model per batch: a promotion can leave requests for the old and the new version queued.
        groups: dict[tuple[int, int], list[_Job]] = {}
        for queued in batch:
            groups.setdefault((id(queued.model), id(queued.items)), []).append(queued)
        for group in groups.values():
            try:
                results = self._run(group)
            except Exception as exc:  # each waiting request gets the error, the thread goes on
                log.error("ranking a batch of %d failed: %s", len(group), type(exc).__name__)
                for queued in group:
                    queued.done.set_exception(exc)
                continue
            for queued, result in zip(group, results):
                queued.done.set_result(result)
