"""``panchro verify NAME``: re-hash every file of a collection against the catalog.

Every file with a recorded sha256 (each source a worker read, each done image's output and
access copies) is read back from its store in pieces, ``jobs`` files at a time on threads
(hashlib releases the GIL, so threads hash in parallel), and its digest compared with the
catalog's. Each check becomes one ``events`` row (``fixity check``, the object's role, the
outcome ``ok``, ``changed``, ``missing`` or ``error``, the expected and found digests, and
who checked), written page by page; sources never read (pending or skipped images) have no
digest and are counted as such.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Final

from catalog.engine import transaction
from catalog.models import Collection, utcnow
from catalog.preservation import NewEvent, count_digests, record_events
from catalog.queries import get_collection
from exports.objects import Agent, PreservedObject, Stores, digest_object, image_objects, records
from storage.errors import ObjectNotFound, StorageError

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "CHANGED",
    "ERROR",
    "FIXITY_CHECK",
    "MISSING",
    "OK",
    "Check",
    "VerifyReport",
    "count_checks",
    "verify_collection",
]

logger = logging.getLogger(__name__)

#: ``events.event_type`` of a check (PREMIS's word).
FIXITY_CHECK: Final = "fixity check"
#: The file's digest is the recorded one.
OK: Final = "ok"
#: The file is there but its digest is not the recorded one.
CHANGED: Final = "changed"
#: The file is gone.
MISSING: Final = "missing"
#: The file could not be read (permissions, an unreachable store): nothing is known.
ERROR: Final = "error"


@dataclass(frozen=True, slots=True)
class Check:
    """The outcome of checking one file.

    Attributes:
        item: The file and its recorded digest.
        outcome: ``ok``, ``changed``, ``missing`` or ``error``.
        detail: The location, expected and found digests, or the error, in words.
        at: When the check ended.
    """

    item: PreservedObject
    outcome: str
    detail: str
    at: datetime


@dataclass
class VerifyReport:
    """How a collection's check went.

    Attributes:
        outcomes: Files checked per outcome.
        without_digest: Files not checked because no digest was recorded for them.
        events: ``events`` rows written.
    """

    outcomes: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((OK, CHANGED, MISSING, ERROR), 0)
    )
    without_digest: int = 0
    events: int = 0

    @property
    def checked(self) -> int:
        """Files checked, whatever the outcome."""
        return sum(self.outcomes.values())

    @property
    def problems(self) -> int:
        """Files changed, missing or unreadable."""
        return self.checked - self.outcomes[OK]


def _check(stores: Stores, item: PreservedObject) -> Check:
    expected = f"{item.uri}: expected sha256 {item.sha256}"
    try:
        found = digest_object(stores.for_uri(item.uri), item.uri)
    except ObjectNotFound:
        return Check(item, MISSING, f"{expected}; not found", utcnow())
    except StorageError as exc:
        return Check(item, ERROR, f"{expected}; cannot read it: {exc}", utcnow())
    if found.sha256 == item.sha256:
        return Check(item, OK, f"{expected}, found it", utcnow())
    return Check(item, CHANGED, f"{expected}, found {found.sha256} ({found.size} bytes)", utcnow())


def count_checks(sessions: sessionmaker[Session], name: str) -> int:
    """Count the files a check of the collection will read (for a progress bar).

    Args:
        sessions: The catalog's session factory.
        name: The collection's name.

    Returns:
        Files with a recorded digest.

    Raises:
        CollectionNotFound: If there is no collection of that name.
    """
    with transaction(sessions) as db:
        return count_digests(db, get_collection(db, name).id)


def verify_collection(
    sessions: sessionmaker[Session],
    name: str,
    agent: Agent,
    stores: Stores,
    *,
    jobs: int = 4,
    on_check: Callable[[Check], None] | None = None,
) -> VerifyReport:
    """Re-hash every file of a collection with a recorded digest, and record each check.

    Args:
        sessions: The catalog's session factory.
        name: The collection's name.
        agent: This panchro and host (each event's ``agent``).
        stores: Where the files are read from.
        jobs: Files read and hashed at once.
        on_check: Called with each check as it ends, in the collection's order.

    Returns:
        The counts per outcome.

    Raises:
        CollectionNotFound: If there is no collection of that name.
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    with transaction(sessions) as db:
        collection = get_collection(db, name)
    report = VerifyReport()
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="verify") as pool:
        for page in records(sessions, collection, derivatives=True):
            items = [item for record in page for item in image_objects(record)]
            wanted = [item for item in items if item.sha256]
            report.without_digest += len(items) - len(wanted)
            checks = []
            for check in pool.map(lambda item: _check(stores, item), wanted):
                report.outcomes[check.outcome] += 1
                checks.append(check)
                if on_check is not None:
                    on_check(check)
            report.events += _record(sessions, collection, agent, checks)
    logger.info(
        "collection %s checked: %s files, %s problems", name, report.checked, report.problems
    )
    return report


def _record(
    sessions: sessionmaker[Session], collection: Collection, agent: Agent, checks: list[Check]
) -> int:
    events = [
        NewEvent(
            image_id=check.item.image_id,
            event_type=FIXITY_CHECK,
            object_role=check.item.role,
            outcome=check.outcome,
            detail=check.detail,
            agent=agent.label,
            occurred_at=check.at,
        )
        for check in checks
    ]
    with transaction(sessions) as db:
        return record_events(db, collection.id, events)
