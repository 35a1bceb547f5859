"""The Alembic revisions build exactly the schema the catalog models describe."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from catalog.engine import make_engine
from catalog.errors import SchemaMismatch
from migrations.runner import check, current, downgrade, head, upgrade
from migrations.schema import HEAD_REVISION, current_revision

#: Tables the catalog's revisions create.
CATALOG_TABLES = {"collections", "images", "attempts"}


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty database without any schema; the test runs once per backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    factory: Callable[[], str] = request.getfixturevalue("postgres_database_factory")
    return factory()


def _tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return set(inspect(conn).get_table_names())
    finally:
        engine.dispose()


def _execute(url: str, sql: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


def test_upgrade_builds_a_schema_without_drift_from_the_models(empty_url: str) -> None:
    upgrade(empty_url)

    check(empty_url)
    assert current(empty_url) == head()
    assert CATALOG_TABLES <= _tables(empty_url)


def test_upgrade_downgrade_to_base_and_upgrade_again(empty_url: str) -> None:
    upgrade(empty_url)
    downgrade(empty_url, "base")

    assert current(empty_url) is None
    assert not CATALOG_TABLES & _tables(empty_url)

    upgrade(empty_url)
    check(empty_url)


def test_upgrading_twice_changes_nothing(empty_url: str) -> None:
    upgrade(empty_url)
    upgrade(empty_url)

    check(empty_url)


def test_check_refuses_a_database_that_is_not_migrated(empty_url: str) -> None:
    with pytest.raises(SchemaMismatch, match="not up to date"):
        check(empty_url)


@pytest.mark.parametrize(
    "change",
    ["DROP INDEX ix_images_status", "ALTER TABLE images ADD COLUMN stray INTEGER"],
)
def test_check_detects_a_schema_changed_behind_the_revisions_back(
    empty_url: str, change: str
) -> None:
    upgrade(empty_url)
    _execute(empty_url, change)

    with pytest.raises(SchemaMismatch):
        check(empty_url)


def test_revisions_do_not_import_the_models() -> None:
    versions = Path(__file__).resolve().parents[2] / "migrations" / "versions"
    sources = [path.read_text() for path in versions.glob("*.py")]

    assert sources
    assert not [
        source for source in sources if "import catalog" in source or "from catalog" in source
    ]


def test_the_schema_revision_read_without_alembic_is_alembics(empty_url: str) -> None:
    # The CLI checks a catalog's revision without Alembic: the constant must follow the
    # newest file in migrations/versions, and the plain query what Alembic reads.
    assert HEAD_REVISION == head()
    assert current_revision(empty_url) is None
    upgrade(empty_url, "0cfa6004ef8f")
    assert current_revision(empty_url) == current(empty_url) == "0cfa6004ef8f"
    upgrade(empty_url)
    assert current_revision(empty_url) == current(empty_url) == HEAD_REVISION
