"""Engines and sessions for the catalog database, PostgreSQL or SQLite.

``make_sessionmaker(database_url)`` is all a caller needs; it frames its work with
``with sessions.begin() as db:`` (or ``with transaction(sessions) as db:``, which also
translates connection failures) and passes ``db`` to the functions of ``catalog``.

SQLite is set up for several processes sharing one file: write-ahead logging so that
readers never block the writer, a busy timeout instead of immediate "database is locked"
errors, enforced foreign keys, and ``BEGIN IMMEDIATE`` for every transaction so that a
transaction that reads and then writes cannot fail half-way when another one wrote first.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from catalog.errors import DatabaseUnavailable, SchemaMismatch

logger = logging.getLogger(__name__)

#: Milliseconds an SQLite connection waits for a lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000
#: Seconds PostgreSQL connection attempts wait before failing.
POSTGRES_CONNECT_TIMEOUT_S = 10
#: Path of the default SQLite catalog, relative to the output folder of a local run.
SQLITE_CATALOG_PATH = Path(".panchro") / "catalog.sqlite3"
#: Name under which catalog connections appear in PostgreSQL's pg_stat_activity.
APPLICATION_NAME = "panchro"


def sqlite_url_for(dest_dir: str | Path) -> str:
    """Return the URL of the default SQLite catalog kept inside a local output folder.

    Args:
        dest_dir: The local output folder of a run.

    Returns:
        An absolute ``sqlite:////...`` URL of ``<dest_dir>/.panchro/catalog.sqlite3``.
    """
    path = Path(dest_dir).expanduser().resolve() / SQLITE_CATALOG_PATH
    return URL.create("sqlite", database=str(path)).render_as_string(hide_password=False)


def _is_memory_database(url: URL) -> bool:
    return url.database in (None, "", ":memory:") or url.query.get("mode") == "memory"


def _configure_sqlite_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    # Let SQLAlchemy emit BEGIN itself (see _begin_immediate) instead of the driver's
    # legacy transaction handling, which starts no transaction for SELECT statements.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS:d}")
        # Durable at every checkpoint, and much faster than FULL in WAL mode.
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _configure_memory_connection(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


def _begin_immediate(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str | URL, *, echo: bool = False) -> Engine:
    """Create an engine for the catalog database.

    Args:
        url: A SQLAlchemy URL: ``postgresql+psycopg://...`` or ``sqlite:///path``. The
            parent folder of an SQLite file is created if it is missing.
        echo: Log every SQL statement (for debugging).

    Returns:
        A configured engine; connections are opened lazily.

    Raises:
        DatabaseUnavailable: If the parent folder of an SQLite file cannot be created.
    """
    parsed = make_url(url)
    kwargs: dict[str, Any] = {"echo": echo}
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        memory = _is_memory_database(parsed)
        if memory:
            # One shared connection: every new connection would see another empty database.
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
        else:
            assert parsed.database is not None
            folder = Path(parsed.database).expanduser().parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise DatabaseUnavailable(
                    f"cannot create the folder of the SQLite catalog {folder}: {exc}"
                ) from exc
        engine = create_engine(parsed, **kwargs)
        configure = _configure_memory_connection if memory else _configure_sqlite_connection
        event.listen(engine, "connect", configure)
        event.listen(engine, "begin", _begin_immediate)
    else:
        if backend == "postgresql":
            kwargs["connect_args"] = {
                "connect_timeout": POSTGRES_CONNECT_TIMEOUT_S,
                "application_name": APPLICATION_NAME,
            }
        engine = create_engine(parsed, pool_pre_ping=True, **kwargs)
    logger.debug("catalog engine for %s", parsed.render_as_string(hide_password=True))
    return engine


def make_sessionmaker(url_or_engine: str | URL | Engine) -> sessionmaker[Session]:
    """Create the session factory that callers frame their transactions with.

    Objects stay usable after commit (``expire_on_commit=False``), so a caller may read
    the rows a query returned after its transaction ended without another round trip.

    Args:
        url_or_engine: A database URL, or an engine made by ``make_engine()``.

    Returns:
        A ``sessionmaker``; use it as ``with sessions.begin() as db: ...``.
    """
    engine = url_or_engine if isinstance(url_or_engine, Engine) else make_engine(url_or_engine)
    return sessionmaker(engine, expire_on_commit=False)


def _missing_table(exc: DBAPIError) -> bool:
    # SQLite reports a missing table as an OperationalError, PostgreSQL as SQLSTATE 42P01.
    return "no such table" in str(exc.orig) or getattr(exc.orig, "sqlstate", None) == "42P01"


@contextmanager
def database_errors() -> Iterator[None]:
    """Translate database failures inside the block into catalog errors.

    Usable as a context manager or as a decorator. Failures that may pass when retried
    (SQLAlchemy's ``OperationalError`` and ``InterfaceError``: refused or dropped
    connections, lock timeouts, deadlocks) become ``DatabaseUnavailable``; a missing
    catalog table becomes ``SchemaMismatch``. Integrity and programming errors
    propagate unchanged.

    Yields:
        Nothing.

    Raises:
        DatabaseUnavailable: If the block failed in a way that may pass when retried.
        SchemaMismatch: If the database has no catalog schema (never upgraded).
    """
    try:
        yield
    except (OperationalError, InterfaceError, ProgrammingError) as exc:
        if _missing_table(exc):
            raise SchemaMismatch(
                f"the catalog schema is missing ({exc.orig}); run `panchro db upgrade`"
            ) from exc
        if isinstance(exc, ProgrammingError):
            raise
        raise DatabaseUnavailable(f"catalog database unavailable: {exc.orig}") from exc


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """Open a session in a transaction, commit it on success and roll back on error.

    Args:
        sessions: The factory from ``make_sessionmaker()``.

    Yields:
        The session; pass it to the catalog functions.

    Raises:
        DatabaseUnavailable: If connecting, a statement or the commit fails for a
            reason that may pass when retried.
        SchemaMismatch: If the database has no catalog schema.
    """
    with database_errors(), sessions.begin() as db:
        yield db
