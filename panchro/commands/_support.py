"""Helpers shared by the job commands: opening the catalog, one-line errors, exit codes.

Every job command reaches the catalog through :func:`open_catalog`. It checks first that the
database holds the schema this version of panchro expects, so that a forgotten
``panchro db upgrade`` is reported as such, never as a traceback about a missing table.

Only ``panchro submit`` on SQLite creates or upgrades the schema by itself (``create=True``):
an SQLite catalog is a private file of one machine, so creating it where the user asked for
it is what they want. A PostgreSQL catalog is shared by a cluster; its schema changes only
when an operator runs ``panchro db upgrade``, never as a side effect of a submit that might
race other submits or run with a role that may not alter tables.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from panchro.cli_support import fail_on

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

#: Exit status of a command stopped with Ctrl-C (128 + SIGINT, as shells report it).
INTERRUPTED_EXIT = 130
#: What the user is told to run when the schema is missing or old.
UPGRADE_HINT = "run `panchro db upgrade` first"


def _sqlite_file(url: str) -> Path | None:
    """Return the file of an SQLite URL; None for other databases and in-memory SQLite."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    if parsed.database in (None, "", ":memory:") or parsed.query.get("mode") == "memory":
        return None
    return Path(parsed.database).expanduser()


def _check_schema(url: str, *, create: bool) -> None:
    """Make sure the catalog schema is at head, upgrading it when ``create`` allows."""
    from migrations.schema import HEAD_REVISION, current_revision
    from panchro.settings import redact_url

    wanted = HEAD_REVISION
    found = current_revision(url)
    if found == wanted:
        return
    if create and _sqlite_file(url) is not None:
        from alembic.util.exc import CommandError

        from migrations.runner import upgrade

        logger.info("upgrading the SQLite catalog %s from %s to %s", redact_url(url), found, wanted)
        try:
            upgrade(url)
        except CommandError as exc:
            raise click.ClickException(
                f"cannot upgrade the catalog at {redact_url(url)}: {exc} "
                "(was it written by a newer panchro?)"
            ) from exc
        return
    if found is None:
        raise click.ClickException(
            f"the catalog database {redact_url(url)} has no panchro schema: {UPGRADE_HINT}"
        )
    raise click.ClickException(
        f"the catalog database {redact_url(url)} is at schema revision {found}, this panchro "
        f"needs {wanted}: {UPGRADE_HINT} (or upgrade panchro if the database is newer)"
    )


@contextmanager
def open_catalog(database_url: str, *, create: bool = False) -> Iterator[sessionmaker[Session]]:
    """Open the catalog for one command and close its connections afterwards.

    Args:
        database_url: SQLAlchemy URL of the catalog.
        create: Create or upgrade the schema of an SQLite catalog instead of failing;
            a PostgreSQL catalog is never changed here.

    Yields:
        The session factory; frame each unit of work with ``catalog.transaction()``.

    Raises:
        click.ClickException: If an SQLite file is missing (and ``create`` is false), the
            schema is missing or not at the newest revision, or the database cannot be
            reached.
    """
    from catalog.engine import make_engine, make_sessionmaker

    sqlite_file = _sqlite_file(database_url)
    # Connecting would leave an empty file behind; say what is wrong instead.
    if sqlite_file is not None and not create and not sqlite_file.exists():
        raise click.ClickException(
            f"no catalog database at {sqlite_file}: {UPGRADE_HINT}, or point "
            "--database-url (PANCHRO_DATABASE_URL) at the catalog"
        )
    with fail_on("opening the catalog"):
        _check_schema(database_url, create=create)
        engine = make_engine(database_url)
    try:
        yield make_sessionmaker(engine)
    finally:
        engine.dispose()
