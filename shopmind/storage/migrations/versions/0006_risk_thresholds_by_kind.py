"""risk thresholds: a review/block pair per event kind beside the shop-wide one

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('risk_thresholds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('by_kind', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('risk_thresholds', schema=None) as batch_op:
        batch_op.drop_column('by_kind')
