"""Typed ORM models of the job catalog: collections, images and their attempts.

The catalog is the source of truth for every image's status and provenance. Five
tables hold it:

- ``collections``: one submitted source tree and the settings it is processed with.
- ``images``: one source image, its status and the provenance of its output.
- ``attempts``: one row per try at an image, the provenance trail.
- ``derivatives``: access copies written beside an image's master output.
- ``events``: preservation events that are not tries, such as fixity checks.

Times are stored in UTC and always come back as timezone-aware UTC datetimes, on
PostgreSQL (``timestamp with time zone``) and on SQLite (text) alike. Status columns are
plain strings guarded by a CHECK constraint, which behaves the same on both databases
and keeps bogus values out even when rows are written without the ORM.

The schema is created only through the Alembic revisions in ``migrations/``; these models
are their source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# The enums the columns hold, importable from here beside the models.
from catalog.states import OPEN_STATUSES as OPEN_STATUSES
from catalog.states import AttemptOutcome as AttemptOutcome
from catalog.states import CollectionStatus as CollectionStatus
from catalog.states import ImageStatus as ImageStatus

#: Constraint and index names, so that migrations can refer to them by a stable name.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Length of the string columns that hold an enum value, in characters; leaves room for
#: new values without a column type change.
STATUS_LENGTH = 16


def _enum_values(enum_class: type[Enum]) -> list[str]:
    return [str(member.value) for member in enum_class]


def _string_enum(enum_class: type[Enum], name: str) -> SAEnum:
    # A VARCHAR plus a named CHECK constraint rather than a native PostgreSQL enum type:
    # it works the same on SQLite, and adding a value later is a constraint change
    # instead of an ALTER TYPE that cannot run inside a transaction.
    return SAEnum(
        enum_class,
        name=name,
        native_enum=False,
        length=STATUS_LENGTH,
        values_callable=_enum_values,
        validate_strings=True,
        create_constraint=True,
    )


#: Column type of ``images.status``.
STATUS = _string_enum(ImageStatus, "status")
#: Column type of ``collections.status``.
COLLECTION_STATUS = _string_enum(CollectionStatus, "status")
#: Column type of ``attempts.outcome``.
OUTCOME = _string_enum(AttemptOutcome, "outcome")


class UTCDateTime(TypeDecorator[datetime]):
    """``DateTime(timezone=True)`` that takes and returns timezone-aware UTC datetimes.

    PostgreSQL returns ``timestamptz`` values in the session's time zone and SQLite has no
    time zones at all; this type converts every value to UTC on the way in and marks it
    as UTC on the way out, so callers see the same thing on both databases.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC before it is written.

        Args:
            value: The datetime to store, or None.
            dialect: The database dialect in use.

        Returns:
            The UTC datetime (naive on SQLite, which stores no offset), or None.

        Raises:
            ValueError: If ``value`` is naive, so its instant is unknown.
        """
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: the catalog stores aware UTC times")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return a stored datetime as an aware UTC datetime.

        Args:
            value: The datetime the driver returned, or None.
            dialect: The database dialect in use.

        Returns:
            The same instant with ``tzinfo=UTC``, or None.
        """
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    """Return the current time as an aware UTC datetime.

    Returns:
        ``datetime.now(UTC)``.
    """
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of every catalog table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {datetime: UTCDateTime(), dict[str, Any]: JSON()}


#: Key of ``Collection.options`` that holds the output format asked for, if any
#: (``"png"``, ``"tif"``...); absent means each original's format family.
OUTPUT_FORMAT_OPTION = "output_format"
#: Key of ``Collection.options`` that asks to skip originals already in colour
#: (``workers.source_checks``).
SKIP_COLOUR_OPTION = "skip_colour"


class Collection(Base):
    """One submitted source tree, where its outputs go and how it is processed."""

    __tablename__ = "collections"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    #: Source location: a local folder or ``s3://bucket/prefix``.
    source: Mapped[str] = mapped_column(Text)
    #: Output location: a local folder or ``s3://bucket/prefix``.
    output: Mapped[str] = mapped_column(Text)
    preset: Mapped[str | None] = mapped_column(String(32))
    #: Requested square model input size in pixels; None means the preset's size.
    input_size: Mapped[int | None]
    model_name: Mapped[str | None] = mapped_column(String(64))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    precision: Mapped[str | None] = mapped_column(String(16))
    #: Name of the method that resizes the predicted ab channels to the original size.
    upsample: Mapped[str | None] = mapped_column(String(32))
    #: Local wall-clock time ("HH:MM") before which the dispatcher sends nothing each day.
    not_before: Mapped[str | None] = mapped_column(String(5))
    #: Dispatch order between collections: higher first.
    priority: Mapped[int] = mapped_column(default=0)
    status: Mapped[CollectionStatus] = mapped_column(
        COLLECTION_STATUS, default=CollectionStatus.ACTIVE
    )
    #: True when the model runs with random weights: a demonstration, not a colorization.
    untrained: Mapped[bool] = mapped_column(default=False)
    #: Further processing options (output format and the like), JSON-serialisable.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    def __repr__(self) -> str:
        return f"Collection(id={self.id!r}, name={self.name!r}, status={self.status!r})"


