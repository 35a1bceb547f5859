"""Scanning a collection's source: the images it holds, with progress for the command line.

A thin layer over :func:`storage.scan.scan`: it opens nothing itself (the caller passes
the store) and adds a progress callback, so ``panchro submit`` can show how far a scan of
millions of objects has got.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from scheduler.outputs import Location
from storage.base import Storage
from storage.scan import scan
from storage.scan_report import ScannedObject, ScanReport
from storage.uri import parse_uri

logger = logging.getLogger(__name__)

#: Objects (found or skipped) between two progress callbacks.
PROGRESS_EVERY = 1_000


@dataclass(frozen=True)
class ScanProgress:
    """How far a scan has got.

    Attributes:
        found: Images found so far.
        skipped: Entries passed over so far (hidden, system, not an image...).
        found_bytes: Total size of the images found, in bytes.
        finished: True in the last callback, once the listing is exhausted.
    """

    found: int
    skipped: int
    found_bytes: int
    finished: bool = False


#: Told the progress of a scan every ``PROGRESS_EVERY`` objects and once at the end.
ProgressCallback = Callable[[ScanProgress], None]


class _Progress:
    """Counts scan events and calls the callback every ``every`` of them."""

    def __init__(self, report: ScanReport, callback: ProgressCallback, every: int) -> None:
        self._report = report
        self._callback = callback
        self._every = every
        self._events = 0

    def tick(self) -> None:
        self._events += 1
        if self._events % self._every == 0:
            self.emit(finished=False)

    def emit(self, *, finished: bool) -> None:
        report = self._report
        self._callback(
            ScanProgress(
                found=report.found,
                skipped=report.total_skipped,
                found_bytes=report.found_bytes,
                finished=finished,
            )
        )

    def on_skip(self, _relative: str, _reason: str) -> None:
        self.tick()


def scan_source(
    source: Location,
    *,
    storage: Storage,
    on_progress: ProgressCallback | None = None,
    sniff: bool = True,
    by_extension: bool | None = None,
    progress_every: int = PROGRESS_EVERY,
) -> tuple[Iterator[ScannedObject], ScanReport]:
    """Start a scan of a collection's source.

    Nothing is listed until the iterator is consumed; the report fills in meanwhile and
    is complete once the iterator is exhausted.

    Args:
        source: The collection's folder or S3 prefix (or a single image).
        storage: The store that holds ``source`` (``storage.open_storage(source)``).
        on_progress: Told the counts every ``progress_every`` objects found or skipped,
            and once more with ``finished=True`` at the end.
        sniff: Whether to recognise images by content (see ``storage.scan.scan``).
        by_extension: Trust well-known image extensions without reading; None lets
            ``storage.scan.scan`` choose (on for S3, off locally).
        progress_every: Objects between two progress callbacks.

    Returns:
        The images, in code-point order of their relative keys, and the report of what
        was found and skipped.

    Raises:
        ValueError: If ``progress_every`` is not positive.
        InvalidURI: If ``source`` is not a location.
    """
    if progress_every < 1:
        raise ValueError(f"progress_every must be at least 1, not {progress_every}")
    location = parse_uri(source)
    report = ScanReport()
    if on_progress is None:
        found = scan(storage, location, sniff=sniff, by_extension=by_extension, report=report)
        return found, report
    progress = _Progress(report, on_progress, progress_every)
    report.on_skip = progress.on_skip
    found = scan(storage, location, sniff=sniff, by_extension=by_extension, report=report)
    return _with_progress(found, progress), report


def _with_progress(found: Iterator[ScannedObject], progress: _Progress) -> Iterator[ScannedObject]:
    for item in found:
        yield item
        progress.tick()
    progress.emit(finished=True)
