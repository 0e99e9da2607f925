"""The risk team's controls: rules, lists, thresholds, account freezes, cases and labels.

Each lives in the database as versioned or appended rows, and every change is written to the audit log
with what it changed (its before and after; for lists, the entries added or removed) in the same
transaction; a change invalidates this process's engine, and other processes see it within `RELOAD_S`
(risk/service.py). `RiskControls` is the part of `RiskService` that these make up, kept apart from the
decision path.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from typing import Any, Iterable

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from shopmind.exceptions import InvalidInputError, NotFoundError, StorageError
from shopmind.privacy.audit import record_audit
from shopmind.events.ingest import now_ms as _now
from shopmind.risk.engine import EVENT_KINDS, LIST_KINDS, Thresholds
from shopmind.risk.rules import Rule, compile_rule, referenced_lists
from shopmind.storage import schema

LIST_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class RiskControls:
    """Mixed into RiskService, whose `shop`, `store`, `_frozen`, `invalidate`, `_vault` and `_token`
    these use."""

    def rules(self, include_inactive: bool = False) -> list[Rule]:
        return self._rules_and_stamp(include_inactive)[0]

    def _rules_and_stamp(self, include_inactive: bool = False) -> tuple[list[Rule], int]:
        """The latest version of each rule, and the rulebook's stamp (the newest row's id), from one
        statement: read apart, a rule another process wrote in between was counted in the stamp that
        decisions log as their rules_version, though the deciding engine never had it. The newest row
        of the table is the latest version of its rule, so the stamp is the largest id read here."""
        r = schema.risk_rules
        latest = select(r.c.rule_id, func.max(r.c.version).label("v")).group_by(r.c.rule_id).subquery()
        with self.store.transaction() as conn:
            rows = conn.execute(select(r).join(latest, (r.c.rule_id == latest.c.rule_id) & (r.c.version == latest.c.v))
                                .order_by(r.c.rule_id)).all()
        return ([Rule(x.rule_id, x.expression, x.action, x.weight, x.mode, x.description, x.version)
                 for x in rows if include_inactive or x.active], max((x.id for x in rows), default=0))

    def rule_history(self, rule_id: str) -> list[dict[str, Any]]:
        r = schema.risk_rules
        with self.store.transaction() as conn:
            rows = conn.execute(select(r).where(r.c.rule_id == rule_id).order_by(r.c.version)).all()
        if not rows:
            raise NotFoundError(f"no rule {rule_id!r}")
        return [dict(x._mapping) for x in rows]

    def _list_names(self) -> tuple[str, ...]:
        """Lists with entries, and lists that active rules read (an emptied list stays while it is read)."""
        with self.store.transaction() as conn:
            names = {n for (n,) in conn.execute(select(schema.risk_list_entries.c.list_name).distinct())}
        return tuple(sorted(names | referenced_lists(self.rules())))

    def put_rule(self, rule: Rule, actor: str) -> Rule:
        """Create a rule or a new version of it. Validated completely first; audited with before/after."""
        compile_rule(rule, self._list_names())
        r = schema.risk_rules
        with _one_writer(f"rule {rule.rule_id!r}"), self.store.transaction() as conn:
            before = conn.execute(select(r).where(r.c.rule_id == rule.rule_id).order_by(r.c.version.desc())
                                  .limit(1)).first()
            version = (before.version + 1) if before else 1
            saved = Rule(rule.rule_id, rule.expression.strip(), rule.action, rule.weight, rule.mode,
                         rule.description, version)
            conn.execute(insert(r).values(**{k: v for k, v in saved.as_dict().items()}, active=True,
                                          created_ms=_now(), actor=actor))
            record_audit(conn, actor, "risk.rule.put", [None], {
                "rule_id": rule.rule_id, "before": _rule_view(before), "after": {**saved.as_dict(), "active": True}})
        self.invalidate()
        return saved

    def delete_rule(self, rule_id: str, actor: str) -> None:
        r = schema.risk_rules
        with self.store.transaction() as conn:
            before = conn.execute(select(r).where(r.c.rule_id == rule_id).order_by(r.c.version.desc()).limit(1)).first()
            if before is None or not before.active:
                raise NotFoundError(f"no active rule {rule_id!r}")
            row = {**_rule_view(before), "version": before.version + 1, "active": False, "created_ms": _now(),
                   "actor": actor}
            conn.execute(insert(r).values(**row))
            record_audit(conn, actor, "risk.rule.delete", [None], {"rule_id": rule_id, "before": _rule_view(before),
                                                                   "after": None})
        self.invalidate()

    def _list_tokens(self, list_name: str, kind: str, values: Iterable[str]) -> dict[str, str]:
        """Each value (stripped) and its keyed token, once the list name, kind and values are checked."""
        import re

        if not re.fullmatch(LIST_NAME, list_name):
            raise InvalidInputError("list name must be 1-64 characters of a-z, 0-9 and _", field="list_name")
        if kind not in LIST_KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(LIST_KINDS)}", field="kind")
        values = [v for v in values]
        if not values or any(not isinstance(v, str) or not v.strip() or len(v) > 254 for v in values):
            raise InvalidInputError("values must be 1 or more non-empty strings of at most 254 characters",
                                    field="values")
        stripped = [v.strip() for v in values]  # as ingestion and decisions strip them: one token per value
        return {v: self._token(kind, v) for v in stripped}

    def add_to_list(self, list_name: str, kind: str, values: Iterable[str], actor: str) -> int:
        """Add raw values (cards, devices, e-mails, IPs, user ids) to a list; only keyed tokens are stored."""
        by_value = self._list_tokens(list_name, kind, values)
        tokens = sorted(set(by_value.values()))
        e = schema.risk_list_entries
        with self.store.transaction() as conn:
            existing_kind = conn.execute(select(e.c.kind).where(e.c.list_name == list_name).limit(1)).scalar()
            if existing_kind is not None and existing_kind != kind:
                raise InvalidInputError(f"list {list_name!r} holds {existing_kind} values, not {kind}", field="kind")
            # what is on the list already, for the audit entry (the count is the insert's own; an admin
            # adding the same value at the same moment can have it in both entries)
            listed = set(conn.execute(select(e.c.token).where(e.c.list_name == list_name, e.c.token.in_(tokens)))
                         .scalars())
            if kind == "user":  # the list holds their pseudonyms: vaulted, so rotation and export reach them
                self._vault(conn, by_value)
            now = _now()
            added = self.store.insert_ignore(conn, "risk_list_entries", [
                {"list_name": list_name, "token": t, "kind": kind, "added_ms": now, "actor": actor} for t in tokens])
            _audit_list_change(conn, actor, "risk.list.add", list_name, kind, "added", added,
                               [t for t in tokens if t not in listed])
        self.invalidate()
        return added

    def remove_from_list(self, list_name: str, kind: str, values: Iterable[str], actor: str) -> int:
        """Take raw values off a list (a card wrongly blocked); values not on it are ignored. Audited."""
        tokens = sorted(set(self._list_tokens(list_name, kind, values).values()))
        e = schema.risk_list_entries
        with self.store.transaction() as conn:
            removed = sorted(conn.execute(delete(e).where(e.c.list_name == list_name, e.c.kind == kind,
                                                          e.c.token.in_(tokens)).returning(e.c.token)).scalars())
            _audit_list_change(conn, actor, "risk.list.remove", list_name, kind, "removed", len(removed), removed)
        self.invalidate()
        return len(removed)

    def lists(self) -> list[dict[str, Any]]:
        e = schema.risk_list_entries
        with self.store.transaction() as conn:
            rows = conn.execute(select(e.c.list_name, e.c.kind, func.count()).group_by(e.c.list_name, e.c.kind)).all()
        return [{"list_name": n, "kind": k, "entries": c} for n, k, c in rows]

    def set_thresholds(self, review: float | None, block: float | None, actor: str,
                       kind: str | None = None) -> Thresholds:
        """Set the shop-wide pair (kind None) or one event kind's pair; `review` and `block` both None with
        a kind removes that kind's pair, so it follows the shop-wide one again. Audited, versioned."""
        if kind is not None and kind not in EVENT_KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(EVENT_KINDS)}, got {kind!r}", field="kind")
        clearing = review is None and block is None
        if clearing and kind is None:
            raise InvalidInputError("give review and block (only a kind's pair can be removed)", field="review")
        if not clearing and (review is None or block is None or not 0.0 <= review <= block <= 1.0):
            raise InvalidInputError("thresholds need 0 <= review <= block <= 1", field="review")
        t = schema.risk_thresholds
        with _one_writer("the thresholds"), self.store.transaction() as conn:
            before = self._thresholds(conn)
            pairs = {k: (r, b) for k, r, b in before.by_kind}
            shop_wide = (before.review, before.block)
            if kind is None:
                shop_wide = (review, block)  # type: ignore[assignment]
            elif clearing:
                if kind not in pairs:
                    raise NotFoundError(f"there are no {kind} thresholds: {kind} events use the shop-wide pair")
                del pairs[kind]
            else:
                pairs[kind] = (review, block)  # type: ignore[assignment]
            after = Thresholds(shop_wide[0], shop_wide[1], before.version + 1,
                               tuple(sorted((k, r, b) for k, (r, b) in pairs.items())))
            by_kind = json.dumps({k: [r, b] for k, r, b in after.by_kind}) if after.by_kind else None
            conn.execute(insert(t).values(version=after.version, review=after.review, block=after.block,
                                          by_kind=by_kind, created_ms=_now(), actor=actor))
            record_audit(conn, actor, "risk.thresholds.set", [None], {"kind": kind, "before": before.as_dict(),
                                                                      "after": after.as_dict()})
        self.invalidate()
        return after

    def thresholds(self) -> Thresholds:
        with self.store.transaction() as conn:
            return self._thresholds(conn)

    # -- accounts, cases, labels ---------------------------------------------------------------------

    def _set_frozen(self, raw_user_id: str, pseudonym: str, frozen: bool, actor: str, reason: str = "") -> None:
        a = schema.risk_accounts
        with self.store.transaction() as conn:
            self._vault(conn, {raw_user_id: pseudonym})
            before = conn.execute(select(a.c.frozen).where(a.c.pseudonym == pseudonym)).scalar()
            self.store.upsert(conn, "risk_accounts", [{"pseudonym": pseudonym, "frozen": frozen,
                                                       "updated_ms": _now(), "actor": actor}])
            record_audit(conn, actor, "risk.account.freeze" if frozen else "risk.account.unfreeze", [pseudonym],
                         {"before": bool(before), "after": frozen, "reason": reason})
        (self._frozen.add if frozen else self._frozen.discard)(pseudonym)
        self.invalidate()

    def freeze(self, raw_user_id: str, actor: str, reason: str = "") -> None:
        raw_user_id = self.shop.user_id(raw_user_id)
        _refuse_nul_in_reason(reason)
        self._set_frozen(raw_user_id, self.shop.pseudonyms.user(raw_user_id), True, actor, reason)

    def unfreeze(self, raw_user_id: str, actor: str, reason: str = "") -> None:
        """Given with surrounding whitespace, the id exactly as given is unfrozen too: a version before
        2026-12-07 froze that (Shop.pseudonym_as_sent)."""
        user_id = self.shop.user_id(raw_user_id)
        _refuse_nul_in_reason(reason)
        candidates = {self.shop.pseudonyms.user(user_id): user_id, self.shop.pseudonym_as_sent(raw_user_id): raw_user_id}
        frozen = {p: raw for p, raw in candidates.items()
                  if p is not None and (p in self._frozen or self._is_frozen_in_db(p))}
        if not frozen:
            raise NotFoundError("this account is not frozen")
        for pseudonym, raw in frozen.items():  # each vaulted with the id its pseudonym was made from
            self._set_frozen(raw, pseudonym, False, actor, reason)

    def _is_frozen_in_db(self, pseudonym: str) -> bool:
        a = schema.risk_accounts
        with self.store.transaction() as conn:
            return bool(conn.execute(select(a.c.frozen).where(a.c.pseudonym == pseudonym)).scalar())

    def cases(self, status: str = "open", limit: int = 100) -> list[dict[str, Any]]:
        c = schema.risk_cases
        d = schema.risk_decisions
        with self.store.transaction() as conn:
            rows = conn.execute(select(c, d.c.score, d.c.amount, d.c.kind, d.c.rules)
                                .join(d, d.c.decision_id == c.c.decision_id)
                                .where(c.c.status == status).order_by(c.c.opened_ms).limit(limit)).all()
        return [{**dict(r._mapping), "rules": json.loads(r.rules)} for r in rows]

    def resolve_case(self, case_id: str, verdict: str, actor: str) -> dict[str, Any]:
        """An analyst's verdict closes the case and becomes the event's label (audited)."""
        if verdict not in ("fraud", "legitimate"):
            raise InvalidInputError("verdict must be 'fraud' or 'legitimate'", field="verdict")
        c = schema.risk_cases
        with self.store.transaction() as conn:
            case = conn.execute(select(c).where(c.c.case_id == case_id)).first()
            if case is None:
                raise NotFoundError("no such case")
            if case.status != "open":
                raise InvalidInputError(f"the case is already resolved as {case.status}", field="case_id")
            now = _now()
            changed = conn.execute(update(c).where(c.c.case_id == case_id, c.c.status == "open")
                                   .values(status=verdict, resolved_ms=now, resolved_by=actor)).rowcount
            if changed != 1:  # another analyst resolved it in the meantime
                raise InvalidInputError("the case was resolved by someone else just now", field="case_id")
            self._append_labels(conn, [{"event_id": case.event_id, "user_pseudonym": case.user_pseudonym,
                                        "fraud": verdict == "fraud", "source": "analyst", "labelled_ms": now,
                                        "actor": actor}])
            record_audit(conn, actor, "risk.case.resolve", [case.user_pseudonym], {
                "case_id": case_id, "verdict": verdict,
                "before": {"status": case.status, "resolved_ms": case.resolved_ms, "resolved_by": case.resolved_by},
                "after": {"status": verdict, "resolved_ms": now, "resolved_by": actor}})
        return {"case_id": case_id, "status": verdict, "resolved_ms": now}

    def add_labels(self, labels: list[dict[str, Any]], actor: str) -> int:
        """Late labels (chargebacks, verdicts from elsewhere) for decided events: {event_id, fraud, source}."""
        d = schema.risk_decisions
        rows = []
        with self.store.transaction() as conn:
            for i, label in enumerate(labels):
                if not isinstance(label.get("fraud"), bool):
                    raise InvalidInputError(f"label {i}: fraud must be true or false", field="fraud")
                user = conn.execute(select(d.c.user_pseudonym).where(d.c.event_id == label.get("event_id"))
                                    .limit(1)).first()
                if user is None:
                    raise NotFoundError(f"label {i}: no decision for this event_id")
                rows.append({"event_id": label["event_id"], "user_pseudonym": user[0], "fraud": label["fraud"],
                             "source": str(label.get("source") or "chargeback")[:16],
                             "labelled_ms": int(label.get("labelled_ms") or _now()), "actor": actor})
            self._append_labels(conn, rows)
            record_audit(conn, actor, "risk.labels.add", sorted({r["user_pseudonym"] for r in rows}, key=str),
                         {"count": len(rows), "sources": sorted({r["source"] for r in rows})})
        return len(rows)

    @staticmethod
    def _append_labels(conn, rows: list[dict[str, Any]]) -> None:
        """Labels are appended, never overwritten: what was known when is kept for training cut-offs."""
        if rows:
            conn.execute(insert(schema.risk_labels), rows)


