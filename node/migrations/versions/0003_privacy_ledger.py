"""Privacy ledger and zCDP accounting: accounts per year and tier, reservations, the
hash-chained ledger, the differencing guard's contributor sets, and jobs' participants.

Revision ID: 0003
Revises: 0002
The pure-epsilon ``budget_accounts`` are carried into ``privacy_accounts`` (tier ``bulk`` for
what synthetic releases spent, ``standardised`` for the rest), so no spend is lost. The
ledger starts empty: releases made before this revision were never signed into a ledger,
and ``dpn audit verify`` reports the ledger from this point on.
"""

from __future__ import annotations

import math

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_NANO = 1_000_000_000


def upgrade() -> None:
    op.create_table('privacy_accounts',
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('epsilon_nano', sa.BigInteger(), nullable=False),
    sa.Column('rho_nano', sa.BigInteger(), nullable=False),
    sa.Column('pure_rho_nano', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('year', 'tier')
    )
    op.create_table('reservations',
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.Column('tier', sa.String(length=32), nullable=False),
    sa.Column('years', sa.String(), nullable=False),
    sa.Column('epsilon_nano', sa.BigInteger(), nullable=False),
    sa.Column('rho_nano', sa.BigInteger(), nullable=False),
    sa.Column('pure_rho_nano', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('query_id')
    )
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_reservations_state'), ['state'], unique=False)
    op.create_table('ledger_entries',
    sa.Column('seq', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.Column('entry_json', sa.Text(), nullable=False),
    sa.Column('recorded_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('seq'),
    sa.UniqueConstraint('query_id')
    )
    op.create_table('ledger_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('entry_hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('contributor_sets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('cell_hash', sa.String(length=64), nullable=False),
    sa.Column('members_hash', sa.String(length=64), nullable=False),
    sa.Column('members', sa.Text(), nullable=False),
    sa.Column('query_id', sa.String(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('contributor_sets', schema=None) as batch_op:
        batch_op.create_index('ix_contributor_sets_cell', ['cell_hash'], unique=False)
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('participants', sa.Text(), nullable=True))
    _carry_spend()
    op.drop_table('budget_accounts')


def _pure_rho(epsilon_nano: int) -> int:
    epsilon = epsilon_nano / _NANO
    return math.ceil(epsilon * epsilon / 2 * _NANO - 1e-6)


def _carry_spend() -> None:
    """Every year's spent epsilon moves to ``privacy_accounts``, split by tier as the releases
    show (synthetic: ``bulk``); the zCDP worth of pure releases is recomputed per release, and
    spend no release explains is kept too (counted as one release, which over-counts)."""
    connection = op.get_bind()
    spent = {int(year): int(nano) for year, nano in connection.execute(
        sa.text("SELECT year, spent_nano FROM budget_accounts"))}
    accounts: dict[tuple[int, str], list[int]] = {}
    for years, epsilon_nano, kind in connection.execute(
            sa.text("SELECT years, epsilon_nano, kind FROM releases")):
        tier = "bulk" if kind == "synthetic" else "standardised"
        for year in (int(y) for y in str(years).split(",") if y):
            totals = accounts.setdefault((year, tier), [0, 0])
            totals[0] += int(epsilon_nano)
            totals[1] += _pure_rho(int(epsilon_nano))
    for year, nano in spent.items():
        explained = sum(t[0] for (y, _), t in accounts.items() if y == year)
        if nano > explained:
            totals = accounts.setdefault((year, "standardised"), [0, 0])
            totals[0] += nano - explained
            totals[1] += _pure_rho(nano - explained)
    table = sa.table('privacy_accounts', sa.column('year', sa.Integer),
                     sa.column('tier', sa.String), sa.column('epsilon_nano', sa.BigInteger),
                     sa.column('rho_nano', sa.BigInteger),
                     sa.column('pure_rho_nano', sa.BigInteger))
    rows = [{"year": year, "tier": tier, "epsilon_nano": eps, "rho_nano": 0,
             "pure_rho_nano": pure_rho} for (year, tier), (eps, pure_rho) in accounts.items()]
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    op.create_table('budget_accounts',
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('spent_nano', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('year')
    )
    op.execute("INSERT INTO budget_accounts (year, spent_nano) "
               "SELECT year, SUM(epsilon_nano) FROM privacy_accounts GROUP BY year")
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('participants')
    op.drop_table('contributor_sets')
    op.drop_table('ledger_head')
    op.drop_table('ledger_entries')
    with op.batch_alter_table('reservations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_reservations_state'))
    op.drop_table('reservations')
    op.drop_table('privacy_accounts')
