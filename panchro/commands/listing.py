"""``panchro list``: the images of a collection as a table, CSV or JSON, streamed page by page.

A collection may hold millions of images, so rows are read in pages of :data:`PAGE_ROWS`,
each page in its own short transaction, and written out before the next page is read.

CSV and JSON carry the columns of :data:`FIELDS`, in that order (a stable contract): times as
ISO 8601 UTC, ``sizes_tried`` as a list in JSON and space-separated in CSV, missing values as
``null`` in JSON and empty in CSV. JSON is one array, written as it is read.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import sys
from collections.abc import Iterator
from datetime import datetime
from enum import Enum
from itertools import chain
from typing import TYPE_CHECKING, Any

import click

from catalog.reasons import FailureCode
from catalog.states import ImageStatus
from panchro.cli_support import fail_on
from panchro.commands._support import open_catalog

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from catalog.models import Image

logger = logging.getLogger(__name__)

#: Images read per query (and per transaction).
PAGE_ROWS = 1_000
#: Columns of the CSV and JSON output, in order.
FIELDS: tuple[str, ...] = (
    "id",
    "status",
    "source_uri",
    "relative_path",
    "output_uri",
    "attempts",
    "lost_attempts",
    "last_error",
    "source_size",
    "source_checksum",
    "source_checksum_kind",
    "source_sha256",
    "width",
    "height",
    "mode",
    "bit_depth",
    "output_sha256",
    "output_size",
    "input_size",
    "sizes_tried",
    "precision",
    "backend",
    "device",
    "worker_host",
    "model_name",
    "checkpoint_sha256",
    "task_id",
    "queued_at",
    "started_at",
    "finished_at",
    "duration_s",
    "failure_code",
)
#: Fixed-width columns of the table output before the path: header, width in characters,
#: right-aligned.
TABLE_COLUMNS: tuple[tuple[str, int, bool], ...] = (
    ("ID", 9, True),
    ("STATUS", 9, False),
    ("TRIES", 5, True),
    ("SIZE", 5, True),
    ("SECONDS", 8, True),
)
#: The table's failure code column, after STATUS, where the listing can hold failed or
#: skipped images; as wide as the longest code.
CODE_COLUMN: tuple[str, int, bool] = ("CODE", max(len(code) for code in FailureCode), False)
#: Statuses whose images never carry a failure code: their listings have no CODE column.
UNCODED_STATUSES = frozenset(
    {ImageStatus.PENDING, ImageStatus.QUEUED, ImageStatus.RUNNING, ImageStatus.DONE}
)
#: Characters of an error message shown in the table; CSV and JSON carry all of it.
TABLE_ERROR_CHARS = 120
#: Output formats of ``--format``.
FORMATS = ("table", "csv", "json")


def image_record(image: Image) -> dict[str, Any]:
    """Return one image as the JSON-ready mapping of :data:`FIELDS`.

    Args:
        image: The catalog row.

    Returns:
        Field name to value: datetimes as ISO 8601 text, enums as their value.
    """
    record: dict[str, Any] = {}
    for field in FIELDS:
        value = getattr(image, field)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, Enum):
            value = value.value
        record[field] = value
    return record


def _csv_cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(str(item) for item in value)
    return value


def _columns(with_code: bool) -> tuple[tuple[str, int, bool], ...]:
    if not with_code:
        return TABLE_COLUMNS
    return (*TABLE_COLUMNS[:2], CODE_COLUMN, *TABLE_COLUMNS[2:])


def _aligned(cells: tuple[str, ...], path: str, with_code: bool) -> str:
    fixed = "  ".join(
        cell.rjust(width) if right else cell.ljust(width)
        for cell, (_, width, right) in zip(cells, _columns(with_code), strict=True)
    )
    return f"{fixed}  {path}"


def _table_row(image: Image, with_code: bool) -> str:
    cells = (
        str(image.id),
        image.status.value,
        *((image.failure_code or "",) if with_code else ()),
        str(image.attempts),
        "" if image.input_size is None else str(image.input_size),
        "" if image.duration_s is None else f"{image.duration_s:.1f}",
    )
    line = _aligned(cells, image.relative_path, with_code)
    if image.last_error:
        error = " ".join(image.last_error.split())
        if len(error) > TABLE_ERROR_CHARS:
            error = error[: TABLE_ERROR_CHARS - 3] + "..."
        line += f"  ({error})"
    return line


def _pages(
    sessions: sessionmaker[Session],
    name: str,
    status: ImageStatus | None,
    limit: int | None,
    code: str | None = None,
) -> Iterator[list[Image]]:
    """Yield the images page by page, at most ``limit`` in all; the first page always."""
    from catalog import list_images, transaction

    listed = 0
    last_id: int | None = None
    while True:
        rows = PAGE_ROWS if limit is None else min(PAGE_ROWS, limit - listed)
        with transaction(sessions) as db:
            page = list_images(
                db, name, status=status, limit=rows, after_id=last_id, failure_code=code
            )
        yield page
        listed += len(page)
        if len(page) < rows or (limit is not None and listed >= limit):
            return
        last_id = page[-1].id


def _write(pages: Iterator[list[Image]], listing_format: str, with_code: bool = True) -> int:
    """Write every page in the format, one write per page; return the images written."""
    count = 0
    if listing_format == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(FIELDS)
        for page in pages:
            for image in page:
                record = image_record(image)
                writer.writerow([_csv_cell(record[field]) for field in FIELDS])
            count += len(page)
            click.echo(buffer.getvalue(), nl=False)
            buffer.seek(0)
            buffer.truncate()
    elif listing_format == "json":
        click.echo("[", nl=False)
        for page in pages:
            chunk = []
            for image in page:
                chunk.append(",\n" if count else "\n")
                chunk.append(json.dumps(image_record(image)))
                count += 1
            click.echo("".join(chunk), nl=False)
        click.echo("\n]" if count else "]")
    else:
        headers = tuple(header for header, _, _ in _columns(with_code))
        click.echo(_aligned(headers, "PATH", with_code))
        for page in pages:
            click.echo("".join(_table_row(image, with_code) + "\n" for image in page), nl=False)
            count += len(page)
    return count


@click.command("list")
@click.argument("name")
@click.option(
    "--status",
    type=click.Choice([status.value for status in ImageStatus]),
    help="Only images in this status.",
)
@click.option(
    "--code",
    type=click.Choice([code.value for code in FailureCode]),
    metavar="CODE",
    help="Only images failed or skipped with this code (decode.truncated, oom.floor...; "
    "docs/failures.md lists them all).",
)
@click.option(
    "--format",
    "listing_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table for people; csv and json (an array of objects) for programs.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    hidden=True,
    help="--format json, as --json means for status and doctor.",
)
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop after N images (default: all of them).",
)
@click.pass_context
def list_command(
    ctx: click.Context,
    name: str,
    status: str | None,
    code: str | None,
    listing_format: str,
    as_json: bool,
    limit: int | None,
) -> None:
    """List the images of collection NAME in scan order, with status and provenance.

    Rows are streamed: the command starts printing at once and never holds a whole
    collection in memory. CSV and JSON carry every provenance column (source and output
    locations and checksums, input size, precision, device, worker, times, last error and
    its failure code). The table has a CODE column unless only statuses without failures
    are listed.

    \b
    Examples:
      panchro list 1920s --status failed
      panchro list 1920s --code decode.truncated --format csv
      panchro list 1920s --format csv > 1920s.csv
      panchro list 1920s --status done --format json | jq '.[].output_uri'

    \b
    CSV and JSON columns, in this order (stable; times in ISO 8601 UTC, missing values
    empty in CSV and null in JSON, sizes_tried a list in JSON, space-separated in CSV):
      id, status, source_uri, relative_path, output_uri, attempts, lost_attempts,
      last_error, source_size, source_checksum, source_checksum_kind, source_sha256,
      width, height, mode, bit_depth, output_sha256, output_size, input_size,
      sizes_tried, precision, backend, device, worker_host, model_name,
      checkpoint_sha256, task_id, queued_at, started_at, finished_at, duration_s,
      failure_code
    """
    from panchro.context import load_settings

    settings = load_settings(ctx)
    if as_json:
        listing_format = "json"
    wanted = ImageStatus(status) if status is not None else None
    with open_catalog(settings.database_url) as sessions, fail_on("listing images"):
        pages = _pages(sessions, name, wanted, limit, code)
        # Read the first page before writing anything: an unknown collection is then a
        # clean error, not a half-written document.
        first = next(pages)
        try:
            with_code = code is not None or wanted not in UNCODED_STATUSES
            count = _write(chain([first], pages), listing_format, with_code)
        except BrokenPipeError:
            # The reader (head, less) went away: stop quietly, as Unix tools do.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(0)
    if count == 0 and listing_format == "table":
        what = f"{status} images" if status else "images"
        what += f" with code {code}" if code else ""
        click.echo(f"collection {name} has no {what}", err=True)
    logger.debug("collection %s: listed %d images", name, count)
