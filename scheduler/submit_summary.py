"""What a submission reports: its progress while it runs, and its summary at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from catalog import Reprocessing
from storage.skips import IGNORED_REASONS

if TYPE_CHECKING:
    from scheduler.collection_settings import CollectionSettings
    from scheduler.resubmission import SettingChange

__all__ = ["SubmitProgress", "SubmitProgressCallback", "SubmitSummary"]


@dataclass(frozen=True)
class SubmitProgress:
    """How far a submission has got, for a progress display.

    Attributes:
        scanned: Images found by the scan so far.
        skipped: Entries the scan passed over so far.
        registered: Images written to the catalog so far.
        dispatched: Tasks sent for the collection so far.
        scan_finished: Whether the scan has listed everything.
    """

    scanned: int
    skipped: int
    registered: int
    dispatched: int = 0
    scan_finished: bool = False


#: Told the progress of a submission while it scans and registers.
SubmitProgressCallback = Callable[[SubmitProgress], None]


@dataclass(frozen=True)
class SubmitSummary:
    """What ``submit()`` did.

    Attributes:
        collection_id: The collection's id.
        name: Its name.
        created: Whether this submission created it.
        source: Its source location, normalised.
        output: Its output location, normalised.
        new: Images registered for the first time.
        changed: Known images whose source changed, back to pending.
        unchanged: Known images left as they were.
        skipped: Entries the scan passed over, per reason.
        skipped_examples: A few relative paths per skip reason.
        found_bytes: Total size of the images found, in bytes.
        dispatched: Tasks sent for this collection by the dispatch passes.
        dispatched_total: Tasks sent for all collections by the passes (a higher
            priority collection goes first).
        opens_at: When the collection's start window opens, if it has not opened yet.
        pending: Images of this collection still waiting to be dispatched (window,
            back-pressure or a failed send); the scheduler sends them later.
        in_flight: Images of all collections queued in the broker after the last pass.
        dispatch_error: Why dispatching failed, if it did (the broker was unreachable);
            registration is complete all the same, and no further pass was tried.
        skipped_total: Files of the collection recorded as ``skipped`` in the catalog
            (by this scan or an earlier one), each with its reason.
        skipped_files: The first :data:`catalog.SKIPPED_LISTED` of them, as (relative path,
            reason), in path order.
        setting_changes: The stored settings this submission changed, old and new.
        reprocessing: What became of the images the collection already had: done images
            made with other settings (redone or not), outputs renamed, sources touched
            but unchanged.
        settings: The collection's settings after the submission (those not given kept
            their stored values).
    """

    collection_id: int
    name: str
    created: bool
    source: str
    output: str
    new: int
    changed: int
    unchanged: int
    skipped: dict[str, int]
    skipped_examples: dict[str, list[str]]
    found_bytes: int
    dispatched: int
    dispatched_total: int
    opens_at: datetime | None
    pending: int
    in_flight: int
    dispatch_error: str | None = None
    skipped_total: int = 0
    skipped_files: tuple[tuple[str, str], ...] = ()
    setting_changes: tuple[SettingChange, ...] = ()
    reprocessing: Reprocessing = field(default_factory=Reprocessing)
    settings: CollectionSettings | None = None

    @property
    def ignored(self) -> dict[str, int]:
        """Entries not recorded because they are not part of the collection, per reason."""
        return {reason: n for reason, n in self.skipped.items() if reason in IGNORED_REASONS}

    @property
    def registered(self) -> int:
        """Images found by the scan and present in the catalog."""
        return self.new + self.changed + self.unchanged

    @property
    def total_skipped(self) -> int:
        """Entries the scan passed over, all reasons together."""
        return sum(self.skipped.values())

    @property
    def held(self) -> bool:
        """Whether the start window kept the collection from being dispatched."""
        return self.opens_at is not None
