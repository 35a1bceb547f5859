"""Tests of ``panchro submit`` (and of ``panchro scheduler``'s start-up checks).

Submissions run against real catalogs (an SQLite file that ``submit`` creates itself, and
a migrated PostgreSQL database), a real Redis broker whose ``colorize`` queue is counted,
and, for S3 sources, moto's S3 server over HTTP.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from PIL import Image as PILImage
from sqlalchemy import select, text

from catalog import Collection, Image, ImageStatus, make_engine, make_sessionmaker
from panchro.cli import cli
from panchro.options import PRESET_SIZES

#: Redis list that holds the messages of the colorize queue.
COLORIZE_QUEUE = "colorize"
#: Relative paths of the images of the sample source.
IMAGES = ("album/p1.png", "album/p2.png", "loose.png", "z/deep/p3.png")
#: Longest wait for a running scheduler to send the pending images, in seconds.
SCHEDULER_WAIT_S = 60.0


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


def run(url: str, broker_url: str, *args: str) -> Result:
    """Run a panchro command with the given catalog and broker."""
    return CliRunner().invoke(cli, ["--database-url", url, "--broker-url", broker_url, *args])


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


def test_submit_registers_every_image_and_sends_one_task_each(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"

    result = run(
        catalog_url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "1920s",
        "--output",
        str(output),
        "--preset",
        "landscape",
        "--priority",
        "3",
    )

    assert result.exit_code == 0, result.output
    assert "4 found" in result.stdout and "4 new, 0 changed, 0 unchanged" in result.stdout
    assert "1 hidden (.DS_Store)" in result.stdout
    assert "1 not-an-image (notes.txt)" in result.stdout
    assert "4 sent to the workers" in result.stdout
    assert "scanning" in result.stderr
    assert broker.llen(COLORIZE_QUEUE) == 4
    assert images(catalog_url) == {relative: ImageStatus.QUEUED for relative in IMAGES}
    stored = collection(catalog_url, "1920s")
    assert (stored.preset, stored.input_size, stored.priority) == ("landscape", 1024, 3)
    assert (stored.source, stored.output) == (str(scans), str(output))


def test_submitting_again_changes_nothing_and_sends_nothing(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    args = ("submit", str(scans), "--collection", "1920s", "--output", str(tmp_path / "out"))
    first = run(catalog_url, redis_url, *args)

    again = run(catalog_url, redis_url, *args)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert "0 new, 0 changed, 4 unchanged" in again.stdout
    assert "0 sent to the workers" in again.stdout
    assert broker.llen(COLORIZE_QUEUE) == 4


def test_submit_without_dispatch_leaves_the_images_pending(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    result = run(
        catalog_url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
        "--no-dispatch",
    )

    assert result.exit_code == 0, result.output
    assert "`panchro scheduler` sends the 4 pending" in result.stdout
    assert broker.llen(COLORIZE_QUEUE) == 0
    assert set(images(catalog_url).values()) == {ImageStatus.PENDING}


def test_submit_with_a_start_window_holds_every_image(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    if datetime.now().astimezone().strftime("%H:%M") >= "23:58":
        pytest.skip("the window of 23:59 opens within a minute")

    result = run(
        catalog_url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "night",
        "--output",
        str(tmp_path / "out"),
        "--not-before",
        "23:59",
    )

    assert result.exit_code == 0, result.output
    assert "held until 23:59: 4 images wait" in result.stdout
    assert broker.llen(COLORIZE_QUEUE) == 0
    assert collection(catalog_url, "night").not_before == "23:59"


def test_submit_records_the_model_name_and_checksum_of_the_weights(
    catalog_url: str, redis_url: str, scans: Path, tmp_path: Path
) -> None:
    import torch

    from ddcolor.build import get_config
    from ddcolor.checkpoints import expected_entries, sha256_file

    # Every floating-point tensor views one shared storage: torch.save writes it once,
    # so a checkpoint of the right keys and shapes takes a few megabytes.
    entries = expected_entries(get_config("ddcolor_paper_tiny"))
    shared = torch.zeros(max(torch.Size(shape).numel() for shape, _ in entries.values()))
    state = {
        key: shared[: torch.Size(shape).numel()].view(shape)
        if dtype.is_floating_point
        else torch.zeros(shape, dtype=dtype)
        for key, (shape, dtype) in entries.items()
    }
    weights = tmp_path / "ddcolor_paper_tiny.pth"
    torch.save({"params": state}, weights)

    result = run(
        catalog_url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
        "--weights",
        str(weights),
        "--no-dispatch",
    )

    assert result.exit_code == 0, result.output
    stored = collection(catalog_url, "c")
    assert stored.model_name == "ddcolor_paper_tiny"
    assert stored.checkpoint_sha256 == sha256_file(weights)
    assert f"ddcolor_paper_tiny, sha256 {stored.checkpoint_sha256}" in result.stdout


def test_submit_with_a_file_that_is_no_checkpoint_fails_before_scanning(
    redis_url: str, scans: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    weights = tmp_path / "weights.pth"
    weights.write_text("not a checkpoint")

    result = run(
        url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
        "--weights",
        str(weights),
    )

    assert_one_line_error(result, 1, "reading the checkpoint", "weights.pth")
    assert not (tmp_path / "catalog.sqlite3").exists()


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--size", "500"], ["--size", "multiple of 32"]),
        (["--size", "224"], ["--size", "256"]),
        (["--size", "4096"], ["--size", "2048"]),
        (["--preset", "group"], ["--preset"]),
        (["--preset", "portrait", "--size", "768"], ["--preset", "--size"]),
        (["--not-before", "25:00"], ["--not-before", "HH:MM"]),
        (["--priority", "high"], ["--priority"]),
    ],
)
def test_submit_refuses_bad_options_with_a_usage_error(
    redis_url: str, scans: Path, tmp_path: Path, option: list[str], words: list[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"

    result = run(
        url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
        *option,
    )

    assert_one_line_error(result, 2, *words)
    assert not (tmp_path / "catalog.sqlite3").exists()


def test_submit_refuses_an_output_inside_the_source(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path
) -> None:
    result = run(
        catalog_url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(scans / "colour"),
    )

    assert_one_line_error(result, 1, "inside the source")
    assert broker.llen(COLORIZE_QUEUE) == 0


def test_submit_of_a_missing_source_fails_cleanly(
    catalog_url: str, redis_url: str, tmp_path: Path
) -> None:
    result = run(
        catalog_url,
        redis_url,
        "submit",
        str(tmp_path / "nowhere"),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
    )

    assert_one_line_error(result, 1, "nowhere")


def test_submit_of_a_name_taken_by_another_source_fails_cleanly(
    catalog_url: str, redis_url: str, scans: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(scans, other)
    first = run(
        catalog_url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
        "--no-dispatch",
    )

    second = run(
        catalog_url,
        redis_url,
        "submit",
        str(other),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
        "--no-dispatch",
    )

    assert first.exit_code == 0, first.output
    assert_one_line_error(second, 1, "already exists")


def test_submit_to_postgresql_without_schema_asks_for_db_upgrade(
    schemaless_postgres: str, redis_url: str, scans: Path, tmp_path: Path
) -> None:
    url = schemaless_postgres

    result = run(
        url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
    )

    assert_one_line_error(result, 1, "panchro db upgrade")
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            tables = conn.execute(
                text("SELECT count(*) FROM information_schema.tables WHERE table_schema='public'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert tables == 0


@pytest.mark.slow
def test_submit_with_an_unreachable_broker_registers_and_then_fails(
    scans: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"

    result = run(
        url,
        "redis://127.0.0.1:9/0",
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
    )

    assert_one_line_error(result, 1, "dispatching failed", "panchro scheduler")
    assert "4 new" in result.stdout
    assert set(images(url).values()) == {ImageStatus.PENDING}


@pytest.mark.s3
def test_submit_scans_an_s3_prefix_through_the_configured_endpoint(
    s3_endpoint_url: str,
    s3_bucket: str,
    redis_url: str,
    broker: redis.Redis,
    scans: Path,
    tmp_path: Path,
) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    for relative in IMAGES:
        client.upload_file(str(scans / relative), s3_bucket, f"scans/{relative}")
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"

    result = CliRunner().invoke(
        cli,
        [
            "--database-url",
            url,
            "--broker-url",
            redis_url,
            "--s3-endpoint-url",
            s3_endpoint_url,
            "submit",
            f"s3://{s3_bucket}/scans",
            "--collection",
            "s3",
            "--output",
            f"s3://{s3_bucket}/colour",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "4 new" in result.stdout
    assert broker.llen(COLORIZE_QUEUE) == 4
    assert sorted(images(url)) == sorted(IMAGES)


def test_preset_names_are_those_of_the_ddcolor_pipeline() -> None:
    from ddcolor.pipeline import PRESETS

    assert PRESET_SIZES == PRESETS


# ------------------------------------------------------------------------------ scheduler


def test_scheduler_on_a_database_without_schema_fails_before_starting(
    schemaless_postgres: str, redis_url: str
) -> None:
    result = run(schemaless_postgres, redis_url, "scheduler")

    assert_one_line_error(result, 1, "panchro db upgrade")


@pytest.mark.slow
def test_scheduler_keeps_sending_pending_images_until_stopped(
    redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    submitted = run(
        url,
        redis_url,
        "submit",
        str(scans),
        "--collection",
        "c",
        "--output",
        str(tmp_path / "out"),
        "--no-dispatch",
    )
    assert submitted.exit_code == 0, submitted.output
    log = tmp_path / "scheduler.log"
    code = "from panchro.cli import main; main()"
    argv = [
        sys.executable,
        "-c",
        code,
        "--database-url",
        url,
        "--broker-url",
        redis_url,
        "scheduler",
        "--interval",
        "0.2",
        "--loglevel",
        "warning",
    ]

    with log.open("w") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            # A bound on waiting, not on speed: the passes run every 0.2 s.
            deadline = time.monotonic() + SCHEDULER_WAIT_S
            while broker.llen(COLORIZE_QUEUE) < len(IMAGES) and time.monotonic() < deadline:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    assert broker.llen(COLORIZE_QUEUE) == len(IMAGES), log.read_text()
    assert set(images(url).values()) == {ImageStatus.QUEUED}
