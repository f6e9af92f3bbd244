"""Revisions of the coordinator's schema, oldest first (``down_revision`` chains them)."""
