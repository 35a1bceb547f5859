"""Fixtures for the catalog tests: a migrated database on SQLite and on PostgreSQL.

Every catalog test that takes ``database_url`` (or ``sessions``) runs twice, once per
database. The schema always comes from the Alembic revisions: it is migrated once per
session and backend, then each test gets an empty copy (a copied SQLite file, or the
PostgreSQL tables truncated).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from catalog_rows import scanned
from sqlalchemy import Engine, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from catalog.engine import make_engine, make_sessionmaker
from catalog.models import Image, ImageStatus
from catalog.registration import register_images
from catalog.submission import create_or_get_collection
from migrations.runner import upgrade

#: Tables emptied between PostgreSQL tests, dependants first.
TABLES = ("attempts", "images", "collections")


@pytest.fixture(scope="session")
def migrated_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file migrated to head, copied by each test."""
    path = tmp_path_factory.mktemp("catalog-template") / "catalog.sqlite3"
    upgrade(make_url(f"sqlite:///{path}").render_as_string())
    assert not Path(f"{path}-wal").exists(), "the template must be checkpointed"
    return path


@pytest.fixture(scope="session")
def migrated_postgres_url(postgres_database_factory: Callable[[], str]) -> str:
    """A PostgreSQL database migrated to head, shared by the tests and truncated by each."""
    url = postgres_database_factory()
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, migrated catalog database; the test runs once per backend."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("migrated_sqlite_template")
        path = tmp_path / "catalog.sqlite3"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("migrated_postgres_url")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()
    return url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """Engine of the test's database, disposed after the test."""
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    """Session factory of the test's database."""
    return make_sessionmaker(engine)


@pytest.fixture
def is_postgres(database_url: str) -> bool:
    """Whether this run of the test is the PostgreSQL one."""
    return database_url.startswith("postgresql")


@pytest.fixture
def collection_id(sessions: sessionmaker[Session]) -> int:
    """Id of a collection named "scans" with no images."""
    with sessions.begin() as db:
        collection, _ = create_or_get_collection(db, "scans", "s3://scans", "s3://colour")
        return collection.id


@pytest.fixture
def image_ids(sessions: sessionmaker[Session], collection_id: int) -> list[int]:
    """Ids of five pending images of the "scans" collection, in scan order."""
    with sessions.begin() as db:
        register_images(db, collection_id, scanned(5))
        return list(db.scalars(select(Image.id).order_by(Image.id)))


@pytest.fixture
def force_status(sessions: sessionmaker[Session]) -> Callable[..., None]:
    """Set images' columns directly, to arrange a state without the transitions."""

    def force(image_ids: list[int] | int, status: ImageStatus, **values: Any) -> None:
        ids = [image_ids] if isinstance(image_ids, int) else image_ids
        with sessions.begin() as db:
            db.execute(
                update(Image)
                .where(Image.id.in_(ids))
                .values(status=status, **values)
                .execution_options(synchronize_session=False)
            )

    return force
