"""Versioned reference data files (see README.md here)."""
