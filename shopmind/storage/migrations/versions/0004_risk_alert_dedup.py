"""risk alerts: one per rule and window across API workers

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 22:20:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Migration 0003 was edited after its first commit (2026-12-01, 19:10 to 19:21) to add this table: a
    # database made in that window is at 0003 without it. Created here as 0003 creates it now; a database
    # that has it is not touched. (0007 repairs the other edit, to risk_labels.)
    if not sa.inspect(op.get_bind()).has_table('risk_alerts'):
        op.create_table('risk_alerts',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('created_ms', sa.BigInteger(), nullable=False),
        sa.Column('payload', sa.Text(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_ms', sa.BigInteger(), nullable=False),
        sa.Column('delivered_ms', sa.BigInteger(), nullable=True),
        sa.Column('last_error', sa.String(length=64), nullable=True),
        sa.PrimaryKeyConstraint('id')
        )
    with op.batch_alter_table('risk_alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedup_key', sa.String(length=128), nullable=True))
        batch_op.create_index('ix_risk_alerts_dedup', ['dedup_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('risk_alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_risk_alerts_dedup')
        batch_op.drop_column('dedup_key')
