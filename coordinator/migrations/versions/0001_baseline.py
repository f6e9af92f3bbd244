"""Baseline: the coordinator's schema as ``create_all`` made it before migrations existed.

Revision ID: 0001
Revises: (none)
Databases created by that code have these tables without a version table: they are stamped
at this revision, not re-created (see ``coordinator._schema``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('enrolment_tokens',
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('node_id', sa.String(length=63), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('used_by', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    op.create_table('nodes',
    sa.Column('node_id', sa.String(length=63), nullable=False),
    sa.Column('display_name', sa.String(), nullable=False),
    sa.Column('public_key', sa.String(), nullable=False),
    sa.Column('key_id', sa.String(length=16), nullable=False),
    sa.Column('transport', sa.String(), nullable=False),
    sa.Column('url', sa.String(), nullable=True),
    sa.Column('access_token', sa.String(), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('node_id')
    )
    op.create_table('nonces',
    sa.Column('sender', sa.String(length=63), nullable=False),
    sa.Column('nonce', sa.String(length=32), nullable=False),
    sa.Column('stamped_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sender', 'nonce')
    )
    op.create_table('queries',
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.Column('purpose', sa.String(), nullable=False),
    sa.Column('requester', sa.String(), nullable=False),
    sa.Column('tier', sa.String(), nullable=False),
    sa.Column('status', sa.String(), nullable=False),
    sa.Column('quorum', sa.Integer(), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('query_json', sa.Text(), nullable=False),
    sa.Column('result_json', sa.Text(), nullable=True),
    sa.Column('error', sa.String(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('query_id')
    )
    op.create_table('jobs',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.Column('node_id', sa.String(length=63), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('message', sa.String(), nullable=True),
    sa.Column('refusal_reason', sa.String(), nullable=True),
    sa.Column('signed_answer_json', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['query_id'], ['queries.query_id'], ),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_node_state', ['node_id', 'state'], unique=False)
        batch_op.create_index(batch_op.f('ix_jobs_query_id'), ['query_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_query_id'))
        batch_op.drop_index('ix_jobs_node_state')

    op.drop_table('jobs')
    op.drop_table('queries')
    op.drop_table('nonces')
    op.drop_table('nodes')
    op.drop_table('enrolment_tokens')
