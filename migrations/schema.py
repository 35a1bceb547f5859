"""The catalog's schema revision, read without Alembic.

Every command that opens a catalog first checks that its schema is the one this panchro
was built for; that check runs on each start of ``panchro submit``, before the first
image is queued, so it reads the ``alembic_version`` table with one plain query and
compares it with :data:`HEAD_REVISION` instead of importing Alembic and parsing the
revision files. A test holds :data:`HEAD_REVISION` equal to the newest file in
``versions/``.
"""

from __future__ import annotations

from typing import Final

from sqlalchemy import inspect, text

from catalog.engine import database_errors, make_engine

__all__ = ["HEAD_REVISION", "current_revision"]

#: The newest revision in ``migrations/versions``: what this panchro's catalog code needs.
HEAD_REVISION: Final = "9a2f5c3e8b17"
#: Alembic's table of the revision a database is at.
VERSION_TABLE: Final = "alembic_version"


def current_revision(database_url: str) -> str | None:
    """Return the revision a catalog database is at, as Alembic records it.

    Args:
        database_url: The database.

    Returns:
        The revision id (several, comma-separated, if the database's migrations
        branched), or None for a database without the catalog schema.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    engine = make_engine(database_url)
    try:
        with database_errors(), engine.connect() as connection:
            if not inspect(connection).has_table(VERSION_TABLE):
                return None
            rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).all()
    finally:
        engine.dispose()
    # One row; several only in a database whose migrations branched (named as they are).
    return ",".join(sorted(str(row[0]) for row in rows)) or None
