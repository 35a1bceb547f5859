"""Run the catalog's Alembic migrations from code, without an ``alembic.ini``.

``panchro db upgrade`` calls ``upgrade(database_url)``; CI and the tests call
``check(database_url)`` after it to prove that the revisions build exactly the schema the
models describe. A new revision is written with ``revision(database_url, message)``
against a database upgraded to head, then read and fixed by hand.
"""

from __future__ import annotations

import logging
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, make_url

from catalog.engine import database_errors, make_engine
from catalog.errors import SchemaMismatch

logger = logging.getLogger(__name__)

#: Folder holding ``env.py``, ``script.py.mako`` and ``versions/``: this package.
SCRIPT_LOCATION = Path(__file__).resolve().parent


def make_config(database_url: str | None = None) -> Config:
    """Build the Alembic configuration of the catalog in code.

    Args:
        database_url: The database to migrate; None for commands that need none.

    Returns:
        A configuration whose script location is this package.
    """
    # Quiet: Alembic would otherwise print progress to stdout; this module logs instead.
    config = Config(cmd_opts=Namespace(quiet=True, x=None))
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("path_separator", "os")
    if database_url is not None:
        # The option goes through configparser interpolation: "%" must be doubled.
        config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


@contextmanager
def _connected(database_url: str, *, commit: bool) -> Iterator[Config]:
    engine = make_engine(database_url)
    try:
        with database_errors(), engine.connect() as connection:
            config = make_config(database_url)
            config.attributes["connection"] = connection
            with connection.begin() as outer:
                yield config
                if not commit:
                    outer.rollback()
    finally:
        engine.dispose()


def _safe(database_url: str) -> str:
    return make_url(database_url).render_as_string(hide_password=True)


def upgrade(database_url: str, revision: str = "head") -> None:
    """Upgrade the catalog schema, creating it in an empty database.

    Args:
        database_url: The database.
        revision: The target revision; "head" is the newest.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    logger.info("upgrading the catalog at %s to %s", _safe(database_url), revision)
    with _connected(database_url, commit=True) as config:
        command.upgrade(config, revision)


def downgrade(database_url: str, revision: str) -> None:
    """Downgrade the catalog schema; "base" removes every catalog table.

    Args:
        database_url: The database.
        revision: The target revision, or "base", or a relative step such as "-1".

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    logger.warning("downgrading the catalog at %s to %s", _safe(database_url), revision)
    with _connected(database_url, commit=True) as config:
        command.downgrade(config, revision)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def current(database_url: str) -> str | None:
    """Return the revision the database is at.

    Args:
        database_url: The database.

    Returns:
        The revision id, or None for a database without the catalog schema.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    engine = make_engine(database_url)
    try:
        with database_errors(), engine.connect() as connection:
            return _current_revision(connection)
    finally:
        engine.dispose()


def head() -> str:
    """Return the newest revision id shipped with this package.

    Returns:
        The head revision id.
    """
    found = ScriptDirectory.from_config(make_config()).get_current_head()
    assert found is not None, "migrations/versions holds no revision"
    return found


def check(database_url: str) -> None:
    """Check that the database is at head and that its schema matches the models.

    Args:
        database_url: The database.

    Raises:
        SchemaMismatch: If the database is not at head, or autogenerate finds a
            difference between the migrated schema and the models.
        DatabaseUnavailable: If the database cannot be reached.
    """
    with _connected(database_url, commit=False) as config:
        try:
            command.check(config)
        except CommandError as exc:
            raise SchemaMismatch(f"catalog schema differs from the models: {exc}") from exc


def revision(database_url: str, message: str) -> str:
    """Autogenerate a new revision from the difference between the database and models.

    The database must be at head. Read and fix the generated file by hand before
    committing it.

    Args:
        database_url: A database upgraded to head.
        message: What the revision does, in the imperative ("Add images.dpi").

    Returns:
        The path of the new revision file.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    with _connected(database_url, commit=False) as config:
        script = command.revision(config, message=message, autogenerate=True)
    assert script is not None and not isinstance(script, list)
    logger.info("wrote %s", script.path)
    return str(script.path)
