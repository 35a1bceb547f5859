"""Submitting a collection: created once by name, found again by later submits.

Submitting is idempotent, so ``panchro submit`` can be run again on the same source at
any time; ``catalog.registration`` then adds what the new scan found.
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from catalog._upsert import insert_for
from catalog.engine import database_errors
from catalog.errors import ConflictingCollection
from catalog.models import Collection, CollectionStatus, utcnow
from catalog.transitions.lifecycle import resume_collection

logger = logging.getLogger(__name__)

#: Shape of ``not_before``: a local wall-clock time "HH:MM", 24-hour.
NOT_BEFORE_PATTERN = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


class CollectionRoots(NamedTuple):
    """Where one collection reads and writes (normalised locations, as stored)."""

    id: int
    name: str
    source: str
    output: str


@database_errors()
def collection_roots(db: Session) -> list[CollectionRoots]:
    """Return the source and output location of every collection, by id.

    Submitting a collection compares its locations with these, so that no output
    location overlaps a source or another collection's output; a worker checks that the
    output it writes is nobody's original.

    Args:
        db: The caller's session.

    Returns:
        One entry per collection, in id order.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    rows = db.execute(
        select(Collection.id, Collection.name, Collection.source, Collection.output).order_by(
            Collection.id
        )
    ).all()
    return [CollectionRoots(*row) for row in rows]


def _check_not_before(not_before: str | None) -> None:
    if not_before is not None and not NOT_BEFORE_PATTERN.match(not_before):
        raise ValueError(f"not_before must be a 24-hour local time HH:MM, not {not_before!r}")


@database_errors()
def create_or_get_collection(
    db: Session,
    name: str,
    source: str,
    output: str,
    *,
    preset: str | None = None,
    input_size: int | None = None,
    model_name: str | None = None,
    checkpoint_sha256: str | None = None,
    precision: str | None = None,
    upsample: str | None = None,
    not_before: str | None = None,
    priority: int = 0,
    untrained: bool = False,
    options: dict[str, Any] | None = None,
) -> tuple[Collection, bool]:
    """Create a collection, or return the existing one of that name.

    Submitting a name again with the same source and output is how a collection is
    resumed: its settings become the ones given here (they apply to images processed
    from now on; each image keeps its own provenance), a cancelled or finished collection
    becomes active again, and its cancelled images return to ``pending``.

    Args:
        db: The caller's session.
        name: Unique name of the collection.
        source: Source location (already normalised by ``storage``).
        output: Output location (already normalised by ``storage``).
        preset: Size preset name ("portrait", "landscape").
        input_size: Model input size in pixels; None means the preset's.
        model_name: Official checkpoint name of the model.
        checkpoint_sha256: SHA-256 of the weights file.
        precision: Requested precision ("auto", "fp16", "bf16", "fp32").
        upsample: Name of the method that resizes ab to the original size.
        not_before: Local "HH:MM" before which nothing is dispatched each day.
        priority: Dispatch order between collections, higher first.
        untrained: The model runs with random weights (a demonstration).
        options: Further JSON-serialisable options (output format and the like).

    Returns:
        The collection and whether it was created by this call.

    Raises:
        ConflictingCollection: If the name is taken with a different source or output.
        ValueError: If ``name`` is empty or ``not_before`` is not "HH:MM".
        DatabaseUnavailable: If the database cannot be reached.
    """
    if not name.strip():
        raise ValueError("a collection needs a non-empty name")
    _check_not_before(not_before)
    settings: dict[str, Any] = {
        "preset": preset,
        "input_size": input_size,
        "model_name": model_name,
        "checkpoint_sha256": checkpoint_sha256,
        "precision": precision,
        "upsample": upsample,
        "not_before": not_before,
        "priority": priority,
        "untrained": untrained,
        "options": dict(options or {}),
    }
    table = Collection.__table__
    assert isinstance(table, Table)
    now = utcnow()
    # ON CONFLICT DO NOTHING: two submits of one new name at once both end up here
    # without an IntegrityError; exactly one of them inserts.
    insert = (
        insert_for(db)(table)
        .values(
            name=name,
            source=source,
            output=output,
            status=CollectionStatus.ACTIVE,
            created_at=now,
            updated_at=now,
            **settings,
        )
        .on_conflict_do_nothing(index_elements=[table.c.name])
        .returning(table.c.id)
    )
    created_id = db.execute(insert).scalar_one_or_none()
    collection = db.scalars(
        select(Collection).where(Collection.name == name).execution_options(populate_existing=True)
    ).one()
    if created_id is not None:
        logger.info("collection %s (%s) created: %s -> %s", collection.id, name, source, output)
        return collection, True

    if (collection.source, collection.output) != (source, output):
        raise ConflictingCollection(
            f"collection {name!r} already exists for {collection.source} -> "
            f"{collection.output}; submit {source} -> {output} under another name"
        )
    changed = sorted(key for key, value in settings.items() if getattr(collection, key) != value)
    for key in changed:
        setattr(collection, key, settings[key])
    if changed:
        collection.updated_at = now
        logger.info("collection %s (%s) settings changed: %s", collection.id, name, changed)
    if collection.status is not CollectionStatus.ACTIVE:
        resume_collection(db, collection.id)
    db.flush()
    return collection, False
