"""The job catalog: every image's status and provenance, in PostgreSQL or SQLite.

Build a session factory once and frame each short unit of work with a transaction; the
functions below take that session first and never commit::

    sessions = make_sessionmaker("postgresql+psycopg://catalog@db/panchro")
    with transaction(sessions) as db:
        collection, created = create_or_get_collection(db, "1920s", source, output)
        register_images(db, collection.id, scanned)

The schema is created and upgraded only by the Alembic revisions in ``migrations/``.
"""

from __future__ import annotations

from catalog.engine import (
    database_errors,
    make_engine,
    make_sessionmaker,
    sqlite_url_for,
    transaction,
)
from catalog.errors import (
    CatalogError,
    CollectionNotFound,
    ConflictingCollection,
    DatabaseUnavailable,
    DuplicateOutput,
    ImageNotFound,
    SchemaMismatch,
)
from catalog.models import (
    OPEN_STATUSES,
    OUTPUT_FORMAT_OPTION,
    Attempt,
    AttemptOutcome,
    Base,
    Collection,
    CollectionStatus,
    Image,
    ImageStatus,
)
from catalog.outputs import image_sources_among, record_output_intent, recorded_outputs
from catalog.queries import (
    CollectionRef,
    count_in_flight,
    count_progressing,
    get_collection,
    get_image,
    list_attempts,
    list_collections,
    list_images,
)
from catalog.registration import (
    SKIPPED_LISTED,
    RegisterCounts,
    ScannedImage,
    register_images,
    skipped_images,
)
from catalog.status import CollectionProgress, FailureReason, StatusReport, collection_status
from catalog.submission import CollectionRoots, collection_roots, create_or_get_collection
from catalog.transitions import (
    MAX_LOST_ATTEMPTS,
    RETRYABLE_STATUSES,
    Claim,
    Provenance,
    Released,
    cancel_collection,
    claim_image,
    complete_collection,
    held_attempt,
    mark_done,
    mark_failed,
    queue_pending,
    record_oom_retry,
    release_claim,
    release_lost,
    reopen_collections,
    resume_collection,
    retry_images,
    unqueue,
    unqueue_stale,
)

__all__ = [
    "OUTPUT_FORMAT_OPTION",
    "MAX_LOST_ATTEMPTS",
    "OPEN_STATUSES",
    "RETRYABLE_STATUSES",
    "SKIPPED_LISTED",
    "Attempt",
    "AttemptOutcome",
    "Base",
    "CatalogError",
    "Claim",
    "Collection",
    "CollectionNotFound",
    "CollectionProgress",
    "CollectionRef",
    "CollectionRoots",
    "CollectionStatus",
    "ConflictingCollection",
    "DatabaseUnavailable",
    "DuplicateOutput",
    "FailureReason",
    "Image",
    "ImageNotFound",
    "ImageStatus",
    "Provenance",
    "RegisterCounts",
    "Released",
    "ScannedImage",
    "SchemaMismatch",
    "StatusReport",
    "cancel_collection",
    "claim_image",
    "collection_roots",
    "held_attempt",
    "collection_status",
    "complete_collection",
    "count_in_flight",
    "count_progressing",
    "create_or_get_collection",
    "database_errors",
    "get_collection",
    "get_image",
    "image_sources_among",
    "list_attempts",
    "list_collections",
    "list_images",
    "make_engine",
    "make_sessionmaker",
    "mark_done",
    "mark_failed",
    "queue_pending",
    "record_oom_retry",
    "record_output_intent",
    "recorded_outputs",
    "register_images",
    "release_claim",
    "release_lost",
    "resume_collection",
    "reopen_collections",
    "skipped_images",
    "retry_images",
    "sqlite_url_for",
    "transaction",
    "unqueue",
    "unqueue_stale",
]
