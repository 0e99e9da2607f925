"""risk labels: repair databases made before 0003 gave labels their own id

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 23:45:00

Migration 0003 was edited after its first commit (2026-12-01, 19:10 to 19:58): risk_labels, keyed by
event_id (one label per event, overwritten), became append-only with an `id` key and an index on
event_id. A database made in that window is stamped 0003 with the old table, and export and risk
training failed on it ("no such column: risk_labels.id"). The table is rebuilt with its rows, oldest
label first; a database that has the column is not touched.
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

COLUMNS = "event_id, user_pseudonym, fraud, source, labelled_ms, actor"


def upgrade() -> None:
    bind = op.get_bind()
    if 'id' in {c['name'] for c in sa.inspect(bind).get_columns('risk_labels')}:
        return
    op.drop_index('ix_risk_labels_user', table_name='risk_labels')
    op.rename_table('risk_labels', 'risk_labels_before_0007')
    if bind.dialect.name == 'postgresql':  # the old key's index would take the new table's key's name
        op.execute('ALTER TABLE risk_labels_before_0007 RENAME CONSTRAINT risk_labels_pkey TO risk_labels_before_0007_pkey')
    op.create_table('risk_labels',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=128), nullable=False),
    sa.Column('user_pseudonym', sa.String(length=32), nullable=True),
    sa.Column('fraud', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('labelled_ms', sa.BigInteger(), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.execute(f'INSERT INTO risk_labels ({COLUMNS}) SELECT {COLUMNS} FROM risk_labels_before_0007 '
               'ORDER BY labelled_ms, event_id')
    op.drop_table('risk_labels_before_0007')
    with op.batch_alter_table('risk_labels', schema=None) as batch_op:
        batch_op.create_index('ix_risk_labels_event', ['event_id'], unique=False)
        batch_op.create_index('ix_risk_labels_user', ['user_pseudonym'], unique=False)


def downgrade() -> None:
    pass  # the repaired table is what 0003 makes today: nothing to undo
