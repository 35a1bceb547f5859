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

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        OUTPUT_FORMAT_OPTION,
        Attempt,
        Base,
        Collection,
        Derivative,
        Event,
        Image,
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
    from catalog.reprocessing import (
        UNTRAINED_CHECKPOINT,
        KnownImages,
        ProcessingTarget,
        Recheck,
        Reprocessing,
        confirm_sources,
        known_images,
        reconcile_images,
    )
    from catalog.states import OPEN_STATUSES, AttemptOutcome, CollectionStatus, ImageStatus
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

#: The module of each public name: importing ``catalog.errors`` (as the CLI does for its
#: error handling) must not import the rest, so the package imports on first use.
_SOURCES = {
    "database_errors": "engine",
    "make_engine": "engine",
    "make_sessionmaker": "engine",
    "sqlite_url_for": "engine",
    "transaction": "engine",
    "CatalogError": "errors",
    "CollectionNotFound": "errors",
    "ConflictingCollection": "errors",
    "DatabaseUnavailable": "errors",
    "DuplicateOutput": "errors",
    "ImageNotFound": "errors",
    "SchemaMismatch": "errors",
    "Attempt": "models",
    "Base": "models",
    "Collection": "models",
    "Derivative": "models",
    "Event": "models",
    "Image": "models",
    "OUTPUT_FORMAT_OPTION": "models",
    "image_sources_among": "outputs",
    "record_output_intent": "outputs",
    "recorded_outputs": "outputs",
    "CollectionRef": "queries",
    "count_in_flight": "queries",
    "count_progressing": "queries",
    "get_collection": "queries",
    "get_image": "queries",
    "list_attempts": "queries",
    "list_collections": "queries",
    "list_images": "queries",
    "RegisterCounts": "registration",
    "SKIPPED_LISTED": "registration",
    "ScannedImage": "registration",
    "register_images": "registration",
    "skipped_images": "registration",
    "UNTRAINED_CHECKPOINT": "reprocessing",
    "ProcessingTarget": "reprocessing",
    "Recheck": "reprocessing",
    "Reprocessing": "reprocessing",
    "confirm_sources": "reprocessing",
    "reconcile_images": "reprocessing",
    "KnownImages": "reprocessing",
    "known_images": "reprocessing",
    "AttemptOutcome": "states",
    "CollectionStatus": "states",
    "ImageStatus": "states",
    "OPEN_STATUSES": "states",
    "CollectionProgress": "status",
    "FailureReason": "status",
    "StatusReport": "status",
    "collection_status": "status",
    "CollectionRoots": "submission",
    "collection_roots": "submission",
    "create_or_get_collection": "submission",
    "Claim": "transitions",
    "MAX_LOST_ATTEMPTS": "transitions",
    "Provenance": "transitions",
    "RETRYABLE_STATUSES": "transitions",
    "Released": "transitions",
    "cancel_collection": "transitions",
    "claim_image": "transitions",
    "complete_collection": "transitions",
    "held_attempt": "transitions",
    "mark_done": "transitions",
    "mark_failed": "transitions",
    "queue_pending": "transitions",
    "record_oom_retry": "transitions",
    "release_claim": "transitions",
    "release_lost": "transitions",
    "reopen_collections": "transitions",
    "resume_collection": "transitions",
    "retry_images": "transitions",
    "unqueue": "transitions",
    "unqueue_stale": "transitions",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'catalog' has no attribute {name!r}")
    return getattr(import_module(f"catalog.{module}"), name)


__all__ = [
    "OUTPUT_FORMAT_OPTION",
    "MAX_LOST_ATTEMPTS",
    "OPEN_STATUSES",
    "RETRYABLE_STATUSES",
    "SKIPPED_LISTED",
    "UNTRAINED_CHECKPOINT",
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
    "Derivative",
    "Event",
    "ConflictingCollection",
    "DatabaseUnavailable",
    "DuplicateOutput",
    "FailureReason",
    "Image",
    "ImageNotFound",
    "ImageStatus",
    "KnownImages",
    "ProcessingTarget",
    "Provenance",
    "Recheck",
    "RegisterCounts",
    "Released",
    "Reprocessing",
    "ScannedImage",
    "SchemaMismatch",
    "StatusReport",
    "cancel_collection",
    "claim_image",
    "collection_roots",
    "held_attempt",
    "collection_status",
    "complete_collection",
    "confirm_sources",
    "count_in_flight",
    "count_progressing",
    "create_or_get_collection",
    "database_errors",
    "get_collection",
    "get_image",
    "known_images",
    "image_sources_among",
    "list_attempts",
    "list_collections",
    "list_images",
    "make_engine",
    "make_sessionmaker",
    "mark_done",
    "mark_failed",
    "queue_pending",
    "reconcile_images",
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
