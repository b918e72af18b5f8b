"""Alembic migrations of the registry schema (packaged, so `modelreg db upgrade` works from a wheel)."""
