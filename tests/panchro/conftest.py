"""Fixtures shared by the command tests: a migrated PostgreSQL catalog, emptied per test."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import text

from catalog import make_engine
from migrations.runner import upgrade


@pytest.fixture(scope="session")
def postgres_catalog(postgres_database_factory: Callable[[], str]) -> str:
    """A PostgreSQL catalog migrated to head, shared by the session."""
    url = postgres_database_factory()
    upgrade(url)
    return url


@pytest.fixture
def empty_postgres_catalog(postgres_catalog: str) -> str:
    """The migrated PostgreSQL catalog with every row removed, for one test."""
    engine = make_engine(postgres_catalog)
    try:
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE attempts, images, collections RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return postgres_catalog
