"""Tests of ``panchro status``, ``list``, ``retry`` and ``cancel`` against real catalogs.

Each test runs on SQLite and on PostgreSQL. The catalog schema always comes from the
Alembic revisions; the rows are written directly, as workers would have left them.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import select, update
from sqlalchemy.engine import make_url

from catalog import (
    Collection,
    Image,
    ImageStatus,
    ScannedImage,
    create_or_get_collection,
    make_engine,
    make_sessionmaker,
    register_images,
    transaction,
)
from catalog.models import utcnow
from migrations.runner import upgrade
from panchro.cli import cli

#: Statuses and image counts of the collection most tests start from.
MIXED = {
    ImageStatus.PENDING: 3,
    ImageStatus.QUEUED: 2,
    ImageStatus.RUNNING: 1,
    ImageStatus.DONE: 5,
    ImageStatus.FAILED: 2,
    ImageStatus.SKIPPED: 1,
}
#: Error recorded on every failed image of the seeded collections.
FAILURE = "not an image: truncated TIFF"
#: Its failure code.
FAILURE_CODE = "decode.truncated"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite catalog migrated to head, copied by each test."""
    path = tmp_path_factory.mktemp("jobs-template") / "catalog.sqlite3"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """URL of an empty, migrated catalog; the test runs once per database."""
    if request.param == "sqlite":
        path = tmp_path / "catalog.sqlite3"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("empty_postgres_catalog")
    return url


def seed(url: str, name: str, statuses: dict[ImageStatus, int]) -> None:
    """Create a collection whose images are in the given statuses, as after some work."""
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    now = utcnow()
    try:
        with transaction(sessions) as db:
            collection, _ = create_or_get_collection(db, name, f"/scans/{name}", f"/out/{name}")
            rows = [
                ScannedImage(
                    f"/scans/{name}/{status.value}-{i:05d}.tif",
                    f"{status.value}-{i:05d}.tif",
                    f"/out/{name}/{status.value}-{i:05d}.tif",
                    100,
                    f"c{i}",
                    "mtime-size",
                )
                for status, count in statuses.items()
                for i in range(count)
            ]
            register_images(db, collection.id, rows)
            for status in statuses:
                values: dict[str, object] = {"status": status}
                if status in (ImageStatus.DONE, ImageStatus.FAILED, ImageStatus.SKIPPED):
                    values.update(
                        started_at=now - timedelta(minutes=2),
                        finished_at=now,
                        duration_s=3.5,
                        input_size=512,
                        attempts=1,
                    )
                if status is ImageStatus.FAILED:
                    values.update(last_error=FAILURE, failure_code=FAILURE_CODE)
                db.execute(
                    update(Image)
                    .where(
                        Image.collection_id == collection.id,
                        Image.relative_path.like(f"{status.value}-%"),
                    )
                    .values(**values)
                )
    finally:
        engine.dispose()


def statuses_of(url: str, name: str) -> dict[str, int]:
    """Count the images of a collection per status, straight from the database."""
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                select(Image.status, Image.id)
                .join(Collection, Collection.id == Image.collection_id)
                .where(Collection.name == name)
            ).all()
    finally:
        engine.dispose()
    counts: dict[str, int] = {}
    for status, _ in rows:
        counts[status.value] = counts.get(status.value, 0) + 1
    return counts


def run(url: str, *args: str) -> Result:
    """Run a panchro command against the catalog at ``url``."""
    return CliRunner().invoke(cli, ["--database-url", url, *args])


