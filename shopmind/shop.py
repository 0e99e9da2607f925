"""`Shop`: the public Python API. The CLI and the HTTP service are thin layers over it.

    shop = Shop.open()                        # settings from env / shopmind.toml
    shop.ingest("events", rows, actor="etl")  # validate, pseudonymise, encrypt, commit
    shop.train()                              # consented data -> model registry
    shop.recommend("user-42", k=10)
    shop.erase_user("user-42", actor="dpo")   # every registered store, with a receipt
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from shopmind import storage
from shopmind.config import Settings, load_settings, private_dir
from shopmind.events.files import iter_rows, where_rows_are
from shopmind.events.schemas import BEHAVIOUR_EVENT_TYPES
from shopmind.events.ingest import IngestResult, Ingestor
from shopmind.events.validation import duplicate_ids, validate_rows
from shopmind.exceptions import BatchValidationError, ConfigError, InvalidInputError, NotFoundError, RowError
from shopmind.privacy import consent
from shopmind.privacy.audit import record_audit
from shopmind.privacy.crypto import FieldCipher
from shopmind.privacy.erasure import (CacheSubjectData, ErasureFollower, ErasureReceipt, ErasureRegistry,
                                       SqlSubjectData)
from shopmind.privacy.export import export_subject
from shopmind.privacy.keys import Keyring, load_keyring
from shopmind.privacy.pseudonym import Pseudonymizer
from shopmind.privacy.vault import store_in_vault
from shopmind.privacy import rotation
from shopmind.storage import schema
from shopmind.storage.cache import CHANGE_FENCE_S, CacheMiss
from shopmind.recommend.refresh import StateRefresher
from shopmind.recommend.service import RecommendationService
from shopmind.training.registry import ModelRegistry

if TYPE_CHECKING:
    from shopmind.privacy.analytics import Report, ReportQuery

log = logging.getLogger(__name__)

RECENT = "recent"          # cache namespace: a user's recent item events
RECENT_KEEP = 51  # the model's 50-event window and the event before it (its gap is the first input)
BOUGHT = "bought"          # cache namespace: every item the user ever purchased
# None: every bought item, as the database read that fills the list holds them (trimmed to the newest
# 10,000 on append, the oldest bought durables were recommended again until the entry expired)
BOUGHT_KEEP = None
# Per-user lists are refreshed on HTTP ingestion in this process; the TTL bounds how stale they can be
# when events arrive another way (a `shopmind import` in another process with the in-process cache).
USER_STATE_TTL_S = 300
CONSENT = "consent"        # cache namespace: consent flags looked up for serving
MAX_IMPORT_ERRORS = 50


class _RiskMemory:
    """The risk service's memory: frozen accounts and answers kept for retries (the database rows are
    the database store's)."""

    name = "risk memory"

    def __init__(self, shop: "Shop"):
        self.shop = shop

    def erase_subject(self, pseudonym: str) -> dict[str, int]:
        risk = self.shop._risk
        if risk is None:
            return {"risk.frozen_in_memory": 0, "risk.answers_in_memory": 0}
        return risk.forget_subject(pseudonym)


_BEHAVIOUR_TYPES_SQL = ", ".join(f"'{t}'" for t in BEHAVIOUR_EVENT_TYPES)  # constants of this code, not input


def _missing_sqlite_file(database_url: str) -> str | None:
    """The path of an SQLite database file that does not exist yet, or None (it does, or not SQLite)."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return None if Path(url.database).exists() else url.database


def _holds_pseudonymised_data(database_url: str) -> bool:
    """Whether the database exists and holds rows made with a pseudonym key (the identity vault, events)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from shopmind.storage.sql import cannot_open

    if _missing_sqlite_file(database_url):
        return False
    store = storage.open(database_url, migrate=False)
    try:
        tables = set(inspect(store.engine).get_table_names())
        return any(table in tables and store.count(table) > 0 for table in ("identity_vault", "events", "users"))
    except SQLAlchemyError as exc:  # unreachable: say so before any key is made for a database not seen
        raise cannot_open(exc) from None
    finally:
        store.close()


