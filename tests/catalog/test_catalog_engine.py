"""Engines: SQLite set up for several processes, failures translated, default URL."""

from __future__ import annotations

import socket
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from catalog.engine import make_engine, make_sessionmaker, sqlite_url_for, transaction
from catalog.errors import DatabaseUnavailable, SchemaMismatch
from catalog.models import Collection
from catalog.queries import get_collection


def test_sqlite_url_for_puts_the_catalog_in_a_hidden_folder_of_the_output(
    tmp_path: Path,
) -> None:
    url = sqlite_url_for(tmp_path / "colour")

    assert url == f"sqlite:///{tmp_path}/colour/.panchro/catalog.sqlite3"


def test_make_engine_creates_the_folder_of_an_sqlite_file(tmp_path: Path) -> None:
    url = sqlite_url_for(tmp_path / "new" / "output")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    finally:
        engine.dispose()

    assert (tmp_path / "new" / "output" / ".panchro" / "catalog.sqlite3").is_file()


def test_sqlite_connections_use_wal_foreign_keys_and_a_busy_timeout(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.sqlite3'}")
    try:
        with engine.connect() as conn:
            journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            foreign_keys = conn.exec_driver_sql("PRAGMA foreign_keys").scalar()
            busy_timeout = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
    finally:
        engine.dispose()

    assert (journal, foreign_keys) == ("wal", 1)
    assert busy_timeout and busy_timeout > 0


def test_sqlite_transactions_take_the_write_lock_when_they_begin(tmp_path: Path) -> None:
    path = tmp_path / "catalog.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        with engine.connect() as conn:
            conn.execute(text("SELECT count(*) FROM t"))
            # A raw second connection that refuses to wait sees the lock at once.
            other = sqlite3.connect(path, timeout=0, isolation_level=None)
            try:
                with pytest.raises(sqlite3.OperationalError, match="locked"):
                    other.execute("BEGIN IMMEDIATE")
            finally:
                other.close()
    finally:
        engine.dispose()


def test_in_memory_sqlite_is_one_database_for_every_session() -> None:
    sessions = make_sessionmaker("sqlite://")
    with sessions.begin() as db:
        db.execute(text("CREATE TABLE t (x INTEGER)"))
        db.execute(text("INSERT INTO t VALUES (1)"))
    with sessions.begin() as db:
        assert db.scalar(text("SELECT x FROM t")) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_transaction_translates_an_unreachable_database_into_database_unavailable() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/nowhere"
    sessions = make_sessionmaker(url)

    with pytest.raises(DatabaseUnavailable), transaction(sessions) as db:
        db.execute(text("SELECT 1"))


def test_catalog_functions_translate_an_unreachable_database() -> None:
    sessions = make_sessionmaker(f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/x")

    with pytest.raises(DatabaseUnavailable) as caught, sessions.begin() as db:
        get_collection(db, "anything")

    assert caught.value.__cause__ is not None


def test_transaction_commits_on_success_and_rolls_back_on_error(
    sessions: sessionmaker[Session],
) -> None:
    with transaction(sessions) as db:
        db.add(Collection(name="kept", source="a", output="b"))
    with pytest.raises(RuntimeError), transaction(sessions) as db:
        db.add(Collection(name="dropped", source="a", output="b"))
        db.flush()
        raise RuntimeError("boom")

    with transaction(sessions) as db:
        names = db.scalars(text("SELECT name FROM collections ORDER BY name")).all()

    assert names == ["kept"]


@pytest.fixture(params=["sqlite", "postgresql"])
def unmigrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database that was never upgraded; once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database_factory")
    return factory()


def test_a_database_without_the_catalog_schema_is_reported_as_such(unmigrated_url: str) -> None:
    engine = make_engine(unmigrated_url)
    sessions = make_sessionmaker(engine)
    try:
        with pytest.raises(SchemaMismatch, match="panchro db upgrade"), transaction(sessions) as db:
            get_collection(db, "anything")
    finally:
        engine.dispose()
