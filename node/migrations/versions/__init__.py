"""Revisions of the node's schema, oldest first (``down_revision`` chains them)."""
