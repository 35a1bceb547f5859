"""Fixtures for the worker tests: a migrated SQLite catalog, folders, and colorizers.

The catalog is an SQLite file migrated by the Alembic revisions once per session and
copied by each test. Colorizers are the real tiny DDColor with random weights (built once
per session) or instant stand-in networks for the tests about control flow. torch is
imported only by the fixtures that need it: some tests here check what a process that
never imported it does.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from launcher_helpers import Workers
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from catalog import make_engine, make_sessionmaker
from migrations import upgrade

if TYPE_CHECKING:
    from ddcolor.pipeline import Colorizer


@pytest.fixture
def one_torch_thread() -> Iterator[None]:
    """Run torch on one thread: on a shared 2-core machine more threads only contend."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def workers_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite catalog migrated to head, copied by each test."""
    path = tmp_path_factory.mktemp("workers-catalog") / "catalog.sqlite3"
    upgrade(make_url(f"sqlite:///{path}").render_as_string())
    return path


@pytest.fixture
def catalog_url(workers_sqlite_template: Path, tmp_path: Path) -> str:
    """URL of a fresh, migrated SQLite catalog."""
    path = tmp_path / "catalog.sqlite3"
    shutil.copyfile(workers_sqlite_template, path)
    return make_url(f"sqlite:///{path}").render_as_string()


@pytest.fixture
def sessions(catalog_url: str) -> Iterator[sessionmaker[Session]]:
    """Session factory of the test's catalog."""
    factory = make_sessionmaker(catalog_url)
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture(scope="module")
def workers_postgres_url(postgres_database_factory: Callable[[], str]) -> str:
    """A PostgreSQL catalog migrated to head, shared by the tests of one module."""
    url = postgres_database_factory()
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_sessions(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[sessionmaker[Session]]:
    """A migrated, empty catalog; a test that takes it runs once per database."""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("workers_sqlite_template")
        shutil.copyfile(template, tmp_path / "catalog.sqlite3")
        url = make_url(f"sqlite:///{tmp_path / 'catalog.sqlite3'}").render_as_string()
    else:
        url = request.getfixturevalue("workers_postgres_url")
        engine = make_engine(url)
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE attempts, images, collections RESTART IDENTITY CASCADE"))
        engine.dispose()
    factory = make_sessionmaker(url)
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The folder of the originals."""
    folder = tmp_path / "scans"
    folder.mkdir()
    return folder


@pytest.fixture
def output(tmp_path: Path) -> Path:
    """The folder of the colorized copies."""
    return tmp_path / "colour"


@pytest.fixture(scope="session")
def tiny_colorizer() -> Colorizer:
    """The real tiny DDColor with random weights, on the CPU at 256 px."""
    import torch

    from ddcolor.pipeline import load_colorizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return load_colorizer(None, untrained=True, device="cpu", precision="fp32", size=256)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def checkpoint_file(tiny_colorizer: Colorizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint file of the tiny model (a bare state dict, as Hugging Face ships them)."""
    import torch

    path = tmp_path_factory.mktemp("weights") / "ddcolor_paper_tiny.pth"
    torch.save(tiny_colorizer.model.state_dict(), path)
    return path


@pytest.fixture
def stand_ins(tmp_path: Path) -> Workers:
    """Stand-in workers whose program and records live in ``tmp_path``."""
    return Workers(tmp_path)