def assert_clean_error(result: Result, *words: str) -> None:
    """The command failed with one ``Error:`` line naming ``words``, and no traceback."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


# ---------------------------------------------------------------------------------- status


def test_status_json_reports_the_counts_of_every_status(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    result = run(catalog_url, "status", "1920s", "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    (progress,) = report["collections"]
    assert progress["name"] == "1920s"
    assert progress["counts"] == {
        "pending": 3,
        "queued": 2,
        "running": 1,
        "done": 5,
        "failed": 2,
        "skipped": 1,
        "cancelled": 0,
    }
    assert progress["total"] == 14 and progress["remaining"] == 6
    (failures,) = progress["top_failures"]
    assert (failures["code"], failures["count"]) == (FAILURE_CODE, 2)
    assert failures["reason"].startswith("The file ends before its image does")
    assert failures["example"]["path"] == "failed-00000.tif"
    assert failures["example"]["error"] == FAILURE
    assert progress["throughput_per_min"] > 0


def test_status_without_name_shows_every_collection_in_one_table(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)
    seed(catalog_url, "harbour", {ImageStatus.DONE: 4})

    result = run(catalog_url, "status")

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["COLLECTION", "STATUS", "IMAGES"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert rows["1920s"][1:6] == ["active", "14", "5", "2", "6"]
    assert rows["harbour"][1:6] == ["active", "4", "4", "0", "0"]


def test_status_of_one_collection_lists_its_failure_reasons(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    result = run(catalog_url, "status", "1920s")

    assert result.exit_code == 0, result.output
    assert "5 done, 2 failed, 1 skipped, 1 running, 2 queued, 3 pending" in result.stdout
    assert "finished  8 of 14" in result.stdout
    assert "panchro list 1920s --code CODE" in result.stdout
    assert f"2  {FAILURE_CODE}  The file ends before its image does" in result.stdout
    assert "then `panchro retry 1920s --failed`." in result.stdout
    assert "e.g. failed-00000.tif" in result.stdout
    assert "skipped   1 not colorized" in result.stdout
    assert "panchro list 1920s --status skipped" in result.stdout


def test_status_of_an_unknown_collection_is_a_one_line_error(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    assert_clean_error(run(catalog_url, "status", "1930s"), "1930s")


def test_status_on_an_empty_catalog_says_there_is_nothing(catalog_url: str) -> None:
    result = run(catalog_url, "status")

    assert result.exit_code == 0, result.output
    assert "no collections yet" in result.stdout


def test_status_watch_ends_at_once_when_nothing_is_left_to_do(catalog_url: str) -> None:
    seed(catalog_url, "1920s", {ImageStatus.DONE: 3, ImageStatus.FAILED: 1})

    result = run(catalog_url, "status", "1920s", "--watch", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    assert "100%" in result.stderr and "4/4" in result.stderr
    assert "finished  4 of 4" in result.stdout


def test_status_watch_json_prints_one_report_per_line(catalog_url: str) -> None:
    seed(catalog_url, "1920s", {ImageStatus.DONE: 2})

    result = run(catalog_url, "status", "--watch", "--json")

    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["collections"][0]["remaining"] == 0


def update_running(url: str, **values: object) -> None:
    """Change every running image's row, as a worker (or its death) would."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(update(Image).where(Image.status == ImageStatus.RUNNING).values(**values))
    finally:
        engine.dispose()


def _age_running(url: str, *, hours: float) -> None:
    """Make the running images' tries ``hours`` old, under a task that nothing holds."""
    update_running(url, started_at=utcnow() - timedelta(hours=hours), task_id="gone-task")


def test_status_watch_ends_when_only_images_past_the_time_limit_are_running(
    catalog_url: str,
) -> None:
    seed(catalog_url, "1920s", {ImageStatus.DONE: 2, ImageStatus.RUNNING: 1})
    _age_running(catalog_url, hours=2)

    result = run(catalog_url, "status", "1920s", "--watch", "--interval", "0.1")

    assert result.exit_code == 0, result.output
    assert "nothing can progress: 1 image(s) still running" in result.stderr
    assert "panchro retry 1920s --stale" in result.stderr


# ---------------------------------------------------------------- status --watch, live


