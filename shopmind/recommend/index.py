"""Candidate retrieval for serving: top-k by inner product over one model version's items.

The behaviour model scores item i for a user state h as [h, 1] . [v_i, b_i], so once the trunk has
produced h (or it comes from the per-user state cache), a recommendation is a maximum-inner-product
search. Three paths, each exact or measured:

- One user: the exact float32 scan, then the k best by a sampled threshold (below).
- Several users at once (recommend/batching.py), from `coarse_min_items` items on: a bfloat16 scan
  of the whole catalog picks candidates, their exact float32 scores are computed, and the answer is
  kept only when a bound on bfloat16's rounding error proves that no item left out could have
  beaten the k-th candidate; a user whose answer is not proven is scanned exactly. So the answer is
  the exact one, and the bfloat16 scan is what makes batches cheap: at 100,000 items x 257 floats
  the float32 product costs OpenBLAS about as much for 4 users as for 32 (it repacks the 103 MB
  matrix on every call), the bfloat16 one about 7 ms for 2 to 32 users (docs/recommend.md), on a
  processor with bfloat16 instructions. Without them PyTorch's bfloat16 product is many times slower
  than float32, so the two race once at build time and bfloat16 is kept only if it wins.
- An inverted-file index (faiss IVF-Flat, sqrt(n) lists) from `ann_min_items` items, when its recall,
  measured at build time against the exact scan on probe queries, reaches `min_recall` with few lists
  probed; vectors without cluster structure keep the exact scan. Filtered requests (a category) are
  answered by the exact scan over the filter's mask, so a filter never loses items.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection

import numpy as np
import torch

log = logging.getLogger(__name__)

# Worst relative error of a bfloat16 product's score, against |query| |item row|: each factor is
# rounded once (unit roundoff u = 2^-8), the sum accumulates in float32 (257 terms: under 2e-5), and
# the result is rounded once more: about 3u. Taken as 4u. The build checks it on probe queries.
BF16_SLACK = 4 * 2.0 ** -8
CANDIDATE_FACTOR = 4  # candidates per wanted item in the bfloat16 pass (all users proven in our runs)
BF16_MIN_ITEMS = 20_000  # below, the float32 matrix is small enough to stay in cache: exact scans only
SPEED_PROBE_ITEMS = 20_000  # items in the build-time race between the bfloat16 and float32 scans
SPEED_PROBE_BATCH = 16      # users in that race: a typical batch of first visits under load
RANK_SAMPLE = 4096  # items behind `rank_fraction` on a larger catalog: standard error at most 0.5 / 64 < 0.008


class ItemIndex:
    """Item matrix of one model version, laid out for fast scans.

    Stored twice in float32: transposed, (d + 1, n), for the full scan (`query @ columns` streams the
    catalog once in BLAS and ran 2.5x faster than `rows @ query` at 100,000 x 65 here), and as rows,
    (n, d + 1), for gathers (exact scores of candidates, unit vectors for reasons: a gather of 520
    rows took 0.03 ms, of 520 columns 0.9 ms). Plus a bfloat16 copy of the columns for batched scans
    from `coarse_min_items` items on."""

    def __init__(self, vectors: np.ndarray, bias: np.ndarray, ann_min_items: int = 50_000,
                 min_recall: float = 0.98, seed: int = 0, coarse_min_items: int = BF16_MIN_ITEMS,
                 check_speed: bool = True):
        if vectors.ndim != 2 or bias.shape != (vectors.shape[0],):
            raise ValueError("vectors must be (n, d) and bias (n,)")
        self.rows = np.ascontiguousarray(np.hstack([vectors, bias[:, None]]), dtype=np.float32)
        self.columns = np.ascontiguousarray(self.rows.T)
        self.norms = np.linalg.norm(vectors, axis=1).astype(np.float32) + np.float32(1e-12)
        self.coarse = None  # bfloat16 (d + 1, n) for batched scans, or None: exact float32 only
        self._slack = 0.0   # BF16_SLACK x the largest item row's norm
        self.unproven = 0   # users of batched scans whose bfloat16 candidates were not proven (rescanned)
        self.coarse_speedup_: float | None = None  # float32 / bfloat16 time of the build-time race
        if len(bias) >= coarse_min_items and (not check_speed or self._bf16_is_faster(seed)):
            self.coarse = torch.from_numpy(self.columns).to(torch.bfloat16)
            self._slack = BF16_SLACK * float(np.linalg.norm(self.rows, axis=1).max())
            self._check_coarse(seed)
        # The rows `rank_fraction` compares against: every item on a small catalog, a fixed sample on a
        # large one (seeded, so the same index answers the same way every time).
        n = len(bias)
        self._rank_ids = (np.arange(n) if n <= RANK_SAMPLE
                          else np.sort(np.random.default_rng(seed).choice(n, RANK_SAMPLE, replace=False)))
        self._rank_rows = self.rows if n <= RANK_SAMPLE else np.ascontiguousarray(self.rows[self._rank_ids])
        self.ann = None
        self.recall_ = 1.0  # measured recall@10 of what top_k returns without a filter
        if len(bias) >= ann_min_items:
            self._build_ann(min_recall, seed)

    def _probes(self, seed: int, count: int = 200) -> np.ndarray:
        """Queries shaped like user states: sums of two item vectors, bias coordinate 1."""
        rng = np.random.default_rng(seed)
        n = len(self)
        probes = self.rows[rng.integers(0, n, count), :-1] + self.rows[rng.integers(0, n, count), :-1]
        return np.ascontiguousarray(np.hstack([probes, np.ones((count, 1), dtype=np.float32)]))

    def _bf16_is_faster(self, seed: int) -> bool:
        """Whether this processor scans in bfloat16 faster than in float32. PyTorch's bfloat16 product
        is fast only where the processor has bfloat16 instructions (AVX512-BF16, AMX); elsewhere it takes
        a generic path that ran 14 times slower than float32 for a batch of 16 (AMD EPYC Zen 2, AVX2
        only, 2026-12-04), so the choice is measured, not assumed: both scans race once, on a slice of
        the catalog, with the batch shape serving sends, and bfloat16 is kept only if it wins."""
        probes = self._probes(seed, SPEED_PROBE_BATCH)
        columns = np.ascontiguousarray(self.columns[:, :SPEED_PROBE_ITEMS])
        coarse = torch.from_numpy(columns).to(torch.bfloat16)
        queries = torch.from_numpy(probes).to(torch.bfloat16)
        f32 = _fastest(lambda: probes @ columns)
        bf16 = _fastest(lambda: queries @ coarse)
        self.coarse_speedup_ = f32 / bf16
        if bf16 >= f32:
            log.info("item index: the bfloat16 scan is %.1fx slower than float32 on this processor; "
                     "exact float32 scans only", bf16 / f32)
            return False
        return True

    def _check_coarse(self, seed: int) -> None:
        """The error bound is arithmetic about how the bfloat16 product rounds; a kernel that rounds
        worse (accumulating in bfloat16, say) would break it silently. Measure it instead of trusting
        it, and keep the exact scan when it does not hold with a wide margin."""
        probes = self._probes(seed, 32)
        exact = probes @ self.columns
        coarse = (torch.from_numpy(probes).to(torch.bfloat16) @ self.coarse).float().numpy()
        scale = np.linalg.norm(probes, axis=1)[:, None] * np.linalg.norm(self.rows, axis=1)[None, :]
        worst = float((np.abs(coarse - exact) / scale).max())
        if not worst <= BF16_SLACK / 2:
            log.warning("item index: bfloat16 scan error %.2g exceeds half its bound %.2g; exact scans only",
                        worst, BF16_SLACK)
            self.coarse = None

    def _build_ann(self, min_recall: float, seed: int) -> None:
        import faiss

        n, dim = self.rows.shape
        quantizer = faiss.IndexFlatIP(dim)
        ann = faiss.IndexIVFFlat(quantizer, dim, int(np.sqrt(n)), faiss.METRIC_INNER_PRODUCT)
        ann.cp.seed = seed
        ann.train(self.rows)
        ann.add(self.rows)
        probes = self._probes(seed)
        exact = torch.topk(torch.from_numpy(probes @ self.columns), 10).indices.numpy()
        ann.nprobe = 4
        while True:
            _, found = ann.search(probes, 10)
            recall = float(np.mean([len(set(f) & set(e)) / 10 for f, e in zip(found, exact)]))
            if recall >= min_recall:
                break
            if ann.nprobe * 2 > ann.nlist // 8:
                # Vectors without cluster structure (e.g. an undertrained model): probing more than
                # an eighth of the lists costs more than the exact BLAS scan, so keep that.
                log.info("item index: IVF recall@10 %.3f at nprobe %d; exact scan over %d items",
                         recall, ann.nprobe, n)
                return
            ann.nprobe *= 2
        self.ann, self.recall_ = ann, recall
        log.info("item index: IVF over %d items, %d lists, nprobe %d, measured recall@10 %.3f",
                 n, ann.nlist, ann.nprobe, recall)

    def __len__(self) -> int:
        return self.rows.shape[0]

    def unit(self, items) -> np.ndarray:
        """Unit-length item vectors (len(items), d) of the given item indices."""
        return self.rows[items, :-1] / self.norms[items, None]

    def scores(self, state: np.ndarray) -> np.ndarray:
        """Scores of every item for one user state (d,)."""
        return np.append(state.astype(np.float32), np.float32(1.0)) @ self.columns

    def top_k(self, state: np.ndarray, k: int, allowed: np.ndarray | None = None,
              hidden: Collection[int] = ()) -> list[tuple[int, float]]:
        """The k best items for `state`, restricted to the `allowed` mask, never an item in `hidden`.

        Hidden items are dropped after a partial sort of k + len(hidden) candidates instead of
        masking the whole catalog, which is what keeps a user with a long history cheap."""
        if self.ann is not None and allowed is None:
            want = min(k + len(hidden), len(self))
            query = np.append(state.astype(np.float32), np.float32(1.0))[None, :]
            values, found = self.ann.search(query, want)
            hidden_set = set(hidden)
            out = [(int(i), float(v)) for i, v in zip(found[0], values[0]) if i >= 0 and int(i) not in hidden_set]
            if len(out) >= min(k, len(self) - len(hidden_set)):
                return out[:k]
            # too few lists probed to fill k: fall through to the exact scan
        return self.best_of(self.scores(state), k, allowed, hidden)

    def rank_fraction(self, state: np.ndarray, items: Collection[int]) -> float:
        """Mean over `items` of the share of the catalog that scores above each one for `state` (0: it
        is the best item; near 1: among the worst). Exact on a catalog of up to RANK_SAMPLE items; on a
        larger one estimated from a fixed sample of RANK_SAMPLE items (each share's standard error is at
        most 0.5 / sqrt(RANK_SAMPLE), under 0.008), because the exact share needs a scan of the whole
        catalog: 5 ms at 100,000 items, for a feature that a risk decision computes on every order."""
        query = np.append(state.astype(np.float32), np.float32(1.0))
        scores = self._rank_rows @ query
        shares = []
        for item in items:
            # the item's own score from the same product when it is in the sample, so it never counts
            # itself as scoring above itself
            at = int(np.searchsorted(self._rank_ids, item))
            own = at < len(self._rank_ids) and self._rank_ids[at] == item
            target = scores[at] if own else np.float32(self.rows[item] @ query)
            shares.append(float((scores > target).mean()))
        return float(np.mean(shares))

    def best_of(self, scores: np.ndarray, k: int, allowed: np.ndarray | None = None,
                hidden: Collection[int] = ()) -> list[tuple[int, float]]:
        """The k best of any score vector over the catalog, as `top_k` ranks (the blend's, say)."""
        available = len(scores)
        if allowed is not None:
            scores = np.where(allowed, scores, np.float32(-np.inf))
            available = int(allowed.sum())
        want = min(k + len(hidden), available)
        if want <= 0:
            return []
        return _without(*best(scores, want), hidden, k)

    def top_k_many(self, states: np.ndarray, ks: list[int],
                   hiddens: list[Collection[int]]) -> list[list[tuple[int, float]]]:
        """`top_k` by exact scores for several user states (B, d) at once, for recommend/batching.py:
        one matrix product streams the catalog once for all of them (bfloat16, proven per user, from
        `coarse_min_items` items on; float32 below)."""
        queries = np.hstack([states.astype(np.float32), np.ones((len(states), 1), dtype=np.float32)])
        wants = [min(k + len(hidden), len(self)) for k, hidden in zip(ks, hiddens)]
        if self.coarse is None or len(states) < 2:  # one user: the float32 matrix-vector scan is as fast
            # One user through torch, whose thread count the batcher raises when the service is idle
            # (a memory-bound scan ran 1.9x faster on two threads); NumPy's BLAS keeps one thread.
            exact = ((torch.from_numpy(queries) @ torch.from_numpy(self.columns)).numpy() if len(states) == 1
                     else queries @ self.columns)
            return [_without(*best(exact[row], want), hidden, k)
                    for row, (k, hidden, want) in enumerate(zip(ks, hiddens, wants))]
        candidates, taus = self._candidates(queries, wants)
        out = []
        for row, (k, hidden, want) in enumerate(zip(ks, hiddens, wants)):
            found = self._proven(queries[row], candidates[row], taus[row], want)
            if found is None:
                self.unproven += 1
                found = best(queries[row] @ self.columns, want)
            out.append(_without(*found, hidden, k))
        return out

    def _candidates(self, queries: np.ndarray, wants: list[int]) -> tuple[list[np.ndarray], list[float]]:
        """Per query, the items whose bfloat16 score reaches `tau`, a score about CANDIDATE_FACTOR x
        want items reach (read off an evenly strided sample of the row), and tau."""
        coarse = (torch.from_numpy(queries).to(torch.bfloat16) @ self.coarse).float()
        stride = max(1, len(self) // 2048)
        sample = coarse[:, ::stride]
        ranks = torch.tensor([min(sample.shape[1], math.ceil(CANDIDATE_FACTOR * want / stride) + 1)
                              for want in wants])
        ranked = torch.topk(sample, int(ranks.max()), dim=1).values
        taus = ranked[torch.arange(len(wants)), ranks - 1].tolist()
        coarse = coarse.numpy()
        return [np.flatnonzero(coarse[row] >= tau) for row, tau in enumerate(taus)], taus

    def _proven(self, query: np.ndarray, candidates: np.ndarray, tau: float,
                want: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The exact `want` best items for `query` among `candidates`, or None when the bound cannot
        prove them the best of all. Every other item has a bfloat16 score below `tau`, so an exact
        score under tau + slack |query|; if the want-th best candidate's exact score reaches that,
        no item left out can be in the answer."""
        if len(candidates) < want:
            return None
        exact = self.rows[candidates] @ query
        values, order = torch.topk(torch.from_numpy(exact), want)
        if float(values[-1]) < tau + self._slack * float(np.linalg.norm(query)):
            return None
        return candidates[order.numpy()], values.numpy()

    def similar(self, item: int, k: int) -> list[tuple[int, float]]:
        """Items closest to `item` by cosine similarity."""
        sims = (self.unit([item])[0] @ self.columns[:-1]) / self.norms
        sims[item] = -np.inf
        k = min(k, len(sims) - 1)
        if k <= 0:
            return []
        top, values = best(sims, k)
        return [(int(i), float(v)) for i, v in zip(top, values)]


def _fastest(run, repeats: int = 3) -> float:
    """Best wall time of `repeats` calls after one warm-up call, in seconds."""
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def _threshold(scores: np.ndarray, count: int) -> float:
    """A score about `count` of `scores` reach, from an evenly strided sample (about 2,000 values)."""
    stride = max(1, len(scores) // 2048)
    sample = scores[::stride]
    rank = min(len(sample), math.ceil(count / stride) + 1)
    return float(np.partition(sample, -rank)[-rank])


def best(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the k largest scores, largest first (exact). Over a large catalog, a
    threshold from a sample keeps about 2k candidates and only those are sorted: 0.04 ms instead of
    torch.topk's 0.2 ms over 100,000 scores here; when fewer than k pass it, all are ranked."""
    if len(scores) >= 8192 and 32 * k < len(scores):
        candidates = np.flatnonzero(scores >= _threshold(scores, 2 * k))
        if len(candidates) >= k:
            values, order = torch.topk(torch.from_numpy(scores[candidates]), k)
            return candidates[order.numpy()], values.numpy()
    values, indices = torch.topk(torch.from_numpy(scores), k)  # sorted, largest first
    return indices.numpy(), values.numpy()


def _without(top: np.ndarray, values: np.ndarray, hidden: Collection[int], k: int) -> list[tuple[int, float]]:
    """The first k of ranked (item, score) pairs that are not hidden."""
    hidden_set = set(hidden)
    # tolist() first: Python ints and floats compare and hash without a NumPy scalar per item
    return [(i, v) for i, v in zip(top.tolist(), values.tolist()) if i not in hidden_set][:k]
