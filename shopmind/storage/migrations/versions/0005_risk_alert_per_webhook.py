"""risk alerts: remember which webhooks accepted an alert, so a retry goes only to the ones that failed

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 01:05:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('risk_alerts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivered_to', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('risk_alerts', schema=None) as batch_op:
        batch_op.drop_column('delivered_to')
