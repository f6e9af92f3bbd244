"""Alembic migrations of the node's database (see docs/operations.md, "Upgrades").

``node._schema.upgrade_to_head`` runs them at start-up; developers add a revision with::

    .venv/bin/alembic -c node/migrations/alembic.ini revision --autogenerate -m "what"
"""
