"""Serving recommendations: the promoted behaviour model for users with history and consent, the
trending fallback otherwise, category filters, exclusion of bought durables, and computed reasons.

Models are taken from the registry on every request (`load_current` re-reads the CURRENT pointer and
loads a newly promoted version once), so a promotion or rollback swaps models between two requests
without dropping any. Item metadata for filters and reasons, and the item index, are built once per
model version. A user's trunk state and best CANDIDATES items are cached under their pseudonym
(namespace "state", so erasure and pseudonym rotation reach it like every other cached subject) with
the model version and a fingerprint of the history and purchases they were computed from: any new
event changes the fingerprint, so a cached answer is never stale, and a repeated request skips both
the transformer pass and the catalog scan.
"""

from __future__ import annotations

import base64
import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shopmind.evaluation.sequences import EVENT_TYPES
from shopmind.exceptions import NotFoundError
from shopmind.recommend.batching import StateBatcher, top_k
from shopmind.recommend.index import BF16_MIN_ITEMS, ItemIndex
from shopmind.storage.cache import CacheMiss

STATE = "state"           # cache namespace: a user's trunk state and best candidates for one model version
STATE_TTL_S = 3600
CANDIDATES = 100          # best items kept with the state: any k up to this, and most filters, need no scan
MASK_BYTES = 64 << 20    # category masks kept per model version (one byte per item each)

# what the user did to an item, with {} for the item ("you added this to your cart before")
VERBS = {"view": "viewed {}", "click": "clicked {}", "add_to_cart": "added {} to your cart", "purchase": "bought {}",
         "rating": "rated {}", "ad_click": "clicked on {}"}


def _pack(array: np.ndarray) -> str:
    return base64.b64encode(array.tobytes()).decode("ascii")


def _unpack(text: str, dtype) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype=dtype)