@pytest.fixture
def sqlite_catalog(tmp_path: Path, sqlite_template: Path) -> str:
    """URL of an empty, migrated SQLite catalog."""
    path = tmp_path / "catalog.sqlite3"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def watcher(sqlite_catalog: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start ``panchro status --watch`` in a process of its own, as a user would."""
    started: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        code = "from panchro.cli import main; main()"
        argv = [sys.executable, "-c", code, "--database-url", sqlite_catalog, "status", *args]
        proc = subprocess.Popen(
            argv,
            # Ctrl-C must reach the child even when these tests run where SIGINT is
            # ignored (a background job); Python then installs its own handler.
            preexec_fn=_default_sigint,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def finish_running(url: str) -> None:
    """Mark every running image done, as a worker would."""
    update_running(url, status=ImageStatus.DONE, finished_at=utcnow())


def test_status_watch_follows_the_work_until_it_is_done(
    sqlite_catalog: str, watcher: Callable[..., subprocess.Popen[str]]
) -> None:
    seed(sqlite_catalog, "1920s", {ImageStatus.DONE: 2, ImageStatus.RUNNING: 1})
    proc = watcher("1920s", "--watch", "--json", "--interval", "0.1")
    assert proc.stdout is not None

    first = json.loads(proc.stdout.readline())
    finish_running(sqlite_catalog)
    out, err = proc.communicate(timeout=60)

    assert first["collections"][0]["remaining"] == 1
    assert proc.returncode == 0, err
    last = json.loads(out.splitlines()[-1])
    assert last["collections"][0]["remaining"] == 0
    assert last["collections"][0]["counts"]["done"] == 3


def test_status_watch_stops_cleanly_on_ctrl_c(
    sqlite_catalog: str, watcher: Callable[..., subprocess.Popen[str]]
) -> None:
    seed(sqlite_catalog, "1920s", {ImageStatus.PENDING: 2})
    proc = watcher("1920s", "--watch", "--json", "--interval", "0.1")
    assert proc.stdout is not None

    proc.stdout.readline()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)

    assert proc.returncode == 130
    assert "Traceback" not in err
    assert "stopped watching" in err


# ------------------------------------------------------------------------------------ list


def test_list_csv_parses_back_to_every_image_with_its_provenance(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    result = run(catalog_url, "list", "1920s", "--format", "csv")

    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 14
    assert [int(row["id"]) for row in rows] == sorted(int(row["id"]) for row in rows)
    failed = [row for row in rows if row["status"] == "failed"]
    assert len(failed) == 2 and {row["last_error"] for row in failed} == {FAILURE}
    assert {row["failure_code"] for row in failed} == {FAILURE_CODE}
    assert {row["failure_code"] for row in rows if row["status"] == "done"} == {""}
    assert failed[0]["output_uri"].startswith("/out/1920s/") and failed[0]["input_size"] == "512"


def test_list_json_parses_back_and_filters_by_status(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    result = run(catalog_url, "list", "1920s", "--status", "done", "--format", "json")

    assert result.exit_code == 0, result.output
    images = json.loads(result.stdout)
    assert len(images) == 5
    assert {image["status"] for image in images} == {"done"}
    assert all(image["finished_at"].endswith("+00:00") for image in images)


def test_json_and_format_json_are_the_same_on_list_status_and_doctor(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    listed = run(catalog_url, "list", "1920s", "--json")
    status = run(catalog_url, "status", "1920s", "--format", "json")

    assert listed.stdout == run(catalog_url, "list", "1920s", "--format", "json").stdout
    assert len(json.loads(listed.stdout)) == 14
    assert json.loads(status.stdout)["collections"][0]["total"] == 14
    for command in ("list", "status", "doctor"):
        shown = run(catalog_url, command, "--help").stdout
        assert ("--format" in shown) != ("--json" in shown), command


def test_list_json_of_no_images_is_an_empty_array(catalog_url: str) -> None:
    seed(catalog_url, "1920s", {ImageStatus.DONE: 2})

    result = run(catalog_url, "list", "1920s", "--status", "failed", "--format", "json")

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == []


def test_list_streams_a_collection_larger_than_one_page(catalog_url: str) -> None:
    seed(catalog_url, "big", {ImageStatus.PENDING: 2345})

    result = run(catalog_url, "list", "big", "--format", "json")
    limited = run(catalog_url, "list", "big", "--limit", "1500")

    assert result.exit_code == 0, result.output
    ids = [image["id"] for image in json.loads(result.stdout)]
    assert len(ids) == 2345 == len(set(ids))
    assert limited.exit_code == 0, limited.output
    assert len(limited.stdout.splitlines()) == 1 + 1500


def test_list_table_shows_paths_and_shortened_errors(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    result = run(catalog_url, "list", "1920s", "--status", "failed")

    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "CODE", "TRIES", "SIZE", "SECONDS", "PATH"]
    assert len(rows) == 2
    assert all(row.split()[1:3] == ["failed", FAILURE_CODE] for row in rows)
    assert all("failed-0000" in row and f"({FAILURE})" in row for row in rows)
    done = run(catalog_url, "list", "1920s", "--status", "done").stdout
    assert done.split()[:3] == ["ID", "STATUS", "TRIES"]  # no failure can be listed


def test_list_code_filters_by_failure_code(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    coded = run(catalog_url, "list", "1920s", "--code", FAILURE_CODE, "--format", "json")
    other = run(catalog_url, "list", "1920s", "--code", "oom.floor")
    wrong = run(catalog_url, "list", "1920s", "--code", "no.such-code")

    assert coded.exit_code == 0, coded.output
    images = json.loads(coded.stdout)
    assert [image["relative_path"] for image in images] == ["failed-00000.tif", "failed-00001.tif"]
    assert other.exit_code == 0 and "has no images with code oom.floor" in other.stderr
    assert wrong.exit_code == 2 and "decode.truncated" in wrong.stderr  # the choices


def test_list_help_documents_every_column_in_order() -> None:
    from panchro.commands.listing import FIELDS

    result = CliRunner().invoke(cli, ["list", "--help"])

    assert result.exit_code == 0, result.output
    section = result.stdout.split("CSV and JSON columns", 1)[1].split("Options:", 1)[0]
    columns = section.split(":", 1)[1]
    assert [name.strip() for name in columns.split(",")] == list(FIELDS)


def test_list_of_an_unknown_collection_writes_no_partial_document(catalog_url: str) -> None:
    result = run(catalog_url, "list", "nope", "--format", "json")

    assert_clean_error(result, "nope")
    assert result.stdout == ""


# ---------------------------------------------------------------------- retry and cancel


def test_retry_failed_sends_failed_images_back_to_pending(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    result = run(catalog_url, "retry", "1920s", "--failed")

    assert result.exit_code == 0, result.output
    assert "2 failed images back to pending" in result.stdout
    counts = statuses_of(catalog_url, "1920s")
    assert counts.get("failed", 0) == 0 and counts["pending"] == 5
    assert counts["skipped"] == 1


def test_retry_without_flags_retries_failed_and_with_flags_only_those(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    skipped = run(catalog_url, "retry", "1920s", "--skipped")
    default = run(catalog_url, "retry", "1920s")

    assert skipped.exit_code == 0 and default.exit_code == 0, skipped.output + default.output
    assert "1 skipped images back to pending" in skipped.stdout
    assert "2 failed images back to pending" in default.stdout
    assert statuses_of(catalog_url, "1920s")["pending"] == 6


def test_retry_with_nothing_failed_says_so(catalog_url: str) -> None:
    seed(catalog_url, "1920s", {ImageStatus.DONE: 1})

    result = run(catalog_url, "retry", "1920s", "--failed")

    assert result.exit_code == 0, result.output
    assert "no failed images to retry" in result.stdout


def test_cancel_cancels_pending_and_queued_but_lets_running_finish(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)

    result = run(catalog_url, "cancel", "1920s")

    assert result.exit_code == 0, result.output
    assert "5 pending or queued images" in result.stdout
    counts = statuses_of(catalog_url, "1920s")
    assert counts["cancelled"] == 5 and counts["running"] == 1
    assert "pending" not in counts and "queued" not in counts
    status = json.loads(run(catalog_url, "status", "1920s", "--json").stdout)
    assert status["collections"][0]["status"] == "cancelled"


def test_retry_stale_hands_back_running_images_that_no_worker_holds(
    catalog_url: str, redis_url: str
) -> None:
    seed(catalog_url, "1920s", MIXED)
    _age_running(catalog_url, hours=0)

    result = run(catalog_url, "--broker-url", redis_url, "retry", "1920s", "--stale")

    assert result.exit_code == 0, result.output
    assert "1 running images no live worker holds back to pending" in result.stdout
    assert "(no worker answered)" in result.stdout
    counts = statuses_of(catalog_url, "1920s")
    # --stale alone leaves the failed images alone.
    assert "running" not in counts and counts["pending"] == 4 and counts["failed"] == 2


def test_retry_stale_without_a_broker_is_a_one_line_error(catalog_url: str) -> None:
    seed(catalog_url, "1920s", MIXED)
    url = "redis://127.0.0.1:9/0"  # the discard port: nothing answers there

    result = run(catalog_url, "--broker-url", url, "retry", "1920s", "--stale")

    assert_clean_error(result, "cannot reach the broker")
    assert statuses_of(catalog_url, "1920s")["running"] == 1


@pytest.mark.parametrize("command", ["retry", "cancel"])
def test_retry_and_cancel_of_an_unknown_collection_fail_cleanly(
    catalog_url: str, command: str
) -> None:
    assert_clean_error(run(catalog_url, command, "1930s"), "1930s")


# ------------------------------------------------------------------------ missing schema


@pytest.fixture(scope="module")
def schemaless_postgres(postgres_database_factory: Callable[[], str]) -> str:
    """URL of an empty PostgreSQL database that was never migrated."""
    return postgres_database_factory()


@pytest.mark.parametrize("args", [["status"], ["list", "x"], ["retry", "x"], ["cancel", "x"]])
def test_commands_on_a_database_without_schema_ask_for_db_upgrade(
    schemaless_postgres: str, args: list[str]
) -> None:
    assert_clean_error(run(schemaless_postgres, *args), "panchro db upgrade")


def test_commands_on_a_missing_sqlite_file_ask_for_db_upgrade_and_create_nothing(
    tmp_path: Path,
) -> None:
    path = tmp_path / "nowhere" / "catalog.sqlite3"
    url = make_url(f"sqlite:///{path}").render_as_string()

    assert_clean_error(run(url, "status"), "panchro db upgrade")
    assert not path.exists()


def test_commands_on_an_unreachable_database_fail_cleanly() -> None:
    url = "postgresql+psycopg://postgres@127.0.0.1:9/nowhere"

    assert_clean_error(run(url, "status"), "unavailable")
