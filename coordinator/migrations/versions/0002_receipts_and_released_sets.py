"""Ledger receipts from nodes, the differencing guard's released sets, queries' participants.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('receipts',
    sa.Column('node_id', sa.String(length=63), nullable=False),
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.Column('job_id', sa.String(length=32), nullable=True),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.Column('receipt_json', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('node_id', 'seq')
    )
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_receipts_query_id'), ['query_id'], unique=False)
    op.create_table('released_sets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cell_hash', sa.String(length=64), nullable=False),
    sa.Column('members_hash', sa.String(length=64), nullable=False),
    sa.Column('members', sa.Text(), nullable=False),
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('released_sets', schema=None) as batch_op:
        batch_op.create_index('ix_released_sets_cell', ['cell_hash'], unique=False)
    with op.batch_alter_table('queries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('participants', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('queries', schema=None) as batch_op:
        batch_op.drop_column('participants')
    with op.batch_alter_table('released_sets', schema=None) as batch_op:
        batch_op.drop_index('ix_released_sets_cell')
    op.drop_table('released_sets')
    with op.batch_alter_table('receipts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_receipts_query_id'))
    op.drop_table('receipts')