def _open_cart(recent: list[list[Any]]) -> bool:
    """An add_to_cart among the recent events after the last purchase: an order may follow."""
    for _, kind, _ in reversed(recent):
        if kind == "purchase":
            return False
        if kind == "add_to_cart":
            return True
    return False


class Shop:
    """One shop's data, keys and models. Thread-safe for concurrent requests."""

    def __init__(self, settings: Settings, keyring: Keyring):
        self.settings = settings
        self.keyring = keyring
        self.store = storage.open(settings.database_url)
        self.cache = storage.open_cache(settings.cache_url)
        self.pseudonyms = Pseudonymizer(keyring.pseudonym, keyring.token)
        self.cipher = FieldCipher(keyring.encryption)
        self.ingestor = Ingestor(self.store, self.pseudonyms, self.cipher)
        self.registry = ModelRegistry(settings.model_dir)
        self.erasure = ErasureRegistry(self.store)
        # first: once erasure reaches the database and the cache, no background refresh may write after it
        self.refresher = StateRefresher(self._refresh_states,
                                        lambda users: [self.cache.erase_subject(p) for p in users])
        self.erasure.register(self.refresher)
        self.erasure.register(SqlSubjectData(self.store))
        self._cache_erasure = CacheSubjectData(self.cache)
        self.erasure.register(self._cache_erasure)
        self.erasure.register(self.registry)
        from shopmind.risk.velocity import open_velocity_store

        self.velocity = open_velocity_store(settings.cache_url)  # risk velocity windows: erasure reaches them
        self.erasure.register(self.velocity)
        from shopmind.risk.service import RiskListSubjectData

        self.erasure.register(RiskListSubjectData(self.store))
        self._risk_memory = _RiskMemory(self)
        self.erasure.register(self._risk_memory)
        self._risk = None
        self._follower: ErasureFollower | None = None
        self.recommender = RecommendationService(self.registry, self.items_frame, self.cache,
                                                 max_batch=self.settings.recommend_batch,
                                                 bf16_scan=self.settings.recommend_bf16_scan,
                                                 traced_pass=self.settings.recommend_traced_pass)

    # -- lifecycle ---------------------------------------------------------------------------------

    @classmethod
    def open(cls, settings: Settings | None = None, finishing_rotation: bool = False) -> "Shop":
        """The shop of these settings. Refused (ConfigError) while a pseudonym-key rotation that rewrote
        the database has not activated its key, except for `finishing_rotation` (the rotation's rerun):
        in that state erasure and export by raw id find nothing, and new writes would make it unfinishable.
        Refused too for an SQLite database that does not exist: only `init` creates one (a mistyped
        database_url made every command create and migrate an empty database, folders included)."""
        return cls._open(settings or load_settings(), finishing_rotation, create=False)

    @classmethod
    def _open(cls, settings: Settings, finishing_rotation: bool, create: bool) -> "Shop":
        keyring = load_keyring(settings.key_file, settings.keyring)
        if not create and (missing := _missing_sqlite_file(settings.database_url)):
            raise ConfigError(f"no database at {missing}: run `shopmind init` first, or check database_url")
        shop = cls(settings, keyring)
        if not finishing_rotation and (pending := rotation.interrupted_pseudonym_rotation(shop.store, shop.keyring)):
            shop.close()
            raise ConfigError(f"a pseudonym-key rotation rewrote the database and stopped before activating key "
                              f"{pending}: run `shopmind rotate-keys pseudonym` again to finish it before "
                              "anything else (until then erasure and export by raw id would find nothing)")
        return shop

    @classmethod
    def init(cls, settings: Settings | None = None) -> tuple["Shop", bool]:
        """Create the home folder and a key file if there is none; migrate the database.
        Returns the shop and whether new keys were made."""
        settings = settings or load_settings()
        # owner-only, as the database and key file are: model files hold the trained users' pseudonyms
        private_dir(settings.home)
        created = False
        if not settings.keyring and not settings.key_file.exists():
            if _holds_pseudonymised_data(settings.database_url):
                # new keys would compute other pseudonyms: every user already stored would be out of reach
                # of erasure and export, which would report success (found by a review)
                raise ConfigError(f"no key file at {settings.key_file}, but the database already holds users' "
                                  "data made with keys: restore the key file (or set SHOPMIND_KEYRING) rather "
                                  "than making new keys")
            Keyring.generate().save(settings.key_file)
            created = True
        return cls._open(settings, False, create=True), created

    @property
    def risk(self):
        """The risk service (rules, decisions, cases), built on first use."""
        if self._risk is None:
            from shopmind.risk.service import RiskService

            self._risk = RiskService(self)
        return self._risk

    def follow_erasures(self, interval_s: float = 1.0) -> ErasureFollower:
        """Forget, in this process's memory, the users that other processes erase (a server runs this:
        `shopmind erase-user` and other API workers record erasures in the database, but only this
        process can clear its in-process cache, velocity windows, refresh queue, frozen set and the risk
        answers kept for retries)."""
        if self._follower is None:
            from shopmind.risk.velocity import MemoryVelocityStore
            from shopmind.storage.cache import MemoryCache

            local: list[Any] = [self.refresher, self._risk_memory]
            if isinstance(self.cache, MemoryCache):
                local.append(self._cache_erasure)
            if isinstance(self.velocity, MemoryVelocityStore):
                local.append(self.velocity)
            self._follower = ErasureFollower(self.erasure, local, interval_s)
            self._follower.start()
        return self._follower

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()
        self.refresher.close()
        self.recommender.batcher.close()
        if self._risk is not None:
            self._risk.close()
        self.store.close()

    # -- ingestion ---------------------------------------------------------------------------------

    def ingest(self, kind: str, rows: Sequence[dict[str, Any]], actor: str) -> IngestResult:
        """Validate a batch (all or nothing) and commit it durably before returning."""
        return self.ingest_valid(kind, validate_rows(kind, rows, self.settings.max_batch), actor)

    def ingest_valid(self, kind: str, rows: Sequence[Any], actor: str) -> IngestResult:
        """Commit a batch already validated against its schema (the HTTP layer validates on parse)."""
        result = self.ingestor.ingest(kind, rows, actor)
        if kind == "events":
            self._refresh_recent([e for e in rows if e.event_id not in result.dropped_ids]
                                 if result.dropped_ids else rows, all_written=not result.duplicates)
        elif kind == "users":  # profiles carry consent flags
            self._profiles_changed(sorted({self.pseudonyms.user(u.user_id) for u in rows}))
        return result

    def import_file(self, path: Path, kind: str, actor: str,
                    progress: Callable[[int], None] | None = None, chunk: int = 10_000) -> IngestResult:
        """Import a whole file in one transaction: every row is valid and written, or nothing is."""
        return self.import_files([(path, kind)], actor, [progress], chunk)[0]

    def import_files(self, files: Sequence[tuple[Path, str]], actor: str,
                     progress: Sequence[Callable[[int], None] | None] | None = None,
                     chunk: int = 10_000) -> list[IngestResult]:
        """Import (path, kind) files, in order, in one transaction: every row of every file is valid and
        written, or nothing is (a folder from `generate` whose events file is broken leaves no items or
        users behind). An error names the file and its rows."""
        results: list[IngestResult] = []
        touched: dict[str, set[str]] = {"events": set(), "users": set()}
        with self.store.transaction() as conn:
            for n, (path, kind) in enumerate(files):
                report = progress[n] if progress else None
                if report:
                    report(0)  # this file starts now (a progress bar's clock)
                results.append(self._import_into(conn, path, kind, actor, touched, report, chunk))
        # Cached per-user state that these files changed is reloaded from the database on next use.
        if touched["events"]:
            self.cache.delete(RECENT, sorted(touched["events"]))
            self.cache.delete(BOUGHT, sorted(touched["events"]))
        if touched["users"]:
            self._profiles_changed(sorted(touched["users"]))
        return results

    def _import_into(self, conn, path: Path, kind: str, actor: str, touched: dict[str, set[str]],
                     progress: Callable[[int], None] | None, chunk: int) -> IngestResult:
        total = IngestResult(kind, 0, 0, 0)
        errors: list[RowError] = []
        first_rows: dict[str, int] = {}  # item or user id -> where it first came: the same id twice is an error
        label = where_rows_are(path)  # errors name a file's lines (rows of a Parquet file), counted from 1
        for numbers, rows in iter_rows(path, chunk, kind):
            try:
                valid = validate_rows(kind, rows, max_rows=len(rows), unique_ids=False)
                errors.extend(duplicate_ids(kind, valid, first_rows, numbers, scope="file", label=label))
            except BatchValidationError as exc:
                errors.extend(RowError(numbers[e.index], e.field, e.message) for e in exc.errors)
            if len(errors) >= MAX_IMPORT_ERRORS:
                break
            if not errors:
                part = self.ingestor.write(conn, kind, valid, actor)
                if kind in touched:
                    raw_users = {e.user_id for e in valid if e.user_id is not None}
                    touched[kind].update(self.pseudonyms.user(u) for u in raw_users)
                total = IngestResult(kind, total.received + part.received, total.written + part.written,
                                     total.duplicates + part.duplicates, total.dropped_erased + part.dropped_erased)
            if progress:
                progress(len(rows))
        if errors:
            raise BatchValidationError(errors[:MAX_IMPORT_ERRORS], kind=label, source=path.name)
        return total

    def _consent_changed(self, pseudonyms: list[str]) -> None:
        """Drop cached consent flags after a change; the fence first, so that a request that read the
        old flags just before the change cannot cache them again after the deletion."""
        self.cache.fence(pseudonyms, CHANGE_FENCE_S, namespace=CONSENT)
        self.cache.delete(CONSENT, pseudonyms)

    def _profiles_changed(self, pseudonyms: list[str]) -> None:
        """After a profile write: its consent flags, and the country and sign-up time a risk decision
        reads (cached for 10 minutes; a changed country was used stale until then), the same way."""
        from shopmind.risk.service import PROFILE

        self._consent_changed(pseudonyms)
        self.cache.fence(pseudonyms, CHANGE_FENCE_S, namespace=PROFILE)
        self.cache.delete(PROFILE, pseudonyms)

    def _refresh_recent(self, events: Sequence[Any], all_written: bool = True) -> None:
        """Bring the users' cached recent and bought lists up to date with events just committed. When
        some rows of the batch were duplicates (a retried batch, an id sent again with another payload),
        which ones the database kept is not known here: the lists are dropped and read again, rather than
        served with events the database does not hold, or holds once, twice."""
        by_user: dict[str, list[list[Any]]] = {}
        for e in events:
            if e.user_id is not None and e.item_id is not None and e.type.value in BEHAVIOUR_EVENT_TYPES:
                by_user.setdefault(e.user_id, []).append([e.item_id, e.type.value, int(e.ts.timestamp() * 1000)])
        touched: list[str] = []
        for raw_user_id, items in by_user.items():  # one HMAC per user, not per event (hot path)
            pseudonym = self.pseudonyms.user(raw_user_id)
            touched.append(pseudonym)
            if not all_written:
                continue
            items.sort(key=itemgetter(2))  # a batch may list the newest first; the list is oldest first
            # an event older than the cached list's newest drops the list: read again, in order
            self.cache.append_if_present(RECENT, pseudonym, items, RECENT_KEEP, order=2)
            bought = [item for item, kind, _ in items if kind == "purchase"]
            if bought:
                self.cache.append_if_present(BOUGHT, pseudonym, bought, BOUGHT_KEEP)
        if touched and not all_written:
            self.cache.delete(RECENT, touched)
            self.cache.delete(BOUGHT, touched)
        if touched and self.settings.refresh_states and self.registry.current_version("behaviour") is not None:
            self.refresher.submit(touched)

    def warm_states(self) -> int:
        """Queue the background refresh (`_refresh_states`, the same rules: states and candidates for
        users who consented, the state alone for the others only while their cart is open) for the users
        with events in the last `warm_states_days` before the newest event, most recent first, up to the
        refresher's queue size. Run once when the server starts (api/main.py), in a thread: after a restart
        every cached state is gone, and a returning user's first order would otherwise pay a model pass
        in its decision. Returns how many users were queued."""
        days = self.settings.warm_states_days
        if not days or not self.settings.refresh_states or self.registry.current_version("behaviour") is None:
            return 0
        newest = self.store.fetch_all("SELECT MAX(ts_ms) FROM events")[0][0]
        if newest is None:
            return 0
        rows = self.store.fetch_all(
            "SELECT user_pseudonym FROM events WHERE ts_ms >= ? AND user_pseudonym IS NOT NULL "
            "GROUP BY user_pseudonym ORDER BY MAX(ts_ms) DESC LIMIT ?",
            (int(newest - days * 86_400_000), self.refresher.max_pending))
        self.refresher.submit([p for (p,) in rows])
        return len(rows)

    def _refresh_states(self, pseudonyms: list[str]) -> int:
        """The background refresh after these users' events arrived (StateRefresher): for users who
        consented to personalisation, the state and candidates their next recommendation reads (with
        bought items excluded, as `recommend` does by default); for the others, only while they have an
        open cart (an add_to_cart after their last purchase, so an order may follow), the state alone,
        which the risk decision on that order reads (fraud prevention does not rest on that consent);
        for users with an open cart, their risk profile as well.
        What is read here is cached as a request's reads are (the lists only if no event changed them
        since the read began: the cache's generations; consent behind its change fence), so the
        decision on the order that follows reads no table, and the user's next recommendation is
        answered from the cache (api/fast_routes.py)."""
        users = []
        for p in pseudonyms:
            recent = self.recent_items(p)
            if not recent:
                continue
            cart = _open_cart(recent)
            if self.has_consent(p, "personalization"):
                users.append(([tuple(r) for r in recent], self.purchased_items(p), p))
            elif cart:
                users.append(([tuple(r) for r in recent], None, p))
            if cart and self._risk is not None:  # the profile too (an order's other read): no race with events
                self._risk.warm(p)
        return self.recommender.refresh(users)

    # -- reads about one user ------------------------------------------------------------------------

    @staticmethod
    def user_id(raw_user_id: str) -> str:
        """A raw user id as ingestion stores it: surrounding whitespace stripped (every ingestion schema
        strips it, so `"alice "` was stored as alice's while erasure, export and consent looked for
        another pseudonym), 1 to 128 characters (`erase-user ''` wrote a receipt, `risk freeze ''` froze
        the pseudonym of the empty string); otherwise refused, naming user_id."""
        user_id = raw_user_id.strip()
        if not 1 <= len(user_id) <= 128:
            raise InvalidInputError("user_id must be 1 to 128 characters, as ingestion stores it", field="user_id")
        try:  # a command-line argument in another encoding arrives with surrogates: a traceback, later
            user_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError("user_id is not valid UTF-8 text", field="user_id") from None
        return user_id

    def pseudonym(self, raw_user_id: str) -> str:
        """The user's keyed pseudonym (of the id as ingestion stores it: `user_id`)."""
        return self.pseudonyms.user(self.user_id(raw_user_id))

    def pseudonym_as_sent(self, raw_user_id: str) -> str | None:
        """For an id given with surrounding whitespace, the pseudonym of the id exactly as given, or None.
        Before 2026-12-07 only ingestion stripped ids: a risk decision, freeze or user list entry for
        `"bob "` was stored under this pseudonym, which nothing reaches since every id is stripped.
        Erasure, export and unfreeze given the id as it was sent reach those rows too."""
        return self.pseudonyms.user(raw_user_id) if raw_user_id != self.user_id(raw_user_id) else None

    def recent_items(self, pseudonym: str, cached_only: bool = False) -> list[list[Any]]:
        """[item_id, type, ts_ms] of the user's latest item events, oldest first (cached: what was read
        from the database is cached unless an event changed the list meanwhile)."""
        cached = self.cache.get(RECENT, pseudonym)
        if cached is not None:
            return cached
        if cached_only:
            raise CacheMiss(RECENT)
        generation = self.cache.generation(RECENT, pseudonym)  # before the read: see storage/cache.py
        rows = self.store.fetch_all(
            "SELECT item_id, type, ts_ms FROM events WHERE user_pseudonym = ? AND item_id IS NOT NULL"
            f" AND type IN ({_BEHAVIOUR_TYPES_SQL})"
            f" ORDER BY ts_ms DESC, event_id{self.store.code_point_collation} DESC LIMIT ?",
            (pseudonym, RECENT_KEEP))  # ties: one order, on every backend
        recent = [list(r) for r in reversed(rows)]
        self.cache.fill(RECENT, pseudonym, recent, ttl_s=USER_STATE_TTL_S, generation=generation)
        return recent

    def purchased_items(self, pseudonym: str, cached_only: bool = False) -> set[str]:
        """Every item the user bought (cached as in recent_items)."""
        cached = self.cache.get(BOUGHT, pseudonym)
        if cached is None:
            if cached_only:
                raise CacheMiss(BOUGHT)
            generation = self.cache.generation(BOUGHT, pseudonym)
            cached = [item for (item,) in self.store.fetch_all(
                "SELECT DISTINCT item_id FROM events WHERE user_pseudonym = ? AND type = 'purchase'", (pseudonym,))]
            self.cache.fill(BOUGHT, pseudonym, cached, ttl_s=USER_STATE_TTL_S, generation=generation)
        return set(cached)

    def recent_events(self, raw_user_id: str, actor: str, limit: int = 20) -> list[dict[str, Any]]:
        """The user's latest events (for the dashboard). Reading them is audited."""
        pseudonym = self.pseudonym(raw_user_id)
        e = schema.events
        with self.store.transaction() as conn:
            rows = conn.execute(
                select(e.c.event_id, e.c.type, e.c.item_id, e.c.query, e.c.price, e.c.ts_ms, e.c.device)
                .where(e.c.user_pseudonym == pseudonym).order_by(e.c.ts_ms.desc()).limit(limit)
            ).all()
            record_audit(conn, actor, "user.read_events", [pseudonym], {"limit": limit})
        return [dict(r._mapping) for r in rows]

    def has_consent(self, pseudonym: str, purpose: str, cached_only: bool = False) -> bool:
        """Consent for `purpose`, cached briefly (withdrawal through shopmind clears the cache at once,
        behind a short fence against a read in flight)."""
        cached = self.cache.get(CONSENT, pseudonym)
        if cached is None or purpose not in cached:
            if cached_only:
                raise CacheMiss(CONSENT)
            consent.check_purpose(purpose)
            cached = consent.consent_flags(self.store, pseudonym, self.settings.default_consent)
            self.cache.fill(CONSENT, pseudonym, cached, ttl_s=USER_STATE_TTL_S)
        return bool(cached[purpose])

    def set_consent(self, raw_user_id: str, flags: dict[str, bool | None], actor: str) -> dict[str, bool | None]:
        user_id = self.user_id(raw_user_id)
        pseudonym = self.pseudonyms.user(user_id)
        with self.store.transaction() as conn:
            if any(v is not None for v in flags.values()):
                # A choice can come before any profile (a consent banner; a user known by events alone):
                # it creates the user's row, so a withdrawal is never refused for want of one.
                now_ms = int(time.time() * 1000)
                self.store.insert_ignore(conn, "users", [{"pseudonym": pseudonym, "attributes": "{}",
                                                          "created_ms": now_ms, "updated_ms": now_ms}])
                store_in_vault(self.store, conn, self.cipher, self.pseudonyms.key_id, {user_id: pseudonym})
            now = consent.set_consent(conn, pseudonym, flags)
            record_audit(conn, actor, "user.consent", [pseudonym], {k: v for k, v in flags.items() if v is not None})
        self._consent_changed([pseudonym])
        return now

    # -- data-subject rights -------------------------------------------------------------------------

    def export_user(self, raw_user_id: str, actor: str) -> dict[str, Any]:
        """What is held about the user; rows stored under the id exactly as given, whitespace and all, by a
        version before 2026-12-07 (`pseudonym_as_sent`) come under `held_under_the_id_as_sent`."""
        user_id = self.user_id(raw_user_id)
        exports = []
        for pseudonym in (self.pseudonyms.user(user_id), self.pseudonym_as_sent(raw_user_id)):
            if pseudonym is not None:
                with contextlib.suppress(NotFoundError):
                    exports.append(export_subject(self.store, self.cipher, pseudonym, actor, user_id))
        if not exports:
            raise NotFoundError("no data is held for this user")
        return exports[0] if len(exports) == 1 else {**exports[0], "held_under_the_id_as_sent": exports[1]}

    def erase_user(self, raw_user_id: str, actor: str) -> ErasureReceipt:
        """Remove the user from every registered store. Safe to repeat (finishes an interrupted erasure).
        Given with surrounding whitespace, the id is also erased exactly as given (`pseudonym_as_sent`),
        and the receipt counts both."""
        receipt = self.erasure.erase(self.pseudonym(raw_user_id), actor)
        as_sent = self.pseudonym_as_sent(raw_user_id)
        if as_sent is not None:
            for where, count in self.erasure.erase(as_sent, actor).removed.items():
                receipt.removed[where] = receipt.removed.get(where, 0) + count
        return receipt

    # -- models --------------------------------------------------------------------------------------

    def training_events(self, purpose: str = "personalization") -> pl.DataFrame:
        return consent.consented_events(self.store, purpose, self.settings.default_consent,
                                        columns=["user_pseudonym", "session_pseudonym", "type", "item_id", "ts_ms"])

    def items_frame(self) -> pl.DataFrame:
        i = schema.items
        return self.store.frame(select(i.c.item_id, i.c.title, i.c.category, i.c.brand, i.c.price, i.c.consumable),
                                schema_overrides={"item_id": pl.Utf8, "title": pl.Utf8, "category": pl.Utf8,
                                                  "brand": pl.Utf8, "price": pl.Float64, "consumable": pl.Boolean})

    def train(self, actor: str = "cli", time_budget_s: float | None = None, force_promote: bool = False,
              dp: dict[str, Any] | None = None) -> dict:
        """Train the trending fallback and the behaviour model on personalization-consented events.
        The behaviour model is promoted only if it beats the current one on the same data. `dp`
        (e.g. {"epsilon": 8}) trains it with user-level DP-SGD (docs/privacy.md)."""
        from shopmind.training.pipeline import train_all

        return train_all(self, actor, time_budget_s=time_budget_s, force_promote=force_promote, dp=dp)

    def _trending(self, k: int, category: str | None, exclude: set[str], cached_only: bool = False) -> dict[str, Any]:
        if cached_only and category:  # a rare category walks the whole ranking: not on the event loop
            raise CacheMiss("category")
        loaded = self.registry.load_current("popularity", cached_only=cached_only)
        if loaded is None:
            raise NotFoundError("no model is trained yet: run `shopmind train`")
        version, model = loaded
        recs = model.recommend(k=k, category=category, exclude=exclude)
        return {"model": f"popularity/{version}",
                "items": [{"item_id": r.item_id, "score": round(r.score, 6), "reason": r.reason} for r in recs]}

    def recommend(self, raw_user_id: str, k: int = 10, category: str | None = None,
                  exclude_purchased: bool = True, cached_only: bool = False) -> dict[str, Any]:
        """Personalised for users who consented and have history; trending items otherwise.
        `cached_only`: raise CacheMiss instead of reading the database, loading a model or running one
        (the HTTP fast path answers repeat visitors this way without leaving the event loop)."""
        pseudonym = self.pseudonym(raw_user_id)
        personalised = self.has_consent(pseudonym, "personalization", cached_only)
        if personalised:
            history = [tuple(event) for event in self.recent_items(pseudonym, cached_only)]
            bought = self.purchased_items(pseudonym, cached_only) if exclude_purchased else set()
            answer = self.recommender.for_history(history, k, category, bought, subject=pseudonym,
                                                  cached_only=cached_only)
            if answer is not None:
                return {**answer, "personalised": True}
            durables = self._durables(bought, cached_only)
            return {**self._trending(k, category, durables, cached_only), "personalised": True}
        return {**self._trending(k, category, set(), cached_only), "personalised": False}

    def _durables(self, bought: set[str], cached_only: bool) -> set[str]:
        """The bought items not flagged consumable: a consumable may be bought, and recommended, again (as
        the behaviour path does from its catalog; the trending model has no such flag)."""
        if not bought:
            return bought
        if cached_only:
            raise CacheMiss("items")
        names, consumable = sorted(bought), set()
        for start in range(0, len(names), 500):
            part = names[start:start + 500]
            consumable.update(item for (item,) in self.store.fetch_all(
                f"SELECT item_id FROM items WHERE consumable AND item_id IN ({', '.join('?' * len(part))})", part))
        return bought - consumable

    def recommend_session(self, events: Sequence[dict[str, Any]], k: int = 10,
                          category: str | None = None) -> dict[str, Any]:
        """For an anonymous visitor: the events of their current session, oldest first."""
        history = [(e["item_id"], e.get("type", "view"), e.get("ts_ms")) for e in events
                   if e.get("item_id") and e.get("type", "view") in BEHAVIOUR_EVENT_TYPES]
        bought = {item for item, kind, _ in history if kind == "purchase"}
        answer = self.recommender.for_history(history, k, category, bought)
        if answer is not None:
            return {**answer, "personalised": True}
        # the durables this visitor just bought are excluded here too, as for a known user's fallback
        return {**self._trending(k, category, self._durables(bought, False)), "personalised": False}

    def similar_items(self, item_id: str, k: int = 10) -> dict[str, Any]:
        return self.recommender.similar(item_id, k)

    # -- operations ----------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        counts = {t: self.store.count(t) for t in ("items", "users", "events", "orders", "payments")}
        e = schema.events
        with self.store.transaction() as conn:
            by_type = dict(conn.execute(select(e.c.type, func.count()).group_by(e.c.type)).all())
        return {"rows": counts, "events_by_type": by_type}

    def analytics_report(self, query: "ReportQuery", actor: str) -> "Report":
        """A differentially private aggregate report, charged to its purpose's privacy budget."""
        from shopmind.privacy.analytics import run_report

        return run_report(self.store, self.settings, query, actor)

    def privacy_budget(self) -> list[dict[str, Any]]:
        """Epsilon and delta budget, spent and remaining, per reporting purpose."""
        from shopmind.privacy.ledger import summary

        return summary(self.store, self.settings)

    def rotate_keys(self, kind: str, actor: str, retire: bool = False) -> dict[str, Any]:
        key_file = None if self.settings.keyring else self.settings.key_file
        if kind == "encryption":
            result = rotation.rotate_encryption_key(self.store, self.keyring, key_file, actor, retire=retire)
            self.cipher = FieldCipher(self.keyring.encryption)
        elif kind == "pseudonym":
            result = rotation.rotate_pseudonym_key(
                self.store, self.keyring, key_file, actor,
                remappers=[self.registry.remap_subjects,
                           # first: no refresh queued or running under an old pseudonym writes after the cache
                           lambda m: [self.refresher.erase_subject(old) for old in m],
                           lambda m: [self.cache.erase_subject(old) for old in m],
                           # velocity windows are keyed by pseudonym: forget the old ones rather than leave
                           # entries that erasure under the new pseudonym could not find
                           lambda m: [self.velocity.erase_subject(old) for old in m]])
            self.pseudonyms = Pseudonymizer(self.keyring.pseudonym, self.keyring.token)
            if self._risk is not None:
                self._risk.rebuild()  # frozen accounts, lists and tokens under the new pseudonyms
        else:
            raise InvalidInputError("kind must be 'encryption' or 'pseudonym'", field="kind")
        self.ingestor = Ingestor(self.store, self.pseudonyms, self.cipher)
        return result
