"""Registering scanned images: one bulk, idempotent upsert per batch of rows.

Registering the same scan again changes nothing; new sources are added as ``pending``,
and sources whose checksum changed since the last scan are processed again. A scan of
100,000 objects registers in a few seconds: the rows go to the database in batches of
thousands, as one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE <checksum differs>`` per
batch. On PostgreSQL each batch travels as one array per column (``unnest``), which keeps
the statement text short; SQLite gets multi-row VALUES lists.

Files a scan passed over (empty, not an image, a link out of the source...) are registered
the same way, as rows of status ``skipped`` whose ``last_error`` says why (and
``failure_code`` with a ``skip.*`` code of ``catalog.reasons``), so that every file
of a source has its row. Registering them again changes nothing; a skipped file that became
a valid image (its checksum changed, or it was unreadable and now is not) is ``pending`` at
the next registration, and an image whose file became unusable is ``skipped``.

Text columns hold valid UTF-8 only: a relative path with bytes that are not UTF-8 (kept by
Python as surrogates) is stored with those bytes written as ``\\xNN``. Its URIs are exact
(``storage.uri`` writes them percent-encoded), so the file is still read and written by them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Table, Text, bindparam, func, literal, null, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from catalog._upsert import insert_for
from catalog.engine import database_errors
from catalog.errors import CollectionNotFound, DuplicateOutput
from catalog.models import Collection, CollectionStatus, Image, ImageStatus, utcnow
from catalog.reasons import FailureCode

logger = logging.getLogger(__name__)

#: Rows per statement when registering images. On SQLite, 12 parameters per row keeps a
#: statement far below its limit of 32,766 parameters.
REGISTER_CHUNK_ROWS = 2_000
#: Columns that a scan fills, in the order the statements list them.
SCANNED_COLUMNS = (
    "source_uri",
    "relative_path",
    "output_uri",
    "source_size",
    "source_checksum",
    "source_checksum_kind",
    "status",
    "last_error",
    "failure_code",
)


@dataclass(frozen=True)
class ScannedImage:
    """One source object found by a scan, ready to be registered.

    Attributes:
        source_uri: Where the original is (local path or ``s3://bucket/key``).
        relative_path: Its path below the collection's source, "/"-separated.
        output_uri: Where its colorized version will be written.
        size: Size of the original in bytes.
        checksum: Change detector: S3 ETag, or "mtime+size" for local files.
        checksum_kind: What ``checksum`` is ("etag", "mtime-size", "sha256").
        skipped: Why the scan passed this file over, in words; None for an image to
            colorize. A row with a reason is registered as ``skipped``.
        skip_code: The stable code of that reason (``skip.empty``...); a skipped row
            without one is recorded as ``unknown``.
    """

    source_uri: str
    relative_path: str
    output_uri: str
    size: int | None = None
    checksum: str | None = None
    checksum_kind: str | None = None
    skipped: str | None = None
    skip_code: str | None = None

    @property
    def status(self) -> ImageStatus:
        """The status the row is registered with: ``skipped`` or ``pending``."""
        return ImageStatus.PENDING if self.skipped is None else ImageStatus.SKIPPED


@dataclass(frozen=True)
class RegisterCounts:
    """What ``register_images()`` did with the scanned rows.

    Attributes:
        new: Images added as ``pending``.
        changed: Known images whose checksum changed, reset to ``pending``.
        unchanged: Known images left as they were (including running ones whose
            source changed: the next scan picks those up).
    """

    new: int
    changed: int
    unchanged: int

    @property
    def total(self) -> int:
        """Number of distinct scanned images."""
        return self.new + self.changed + self.unchanged


def _distinct_rows(collection_id: int, rows: Iterable[ScannedImage]) -> list[ScannedImage]:
    """Keep one row per source, and refuse two sources that share an output."""
    by_source: dict[str, ScannedImage] = {}
    source_of_output: dict[str, str] = {}
    for row in rows:
        if row.source_uri in by_source:
            logger.warning(
                "collection %s: %s scanned twice; keeping the first", collection_id, row.source_uri
            )
            continue
        other = source_of_output.setdefault(row.output_uri, row.source_uri)
        if other != row.source_uri:
            raise DuplicateOutput(
                f"collection {collection_id}: {other} and {row.source_uri} would both be "
                f"written to {row.output_uri}"
            )
        by_source[row.source_uri] = row
    return list(by_source.values())


def storable_text(text: str) -> str:
    """Return ``text`` as valid UTF-8 text: bytes kept as surrogates become ``\\xNN``.

    Args:
        text: A file name or path, possibly holding bytes that are not UTF-8.

    Returns:
        ``text`` itself when it is valid, else a readable escape of it.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text


def _values(row: ScannedImage) -> tuple[Any, ...]:
    return (
        storable_text(row.source_uri),
        storable_text(row.relative_path),
        storable_text(row.output_uri),
        row.size,
        row.checksum,
        row.checksum_kind,
        row.status.value,
        None if row.skipped is None else storable_text(row.skipped),
        None if row.skipped is None else (row.skip_code or FailureCode.UNKNOWN.value),
    )


def _on_conflict(insert: postgresql.Insert | sqlite.Insert, table: Table) -> Any:
    excluded = insert.excluded
    # NULL as SQL rather than as a None parameter: SQLAlchemy sends a multi-row upsert
    # one row at a time when its SET clause holds a None-valued parameter.
    reset = {
        column: null()
        for column in (
            "source_sha256",
            "last_error",
            "output_sha256",
            "output_size",
            "task_id",
            "queued_at",
            "started_at",
            "finished_at",
            "duration_s",
        )
    }
    del reset["last_error"]
    skipped = ImageStatus.SKIPPED
    return insert.on_conflict_do_update(
        index_elements=[table.c.collection_id, table.c.source_uri],
        set_={
            "status": excluded.status,
            "last_error": excluded.last_error,
            "failure_code": excluded.failure_code,
            # A source whose format changed is written under a new output name.
            "relative_path": excluded.relative_path,
            "output_uri": excluded.output_uri,
            "source_size": excluded.source_size,
            "source_checksum": excluded.source_checksum,
            "source_checksum_kind": excluded.source_checksum_kind,
            "lost_attempts": 0,
            **reset,
        },
        # A running image keeps its claim, or its worker would lose the work it is
        # doing; the next scan sees the changed checksum again. Otherwise a row changes
        # when its file did, or when the scan's verdict did: a file skipped by the scan
        # (no attempts) that is now an image, or a known file now skipped, or skipped
        # for another reason.
        where=(
            (table.c.status != ImageStatus.RUNNING)
            & (
                table.c.source_checksum.is_distinct_from(excluded.source_checksum)
                | (
                    (excluded.status == skipped)
                    & (
                        (table.c.status != ImageStatus.SKIPPED)
                        | table.c.last_error.is_distinct_from(excluded.last_error)
                        | table.c.failure_code.is_distinct_from(excluded.failure_code)
                    )
                )
                | (
                    (excluded.status != skipped)
                    & (table.c.status == ImageStatus.SKIPPED)
                    & (table.c.attempts == 0)
                )
            )
        ),
    ).returning(table.c.id)


def _upsert_postgresql(
    db: Session, table: Table, collection_id: int, rows: list[ScannedImage], chunk_rows: int
) -> int:
    # One array parameter per column: the statement text stays the same short string
    # whatever the batch size, so neither SQLAlchemy nor psycopg re-parses it per row.
    types: tuple[type[Text] | type[BigInteger], ...] = (
        Text,
        Text,
        Text,
        BigInteger,
        Text,
        Text,
        Text,
        Text,
        Text,
    )
    arrays = [
        bindparam(name, type_=postgresql.ARRAY(item_type))
        for name, item_type in zip(SCANNED_COLUMNS, types, strict=True)
    ]
    scanned = func.unnest(*arrays).table_valued(*SCANNED_COLUMNS).render_derived("scanned")
    source = select(
        literal(collection_id),
        *(scanned.c[name] for name in SCANNED_COLUMNS),
        literal(0),
        literal(0),
    )
    insert = postgresql.insert(table).from_select(
        ["collection_id", *SCANNED_COLUMNS, "attempts", "lost_attempts"], source
    )
    statement = _on_conflict(insert, table)
    written = 0
    for start in range(0, len(rows), chunk_rows):
        columns = zip(*(_values(row) for row in rows[start : start + chunk_rows]), strict=True)
        params = {name: list(values) for name, values in zip(SCANNED_COLUMNS, columns, strict=True)}
        written += len(db.execute(statement, params).all())
    return written


def _upsert_sqlite(
    db: Session, table: Table, collection_id: int, rows: list[ScannedImage], chunk_rows: int
) -> int:
    statement = _on_conflict(sqlite.insert(table), table)
    params = [
        {
            "collection_id": collection_id,
            **dict(zip(SCANNED_COLUMNS, _values(row), strict=True)),
            "attempts": 0,
            "lost_attempts": 0,
        }
        for row in rows
    ]
    # One executemany: compiled once, sent as multi-row INSERTs of chunk_rows rows.
    options = {"insertmanyvalues_page_size": chunk_rows}
    return len(db.execute(statement.execution_options(**options), params).all())


def _count_images(db: Session, collection_id: int) -> int:
    query = select(func.count()).select_from(Image).where(Image.collection_id == collection_id)
    return int(db.scalar(query) or 0)


#: Skipped files named in a summary; beyond it, the summary says how to list them all.
SKIPPED_LISTED = 10


@database_errors()
def skipped_images(
    db: Session, collection_id: int, *, limit: int = SKIPPED_LISTED
) -> tuple[int, tuple[tuple[str, str], ...]]:
    """Count a collection's skipped images and name the first ones, for a summary.

    Args:
        db: The caller's session.
        collection_id: The collection.
        limit: Most images named.

    Returns:
        How many are skipped, and the first ``limit`` of them as (relative path, reason)
        in path order.
    """
    skipped = (Image.collection_id == collection_id) & (Image.status == ImageStatus.SKIPPED)
    total = int(db.scalar(select(func.count()).select_from(Image).where(skipped)) or 0)
    rows = db.execute(
        select(Image.relative_path, Image.last_error)
        .where(skipped)
        .order_by(Image.relative_path)
        .limit(limit)
    ).all()
    return total, tuple((path, reason or "skipped") for path, reason in rows)


@database_errors()
def register_images(
    db: Session,
    collection_id: int,
    rows: Iterable[ScannedImage],
    *,
    chunk_rows: int = REGISTER_CHUNK_ROWS,
) -> RegisterCounts:
    """Add scanned images to a collection, idempotently, in a few bulk statements.

    New sources are inserted as ``pending``. A known source whose checksum differs from
    the stored one is reset to ``pending`` with the new size and checksum, whatever it
    was (done, failed, skipped, cancelled, queued), except while it is running. Known,
    unchanged sources are not touched. Sources are identified by ``source_uri``; a
    source listed twice is registered once. A finished collection that gains work
    becomes active again.

    Args:
        db: The caller's session.
        collection_id: The collection the images belong to.
        rows: The scanned images (an iterable, consumed once).
        chunk_rows: Rows per statement.

    Returns:
        How many images were new, changed and unchanged.

    Raises:
        CollectionNotFound: If the collection does not exist.
        DuplicateOutput: If two different sources would be written to one output,
            within ``rows`` or against images already registered.
        DatabaseUnavailable: If the database cannot be reached.
    """
    collection = db.get(Collection, collection_id)
    if collection is None:
        raise CollectionNotFound(f"no collection with id {collection_id}")
    distinct = _distinct_rows(collection_id, rows)
    if not distinct:
        return RegisterCounts(new=0, changed=0, unchanged=0)
    table = Image.__table__
    assert isinstance(table, Table)
    upsert = _upsert_postgresql if insert_for(db) is postgresql.insert else _upsert_sqlite

    before = _count_images(db, collection_id)
    try:
        written = upsert(db, table, collection_id, distinct, chunk_rows)
    except IntegrityError as exc:
        if "output_uri" not in str(exc.orig):
            raise
        raise DuplicateOutput(
            f"collection {collection_id}: a scanned source maps to an output that another, "
            f"already registered source writes ({exc.orig})"
        ) from exc
    new = _count_images(db, collection_id) - before
    counts = RegisterCounts(new=new, changed=written - new, unchanged=len(distinct) - written)

    if written and collection.status is CollectionStatus.DONE:
        db.execute(
            update(Collection)
            .where(Collection.id == collection_id, Collection.status == CollectionStatus.DONE)
            .values(status=CollectionStatus.ACTIVE, updated_at=utcnow())
            .execution_options(synchronize_session="fetch")
        )
    logger.info(
        "collection %s: registered %d images (%d new, %d changed, %d unchanged)",
        collection_id,
        counts.total,
        counts.new,
        counts.changed,
        counts.unchanged,
    )
    return counts
