"""Baseline: the node's schema as ``create_all`` made it before migrations existed.

Revision ID: 0001
Revises: (none)
Databases created by that code have these tables without a version table: they are stamped
at this revision, not re-created (see ``node._schema``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('agent_status',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('coordinator_url', sa.String(), nullable=False),
    sa.Column('connected', sa.Boolean(), nullable=False),
    sa.Column('last_contact_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(), nullable=True),
    sa.Column('consecutive_failures', sa.Integer(), nullable=False),
    sa.Column('next_retry_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('budget_accounts',
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('spent_nano', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('year')
    )
    op.create_table('imports',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('file_name', sa.String(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('mapping_sha256', sa.String(length=64), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('imported_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_imports_sha256'), ['sha256'], unique=True)

    op.create_table('jobs',
    sa.Column('job_id', sa.String(length=32), nullable=False),
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(), nullable=False),
    sa.Column('tier', sa.String(), nullable=False),
    sa.Column('requester', sa.String(), nullable=False),
    sa.Column('purpose', sa.String(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('epsilon', sa.Float(), nullable=False),
    sa.Column('years', sa.String(), nullable=False),
    sa.Column('query_json', sa.Text(), nullable=False),
    sa.Column('deadline', sa.DateTime(timezone=True), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('approval', sa.String(), nullable=False),
    sa.Column('decided_by', sa.String(), nullable=True),
    sa.Column('outcome_reason', sa.String(), nullable=True),
    sa.Column('outcome_message', sa.String(), nullable=True),
    sa.Column('reported_state', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_jobs_query_id'), ['query_id'], unique=False)

    op.create_table('nonces',
    sa.Column('sender', sa.String(length=63), nullable=False),
    sa.Column('nonce', sa.String(length=32), nullable=False),
    sa.Column('stamped_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('sender', 'nonce')
    )
    op.create_table('releases',
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.Column('years', sa.String(), nullable=False),
    sa.Column('epsilon_nano', sa.BigInteger(), nullable=False),
    sa.Column('kind', sa.String(), nullable=False),
    sa.Column('purpose', sa.String(), nullable=False),
    sa.Column('query_json', sa.Text(), nullable=False),
    sa.Column('answer_json', sa.Text(), nullable=False),
    sa.Column('released_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('query_id')
    )
    op.create_table('records',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('import_id', sa.Integer(), nullable=False),
    sa.Column('record_id', sa.String(length=128), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('first_month', sa.Integer(), nullable=False),
    sa.Column('last_month', sa.Integer(), nullable=False),
    sa.Column('commodity', sa.String(length=32), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('flow', sa.String(length=32), nullable=False),
    sa.Column('country', sa.String(length=3), nullable=False),
    sa.Column('partner_country', sa.String(length=3), nullable=True),
    sa.Column('quantity', sa.Float(), nullable=True),
    sa.Column('unit', sa.String(), nullable=True),
    sa.Column('basis', sa.String(), nullable=True),
    sa.Column('grade', sa.Float(), nullable=True),
    sa.Column('price', sa.Float(), nullable=True),
    sa.Column('price_unit', sa.String(), nullable=True),
    sa.Column('contract_type', sa.String(), nullable=True),
    sa.Column('site_id', sa.String(length=128), nullable=True),
    sa.Column('contract_id', sa.String(length=128), nullable=True),
    sa.Column('quantity_t', sa.Float(), nullable=True),
    sa.Column('price_usd_t', sa.Float(), nullable=True),
    sa.Column('contribution_unit', sa.String(length=140), nullable=False),
    sa.ForeignKeyConstraint(['import_id'], ['imports.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('record_id')
    )
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_records_import_id'), ['import_id'], unique=False)
        batch_op.create_index('ix_records_query', ['commodity', 'flow', 'year'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('records', schema=None) as batch_op:
        batch_op.drop_index('ix_records_query')
        batch_op.drop_index(batch_op.f('ix_records_import_id'))

    op.drop_table('records')
    op.drop_table('releases')
    op.drop_table('nonces')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_jobs_query_id'))

    op.drop_table('jobs')
    with op.batch_alter_table('imports', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_imports_sha256'))

    op.drop_table('imports')
    op.drop_table('budget_accounts')
    op.drop_table('agent_status')