class Image(Base):
    """One source image of a collection; its row is the status and provenance record."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("collection_id", "source_uri"),
        # Two sources must never write the same output.
        UniqueConstraint("collection_id", "output_uri"),
        # Dispatch (pending by id), status counts and listings of one collection.
        Index("ix_images_collection_id_status_id", "collection_id", "status", "id"),
        # Throughput over the last minutes.
        Index("ix_images_collection_id_finished_at", "collection_id", "finished_at"),
        # Failures of one collection grouped by reason.
        Index("ix_images_collection_id_failure_code", "collection_id", "failure_code"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    source_uri: Mapped[str] = mapped_column(Text)
    #: Path of the source relative to the collection's source, with "/" separators.
    relative_path: Mapped[str] = mapped_column(Text)
    output_uri: Mapped[str] = mapped_column(Text)
    #: Size of the source in bytes when it was scanned.
    source_size: Mapped[int | None] = mapped_column(BigInteger)
    #: Change detector taken at scan time: an S3 ETag or a local "mtime+size" string.
    source_checksum: Mapped[str | None] = mapped_column(String(200))
    #: What ``source_checksum`` is ("etag", "mtime-size", "sha256").
    source_checksum_kind: Mapped[str | None] = mapped_column(String(16))
    #: SHA-256 of the bytes the worker actually read.
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    width: Mapped[int | None]
    height: Mapped[int | None]
    #: Pixel mode of the source as decoded ("L", "I;16", "RGB", "P", "LA").
    mode: Mapped[str | None] = mapped_column(String(16))
    bit_depth: Mapped[int | None]
    # Indexed on its own for the dispatcher's count of queued images over all collections.
    status: Mapped[ImageStatus] = mapped_column(STATUS, default=ImageStatus.PENDING, index=True)
    #: Number of tries (rows in ``attempts``), including out-of-memory retries.
    attempts: Mapped[int] = mapped_column(default=0)
    #: Tries abandoned because the worker died; the image fails when it reaches a cap.
    lost_attempts: Mapped[int] = mapped_column(default=0)
    #: Why the image failed or was skipped, in words a person can act on.
    last_error: Mapped[str | None] = mapped_column(Text)
    #: Stable, machine-readable code of that reason ("decode.truncated", "oom.floor"...):
    #: what reports and counts group by, since ``last_error`` names the file.
    failure_code: Mapped[str | None] = mapped_column(String(48))
    #: Things a person should know about a done image, each ``{"code": ..., "message": ...}``
    #: (an original already in colour, extra TIFF pages not carried...).
    warnings: Mapped[list[dict[str, str]] | None] = mapped_column(JSON)
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    #: Size of the written output in bytes.
    output_size: Mapped[int | None] = mapped_column(BigInteger)
    #: Model input size in pixels that produced the output.
    input_size: Mapped[int | None]
    #: Every input size tried, in order, the last one being ``input_size``.
    sizes_tried: Mapped[list[int] | None] = mapped_column(JSON)
    precision: Mapped[str | None] = mapped_column(String(16))
    #: Method that resized the predicted ab channels to the original size.
    upsample: Mapped[str | None] = mapped_column(String(32))
    #: Small JPEG of the original, written when the image finished (for reports).
    source_thumb_uri: Mapped[str | None] = mapped_column(Text)
    #: Small JPEG of the output, written beside ``source_thumb_uri``.
    output_thumb_uri: Mapped[str | None] = mapped_column(Text)
    #: JSON sidecar with the output's provenance, where the collection asked for one.
    sidecar_uri: Mapped[str | None] = mapped_column(Text)
    #: What ran the model: torch's device backend ("cuda", "rocm", "cpu"), or ONNX Runtime
    #: and its device ("onnx-cpu", "onnx-cuda").
    backend: Mapped[str | None] = mapped_column(String(16))
    device: Mapped[str | None] = mapped_column(String(128))
    worker_host: Mapped[str | None] = mapped_column(String(255))
    model_name: Mapped[str | None] = mapped_column(String(64))
    checkpoint_sha256: Mapped[str | None] = mapped_column(String(64))
    #: Id of the broker message that is processing (or last processed) the image.
    task_id: Mapped[str | None] = mapped_column(String(64))
    queued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    #: Seconds between ``started_at`` and ``finished_at``.
    duration_s: Mapped[float | None]

    collection: Mapped[Collection] = relationship()

    def __repr__(self) -> str:
        return f"Image(id={self.id!r}, source_uri={self.source_uri!r}, status={self.status!r})"


class Attempt(Base):
    """One try at an image, by one worker at one input size: the provenance trail."""

    __tablename__ = "attempts"
    __table_args__ = (UniqueConstraint("image_id", "number"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))
    #: 1 for the first try at the image, then 2, 3...
    number: Mapped[int]
    #: Host or Celery node name of the worker.
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(128))
    #: Model input size in pixels of this try.
    input_size: Mapped[int | None]
    precision: Mapped[str | None] = mapped_column(String(16))
    #: None while the try is running.
    outcome: Mapped[AttemptOutcome | None] = mapped_column(OUTCOME)
    error: Mapped[str | None] = mapped_column(Text)
    #: SHA-256 of the output this try wrote, recorded just before it wrote it: a later try
    #: of the image recognises a file left by this one (a worker killed after the write).
    output_sha256: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    image: Mapped[Image] = relationship()

    def __repr__(self) -> str:
        return (
            f"Attempt(id={self.id!r}, image_id={self.image_id!r}, number={self.number!r}, "
            f"outcome={self.outcome!r})"
        )


class Derivative(Base):
    """One access copy of an image's output (e.g. a JPEG with a 3000 px long edge)."""

    __tablename__ = "derivatives"
    __table_args__ = (UniqueConstraint("image_id", "uri"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    #: Format of the copy ("jpeg").
    kind: Mapped[str] = mapped_column(String(16))
    #: Long edge asked for, in pixels; the copy is never larger than the original.
    long_edge: Mapped[int] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    #: Size of the written copy in bytes.
    size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int]
    height: Mapped[int]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    image: Mapped[Image] = relationship()

    def __repr__(self) -> str:
        return f"Derivative(id={self.id!r}, image_id={self.image_id!r}, uri={self.uri!r})"


class Event(Base):
    """One preservation event that is not a try at an image (a fixity check, an export)."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_collection_id_occurred_at", "collection_id", "occurred_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    collection_id: Mapped[int] = mapped_column(ForeignKey("collections.id", ondelete="CASCADE"))
    #: The image the event is about; None for an event about the whole collection.
    image_id: Mapped[int | None] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True
    )
    #: What happened, in PREMIS's event-type vocabulary where it has a word for it
    #: ("fixity check", "ingestion", "dissemination"...).
    event_type: Mapped[str] = mapped_column(String(32))
    #: Which object of the image it concerns ("source", "output", "derivative"), if any.
    object_role: Mapped[str | None] = mapped_column(String(16))
    #: How it ended ("ok", "changed", "missing", "error").
    outcome: Mapped[str] = mapped_column(String(16))
    #: What a person needs to know (expected and found digests, the error).
    detail: Mapped[str | None] = mapped_column(Text)
    #: Who did it: host and panchro version.
    agent: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(default=utcnow)

    def __repr__(self) -> str:
        return (
            f"Event(id={self.id!r}, event_type={self.event_type!r}, "
            f"image_id={self.image_id!r}, outcome={self.outcome!r})"
        )
