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
    with op.batch_alter_table('risk_alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('dedup_key', sa.String(length=128), nullable=True))
        batch_op.create_index('ix_risk_alerts_dedup', ['dedup_key'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('risk_alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_risk_alerts_dedup')
        batch_op.drop_column('dedup_key')
