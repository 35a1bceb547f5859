"""Submitting a known collection again: what changed, and what becomes of its done images.

``submit()`` calls on this module for a collection that already exists:

- :func:`setting_changes` names each stored setting that the submission changes, old and
  new value, for its summary.
- :class:`Resubmission`, chunk by chunk of the scan: before registering, it hashes again
  the done images whose change detector moved while their size did not, and keeps them
  done when their bytes are the same (``touch`` alone redoes nothing); after registering,
  it renames the planned outputs of images not done yet, counts the done images made
  with other settings and, when asked (``--redo-changed``), sets them back to pending.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, Final

from catalog import (
    KnownImages,
    ProcessingTarget,
    Recheck,
    Reprocessing,
    ScannedImage,
    confirm_sources,
    known_images,
    reconcile_images,
    transaction,
)
from scheduler.collection_settings import CollectionSettings
from storage.errors import StorageError, StorageUnavailable

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from storage.base import Storage

__all__ = ["HASH_THREADS", "Resubmission", "SettingChange", "processing_target", "setting_changes"]

logger = logging.getLogger(__name__)

#: Sources hashed at once when a scan finds done images whose change detector moved.
HASH_THREADS: Final = 8


@dataclass(frozen=True)
class SettingChange:
    """One stored setting of a collection that a submission changed.

    Attributes:
        name: The setting: a field of ``CollectionSettings`` ("input_size", "upsample",
            "checkpoint_sha256"...) or a key of its options.
        old: The value before.
        new: The value now.
    """

    name: str
    old: Any
    new: Any


def setting_changes(
    before: CollectionSettings, after: CollectionSettings
) -> tuple[SettingChange, ...]:
    """Name the settings that differ between a collection's stored and new settings.

    Args:
        before: What the collection held.
        after: What it holds now (``CollectionSettings.over``'s result).

    Returns:
        One change per differing setting, in field order, then options keys sorted.
    """
    changes = [
        SettingChange(item.name, getattr(before, item.name), getattr(after, item.name))
        for item in fields(CollectionSettings)
        if item.name not in ("options", "given")
        and getattr(before, item.name) != getattr(after, item.name)
    ]
    for key in sorted(set(before.options) | set(after.options)):
        old, new = before.options.get(key), after.options.get(key)
        if old != new:
            changes.append(SettingChange(key, old, new))
    return tuple(changes)


def processing_target(
    settings: CollectionSettings, previous: CollectionSettings | None
) -> ProcessingTarget:
    """How done images are compared with the collection's settings now.

    Args:
        settings: The collection's settings now.
        previous: What it held before this submission; None for a new collection.

    Returns:
        The target for ``catalog.reconcile_images``.
    """
    return ProcessingTarget(
        input_size=settings.input_size,
        checkpoint_sha256=settings.checkpoint_sha256,
        model_name=settings.model_name,
        untrained=settings.untrained,
        upsample=settings.upsample,
        previous_upsample=previous.upsample if previous is not None else None,
    )


class Resubmission:
    """The work of a submission on the images a collection already had, chunk by chunk.

    Args:
        sessions: The catalog's session factory.
        storage: The store of the source, to hash originals again.
        collection_id: The collection.
        target: How its images are to be made now.
        redo: Set done images made with other settings back to pending.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        storage: Storage,
        collection_id: int,
        target: ProcessingTarget,
        *,
        redo: bool,
    ) -> None:
        self._sessions = sessions
        self._storage = storage
        self._collection_id = collection_id
        self._target = target
        self._redo = redo
        self.report = Reprocessing()
        self._known = KnownImages({}, {})

    def recheck(self, chunk: Sequence[ScannedImage]) -> None:
        """Read what the catalog holds of ``chunk``, and keep done the touched but unchanged.

        Call it before registering the chunk: the registration then finds the change
        detector of a source with the same bytes unchanged. The files are hashed outside
        any transaction.

        Args:
            chunk: Scanned images.

        Raises:
            StorageUnavailable: If the store cannot be reached.
            DatabaseUnavailable: If the catalog cannot be reached.
        """
        with transaction(self._sessions) as db:
            self._known = known_images(db, self._collection_id, chunk)
        rechecks = self._known.rechecks()
        if not rechecks:
            return
        with ThreadPoolExecutor(max_workers=min(HASH_THREADS, len(rechecks))) as pool:
            digests = list(pool.map(self._sha256, rechecks))
        same = [
            recheck
            for recheck, digest in zip(rechecks, digests, strict=True)
            if digest == recheck.source_sha256
        ]
        if same:
            with transaction(self._sessions) as db:
                confirmed = confirm_sources(db, same)
            self._known.confirmed(confirmed)
            self.report += Reprocessing(same_content=len(confirmed))
        logger.info(
            "collection %s: %d done images' sources changed time or ETag: %d have the same "
            "sha256 and stay done",
            self._collection_id,
            len(rechecks),
            len(same),
        )

    def _sha256(self, recheck: Recheck) -> str | None:
        uri = recheck.scanned.source_uri
        try:
            return self._storage.sha256(uri)
        except StorageUnavailable:
            raise
        except StorageError as exc:
            # The registration sets it back to pending; the worker then says what is wrong.
            logger.warning("collection %s: cannot hash %s: %s", self._collection_id, uri, exc)
            return None

    def reconcile(self, db: Session) -> None:
        """Rename, count and (when asked) redo the known images of the chunk just registered.

        Args:
            db: The session that registered the chunk given to :meth:`recheck`.

        Raises:
            DuplicateOutput: If a new output name is another image's.
            DatabaseUnavailable: If the catalog cannot be reached.
        """
        self.report += reconcile_images(
            db, self._collection_id, self._known, self._target, redo=self._redo
        )
