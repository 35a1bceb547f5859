"""Fixtures for the scheduler tests: a migrated catalog, a Celery app on a real Redis.

Tests that take ``database_url`` (or ``sessions``) run once on SQLite and once on
PostgreSQL; ``postgres_sessions`` is for the tests that need PostgreSQL's concurrency.
The schema always comes from the Alembic revisions.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from catalog import make_engine, make_sessionmaker
from migrations import upgrade
from workers.app import create_app

#: Tables emptied between PostgreSQL tests, dependants first.
TABLES = ("attempts", "images", "collections")


@pytest.fixture(scope="session")
def scheduler_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite catalog migrated to head, copied by each test."""
    path = tmp_path_factory.mktemp("scheduler-catalog") / "catalog.sqlite3"
    upgrade(make_url(f"sqlite:///{path}").render_as_string())
    return path


@pytest.fixture(scope="session")
def scheduler_postgres_url(postgres_database_factory: Callable[[], str]) -> str:
    """A PostgreSQL catalog migrated to head, shared by the tests and emptied by each."""
    url = postgres_database_factory()
    upgrade(url)
    return url


def _empty_postgres(url: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, migrated catalog; the test runs once per database."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("scheduler_sqlite_template")
        path = tmp_path / "catalog.sqlite3"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("scheduler_postgres_url")
    _empty_postgres(url)
    return url


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    """Session factory of the test's catalog."""
    factory = make_sessionmaker(database_url)
    yield factory
    bind = factory.kw["bind"]
    bind.dispose()


@pytest.fixture
def postgres_catalog_url(scheduler_postgres_url: str) -> str:
    """URL of the emptied PostgreSQL catalog, for tests that need real concurrency."""
    _empty_postgres(scheduler_postgres_url)
    return scheduler_postgres_url


@pytest.fixture
def celery_app(redis_url: str) -> Iterator[Any]:
    """The project's Celery app on the test's Redis database; publishing is not retried."""
    app = create_app(broker_url=redis_url, task_publish_retry=False)
    yield app
    app.close()
