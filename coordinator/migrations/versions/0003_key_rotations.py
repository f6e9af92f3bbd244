"""Nodes' accepted key rotations, signed by the replaced key, for peers that pinned it.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('key_rotations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('node_id', sa.String(length=63), nullable=False),
    sa.Column('old_public_key', sa.String(length=100), nullable=False),
    sa.Column('new_public_key', sa.String(length=100), nullable=False),
    sa.Column('rotation_json', sa.Text(), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('key_rotations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_key_rotations_node_id'), ['node_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('key_rotations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_key_rotations_node_id'))
    op.drop_table('key_rotations')
