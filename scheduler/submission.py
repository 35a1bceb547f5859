"""Submitting a collection: create or find it, scan its source, register and dispatch.

``submit()`` is what ``panchro submit`` runs, and it is idempotent: submitting the same
source again adds new images, re-queues changed ones and leaves the rest alone, so it is
also how a grown or corrected source is brought up to date. Settings not given again keep
the collection's stored values, and the summary names each one that changed; what becomes
of the images already done is ``scheduler.resubmission``'s.

The scan is streamed: scanned objects are turned into catalog rows and registered in
chunks of ``chunk_rows``, each chunk in its own short transaction, so a source of
millions of objects never sits in memory and the catalog stays available to the workers
and the dispatcher meanwhile. Files the scan passes over are registered too, as ``skipped``
rows with the reason (see ``storage.scan``), so that every file of the source is accounted
for; only hidden and system files are left out, and counted. If a submission fails
half-way (a store error, two sources with one output), the chunks registered so far stay
registered; fix the cause and submit again.

After each chunk one dispatch pass runs (when a sender is given), so the workers start on
the first images while the scan of a large source goes on. Each pass tops the broker up
to ``max_in_flight`` over all collections, in priority order; what does not fit is sent
by ``panchro scheduler`` as the workers free room.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, tzinfo
from itertools import chain, islice

from sqlalchemy.orm import Session, sessionmaker

from catalog import (
    CollectionNotFound,
    Reprocessing,
    ScannedImage,
    collection_roots,
    create_or_get_collection,
    get_collection,
    register_images,
    skipped_images,
    transaction,
)
from scheduler._queries import count_pending
from scheduler.collection_settings import CollectionSettings
from scheduler.dispatching import Send, dispatch
from scheduler.errors import BrokerUnavailable
from scheduler.outputs import (
    Location,
    check_destination,
    check_output_root,
    is_case_insensitive,
    plan_outputs,
)
from scheduler.resubmission import Resubmission, processing_target, setting_changes
from scheduler.scanning import ScanProgress, scan_source
from scheduler.submit_summary import SubmitProgress, SubmitProgressCallback, SubmitSummary
from scheduler.windows import parse_not_before, window_opens_at
from storage.base import Storage
from storage.codecs.formats import output_extension
from storage.errors import InvalidURI
from storage.scan_report import ScanReport, SkippedEntry
from storage.uri import URI, join, parse_uri

logger = logging.getLogger(__name__)

#: Scanned objects registered per transaction.
SUBMIT_CHUNK_ROWS = 5_000


def submit(
    sessions: sessionmaker[Session],
    *,
    name: str,
    source: Location,
    output: Location,
    storage: Storage,
    send: Send | None,
    max_in_flight: int,
    settings: CollectionSettings | None = None,
    on_progress: SubmitProgressCallback | None = None,
    sniff: bool = True,
    by_extension: bool | None = None,
    case_insensitive: bool | None = None,
    chunk_rows: int = SUBMIT_CHUNK_ROWS,
    now: datetime | None = None,
    tz: tzinfo | None = None,
    force: bool = False,
    redo_changed: bool = False,
) -> SubmitSummary:
    """Create or find a collection, scan and register its source, and dispatch it.

    Args:
        sessions: The catalog's session factory.
        name: The collection's unique name.
        source: Local folder or ``s3://bucket/prefix`` holding the originals.
        output: Local folder or ``s3://bucket/prefix`` for the colorized copies.
        storage: The store of ``source`` (``storage.open_storage(source, ...)``).
        send: Sends tasks (``scheduler.sending.celery_sender(app)``); None registers
            only and leaves dispatching to ``panchro scheduler``.
        max_in_flight: Most images queued at once over all collections.
        settings: How the images are processed; None means the defaults.
        on_progress: Told the progress while scanning and registering.
        sniff: Whether the scan recognises images by content.
        by_extension: Whether the scan trusts image extensions; None lets it choose.
        case_insensitive: Whether the destination ignores case; None probes it.
        chunk_rows: Scanned objects registered per transaction.
        now: The moment of the dispatch passes (aware), for start windows; None is now.
        tz: The local time zone of ``not_before``; None means this machine's.
        force: Accept an output that overlaps a source or another collection's output
            (see ``check_output_root``); the workers still replace only their own files.
        redo_changed: Set the collection's done images that were made with other settings
            than its own now back to pending (see ``scheduler.resubmission``).

    Returns:
        What was registered and dispatched.

    Raises:
        InvalidDestination: If the output is the source or lies inside it.
        OverlappingOutput: If the output contains the source, or overlaps another
            collection's source or output (or the source another's output), without
            ``force``; nothing is registered.
        OutputCollision: If two sources would be written to one output.
        ConflictingCollection: If the name is taken by another source or output.
        DuplicateOutput: If the catalog refuses two sources with one output.
        ObjectNotFound: If a local source does not exist.
        StorageError: If the source cannot be listed.
        DatabaseUnavailable: If the catalog cannot be reached.
        ValueError: If a setting is invalid (``not_before``, ``output_format``...).
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    settings = settings or CollectionSettings()
    src, dst = parse_uri(source), parse_uri(output)
    check_destination(src, dst)
    if settings.output_format is not None:
        output_extension(None, settings.output_format)
    if settings.not_before is not None:
        parse_not_before(settings.not_before)
    if case_insensitive is None:
        case_insensitive = is_case_insensitive(dst)

    tracker = _Tracker(on_progress)
    found, report = scan_source(
        src,
        storage=storage,
        on_progress=tracker.scanned if on_progress is not None else None,
        sniff=sniff,
        by_extension=by_extension,
    )
    # Read the first image before touching the catalog: a missing or unreadable source
    # then fails without leaving an empty collection behind.
    first = list(islice(found, 1))
    scanned = chain(first, found)

    with transaction(sessions) as db:
        # In the transaction that creates the collection, so that what is compared is
        # what the catalog holds when this one joins it.
        check_output_root(src, dst, collection_roots(db), name=name, force=force)
        previous = _stored_settings(db, name)
        settings = settings.over(previous)
        collection, created = create_or_get_collection(
            db,
            name,
            str(src),
            str(dst),
            preset=settings.preset,
            input_size=settings.input_size,
            model_name=settings.model_name,
            checkpoint_sha256=settings.checkpoint_sha256,
            precision=settings.precision,
            upsample=settings.upsample,
            not_before=settings.not_before,
            priority=settings.priority,
            untrained=settings.untrained,
            options=settings.collection_options(),
        )
        collection_id = collection.id
    changes = setting_changes(previous, settings) if previous is not None else ()
    resubmission = None
    if not created:
        target = processing_target(settings, previous)
        resubmission = Resubmission(sessions, storage, collection_id, target, redo=redo_changed)
    logger.info(
        "collection %s (%s): %s, scanning %s -> %s",
        collection_id,
        name,
        "created" if created else "found",
        src,
        dst,
    )

    rows = plan_outputs(
        scanned,
        output=dst,
        output_format=settings.output_format,
        case_insensitive=case_insensitive,
    )
    # A dispatch pass after every chunk lets the workers start while a long scan goes on;
    # with the room in the broker filled, a pass costs a few small queries.
    passes = _Passes(sessions, send, collection_id, max_in_flight=max_in_flight, now=now, tz=tz)
    skips = _Skips(sessions, collection_id, report, source=src, output=dst)
    new = changed = unchanged = 0
    for chunk in _chunks(rows, chunk_rows):
        if resubmission is not None:
            resubmission.recheck(chunk)
        with transaction(sessions) as db:
            counts = register_images(db, collection_id, chunk)
            if resubmission is not None:
                resubmission.reconcile(db)
        new += counts.new
        changed += counts.changed
        unchanged += counts.unchanged
        tracker.registered(counts.total)
        skips.register()
        passes.run()
        tracker.dispatched(passes.sent)
    skips.register()
    if passes.runs == 0:
        passes.run()
    logger.info(
        "collection %s (%s): %d new, %d changed, %d unchanged, %d skipped, %d dispatched",
        collection_id,
        name,
        new,
        changed,
        unchanged,
        report.total_skipped,
        passes.sent,
    )

    with transaction(sessions) as db:
        pending = count_pending(db, collection_id)
        skipped_total, skipped_files = skipped_images(db, collection_id)
        collection = get_collection(db, collection_id)
        opens_at = window_opens_at(collection.not_before, collection.updated_at, tz=tz)
    if opens_at is not None and (now or datetime.now(UTC)) >= opens_at:
        opens_at = None
    return SubmitSummary(
        collection_id=collection_id,
        name=name,
        created=created,
        source=str(src),
        output=str(dst),
        new=new,
        changed=changed,
        unchanged=unchanged,
        skipped=dict(report.skipped),
        skipped_examples={reason: list(paths) for reason, paths in report.examples.items()},
        found_bytes=report.found_bytes,
        dispatched=passes.sent,
        dispatched_total=passes.sent_total,
        opens_at=opens_at,
        pending=pending,
        in_flight=passes.in_flight,
        dispatch_error=passes.error,
        skipped_total=skipped_total,
        skipped_files=skipped_files,
        setting_changes=changes,
        reprocessing=resubmission.report if resubmission is not None else Reprocessing(),
        settings=settings,
    )


