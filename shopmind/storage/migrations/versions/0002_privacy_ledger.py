"""privacy ledger

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('privacy_ledger',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('purpose', sa.String(length=32), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('epsilon', sa.Float(), nullable=False),
    sa.Column('delta', sa.Float(), nullable=False),
    sa.Column('spent_epsilon', sa.Float(), nullable=False),
    sa.Column('spent_delta', sa.Float(), nullable=False),
    sa.Column('query', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.Column('ts_ms', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('purpose', 'seq', name='uq_privacy_ledger_purpose_seq')
    )


def downgrade() -> None:
    op.drop_table('privacy_ledger')
