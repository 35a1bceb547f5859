"""Alembic migrations of the catalog schema; ``catalog.models`` is their source.

The revisions in ``versions/`` are the only way the catalog's tables are created or
changed. ``upgrade(database_url)`` is what ``panchro db upgrade`` runs.
"""

from __future__ import annotations

from migrations.runner import check, current, downgrade, head, make_config, revision, upgrade

__all__ = ["check", "current", "downgrade", "head", "make_config", "revision", "upgrade"]