def _stored_settings(db: Session, name: str) -> CollectionSettings | None:
    try:
        return CollectionSettings.stored(get_collection(db, name))
    except CollectionNotFound:
        return None


class _Skips:
    """Registers the files a scan passed over as ``skipped`` images, as they come."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        collection_id: int,
        report: ScanReport,
        *,
        source: URI,
        output: URI,
    ) -> None:
        self._sessions = sessions
        self._collection_id = collection_id
        self._report = report
        self._source = source
        self._output = output

    def register(self) -> None:
        """Register what the scan has passed over since the last call."""
        entries = self._report.take_recorded()
        if not entries:
            return
        rows = [self._row(entry) for entry in entries]
        with transaction(self._sessions) as db:
            register_images(db, self._collection_id, rows)
        for row in rows:
            fields = {"collection_id": self._collection_id, "status": "skipped"}
            logger.info(
                "collection %s %s: skipped: %s",
                self._collection_id,
                row.relative_path,
                row.skipped,
                extra=fields,
            )

    def _row(self, entry: SkippedEntry) -> ScannedImage:
        source = entry.uri or _below(self._source, entry.relative)
        return ScannedImage(
            source_uri=str(source),
            relative_path=entry.relative,
            # Where it would be written if it were an image of the kind its name says;
            # nothing is ever written there for a skipped file.
            output_uri=str(_below(self._output, entry.relative)),
            size=entry.size,
            checksum=entry.checksum,
            checksum_kind=entry.checksum_kind,
            skipped=entry.message,
            skip_code=entry.code,
        )


def _below(base: URI, relative: str) -> URI:
    """``relative`` below ``base``, also for a key that ``join`` refuses (``a//b``)."""
    try:
        return join(base, relative)
    except InvalidURI:
        return URI(base.scheme, base.bucket, f"{base.key.rstrip('/')}/{relative}")


class _Passes:
    """Runs dispatch passes for a submission and adds up what they did."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        send: Send | None,
        collection_id: int,
        *,
        max_in_flight: int,
        now: datetime | None,
        tz: tzinfo | None,
    ) -> None:
        self._sessions = sessions
        self._send = send
        self._collection_id = collection_id
        self._max_in_flight = max_in_flight
        self._now = now
        self._tz = tz
        self.runs = 0
        self.sent = 0
        self.sent_total = 0
        self.in_flight = 0
        self.error: str | None = None

    def run(self) -> None:
        """Run one pass, unless there is no sender or a pass already failed."""
        if self._send is None or self.error is not None:
            return
        self.runs += 1
        try:
            report = dispatch(
                self._sessions,
                self._send,
                max_in_flight=self._max_in_flight,
                now=self._now,
                tz=self._tz,
            )
        except BrokerUnavailable as exc:
            # Registration goes on; the scheduler sends these images once the broker is back.
            self.error = str(exc)
            logger.warning("collection %s: dispatch failed: %s", self._collection_id, exc)
            return
        self.sent += report.sent_for(self._collection_id)
        self.sent_total += report.sent
        self.in_flight = report.in_flight


class _Tracker:
    """Combines scan progress and registered counts into ``SubmitProgress`` callbacks."""

    def __init__(self, callback: SubmitProgressCallback | None) -> None:
        self._callback = callback
        self._scan = ScanProgress(found=0, skipped=0, found_bytes=0)
        self._registered = 0
        self._dispatched = 0

    def scanned(self, progress: ScanProgress) -> None:
        self._scan = progress
        self._emit()

    def registered(self, count: int) -> None:
        self._registered += count
        self._emit()

    def dispatched(self, total: int) -> None:
        if total != self._dispatched:
            self._dispatched = total
            self._emit()

    def _emit(self) -> None:
        if self._callback is not None:
            self._callback(
                SubmitProgress(
                    scanned=self._scan.found,
                    skipped=self._scan.skipped,
                    registered=self._registered,
                    dispatched=self._dispatched,
                    scan_finished=self._scan.finished,
                )
            )


def _chunks(rows: Iterable[ScannedImage], size: int) -> Iterator[list[ScannedImage]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk
