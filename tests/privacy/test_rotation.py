"""Key rotation: encryption keys re-encrypt everything; the pseudonym key remaps every table."""

from __future__ import annotations

import json

import polars as pl
import pytest
from sqlalchemy import select

from shopmind.exceptions import ConfigError
from shopmind.privacy.keys import load_keyring
from shopmind.privacy.rotation import keys_in_use
from shopmind.storage import schema
from tests.conftest import event


def _seed(shop, n=30):
    shop.ingest("users", [{"user_id": f"user-{i}", "email": f"user{i}@example.org", "phone": f"+49 30 {1000 + i}",
                           "consent_personalization": True} for i in range(n)], actor="t")
    shop.ingest("events", [event(i, user=f"user-{i % n}", kind="purchase", item=f"item-{i % 4}") for i in range(3 * n)],
                actor="t")
    shop.ingest("orders", [{"order_id": f"o{i}", "user_id": f"user-{i}", "ts": "2026-01-05T10:00:00Z",
                            "amount": 10.0 + i} for i in range(n)], actor="t")
    shop.ingest("payments", [{"payment_id": f"p{i}", "order_id": f"o{i}", "user_id": f"user-{i}",
                              "ts": "2026-01-05T10:00:01Z", "amount": 10.0 + i} for i in range(n)], actor="t")


def _lineage(shop) -> set[str]:
    """Every pseudonym in any model version's lineage file (read as parquet: the file is compressed)."""
    files = list(shop.registry.root.glob("*/*/subjects.parquet"))
    assert files, "no model version was trained"
    return {p for f in files for p in pl.read_parquet(f)["pseudonym"].to_list()}


def test_encryption_rotation_reencrypts_and_retires(shop):
    _seed(shop)
    old = shop.keyring.encryption.active
    result = shop.rotate_keys("encryption", actor="t", retire=True)
    new = result["active"]
    assert new != old and result["re_encrypted"] == 30 * 2 + 30  # email + phone per user, plus vault entries
    assert result["retired"] == [old]
    assert keys_in_use(shop.store) == {new: 90}
    on_disk = load_keyring(shop.settings.key_file)
    assert set(on_disk.encryption.keys) == {new} and on_disk.encryption.active == new
    assert shop.export_user("user-3", actor="t")["profile"]["email"] == "user3@example.org"
    # New writes use the new key.
    shop.ingest("users", [{"user_id": "late", "email": "late@example.org"}], actor="t")
    assert keys_in_use(shop.store)[new] == 92


def test_pseudonym_rotation_remaps_every_table(shop, monkeypatch):
    from shopmind.risk.rules import Rule
    from shopmind.risk.schemas import RiskEvent

    forgotten = []  # old pseudonyms the background state refresh was told to forget
    real_forget = shop.refresher.erase_subject
    monkeypatch.setattr(shop.refresher, "erase_subject", lambda p: (forgotten.append(p), real_forget(p))[1])
    _seed(shop)
    shop.train(actor="t")
    shop.risk.put_rule(Rule("all", "event.amount > 1.0", "review", mode="enforce"), actor="t")
    shop.risk.add_to_list("watched", "user", ["user-5"], actor="t")
    case = shop.risk.decide(RiskEvent(event_id="r-1", kind="order", user_id="user-5", amount=20.0)).case_id
    shop.risk.resolve_case(case, "fraud", actor="t")
    shop.risk.freeze("user-5", actor="t")
    before = shop.pseudonym("user-5")
    events_before = shop.store.count("events")
    result = shop.rotate_keys("pseudonym", actor="t")
    after = shop.pseudonym("user-5")
    assert after != before and result["users_remapped"] == 30
    assert before in forgotten and len(set(forgotten)) == 30 and after not in forgotten
    with shop.store.transaction() as conn:
        # the audit trail too: a data-access export after rotation still finds the user's earlier entries
        for table, column in {**schema.SUBJECT_TABLES, "audit_log": "subject_pseudonym"}.items():
            tbl = schema.metadata.tables[table]
            values = {v for (v,) in conn.execute(select(tbl.c[column])) if v is not None}
            assert before not in values, table
            assert after in values, table
    assert shop.store.count("events") == events_before
    # the risk engine follows: the account is still frozen and the user still on the user list
    follow_up = shop.risk.decide(RiskEvent(event_id="r-2", kind="order", user_id="user-5", amount=20.0))
    assert follow_up.decision == "freeze_account"
    with shop.store.transaction() as conn:
        listed = {t for (t,) in conn.execute(select(schema.risk_list_entries.c.token))}
    assert after in listed and before not in listed
    assert shop.export_user("user-5", actor="t")["user_id"] == "user-5"
    assert len(shop.export_user("user-5", actor="t")["events"]) == 3
    # Model lineage was remapped too, and new events land under the new pseudonym.
    assert before not in _lineage(shop) and after in _lineage(shop)
    shop.ingest("events", [event(999, user="user-5", item="item-9")], actor="t")
    assert len(shop.export_user("user-5", actor="t")["events"]) == 4
    # A fresh process with the saved keyring computes the same pseudonyms.
    assert load_keyring(shop.settings.key_file).pseudonym.active == result["active"]


