"""Helpers of the ``panchro submit`` tests (a uniquely named module, importable from them).

Constants of the sample source, a runner of panchro commands, and readers of the catalog.
"""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result
from sqlalchemy import select

from catalog import Collection, Image, ImageStatus, make_engine, make_sessionmaker
from panchro.cli import cli
from workers.broker import message_priority, queue_keys

#: The Redis list the tasks of a collection of the default priority wait in.
COLORIZE_QUEUE = queue_keys("colorize")[message_priority(0)]
#: Relative paths of the images of the sample source.
IMAGES = ("album/p1.png", "album/p2.png", "loose.png", "z/deep/p3.png")


def run(url: str, broker_url: str, *args: str) -> Result:
    """Run a panchro command with the given catalog and broker."""
    return CliRunner().invoke(cli, ["--database-url", url, "--broker-url", broker_url, *args])


def run_submit(
    url: str, broker_url: str, source: Path | str, output: Path | str, *args: str, name: str = "c"
) -> Result:
    """Run ``panchro submit SOURCE --collection NAME --output OUTPUT *args``."""
    command = ["submit", str(source), "--collection", name, "--output", str(output), *args]
    return run(url, broker_url, *command)


def images(url: str) -> dict[str, ImageStatus]:
    """Relative path to status of every image in the catalog."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(select(Image.relative_path, Image.status)).all())
    finally:
        engine.dispose()


def collection(url: str, name: str) -> Collection:
    """The stored collection row."""
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine).begin() as db:
            return db.scalars(select(Collection).where(Collection.name == name)).one()
    finally:
        engine.dispose()


def assert_one_line_error(result: Result, code: int, *words: str) -> None:
    """The command exited with ``code`` and one ``Error:`` line naming ``words``."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in errors[0], errors[0]
