"""Tables of the relational store (SQLAlchemy Core), shared by SQLite and PostgreSQL.

Users are keyed by pseudonym; no table has a raw user id column. Personal data columns end in `_enc`
and hold AES-GCM envelopes. Times are UTC epoch milliseconds (BIGINT): fast to compare and bulk-load on
both engines, and unambiguous. Alembic migrations (storage/migrations) create these tables; this module
is the reference the code reads and writes through.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

PSEUDONYM = String(32)
ID = String(128)

items = Table(
    "items", metadata,
    Column("item_id", ID, primary_key=True),
    Column("title", Text, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("category", Text, nullable=False, default=""),
    Column("brand", Text, nullable=False, default=""),
    Column("price", Float),
    Column("currency", String(3), nullable=False),
    Column("stock", BigInteger),
    Column("consumable", Boolean, nullable=False, default=False),
    Column("attributes", Text, nullable=False, default="{}"),
    Column("updated_ms", BigInteger, nullable=False),
)

users = Table(
    "users", metadata,
    Column("pseudonym", PSEUDONYM, primary_key=True),
    Column("consent_personalization", Boolean),
    Column("consent_advertising", Boolean),
    Column("consent_analytics", Boolean),
    Column("country", String(2)),
    Column("age_band", String(20)),
    Column("signup_ms", BigInteger),
    Column("attributes", Text, nullable=False, default="{}"),
    Column("email_enc", Text),
    Column("phone_enc", Text),
    Column("address_enc", Text),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

# The only place a raw user id is kept, encrypted, so exports and pseudonym-key rotation can recover it.
identity_vault = Table(
    "identity_vault", metadata,
    Column("pseudonym", PSEUDONYM, primary_key=True),
    Column("raw_id_enc", Text, nullable=False),
    Column("pseudonym_key_id", String(16), nullable=False),
)

events = Table(
    "events", metadata,
    Column("event_id", ID, primary_key=True),
    Column("user_pseudonym", PSEUDONYM),
    Column("session_pseudonym", PSEUDONYM),
    Column("type", String(20), nullable=False),
    Column("item_id", ID),
    Column("query", Text),
    Column("price", Float),
    Column("quantity", Integer),
    Column("rating", Float),
    Column("device", String(32)),
    Column("country", String(2)),
    Column("ts_ms", BigInteger, nullable=False),
    Column("ad_id", ID),
    Column("campaign_id", ID),
    Column("ingested_ms", BigInteger, nullable=False),
    Index("ix_events_user_ts", "user_pseudonym", "ts_ms"),
    Index("ix_events_session", "session_pseudonym"),
    Index("ix_events_ts", "ts_ms"),
)

orders = Table(
    "orders", metadata,
    Column("order_id", ID, primary_key=True),
    Column("user_pseudonym", PSEUDONYM, nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    Column("amount", Float, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("items", Text, nullable=False, default="[]"),
    Column("shipping_country", String(2)),
    Column("ip_country", String(2)),
    Column("device_token", PSEUDONYM),
    Column("instrument_token", PSEUDONYM),
    Column("label_fraud", Boolean),
    Column("fraud_pattern", String(64)),
    Column("ingested_ms", BigInteger, nullable=False),
    Index("ix_orders_user_ts", "user_pseudonym", "ts_ms"),
)

payments = Table(
    "payments", metadata,
    Column("payment_id", ID, primary_key=True),
    Column("order_id", ID),
    Column("user_pseudonym", PSEUDONYM),
    Column("ts_ms", BigInteger, nullable=False),
    Column("amount", Float, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("instrument_token", PSEUDONYM),
    Column("method", String(32)),
    Column("status", String(32)),
    Column("label_fraud", Boolean),
    Column("fraud_pattern", String(64)),
    Column("ingested_ms", BigInteger, nullable=False),
    Index("ix_payments_user_ts", "user_pseudonym", "ts_ms"),
)

api_keys = Table(
    "api_keys", metadata,
    Column("key_id", String(16), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("key_hash", String(64), nullable=False),
    Column("scopes", String(200), nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("revoked", Boolean, nullable=False, default=False),
)

audit_log = Table(
    "audit_log", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("ts_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("action", String(64), nullable=False),
    Column("subject_pseudonym", PSEUDONYM),
    Column("detail", Text, nullable=False, default="{}"),
    Index("ix_audit_subject", "subject_pseudonym"),
)

erasure_receipts = Table(
    "erasure_receipts", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("pseudonym", PSEUDONYM, nullable=False),
    Column("erased_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("removed", Text, nullable=False),
    Index("ix_erasure_pseudonym", "pseudonym"),
)

# Differentially private releases, one row per report, per purpose: the privacy budget is the sum of
# `epsilon`. `seq` numbers a purpose's releases 1, 2, ...; the unique (purpose, seq) pair is what stops two
# concurrent releases from both spending the last of a budget (privacy/ledger.py). No personal data: no
# pseudonym, no group values from the data, so erasure does not need to reach it.
privacy_ledger = Table(
    "privacy_ledger", metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("purpose", String(32), nullable=False),
    Column("seq", Integer, nullable=False),
    Column("epsilon", Float, nullable=False),
    Column("delta", Float, nullable=False),
    Column("spent_epsilon", Float, nullable=False),
    Column("spent_delta", Float, nullable=False),
    Column("query", Text, nullable=False),
    Column("actor", String(64), nullable=False),
    Column("ts_ms", BigInteger, nullable=False),
    UniqueConstraint("purpose", "seq", name="uq_privacy_ledger_purpose_seq"),
)

# Risk control (shopmind/risk). Rules, lists and thresholds are versioned data: a change inserts a new
# row, and audit_log says who changed what from what to what. Decisions are written before the response.
AUTO_ID = BigInteger().with_variant(Integer, "sqlite")

risk_rules = Table(
    "risk_rules", metadata,
    Column("id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("rule_id", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("expression", Text, nullable=False),
    Column("action", String(16), nullable=False),
    Column("weight", Float, nullable=False),
    Column("mode", String(8), nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("active", Boolean, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    UniqueConstraint("rule_id", "version", name="uq_risk_rules_rule_version"),
)

# List entries are keyed hashes (never the raw card, device, e-mail or IP); one list holds one kind.
risk_list_entries = Table(
    "risk_list_entries", metadata,
    Column("list_name", String(64), primary_key=True),
    Column("token", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("added_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
)

risk_thresholds = Table(
    "risk_thresholds", metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("review", Float, nullable=False),
    Column("block", Float, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    # JSON {"login": [review, block], ...}: pairs for event kinds that differ from the shop-wide one
    Column("by_kind", Text),
)

risk_decisions = Table(
    "risk_decisions", metadata,
    Column("decision_id", String(32), primary_key=True),
    Column("event_id", ID, nullable=False),
    Column("kind", String(16), nullable=False),
    Column("user_pseudonym", PSEUDONYM),
    Column("ts_ms", BigInteger, nullable=False),
    Column("decided_ms", BigInteger, nullable=False),
    Column("decision", String(16), nullable=False),
    Column("score", Float, nullable=False),
    Column("model_score", Float),
    Column("model_version", String(64)),
    Column("rules_version", Integer, nullable=False),
    Column("amount", Float, nullable=False),
    Column("rules", Text, nullable=False),          # JSON: fired rules, shadow rules, failed rules
    Column("features", Text, nullable=False),       # JSON: the point-in-time features the model saw
    Column("latency_us", Integer, nullable=False),
    Index("ix_risk_decisions_event", "event_id"),
    Index("ix_risk_decisions_user", "user_pseudonym"),
    Index("ix_risk_decisions_ts", "ts_ms"),
)

# Labels arrive late (chargebacks, analyst verdicts) and can change (a verdict, then a chargeback); rows are
# only appended. `labelled_ms` is when shopmind learned each, which is what training cut-offs compare
# against: the label as known at time T is the latest row with labelled_ms <= T.
risk_labels = Table(
    "risk_labels", metadata,
    Column("id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("event_id", ID, nullable=False),
    Column("user_pseudonym", PSEUDONYM),
    Column("fraud", Boolean, nullable=False),
    Column("source", String(16), nullable=False),
    Column("labelled_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
    Index("ix_risk_labels_user", "user_pseudonym"),
    Index("ix_risk_labels_event", "event_id"),
)

risk_cases = Table(
    "risk_cases", metadata,
    Column("case_id", String(32), primary_key=True),
    Column("decision_id", String(32), nullable=False),
    Column("event_id", ID, nullable=False),
    Column("user_pseudonym", PSEUDONYM),
    Column("status", String(16), nullable=False),   # open, fraud, legitimate
    Column("opened_ms", BigInteger, nullable=False),
    Column("resolved_ms", BigInteger),
    Column("resolved_by", String(64)),
    Index("ix_risk_cases_status", "status"),
    Index("ix_risk_cases_user", "user_pseudonym"),
)

risk_accounts = Table(
    "risk_accounts", metadata,
    Column("pseudonym", PSEUDONYM, primary_key=True),
    Column("frozen", Boolean, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("actor", String(64), nullable=False),
)

# Alert outbox: raised alerts wait here until every webhook took them (retried with backoff). Aggregates
# only: rule ids, counts and rates, no pseudonym.
risk_alerts = Table(
    "risk_alerts", metadata,
    Column("id", AUTO_ID, primary_key=True, autoincrement=True),
    Column("created_ms", BigInteger, nullable=False),
    Column("payload", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_ms", BigInteger, nullable=False),
    Column("delivered_ms", BigInteger),
    Column("last_error", String(64)),
    # kind:rule:clock window. Unique, so API workers that check at the same time raise one alert, not one each.
    Column("dedup_key", String(128)),
    # JSON list of fingerprints of the webhooks that accepted it, so a retry posts only to the ones that failed
    Column("delivered_to", Text),
    Index("ix_risk_alerts_dedup", "dedup_key", unique=True),
)

# Tables that hold rows about a user, with the column that names them: erasure and export walk this.
SUBJECT_TABLES: dict[str, str] = {
    "users": "pseudonym",
    "identity_vault": "pseudonym",
    "events": "user_pseudonym",
    "orders": "user_pseudonym",
    "payments": "user_pseudonym",
    "risk_decisions": "user_pseudonym",
    "risk_labels": "user_pseudonym",
    "risk_cases": "user_pseudonym",
    "risk_accounts": "pseudonym",
}
# Kept after erasure on purpose, with the pseudonym only: proof that the erasure happened and who read what.
ACCOUNTABILITY_TABLES: dict[str, str] = {"erasure_receipts": "pseudonym", "audit_log": "subject_pseudonym"}