def test_interrupted_pseudonym_rotation_is_finished_by_a_rerun(shop, monkeypatch):
    _seed(shop, n=5)
    shop.train(actor="t")
    old = shop.pseudonym("user-2")
    assert old in _lineage(shop)
    calls = []

    def crash_after_commit(mapping):
        calls.append(len(mapping))
        raise RuntimeError("power cut")

    from shopmind.privacy import rotation

    with pytest.raises(RuntimeError):
        rotation.rotate_pseudonym_key(shop.store, shop.keyring, shop.settings.key_file, "t",
                                      remappers=[crash_after_commit])
    assert calls == [5]
    # The database is remapped but the saved keyring still has the old key active.
    ring = load_keyring(shop.settings.key_file)
    pending = [k for k in ring.pseudonym.keys if k != ring.pseudonym.active]
    assert len(pending) == 1
    from shopmind.shop import Shop

    shop.close()
    # Nothing else opens the shop in this state: erasure and export by raw id would find nothing, and a
    # new user's vault row under the old key would make the rotation impossible to finish
    with pytest.raises(ConfigError, match="rotate-keys pseudonym"):
        Shop.open(shop.settings)
    reopened = Shop.open(shop.settings, finishing_rotation=True)  # what `shopmind rotate-keys` does
    result = reopened.rotate_keys("pseudonym", actor="t")
    assert result["active"] == pending[0] and result["users_remapped"] == 5
    Shop.open(shop.settings).close()  # finished: the shop opens again
    assert reopened.export_user("user-2", actor="t")["user_id"] == "user-2"
    # the derived stores the crash skipped are remapped by the rerun, so erasure reaches them
    new = reopened.pseudonym("user-2")
    assert new != old and old not in _lineage(reopened) and new in _lineage(reopened)
    reopened.erase_user("user-2", actor="t")
    assert not {old, new} & _lineage(reopened)
    reopened.close()


def test_inline_keyring_cannot_be_rotated_in_place(tmp_path, database_url):
    from shopmind.privacy.keys import Keyring
    from tests.conftest import make_shop

    ring = Keyring.generate()
    shop = make_shop(tmp_path / "h", database_url, keyring=ring.to_json())
    with pytest.raises(ConfigError, match="inline"):
        shop.rotate_keys("encryption", actor="t")


def test_key_file_is_owner_only(shop):
    assert shop.settings.key_file.stat().st_mode & 0o777 == 0o600
    assert set(json.loads(shop.settings.key_file.read_text())) == {"version", "pseudonym", "encryption", "token"}