def _refuse_nul_in_reason(reason: str) -> None:
    """A freeze's reason goes into the audit log as text: a NUL is refused on every backend, as in every
    other text field (PostgreSQL cannot store one)."""
    if "\x00" in reason:
        raise InvalidInputError("reason must not contain a NUL character (\\u0000)", field="reason")


@contextmanager
def _one_writer(what: str):
    """Two admins changing the same versioned thing at once: the second gets a clear 422, not a 500."""
    try:
        yield
    except StorageError as exc:
        if isinstance(exc.__cause__, IntegrityError):
            raise InvalidInputError(f"{what} was changed by someone else at the same moment; "
                                    "read it again and retry", field="version") from None
        raise


def _audit_list_change(conn, actor: str, action: str, list_name: str, kind: str, counted: str, count: int,
                       tokens: list[str]) -> None:
    """A list change with the entries it added or removed: keyed tokens, never the raw values. Entries
    of a user list are users' pseudonyms, so each is its own audit entry about that user (their data
    export shows it); other lists' tokens belong to no one and are listed in one entry."""
    detail = {"list": list_name, "kind": kind, counted: count}
    if kind == "user":
        record_audit(conn, actor, action, tokens or [None], detail)
    else:
        record_audit(conn, actor, action, [None], {**detail, "tokens": tokens})


def _rule_view(row: Any) -> dict[str, Any] | None:
    if row is None:
        return None
    keep = ("rule_id", "version", "expression", "action", "weight", "mode", "description", "active")
    return {k: getattr(row, k) for k in keep}
