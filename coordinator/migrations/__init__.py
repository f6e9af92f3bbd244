"""Alembic migrations of the coordinator's database (see docs/operations.md, "Upgrades").

``coordinator._schema.upgrade_to_head`` runs them at start-up; developers add a revision with::

    .venv/bin/alembic -c coordinator/migrations/alembic.ini revision --autogenerate -m "what"
"""