def test_users_known_only_to_the_risk_engine_are_rotated_and_then_erased(shop):
    """A user with a risk decision, a freeze and a user-list entry and nothing else: every writer vaults
    the raw id, so rotation remaps their rows and an erasure by raw id afterwards finds them all (before,
    their rows stayed under the old pseudonym, which the erasure no longer computed)."""
    import time

    from shopmind.risk.schemas import RiskEvent

    raw, now = "risk-only-user", int(time.time() * 1000)
    old = shop.pseudonym(raw)
    shop.risk.decide(RiskEvent(event_id="e1", kind="order", user_id=raw, amount=50.0, ts_ms=now - 1000, card="c1"))
    shop.risk.freeze(raw, actor="analyst", reason="test")
    shop.risk.add_to_list("blocked_users", "user", [raw], actor="analyst")
    shop.rotate_keys("pseudonym", actor="t")
    new = shop.pseudonym(raw)
    assert new != old
    d, a, e = schema.risk_decisions, schema.risk_accounts, schema.risk_list_entries

    def held(p):
        with shop.store.transaction() as conn:
            return (len(conn.execute(select(d.c.decision_id).where(d.c.user_pseudonym == p)).all()),
                    len(conn.execute(select(a.c.pseudonym).where(a.c.pseudonym == p)).all()),
                    len(conn.execute(select(e.c.token).where(e.c.token == p, e.c.kind == "user")).all()))

    assert held(old) == (0, 0, 0) and held(new) == (1, 1, 1)
    assert shop.velocity.erase_subject(old)["velocity_entries"] == 0  # the windows followed too
    receipt = shop.erase_user(raw, actor="dpo")
    assert receipt.removed["database.risk_decisions"] == 1 and receipt.removed["database.risk_accounts"] == 1
    assert held(new) == (0, 0, 0)


def test_rotation_reports_rows_whose_raw_id_was_never_vaulted(shop):
    """Rows about a pseudonym the vault cannot map (written before every writer vaulted raw ids) cannot
    follow a rotation; the rotation says how many such pseudonyms there are instead of passing over them."""
    _seed(shop, n=3)
    with shop.store.transaction() as conn:
        conn.execute(schema.risk_accounts.insert().values(pseudonym="legacy-pseudonym", frozen=True, updated_ms=1,
                                                          actor="t"))
    result = shop.rotate_keys("pseudonym", actor="t")
    assert result["users_remapped"] == 3 and result["pseudonyms_without_raw_id"] == 1


def test_a_risk_users_raw_id_is_vaulted_again_after_an_erasure(shop):
    """The decision log remembers whom it vaulted (no read per group); an erasure removes the vault
    row, so a decision on the user's new events after it must vault the raw id again."""
    import time

    from shopmind.risk.schemas import RiskEvent

    v = schema.identity_vault

    def vaulted() -> int:
        with shop.store.transaction() as conn:
            return len(conn.execute(select(v.c.pseudonym).where(v.c.pseudonym == shop.pseudonym("zoe"))).all())

    shop.risk.decide(RiskEvent(event_id="z1", kind="order", user_id="zoe", amount=5.0, ts_ms=int(time.time() * 1000) - 60_000))
    assert vaulted() == 1
    shop.erase_user("zoe", actor="dpo")
    assert vaulted() == 0
    time.sleep(0.01)
    shop.risk.decide(RiskEvent(event_id="z2", kind="order", user_id="zoe", amount=5.0, ts_ms=int(time.time() * 1000)))
    assert vaulted() == 1


def test_a_rotation_stopped_before_its_transaction_leaves_a_shop_that_opens_and_reuses_its_key(shop, monkeypatch):
    """The new key is saved before the database transaction; a run that stopped there changed no row, so
    the shop opens as before, and each rerun used to add one more unused key to the key file."""
    _seed(shop, n=3)
    from shopmind.privacy import rotation
    from shopmind.shop import Shop

    def fail(*args, **kwargs):
        raise RuntimeError("power cut")

    monkeypatch.setattr(rotation, "_without_raw_id", fail)  # inside the transaction: rolled back
    with pytest.raises(RuntimeError):
        shop.rotate_keys("pseudonym", actor="t")
    monkeypatch.undo()
    shop.close()
    saved = load_keyring(shop.settings.key_file).pseudonym
    assert len(saved.keys) == 2 and saved.active == "p1"
    reopened = Shop.open(shop.settings)  # nothing to finish
    assert reopened.export_user("user-1", actor="t")["user_id"] == "user-1"
    result = reopened.rotate_keys("pseudonym", actor="t")
    assert result["active"] == "p2" and sorted(load_keyring(shop.settings.key_file).pseudonym.keys) == ["p1", "p2"]
    reopened.close()
