"""The dialect-specific INSERT that supports ON CONFLICT (PostgreSQL and SQLite)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(db: Session) -> Callable[[Table], postgresql.Insert | sqlite.Insert]:
    """Return ``insert()`` of the session's dialect, the one with ``on_conflict_do_*``.

    Args:
        db: The caller's session.

    Returns:
        ``sqlalchemy.dialects.postgresql.insert`` or ``sqlalchemy.dialects.sqlite.insert``.

    Raises:
        NotImplementedError: For a database other than PostgreSQL or SQLite.
    """
    name = db.get_bind().dialect.name
    if name == "postgresql":
        return postgresql.insert
    if name == "sqlite":
        return sqlite.insert
    raise NotImplementedError(f"the catalog supports PostgreSQL and SQLite, not {name}")
