"""Fixtures shared by the command tests: a migrated PostgreSQL catalog, emptied per test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from PIL import Image as PILImage
from sqlalchemy import text
from submit_helpers import IMAGES

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


@pytest.fixture
def local_model_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No configured weights or catalog, fp32 on the CPU with one torch thread."""
    import torch

    monkeypatch.delenv("PANCHRO_WEIGHTS", raising=False)
    monkeypatch.delenv("PANCHRO_DATABASE_URL", raising=False)
    monkeypatch.setenv("PANCHRO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("PANCHRO_DEVICE", "cpu")
    monkeypatch.setenv("PANCHRO_PRECISION", "fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# The fixtures below serve the tests of ``panchro submit`` and ``panchro scheduler``; a
# module that needs another catalog (test_jobs.py) defines its own ``catalog_url``.


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A catalog URL: a new SQLite file (no schema yet), or a migrated, empty PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'catalog.sqlite3'}"
    url: str = request.getfixturevalue("empty_postgres_catalog")
    return url


@pytest.fixture(scope="module")
def schemaless_postgres(postgres_database_factory: Callable[[], str]) -> str:
    """URL of an empty PostgreSQL database that was never migrated."""
    return postgres_database_factory()


@pytest.fixture
def scans(tmp_path: Path) -> Path:
    """A small source folder: four greyscale PNGs, a text file and a hidden file."""
    root = tmp_path / "scans"
    for number, relative in enumerate(IMAGES):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        PILImage.new("L", (24, 16), 40 * number).save(path)
    (root / "notes.txt").write_text("scanned in 1998\n")
    (root / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    return root


@pytest.fixture
def broker(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test's (emptied) Redis database."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
