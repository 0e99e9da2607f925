"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 14:47:43.614823
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('scopes', sa.String(length=200), nullable=False),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('key_id')
    )
    op.create_table('audit_log',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('subject_pseudonym', sa.String(length=32), nullable=True),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_subject', ['subject_pseudonym'], unique=False)

    op.create_table('erasure_receipts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('pseudonym', sa.String(length=32), nullable=False),
    sa.Column('erased_ms', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('removed', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('erasure_receipts', schema=None) as batch_op:
        batch_op.create_index('ix_erasure_pseudonym', ['pseudonym'], unique=False)

    op.create_table('events',
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('user_pseudonym', sa.String(length=32), nullable=True),
    sa.Column('session_pseudonym', sa.String(length=32), nullable=True),
    sa.Column('type', sa.String(length=20), nullable=False),
    sa.Column('item_id', sa.String(length=128), nullable=True),
    sa.Column('query', sa.Text(), nullable=True),
    sa.Column('price', sa.Float(), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=True),
    sa.Column('rating', sa.Float(), nullable=True),
    sa.Column('device', sa.String(length=32), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.Column('ad_id', sa.String(length=128), nullable=True),
    sa.Column('campaign_id', sa.String(length=128), nullable=True),
    sa.Column('ingested_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_session', ['session_pseudonym'], unique=False)
        batch_op.create_index('ix_events_ts', ['ts_ms'], unique=False)
        batch_op.create_index('ix_events_user_ts', ['user_pseudonym', 'ts_ms'], unique=False)

    op.create_table('identity_vault',
    sa.Column('pseudonym', sa.String(length=32), nullable=False),
    sa.Column('raw_id_enc', sa.Text(), nullable=False),
    sa.Column('pseudonym_key_id', sa.String(length=16), nullable=False),
    sa.PrimaryKeyConstraint('pseudonym')
    )
    op.create_table('items',
    sa.Column('item_id', sa.String(length=128), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('category', sa.Text(), nullable=False),
    sa.Column('brand', sa.Text(), nullable=False),
    sa.Column('price', sa.Float(), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('stock', sa.BigInteger(), nullable=True),
    sa.Column('consumable', sa.Boolean(), nullable=False),
    sa.Column('attributes', sa.Text(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('item_id')
    )
    op.create_table('orders',
    sa.Column('order_id', sa.String(length=128), nullable=False),
    sa.Column('user_pseudonym', sa.String(length=32), nullable=False),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.Float(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('items', sa.Text(), nullable=False),
    sa.Column('shipping_country', sa.String(length=2), nullable=True),
    sa.Column('ip_country', sa.String(length=2), nullable=True),
    sa.Column('device_token', sa.String(length=32), nullable=True),
    sa.Column('instrument_token', sa.String(length=32), nullable=True),
    sa.Column('label_fraud', sa.Boolean(), nullable=True),
    sa.Column('fraud_pattern', sa.String(length=64), nullable=True),
    sa.Column('ingested_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('order_id')
    )
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.create_index('ix_orders_user_ts', ['user_pseudonym', 'ts_ms'], unique=False)

    op.create_table('payments',
    sa.Column('payment_id', sa.String(length=128), nullable=False),
    sa.Column('order_id', sa.String(length=128), nullable=True),
    sa.Column('user_pseudonym', sa.String(length=32), nullable=True),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.Column('amount', sa.Float(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('instrument_token', sa.String(length=32), nullable=True),
    sa.Column('method', sa.String(length=32), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=True),
    sa.Column('label_fraud', sa.Boolean(), nullable=True),
    sa.Column('fraud_pattern', sa.String(length=64), nullable=True),
    sa.Column('ingested_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('payment_id')
    )
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.create_index('ix_payments_user_ts', ['user_pseudonym', 'ts_ms'], unique=False)

    op.create_table('users',
    sa.Column('pseudonym', sa.String(length=32), nullable=False),
    sa.Column('consent_personalization', sa.Boolean(), nullable=True),
    sa.Column('consent_advertising', sa.Boolean(), nullable=True),
    sa.Column('consent_analytics', sa.Boolean(), nullable=True),
    sa.Column('country', sa.String(length=2), nullable=True),
    sa.Column('age_band', sa.String(length=20), nullable=True),
    sa.Column('signup_ms', sa.BigInteger(), nullable=True),
    sa.Column('attributes', sa.Text(), nullable=False),
    sa.Column('email_enc', sa.Text(), nullable=True),
    sa.Column('phone_enc', sa.Text(), nullable=True),
    sa.Column('address_enc', sa.Text(), nullable=True),
    sa.Column('created_ms', sa.BigInteger(), nullable=False),
    sa.Column('updated_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('pseudonym')
    )


def downgrade() -> None:
    op.drop_table('users')
    with op.batch_alter_table('payments', schema=None) as batch_op:
        batch_op.drop_index('ix_payments_user_ts')

    op.drop_table('payments')
    with op.batch_alter_table('orders', schema=None) as batch_op:
        batch_op.drop_index('ix_orders_user_ts')

    op.drop_table('orders')
    op.drop_table('items')
    op.drop_table('identity_vault')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_user_ts')
        batch_op.drop_index('ix_events_ts')
        batch_op.drop_index('ix_events_session')

    op.drop_table('events')
    with op.batch_alter_table('erasure_receipts', schema=None) as batch_op:
        batch_op.drop_index('ix_erasure_pseudonym')

    op.drop_table('erasure_receipts')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_subject')

    op.drop_table('audit_log')
    op.drop_table('api_keys')
