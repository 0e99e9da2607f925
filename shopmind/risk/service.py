"""The risk service: the engine built from its state in the database, and the decision path (velocity,
profile, behaviour feature, decision log, retries, erasure of what it keeps in memory).

The risk team's controls (rules, lists, thresholds, freezes, cases, labels: risk/controls.py) are part
of the same object. Each process rebuilds its engine when it changes something itself and otherwise
checks the database for changes every few seconds, so several API workers converge within `RELOAD_S`.
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import math
import secrets
import threading
import time
from collections import OrderedDict
from typing import Any

import numpy as np
import orjson
from sqlalchemy import func, select

from shopmind.events.ingest import now_ms as _now
from shopmind.exceptions import InvalidInputError, NotFoundError, StorageError
from shopmind.privacy.vault import store_in_vault
from shopmind.risk.controls import RiskControls
from shopmind.risk.decision_log import DecisionLog
from shopmind.risk.engine import Lists, Outcome, RiskEngine, Thresholds, tokens_of
from shopmind.risk.features import FEATURE_NAMES, logged_vector
from shopmind.risk.rules import RuleSet, referenced_lists
from shopmind.risk.schemas import RiskDecision, RiskEvent
from shopmind.risk.velocity import MemoryVelocityStore
from shopmind.storage import schema

log = logging.getLogger(__name__)

RELOAD_S = 5.0
ANSWERED_KEEP = 100_000   # recent answers kept per process, so a retried event is neither re-decided nor re-counted
COMMIT_TIMEOUT_S = 30.0
# How far an event's time may be ahead of this server's clock (clients' clocks drift). A time further
# ahead would move the entity's velocity windows into the future, and every real event after it would
# look old enough to fall out of them.
MAX_AHEAD_MS = 5 * 60_000
PROFILE = "riskprofile"  # cache namespace: a user's country and signup time
PROFILE_TTL_S = 600


class RiskService(RiskControls):
    def __init__(self, shop: Any):
        self.shop = shop
        self.store = shop.store
        self.velocity = shop.velocity
        self.log = DecisionLog(self.store, forget=self.velocity.erase_subject, vault=self._vault)
        self._engine: RiskEngine | None = None
        self._stamp: tuple | None = None
        self._checked = 0.0
        self._dirty = False       # this process changed the state: rebuild before the next decision
        self._reloading = False   # a background check for changes made elsewhere is running
        self._frozen: set[str] = set()
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None  # watch(): the server's periodic look for changes
        self._closing = threading.Event()
        # event id -> (user pseudonym, answer as JSON), for retries; the pseudonym lets erasure drop the
        # answers. JSON, not the RiskDecision: its lists and contribution models are a dozen objects the
        # cycle collector tracks, 100,000 answers a million of them, which every full collection walked
        # (a JSON string and the tuple holding it are untracked).
        self._answered: OrderedDict[str, tuple[str | None, str]] = OrderedDict()
        self._answered_lock = threading.Lock()  # writers and erasure's scan (reads are single operations)
        self._inflight: dict[str, concurrent.futures.Future] = {}      # event id -> answer being computed
        self._inflight_lock = threading.Lock()
        self._velocity_is_remote = not isinstance(self.velocity, MemoryVelocityStore)
        # pseudonym -> latest erasure (ms), read on the first decision, then kept by forget_subject
        self._erased_ms: dict[str, int] | None = None

    # -- engine state --------------------------------------------------------------------------------

    def _state_stamp(self) -> tuple:
        with self.store.transaction() as conn:
            return (
                conn.execute(select(func.max(schema.risk_rules.c.id))).scalar(),
                conn.execute(select(func.count(), func.max(schema.risk_list_entries.c.added_ms))
                             .select_from(schema.risk_list_entries)).one()[:],
                conn.execute(select(func.max(schema.risk_thresholds.c.version))).scalar(),
                conn.execute(select(func.count(), func.max(schema.risk_accounts.c.updated_ms))
                             .select_from(schema.risk_accounts)).one()[:],
                self.shop.registry.current_version("risk"),
            )

    def watch(self) -> None:
        """Build the engine, then look for changes made elsewhere (another worker, `shopmind risk` commands,
        a model promotion) every `RELOAD_S`, in a thread of its own, whether or not decisions arrive.
        Started by `shopmind serve`. Without it, the check was started by a decision and that decision
        was answered by the engine it was about to replace: on a shop quiet for a few seconds, a card
        put on a block list was allowed once, however long after (found by a review)."""
        if self._watcher is not None:
            return

        def run() -> None:
            while not self._closing.wait(0 if self._engine is None else RELOAD_S):
                try:
                    with self._lock:
                        self._reload()
                except Exception as exc:  # noqa: BLE001 - no engine yet (a database error): the next round retries
                    log.error("risk engine build failed (%s); retrying", type(exc).__name__)
                    self._closing.wait(RELOAD_S)

        self._watcher = threading.Thread(target=run, name="risk-engine-watch", daemon=True)
        self._watcher.start()

    def engine(self) -> RiskEngine:
        """The current engine. A change this process made (`invalidate`) is applied before the next
        decision; changes from elsewhere are looked for every `RELOAD_S` by `watch`'s thread in a server,
        and otherwise by a thread that a decision starts when the last look is older than that, so no
        request waits for a model load."""
        if self._engine is None or self._dirty:
            with self._lock:
                if self._engine is None or self._dirty:
                    self._dirty = False
                    self._reload()
            return self._engine  # type: ignore[return-value]
        if self._watcher is None and time.monotonic() - self._checked >= RELOAD_S and not self._reloading:
            with self._lock:
                if not self._reloading and time.monotonic() - self._checked >= RELOAD_S:
                    self._reloading = True
                    threading.Thread(target=self._reload_in_background, name="risk-engine-reload",
                                     daemon=True).start()
        return self._engine

    def _reload_in_background(self) -> None:
        try:
            with self._lock:
                self._reload()
        finally:
            self._reloading = False

    def _reload(self) -> None:
        """Rebuild the engine if the database state changed; called with the lock held."""
        try:
            stamp = self._state_stamp()
            if self._engine is None or stamp != self._stamp:
                self._engine = self._build()
                self._stamp = stamp
        except Exception as exc:
            if self._engine is None:
                raise
            # keep deciding with the last good rules and model; try again after RELOAD_S
            log.error("risk engine reload failed (%s); the previous rules and model stay", type(exc).__name__)
        self._checked = time.monotonic()

    def invalidate(self) -> None:
        self._dirty = True

    def rebuild(self) -> None:
        """Rebuild the engine now (after a key rotation changed pseudonyms under unchanged counts)."""
        with self._lock:
            self._engine = self._build()
            self._stamp = self._state_stamp()
            self._erased_ms = None  # pseudonyms changed with the key
            with self._answered_lock:
                self._answered.clear()
            self._checked = time.monotonic()

    def _build(self) -> RiskEngine:
        with self.store.transaction() as conn:
            lists = Lists()
            for name, kind, token in conn.execute(select(schema.risk_list_entries.c.list_name,
                                                         schema.risk_list_entries.c.kind,
                                                         schema.risk_list_entries.c.token)):
                lists.entries.setdefault(name, (kind, set()))[1].add(token)
            self._frozen = {p for (p,) in conn.execute(select(schema.risk_accounts.c.pseudonym)
                                                      .where(schema.risk_accounts.c.frozen.is_(True)))}
            thresholds = self._thresholds(conn)
        rules, stamp = self._rules_and_stamp()
        # A list exists while it has entries; one emptied while a rule still reads it stays, empty, so the
        # rule keeps compiling (left out, it would stop firing: `lists.stolen || ...` would fail open).
        for name in referenced_lists(rules):
            lists.entries.setdefault(name, ("", set()))
        version = max((r.version for r in rules), default=0)
        ruleset = RuleSet([r for r in rules], lists.names, version=stamp or version)
        loaded = self.shop.registry.load_current("risk")
        model_version, model = loaded if loaded else (None, None)
        return RiskEngine(self.shop.pseudonyms, self.velocity, ruleset, lists, thresholds, model=model,
                          # the set the service holds now, not the one read here: a later rebuild that
                          # fails keeps this engine, and freezes go to the set the service holds then
                          model_version=model_version, profile=self._profile,
                          frozen=lambda pseudonym: pseudonym in self._frozen,
                          unusual=self._unusual)

    @staticmethod
    def _thresholds(conn) -> Thresholds:
        t = schema.risk_thresholds
        row = conn.execute(select(t).order_by(t.c.version.desc()).limit(1)).first()
        if row is None:
            return Thresholds()
        by_kind = tuple(sorted((k, float(r), float(b)) for k, (r, b) in json.loads(row.by_kind or "{}").items()))
        return Thresholds(row.review, row.block, row.version, by_kind)

    def warm(self, pseudonym: str) -> None:
        """Read the user's profile into the cache ahead of an order likely to follow (the background
        refresh calls this for users with an open cart): a decision then reads no table."""
        self._profile(pseudonym)

    def _profile(self, pseudonym: str) -> dict[str, Any] | None:
        cached = self.shop.cache.get(PROFILE, pseudonym)
        if cached is not None:
            return cached or None
        rows = self.store.fetch_all("SELECT country, signup_ms FROM users WHERE pseudonym = ?", (pseudonym,))
        profile = {"country": rows[0][0], "signup_ms": rows[0][1]} if rows else {}
        self.shop.cache.fill(PROFILE, pseudonym, profile, ttl_s=PROFILE_TTL_S)
        return profile or None

    def _unusual(self, pseudonym: str, event: RiskEvent) -> float | None:
        """How unusual the ordered items are for this user, by the behaviour model (None without one)."""
        if self.shop.registry.current_version("behaviour") is None:  # before reading the user's events
            return None
        try:
            recent = self.shop.recent_items(pseudonym)
        except Exception:
            return None
        if not recent:
            return None
        try:
            return self.shop.recommender.unusualness([tuple(r) for r in recent], [it.item_id for it in event.items],
                                                     subject=pseudonym)
        except StorageError as exc:  # the cache is down: decide without the feature rather than not at all
            log.warning("behaviour feature skipped: %s", type(exc).__name__)
            return None

    # -- decisions -----------------------------------------------------------------------------------

    def _rows(self, event: RiskEvent, out: Outcome, engine: RiskEngine) -> tuple[dict, dict | None]:
        user = out.tokens.get("user")
        decided = _now()
        row = {
            "decision_id": out.decision_id, "event_id": event.event_id, "kind": event.kind,
            "user_pseudonym": user, "ts_ms": out.ts_ms, "decided_ms": decided, "decision": out.decision,
            "score": out.score, "model_score": out.model_score, "model_version": engine.model_version,
            "rules_version": engine.rules.version, "amount": float(event.amount),
            "rules": orjson.dumps({"fired": [h.rule_id for h in out.hits], "shadow": [h.rule_id for h in out.shadow],
                                   "failed": out.failed}).decode(),
            # orjson writes NaN (an unknown feature) as null, as readers expect, and encodes the ~150
            # features in about 4 µs where json.dumps took about 70 (some 8% of a decision's CPU).
            "features": orjson.dumps(out.features, option=orjson.OPT_SERIALIZE_NUMPY).decode(),
            "latency_us": out.latency_us,
        }
        case = None
        if out.decision == "review":
            case = {"case_id": "c" + secrets.token_hex(11), "decision_id": out.decision_id,
                    "event_id": event.event_id, "user_pseudonym": user, "status": "open", "opened_ms": decided,
                    "resolved_ms": None, "resolved_by": None}
        return row, case

    def _response(self, event: RiskEvent, out: Outcome, engine: RiskEngine, case: dict | None) -> RiskDecision:
        def fired(hits):
            return [{"rule_id": h.rule_id, "version": h.version, "action": h.action, "weight": h.weight,
                     "description": h.description} for h in hits]
        return RiskDecision(
            decision_id=out.decision_id, event_id=event.event_id, decision=out.decision,  # type: ignore[arg-type]
            score=round(out.score, 6), model_score=None if out.model_score is None else round(out.model_score, 6),
            reasons=out.reasons, rules=fired(out.hits), shadow_rules=fired(out.shadow), failed_rules=out.failed,
            contributions=[{**c, "value": None if c["value"] != c["value"] else c["value"]}  # type: ignore[misc]
                           for c in out.contributions],
            case_id=case["case_id"] if case else None, model_version=engine.model_version,
            rules_version=engine.rules.version, latency_ms=round(out.latency_us / 1000, 3))

    def _freeze_row(self, out: Outcome, actor: str) -> dict | None:
        user = out.tokens.get("user")
        if out.decision != "freeze_account" or user is None or user in self._frozen:
            return None
        return {"pseudonym": user, "frozen": True, "updated_ms": _now(), "actor": f"risk:{actor}",
                "reason": f"decision {out.decision_id}"}

    def _remember(self, event: RiskEvent, out: Outcome, response: RiskDecision, freeze: dict | None) -> None:
        if freeze is not None:
            self._frozen.add(freeze["pseudonym"])
        with self._answered_lock:
            self._answered[event.event_id] = (out.tokens.get("user"), response.model_dump_json())
            if len(self._answered) > ANSWERED_KEEP:
                self._answered.popitem(last=False)

    def _answer(self, event_id: str) -> RiskDecision | None:
        """The answer this process gave the event, if it still keeps it."""
        answered = self._answered.get(event_id)
        return None if answered is None else RiskDecision.model_validate_json(answered[1])

    def _claim(self, event_id: str) -> tuple[concurrent.futures.Future, bool]:
        """The future of this event's answer, and whether the caller is the one to compute it. A retry
        that arrives while the first request is still deciding or committing waits for that answer
        instead of deciding (and counting, and logging) the event a second time."""
        with self._inflight_lock:
            running = self._inflight.get(event_id)
            if running is not None:
                return running, False
            future: concurrent.futures.Future = concurrent.futures.Future()
            answered = self._answer(event_id)  # answered between the caller's check and now
            if answered is not None:
                future.set_result(answered)
                return future, False
            self._inflight[event_id] = future
            return future, True

    def _settle(self, event_id: str, future: concurrent.futures.Future, response: RiskDecision | None,
                error: BaseException | None = None) -> None:
        """Release the retries waiting for this event: with its answer; with the error that kept it from
        being decided (theirs would meet it too); or with None when nothing of it was logged, so they
        decide it themselves."""
        with self._inflight_lock:
            self._inflight.pop(event_id, None)
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(response)

    def _failed_before_logging(self, event_id: str, future: concurrent.futures.Future, exc: BaseException) -> None:
        """The caller ended before its decision went to the log: a failure is the waiting retries' answer
        too; a cancellation (or an interrupt) is not theirs, so they decide the event themselves."""
        self._settle(event_id, future, None, exc if isinstance(exc, Exception) else None)

    def _log(self, event: RiskEvent, out: Outcome, row: dict, case: dict | None, freeze: dict | None,
             response: RiskDecision, future: concurrent.futures.Future) -> concurrent.futures.Future:
        """Hand the decision to the log; the returned future resolves once it is committed. Remembering
        the answer and releasing the waiting retries follow the commit itself, not the request: a request
        that ends first (its client disconnected, or it waited COMMIT_TIMEOUT_S) still has its decision
        committed, and that decision is the event's answer. Only a failed commit, which logged nothing,
        leaves the event to be decided again."""
        committed = self.log.submit(row, case, freeze, raw_user=event.user_id)

        def settle(done: concurrent.futures.Future) -> None:
            if done.cancelled() or done.exception() is not None:
                self._settle(event.event_id, future, None)
                return
            try:
                self._remember(event, out, response, freeze)
            finally:
                self._settle(event.event_id, future, response)

        committed.add_done_callback(settle)
        return committed

    @staticmethod
    def _refuse_future(event: RiskEvent) -> None:
        if event.ts_ms is not None and event.ts_ms > _now() + MAX_AHEAD_MS:
            raise InvalidInputError(f"ts_ms is more than {MAX_AHEAD_MS // 60_000} minutes ahead of the server's "
                                    "clock: send the event's time (in ms since 1970, UTC); nothing was recorded",
                                    field="ts_ms")

    def _erased(self) -> dict[str, int]:
        if self._erased_ms is None:
            self._erased_ms = self.shop.erasure.erased_times()
        return self._erased_ms

    def _checked_tokens(self, event: RiskEvent, engine: RiskEngine) -> dict[str, str]:
        """The event's keyed tokens, computed once for the whole decision. An event of an erased user
        that predates their erasure is a late retry: deciding it would put the user back into the
        decision log and the velocity windows, which erasure emptied. Refused before anything is
        recorded, as ingestion drops such events."""
        tokens = tokens_of(event, engine.pseudonyms)
        user = tokens.get("user")
        if user is not None and event.ts_ms is not None:
            at = self._erased().get(user)
            if at is not None and event.ts_ms <= at:
                raise InvalidInputError("this user was erased after this event's time (ts_ms): a late retry of "
                                        "an erased user's event is not decided, and nothing was recorded",
                                        field="user_id")
        return tokens

    def decide(self, event: RiskEvent, actor: str = "api") -> RiskDecision:
        """Decide, commit the decision (with its case or account freeze) durably, then answer. A retry
        of an event this process already answered (or is answering) gets the same answer, and is not
        counted again; a retry of an erased user's event from before their erasure is refused, as is an
        event time more than MAX_AHEAD_MS ahead of the clock."""
        self._refuse_future(event)
        answered = self._answer(event.event_id)
        if answered is not None:
            return answered
        future, mine = self._claim(event.event_id)
        if not mine:
            answer = future.result(timeout=COMMIT_TIMEOUT_S + 30)
            return answer if answer is not None else self.decide(event, actor)
        try:
            engine = self.engine()
            out = engine.decide(event, tokens=self._checked_tokens(event, engine))
            row, case = self._rows(event, out, engine)
            freeze = self._freeze_row(out, actor)
            response = self._response(event, out, engine, case)
            committed = self._log(event, out, row, case, freeze, response, future)
        except BaseException as exc:
            self._failed_before_logging(event.event_id, future, exc)
            raise
        # From here on the commit settles the retries, however this call ends. What failed the commit
        # is this caller's error; once it succeeded, `future` is set as soon as the answer is remembered
        # (and a freeze known), before this caller may send the user's next event.
        committed.result(timeout=COMMIT_TIMEOUT_S)
        return future.result(timeout=COMMIT_TIMEOUT_S)

    async def decide_async(self, event: RiskEvent, actor: str = "api") -> RiskDecision:
        """The same as `decide` without a thread per request: the CPU part runs on the event loop (about
        a millisecond) and the commit is awaited, so concurrent requests share group commits. With the
        Redis velocity store the decision runs in a worker thread, so its network wait blocks no other
        request; so does an order's behaviour-model feature. A request that is cancelled while its
        decision commits still has it committed, as the answer its retries get; one cancelled before
        (during that feature) has none."""
        import asyncio

        self._refuse_future(event)
        answered = self._answer(event.event_id)
        if answered is not None:
            return answered
        future, mine = self._claim(event.event_id)
        if not mine:
            answer = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), COMMIT_TIMEOUT_S + 30)
            return answer if answer is not None else await self.decide_async(event, actor)
        try:
            committed = await self._decide_async(event, actor, future)
        except BaseException as exc:
            self._failed_before_logging(event.event_id, future, exc)
            raise
        # From here on the commit settles the retries, however this request ends (as in `decide`).
        # Shielded: a cancelled request must not cancel the futures the retries wait for.
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(committed)), COMMIT_TIMEOUT_S)
        if not future.done():  # the commit's callback is still remembering the answer (rarely)
            await asyncio.shield(asyncio.wrap_future(future))
        return future.result()

    async def _decide_async(self, event: RiskEvent, actor: str,
                            future: concurrent.futures.Future) -> concurrent.futures.Future:
        """Decide and hand the decision to the log; the future of its commit (see `_log`)."""
        import asyncio

        engine = self.engine()
        tokens = self._checked_tokens(event, engine)
        if self._velocity_is_remote:
            out = await asyncio.to_thread(engine.decide, event, tokens=tokens)
        elif event.items and self.shop.registry.current_version("behaviour") is not None:
            # The behaviour-model feature can need a model pass (about 2 ms at width 256 when the user's
            # state is not cached): in a worker thread, where the traced pass runs without the GIL, so the
            # event loop goes on deciding other events on the other core meanwhile.
            unusual = await asyncio.to_thread(engine.unusualness, tokens.get("user"), event)
            out = engine.decide(event, tokens=tokens, unusual=unusual)
        else:
            out = engine.decide(event, tokens=tokens)
        row, case = self._rows(event, out, engine)
        freeze = self._freeze_row(out, actor)
        return self._log(event, out, row, case, freeze, self._response(event, out, engine, case), future)

    def decision(self, decision_id: str, exact: bool = False) -> dict[str, Any]:
        """A logged decision with its features; with `exact`, the model's TreeSHAP contributions for those
        logged features, from the model version that decided (the answer carried path attributions)."""
        d = schema.risk_decisions
        with self.store.transaction() as conn:
            row = conn.execute(select(d).where(d.c.decision_id == decision_id)).first()
        if row is None:
            raise NotFoundError("no such decision")
        out = dict(row._mapping)
        out["rules"] = json.loads(out["rules"])
        out["features"] = json.loads(out["features"])
        if exact:
            if not out["model_version"]:
                raise NotFoundError("this decision was made without a model: there is nothing to explain")
            model = self.shop.registry.load_version("risk", out["model_version"])
            values = logged_vector(out["features"])
            _, shap = model.explain(np.array(values, dtype=np.float64), exact=True)
            out["exact_contributions"] = [
                {"feature": FEATURE_NAMES[i], "value": None if math.isnan(values[i]) else values[i],
                 "contribution": float(shap[i])}
                for i in np.argsort(-np.abs(shap)) if shap[i] != 0]
        return out

    # -- what the decision path needs from the controls' state

    def _vault(self, conn, mapping: dict[str, str]) -> None:
        """Vault raw user ids whose pseudonyms a risk table is about to hold (privacy/vault.py)."""
        store_in_vault(self.store, conn, self.shop.cipher, self.shop.pseudonyms.key_id, mapping)

    def _token(self, kind: str, value: str) -> str:
        if kind == "user":
            return self.shop.pseudonyms.user(value)
        domain = {"card": "instrument", "email": "email"}.get(kind, kind)
        return self.shop.pseudonyms.token(domain, value.strip().lower() if kind == "email" else value)

    def forget_subject(self, pseudonym: str) -> dict[str, int]:
        """Erasure: drop the user from the in-memory frozen set and the answers kept for retries (a scan
        of at most ANSWERED_KEEP entries, a few milliseconds, once per erasure). An answer being
        committed meanwhile is kept after the scan; the erasure follower of every server runs this
        again about a second later (it follows its own process's receipts too), which removes it."""
        erased = self._erased_ms  # a rebuild may drop it meanwhile: the next decision reads the receipts
        if erased is not None:    # again, this one among them (it is committed before any store is erased)
            erased.update(self.shop.erasure.erased_times(pseudonym))
        was = pseudonym in self._frozen
        self._frozen.discard(pseudonym)
        with self._answered_lock:
            theirs = [event_id for event_id, (user, _) in self._answered.items() if user == pseudonym]
            for event_id in theirs:
                del self._answered[event_id]
        return {"risk.frozen_in_memory": int(was), "risk.answers_in_memory": len(theirs)}

    def close(self) -> None:
        self._closing.set()
        if self._watcher is not None:
            self._watcher.join(timeout=10)
        self.log.close()


class RiskListSubjectData:
    """Erasure of a user from block/allow lists of kind "user" (their entries are the user's pseudonym)."""

    name = "risk lists"

    def __init__(self, store):
        self.store = store

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        from sqlalchemy import delete

        e = schema.risk_list_entries
        with self.store.transaction() as conn:
            removed = conn.execute(delete(e).where(e.c.kind == "user", e.c.token == pseudonym)).rowcount
        return {"risk_lists.entries": removed}