@dataclass
class Catalog:
    """Item metadata aligned with one model's item index."""

    titles: list[str]
    categories: list[str]
    consumable: np.ndarray
    index: dict[str, int]
    items: ItemIndex      # scoring matrix and unit vectors (for similarity and reasons)
    _masks: dict[str, np.ndarray] = field(default_factory=dict)

    def allowed(self, category: str | None, cached_only: bool = False) -> np.ndarray | None:
        """Boolean mask of the items in `category` (a path prefix), computed once per category."""
        if not category:
            return None
        mask = self._masks.get(category)
        if mask is None:
            if cached_only:  # a pass over every item's category: not on the event loop
                raise CacheMiss("category")
            prefix = category + " > "
            mask = np.array([c == category or c.startswith(prefix) for c in self.categories], dtype=bool)
            # Bounded: categories come from requests. Only a category the catalog holds is kept (random
            # names from clients would each have kept a mask of the catalog's length: 10,000 of them at
            # 100,000 items, a gigabyte), and at most MASK_BYTES of masks in all.
            if mask.any() and len(self._masks) < max(64, MASK_BYTES // max(len(mask), 1)):
                self._masks[category] = mask
        return mask


def _context(model, events: list[tuple[int, str, int | None]]) -> np.ndarray | None:
    """[type code, unix seconds] rows of a history's events for a model that reads context, else None.
    A missing time is 0 (unknown to the model)."""
    if not getattr(model, "reads_context", False):
        return None
    return np.array([(EVENT_TYPES.get(kind, 0), (ts or 0) // 1000) for _, kind, ts in events],
                    dtype=np.int64).reshape(-1, 2)


def _digest(*arrays: np.ndarray | None) -> str:
    return hashlib.blake2b(b"".join(a.tobytes() for a in arrays if a is not None), digest_size=8).hexdigest()


def _history_key(window: np.ndarray, context: np.ndarray | None) -> str:
    """A short key of the model's input window (items and their context): equal keys, equal states."""
    return _digest(window, context)


def _fingerprint(window: np.ndarray, context: np.ndarray | None, hidden: list[int]) -> str:
    """The key of a recommendation's cached candidates: its window, context and hidden items."""
    return _digest(window, np.array(sorted(hidden), dtype=np.int64), context)


def _window(model, indices: np.ndarray, context: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The model's window of a history and one event more: the first window event's gap to the one
    before it is an input too."""
    keep = model.max_len + 1
    return indices[-keep:], (context[-keep:] if context is not None else None)


class RecommendationService:
    def __init__(self, registry, items_frame, cache=None, max_batch: int = 32, bf16_scan: bool = True,
                 traced_pass: bool = True):
        self.registry = registry
        self.bf16_scan = bf16_scan  # batched scans in bfloat16, proven exact (recommend/index.py)
        # first visits that arrive together share one pass and scan; traced_pass: that pass as one
        # TorchScript call (recommend/serving_pass.py)
        self.batcher = StateBatcher(max_batch, traced_pass=traced_pass)
        self._items_frame = items_frame  # callable returning the items table as a Polars frame
        self._cache = cache              # shared user-state cache; None computes every state
        self._catalogs: dict[str, Catalog] = {}
        self._lock = threading.Lock()

    def _catalog(self, version: str, model, cached_only: bool = False) -> Catalog:
        cached = self._catalogs.get(version)  # the live version's, without the lock: the common case
        if cached is not None:
            return cached
        if cached_only:
            raise CacheMiss("catalog")
        with self._lock:
            cached = self._catalogs.get(version)
            if cached is None:
                cached = self.build_catalog(model)
                self._catalogs = {version: cached}  # keep only the live version's metadata
            return cached

    def build_catalog(self, model) -> Catalog:
        """A version's catalog: titles, categories and the item index (replays build one for a version
        other than the live one and pass it to `unusualness(version=...)`)."""
        items = self._items_frame()
        meta = {r["item_id"]: r for r in items.iter_rows(named=True)}
        ids = model.item_ids_
        matrix = model.item_vectors()
        return Catalog(
            titles=[(meta.get(i) or {}).get("title") or i for i in ids],
            categories=[(meta.get(i) or {}).get("category") or "" for i in ids],
            consumable=np.array([bool((meta.get(i) or {}).get("consumable")) for i in ids]),
            index={item: n for n, item in enumerate(ids)},
            items=ItemIndex(matrix[:, :-1], matrix[:, -1],
                            coarse_min_items=BF16_MIN_ITEMS if self.bf16_scan else len(ids) + 1))

    def behaviour(self, cached_only: bool = False):
        return self.registry.load_current("behaviour", cached_only=cached_only)

    def _ranked(self, version: str, model, catalog: Catalog, indices: np.ndarray, context: np.ndarray | None,
                hidden: list[int], subject: str | None,
                cached_only: bool = False) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """The user's trunk state and their best CANDIDATES items (hidden ones excluded), from the cache
        when this exact history (items and their context) and purchase set were seen last; computed and
        cached otherwise (`cached_only`: CacheMiss instead)."""
        window, context = _window(model, indices, context)
        fingerprint = _fingerprint(window, context, hidden)
        cached = self._cached_entry(version, subject, fingerprint)
        if cached is not None:
            return cached
        if cached_only:
            raise CacheMiss(STATE)
        state, top = self.batcher.rank(model, catalog.items, window, context, CANDIDATES, hidden)
        return state, self._keep(version, subject, fingerprint, window, context, state, top)

    def _cached_entry(self, version: str, subject: str | None,
                      fingerprint: str) -> tuple[np.ndarray, list[tuple[int, float]]] | None:
        if self._cache is None or subject is None:
            return None
        cached = self._cache.get(STATE, subject)
        if cached and cached.get("v") == version and cached.get("h") == fingerprint and "i" in cached:
            top = zip(_unpack(cached["i"], np.int32).tolist(), _unpack(cached["x"], np.float32).tolist())
            return _unpack(cached["s"], np.float32), list(top)
        return None

    def _keep(self, version: str, subject: str | None, fingerprint: str, window: np.ndarray,
              context: np.ndarray | None, state: np.ndarray, top: list[tuple[int, float]]) -> list[tuple[int, float]]:
        """Cache a computed state and candidates under the user; returns the candidates as stored."""
        if self._cache is None or subject is None:
            return top
        # Arrays as base64 float32/int32: JSON numbers cost a third of a first visit's time to write
        # and most of a repeat visit's time to read. The answer uses the stored (float32) scores, so
        # a first and a repeated request give the same numbers.
        items = np.array([i for i, _ in top], dtype=np.int32)
        scores = np.array([x for _, x in top], dtype=np.float32)
        # "w": what the state alone depends on, by which unusualness (risk) may reuse it
        self._cache.fill(STATE, subject, {"v": version, "h": fingerprint, "w": _history_key(window, context),
                                          "s": _pack(state), "i": _pack(items), "x": _pack(scores)},
                         ttl_s=STATE_TTL_S)
        return list(zip(items.tolist(), scores.tolist()))

    def _inputs(self, catalog: Catalog, model, history: list[tuple[str, str, int | None]],
                purchased: set[str]) -> tuple[list, np.ndarray, np.ndarray | None, list[int]] | None:
        """(known events, item indices, context, hidden items) of a history, None without a known item.
        Items in the recent history and bought durables are not recommended again; consumables are
        (people restock them), which is why exclusion is done here and not by the model."""
        known = [(catalog.index[item], kind, ts) for item, kind, ts in history if item in catalog.index]
        if not known:
            return None
        indices = np.array([i for i, _, _ in known], dtype=np.int64)
        bought = {catalog.index[item] for item in purchased if item in catalog.index}
        hidden = sorted(i for i in bought | set(indices.tolist()) if not catalog.consumable[i])
        return known, indices, _context(model, known), hidden

    def for_history(self, history: list[tuple[str, str, int | None]], k: int, category: str | None,
                    purchased: set[str], subject: str | None = None,
                    cached_only: bool = False) -> dict[str, Any] | None:
        """Personalised items for a history of (item_id, event type, ts_ms or None), oldest first, or
        None when the behaviour model cannot serve it (no model, or no known item in the history).
        Purchased durables are excluded.
        `subject` (a pseudonym) lets the user's state be cached; anonymous sessions pass None.
        `cached_only`: CacheMiss instead of loading the model or running it."""
        loaded = self.behaviour(cached_only)
        if loaded is None:
            return None
        version, model = loaded
        catalog = self._catalog(version, model, cached_only)
        inputs = self._inputs(catalog, model, history, purchased)
        if inputs is None:
            return None
        known, indices, context, hidden = inputs
        allowed = catalog.allowed(category, cached_only)
        state, top = self._ranked(version, model, catalog, indices, context, hidden, subject, cached_only)
        recs = top if allowed is None else [(i, x) for i, x in top if allowed[i]]
        if len(recs) < k and len(top) == CANDIDATES:  # a narrow filter or a large k: rank everything
            if cached_only:
                raise CacheMiss("scan")
            window, _ = _window(model, indices, None)
            recs = top_k(model, catalog.items, state, window, k, hidden, allowed)
        recs = recs[:k]
        recent = [(i, kind) for i, kind, _ in known[-20:]]
        # one (recent x recommended) product for every reason, not one per recommended item
        sims = catalog.items.unit([i for i, _ in recent]) @ catalog.items.unit([i for i, _ in recs]).T
        closest = sims.argmax(axis=0) if recs else []
        return {"model": f"behaviour/{version}", "items": [
            {"item_id": model.item_ids_[i], "score": round(x, 6),
             "reason": self._reason(catalog, i, recent, int(best), float(sims[best, n]))}
            for n, ((i, x), best) in enumerate(zip(recs, closest))]}

    def unusualness(self, history: list[tuple[str, str, int | None]], item_ids: list[str],
                    subject: str | None = None, version: tuple[str, Any, Catalog] | None = None) -> float | None:
        """For risk scoring: the share of the catalog the behaviour model ranks above each of `item_ids`
        after this history, averaged (0 = exactly what this user would buy next, 1 = the least likely).
        A user's cached trunk state (a recommendation's, an earlier decision's, or one the StateRefresher
        computed when their events arrived) is reused only when it is for the live model version and this
        very history, so a live decision computes what a replay of it computes (risk/backtest.py, whose
        states the risk model is trained on); otherwise a pass computes it, and it is cached for the
        user's next decisions. Above RANK_SAMPLE items the share is estimated on a fixed sample of the
        catalog (ItemIndex.rank_fraction). `version` (its name, model and `build_catalog`) computes it
        with a version other than the live one, as replays do (risk/backtest.py)."""
        if version is None:
            loaded = self.behaviour()
            if loaded is None:
                return None
            name, model = loaded
            catalog = self._catalog(name, model)
        else:
            name, model, catalog = version
            subject = None  # the cache holds the live version's states only
        targets = [catalog.index[i] for i in item_ids if i in catalog.index]
        if not targets:
            return None
        states, _ = self._states(name, model, catalog, [(history, subject)])
        if states[0] is None:
            return None
        return catalog.items.rank_fraction(states[0], targets)

    def refresh(self, users: list[tuple[list[tuple[str, str, int | None]], set[str] | None, str]]) -> int:
        """Compute and cache, ahead of the user's next request, what it will read (StateRefresher, when
        their events arrive). Each user is (history, purchased items, pseudonym): with purchases (users
        who consented to personalisation), the state and best candidates a recommendation computes, as
        `for_history` would for those purchases; with None, the state alone (what a risk decision reads).
        Users whose entry is already for this history are skipped; the rest share one pass (and, for
        candidates, the batched scans of first visits). Returns how many users were computed."""
        loaded = self.behaviour()
        if loaded is None or not users:
            return 0
        version, model = loaded
        catalog = self._catalog(version, model)
        _, computed = self._states(version, model, catalog, [(h, p) for h, bought, p in users if bought is None])
        jobs = []
        for history, bought, subject in users:
            inputs = self._inputs(catalog, model, history, bought) if bought is not None else None
            if inputs is None:
                continue
            _, indices, context, hidden = inputs
            window, context = _window(model, indices, context)
            fingerprint = _fingerprint(window, context, hidden)
            if self._cached_entry(version, subject, fingerprint) is None:
                jobs.append((subject, fingerprint, window, context, hidden))
        results = self.batcher.rank_many(model, catalog.items, [(w, c, CANDIDATES, h) for _, _, w, c, h in jobs])
        for (subject, fingerprint, window, context, _), (state, top) in zip(jobs, results):
            self._keep(version, subject, fingerprint, window, context, state, top)
        return computed + len(jobs)

    def _states(self, version: str, model, catalog: Catalog,
                users: list[tuple[list[tuple[str, str, int | None]], str | None]]
                ) -> tuple[list[np.ndarray | None], int]:
        """Each history's trunk state (None for a history with no catalog item): the cached one when it is
        for the live version and this exact window, else computed (all misses in one pass) and cached
        under the pseudonym (None: not cached); and how many were computed."""
        states: list[np.ndarray | None] = [None] * len(users)
        misses: list[tuple[int, np.ndarray, np.ndarray | None, str]] = []
        for n, (history, subject) in enumerate(users):
            events = [(catalog.index[i], kind, ts) for i, kind, ts in history if i in catalog.index]
            if not events:
                continue
            window, context = _window(model, np.array([i for i, _, _ in events], dtype=np.int64),
                                      _context(model, events))
            key = _history_key(window, context)
            cached = self._cache.get(STATE, subject) if self._cache is not None and subject else None
            if cached and cached.get("v") == version and cached.get("w") == key:
                states[n] = _unpack(cached["s"], np.float32)
            else:
                misses.append((n, window, context, key))
        if misses:
            contexts = None if misses[0][2] is None else [m[2] for m in misses]
            fresh = model.user_state([m[1] for m in misses], contexts, traced=self.batcher.traced_pass)
            for (n, _, _, key), state in zip(misses, fresh):
                states[n] = state
                subject = users[n][1]
                if self._cache is not None and subject:
                    # Kept for this user's next decisions (a pass is most of this feature's cost). Without
                    # candidates ("i"), a recommendation does not take this entry for its own and computes
                    # one; so one that a recommendation wrote meanwhile for this history is not replaced.
                    now = self._cache.get(STATE, subject)
                    if not (now and now.get("v") == version and now.get("w") == key):
                        self._cache.fill(STATE, subject, {"v": version, "w": key, "s": _pack(state)}, ttl_s=STATE_TTL_S)
        return states, len(misses)

    @staticmethod
    def _reason(catalog: Catalog, item: int, recent: list[tuple[int, str]], best: int, similarity: float) -> str:
        """Why `item` is recommended, in words: `recent[best]` is the recent event whose item is most
        similar to it (cosine `similarity`)."""
        own = [kind for i, kind in recent if i == item]
        if own:  # a consumable the user had before
            return f"you {VERBS.get(own[-1], VERBS['view']).format('this')} before"
        source, kind = recent[best]
        if similarity <= 0.05:
            top = catalog.categories[item].split(" > ")[0] or "the shop"
            return f"matches your recent activity; popular in {top}"
        return f"because you {VERBS.get(kind, VERBS['view']).format(catalog.titles[source])}"

    def similar(self, item_id: str, k: int) -> dict[str, Any]:
        loaded = self.behaviour()
        if loaded is None:
            raise NotFoundError("no behaviour model is trained yet: run `shopmind train`")
        version, model = loaded
        catalog = self._catalog(version, model)
        if item_id not in catalog.index:
            raise NotFoundError("this item is not in the served model yet: items join it at the first training "
                                "after their first interactions")
        source = catalog.index[item_id]
        return {"model": f"behaviour/{version}", "items": [
            {"item_id": model.item_ids_[i], "score": round(s, 6),
             "reason": f"often chosen in the same sessions as {catalog.titles[source]}"}
            for i, s in catalog.items.similar(source, k)]}
