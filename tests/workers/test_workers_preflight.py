"""``panchro workers`` refuses to start, with one line, a worker that could not work.

Each test runs the real command in a child process and checks that it ends at once with
status 1, one ``Error:`` line that names the fault and its fix, and no worker started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from workers_helpers import closed_port, write_gray_png

from catalog import make_engine, make_sessionmaker
from migrations import upgrade
from storage import Storage, StorageOptions, open_storage

#: Seconds the command may take to refuse; a guard against hanging, not a measurement.
REFUSE_S = 120.0


def _workers(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``panchro workers --cpu 1 ARGS`` in ``tmp_path`` with only ``env`` configured."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("PANCHRO_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "panchro.cli", "workers", "--cpu", "1", *args],
        cwd=tmp_path,
        env={**clean, "PANCHRO_DEVICE": "cpu", **env},
        capture_output=True,
        text=True,
        timeout=REFUSE_S,
    )


def _refused(result: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Check the command refused with one line holding every needle; return that line."""
    lines = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 1, result.stdout + result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def _register(
    database_url: str, name: str, source: str | Path, output: str | Path, store: Storage
) -> None:
    """Register a collection (active, nothing sent), as `panchro submit` would."""
    from scheduler import CollectionSettings, submit

    sessions = make_sessionmaker(database_url)
    submit(
        sessions,
        name=name,
        source=source,
        output=output,
        storage=store,
        send=None,
        max_in_flight=1,
        settings=CollectionSettings(input_size=256),
    )
    sessions.kw["bind"].dispose()


@pytest.fixture
def migrated(tmp_path: Path) -> str:
    """URL of a migrated SQLite catalog without collections."""
    url = make_url(f"sqlite:///{tmp_path / 'catalog.sqlite3'}").render_as_string()
    upgrade(url)
    return url


def test_unloadable_weights_stop_panchro_workers_before_any_worker(
    tmp_path: Path, migrated: str, redis_url: str
) -> None:
    weights = tmp_path / "ddcolor.pth"
    weights.write_bytes(b"not a checkpoint at all")
    env = {"PANCHRO_DATABASE_URL": migrated, "PANCHRO_BROKER_URL": redis_url}

    result = _workers(tmp_path, "--weights", str(weights), env=env)

    _refused(result, "cannot load the checkpoint", str(weights), "PANCHRO_WEIGHTS")


def test_unreachable_or_unmigrated_catalog_stops_panchro_workers(
    tmp_path: Path, postgres_database_factory: object, redis_url: str
) -> None:
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/catalog"
    assert callable(postgres_database_factory)
    schemaless: str = postgres_database_factory()

    down = _workers(
        tmp_path,
        "--untrained",
        env={"PANCHRO_DATABASE_URL": closed, "PANCHRO_BROKER_URL": redis_url},
    )
    bare = _workers(
        tmp_path,
        "--untrained",
        env={"PANCHRO_DATABASE_URL": schemaless, "PANCHRO_BROKER_URL": redis_url},
    )

    _refused(down, "catalog", "unavailable")
    _refused(bare, "no panchro schema", "panchro db upgrade")


def test_unreachable_broker_stops_panchro_workers(tmp_path: Path, migrated: str) -> None:
    broker = f"redis://127.0.0.1:{closed_port()}/0"

    result = _workers(
        tmp_path,
        "--untrained",
        env={"PANCHRO_DATABASE_URL": migrated, "PANCHRO_BROKER_URL": broker},
    )

    _refused(result, f"the broker {broker} does not answer", "PANCHRO_BROKER_URL")


def test_read_only_output_folder_stops_panchro_workers(
    tmp_path: Path, migrated: str, redis_url: str
) -> None:
    source = tmp_path / "scans"
    write_gray_png(source / "a.png")
    output = tmp_path / "blocked" / "colour"
    output.parent.write_text("a file where the output folder's parent should be")
    _register(migrated, "local", source, output, open_storage(source))

    result = _workers(
        tmp_path,
        "--untrained",
        env={"PANCHRO_DATABASE_URL": migrated, "PANCHRO_BROKER_URL": redis_url},
    )

    _refused(result, "collection 'local'", "writing its output", "not a folder")


@pytest.mark.s3
def test_missing_s3_credentials_stop_panchro_workers(
    tmp_path: Path, migrated: str, redis_url: str, s3_endpoint_url: str, s3_bucket: str
) -> None:
    store = open_storage(f"s3://{s3_bucket}", StorageOptions(endpoint_url=s3_endpoint_url))
    store.write(f"s3://{s3_bucket}/scans/a.png", write_gray_png(tmp_path / "a.png").read_bytes())
    _register(migrated, "archive", f"s3://{s3_bucket}/scans", f"s3://{s3_bucket}/colour", store)
    nowhere = str(tmp_path / "no-aws-config")
    env = {
        "PANCHRO_DATABASE_URL": migrated,
        "PANCHRO_BROKER_URL": redis_url,
        "PANCHRO_S3_ENDPOINT_URL": s3_endpoint_url,
        "PANCHRO_S3_REGION": "us-east-1",
        "AWS_CONFIG_FILE": nowhere,
        "AWS_SHARED_CREDENTIALS_FILE": nowhere,
        "AWS_EC2_METADATA_DISABLED": "true",
    }

    result = _workers(tmp_path, "--untrained", env=env)

    _refused(result, "collection 'archive'", "no usable AWS credentials", "AWS_ACCESS_KEY_ID")


def test_storage_check_refuses_a_source_folder_missing_on_this_host(
    tmp_path: Path, migrated: str
) -> None:
    import click

    from panchro.preflight import check_catalog, check_storage
    from panchro.settings import Settings

    source = tmp_path / "mount" / "scans"
    write_gray_png(source / "a.png")
    _register(migrated, "mounted", source, tmp_path / "colour", open_storage(source))
    locations = check_catalog(migrated)
    check_storage(locations, Settings())  # all there: passes, and leaves nothing behind
    assert not list(tmp_path.rglob(".panchro-write-check-*"))
    assert not (tmp_path / "colour").exists()
    (source / "a.png").unlink()
    source.rmdir()

    with pytest.raises(click.ClickException, match="does not exist on this host"):
        check_storage(locations, Settings())

    engine = make_engine(migrated)
    with engine.begin() as conn:  # finished: its folders no longer matter
        conn.execute(text("UPDATE images SET status = 'done'"))
    engine.dispose()
    assert check_catalog(migrated) == []
