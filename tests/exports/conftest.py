"""Fixtures of the export tests: a migrated catalog holding the collection of exports_rows."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from exports_rows import Built, build
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from catalog import make_engine, make_sessionmaker
from migrations.runner import upgrade
from storage import LocalStorage, Storage, StorageOptions


@pytest.fixture(scope="session")
def exports_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite catalog migrated to head, copied by each test."""
    path = tmp_path_factory.mktemp("exports-template") / "catalog.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def exports_postgres_url(postgres_database_factory: Callable[[], str]) -> str:
    """A PostgreSQL catalog migrated to head, emptied by each test that takes it."""
    url = postgres_database_factory()
    upgrade(url)
    return url


@pytest.fixture
def sqlite_url(exports_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of an empty, migrated SQLite catalog of this test."""
    path = tmp_path / "catalog.sqlite3"
    shutil.copyfile(exports_sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest) -> str:
    """URL of an empty, migrated catalog; the test runs once per database."""
    if request.param == "sqlite":
        url: str = request.getfixturevalue("sqlite_url")
        return url
    url = request.getfixturevalue("exports_postgres_url")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE collections RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


def _sessions(url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(url)
    yield make_sessionmaker(engine)
    engine.dispose()


@pytest.fixture
def sessions(catalog_url: str) -> Iterator[sessionmaker[Session]]:
    """Session factory of ``catalog_url`` (SQLite, then PostgreSQL)."""
    yield from _sessions(catalog_url)


@pytest.fixture
def sqlite_sessions(sqlite_url: str) -> Iterator[sessionmaker[Session]]:
    """Session factory of ``sqlite_url``."""
    yield from _sessions(sqlite_url)


@pytest.fixture
def local_files(tmp_path: Path) -> tuple[str, str]:
    """Source and output folders of a local collection (not created yet)."""
    return str(tmp_path / "scans"), str(tmp_path / "colour")


@pytest.fixture
def local_built(sqlite_sessions: sessionmaker[Session], local_files: tuple[str, str]) -> Built:
    """The collection of exports_rows in local folders, catalogued in SQLite."""
    return build(sqlite_sessions, LocalStorage(), *local_files)


@pytest.fixture
def s3_options(s3_endpoint_url: str, s3_credentials: None) -> StorageOptions:
    """How to reach the test's S3 endpoint (moto)."""
    return StorageOptions(endpoint_url=s3_endpoint_url, region="us-east-1", addressing_style="path")


@pytest.fixture
def s3_storage(s3_options: StorageOptions) -> Storage:
    """A backend of the test's S3 endpoint."""
    from storage.s3 import S3Storage

    return S3Storage(s3_options)


@pytest.fixture
def s3_built(sqlite_sessions: sessionmaker[Session], s3_bucket: str, s3_storage: Storage) -> Built:
    """The collection of exports_rows in an S3 bucket, catalogued in SQLite."""
    return build(sqlite_sessions, s3_storage, f"s3://{s3_bucket}/scans", f"s3://{s3_bucket}/colour")
