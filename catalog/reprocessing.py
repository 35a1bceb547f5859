"""A collection submitted again: images made with other settings, and sources only touched.

A re-submission may change how a collection is processed (input size, checkpoint,
upsampling, output format). Images not done yet are simply made the new way; for that,
those whose planned output name changed with the output format are renamed before a
worker claims them. A done image keeps its output and its provenance: it is counted as
made with other settings, and set back to ``pending`` only when the submitter asked for
it (``redo``). Its new output then replaces its own earlier one where the name is the
same, as any later try of an image may (``catalog.outputs``).

What a done image was made with is read from its own row: the input size asked for (the
first one tried, since the out-of-memory ladder may have gone lower), the checkpoint, the
upsampling method (a row without one was made with the collection's setting of the time)
and the output name. Precision is not compared: ``auto`` means another precision on
each device.

A source's identity is the SHA-256 of the bytes a worker read. The scan's change
detector (an S3 ETag, a local file's time and size) also changes when only the time
does (``touch``, a copy that does not keep times) or when the same bytes are uploaded
again in parts; so a done image whose detector changed but whose size did not is hashed
again by the caller (:func:`sources_to_recheck`), and when the bytes are the same it
keeps its output and only its detector is brought up to date (:func:`confirm_sources`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Table, Text, any_, bindparam, func, or_, select, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from catalog.engine import database_errors
from catalog.errors import DuplicateOutput
from catalog.models import Image, ImageStatus
from catalog.registration import ScannedImage, storable_text

__all__ = [
    "UNTRAINED_CHECKPOINT",
    "KnownImages",
    "ProcessingTarget",
    "Recheck",
    "Reprocessing",
    "confirm_sources",
    "known_images",
    "reconcile_images",
]

logger = logging.getLogger(__name__)

#: Recorded in ``images.checkpoint_sha256`` instead of a hash when the weights were random.
UNTRAINED_CHECKPOINT: Final = "none (untrained)"
#: Statuses of images whose planned output may still change: nobody is writing it.
RENAMEABLE: Final = (
    ImageStatus.PENDING,
    ImageStatus.QUEUED,
    ImageStatus.FAILED,
    ImageStatus.CANCELLED,
)


@dataclass(frozen=True)
class ProcessingTarget:
    """How a collection's images are to be made now, in the terms of an image's provenance.

    A setting that is None is not compared (the workers choose it).

    Attributes:
        input_size: The input size asked for, in pixels.
        checkpoint_sha256: The checkpoint the collection names.
        model_name: The model it must run, compared when no checkpoint is named.
        untrained: The collection is meant for random weights.
        upsample: The upsampling method.
        previous_upsample: The collection's upsampling method before this submission:
            what a done image that recorded none was made with.
    """

    input_size: int | None = None
    checkpoint_sha256: str | None = None
    model_name: str | None = None
    untrained: bool = False
    upsample: str | None = None
    previous_upsample: str | None = None

    def differences(self, row: Any, planned_output: str) -> list[str]:
        """Name the settings a done image was made with otherwise.

        Args:
            row: The image's ``output_uri``, ``sizes_tried``, ``input_size``,
                ``checkpoint_sha256``, ``model_name`` and ``upsample``.
            planned_output: Where the scan plans its output now (stored spelling).

        Returns:
            Some of ``"input_size"``, ``"model"``, ``"upsample"``, ``"output_format"``.
        """
        found = []
        asked = row.sizes_tried[0] if row.sizes_tried else row.input_size
        if self.input_size is not None and asked is not None and asked != self.input_size:
            found.append("input_size")
        if self._other_model(row.checkpoint_sha256, row.model_name):
            found.append("model")
        made_with = row.upsample or self.previous_upsample
        if self.upsample is not None and made_with is not None and made_with != self.upsample:
            found.append("upsample")
        if row.output_uri != planned_output:
            found.append("output_format")
        return found

    def _other_model(self, checkpoint: str | None, model_name: str | None) -> bool:
        if checkpoint is None and model_name is None:
            return False  # nothing recorded: unknown
        if self.untrained:
            return checkpoint != UNTRAINED_CHECKPOINT
        if self.checkpoint_sha256 is not None:
            return checkpoint != self.checkpoint_sha256
        if self.model_name is not None:
            return checkpoint == UNTRAINED_CHECKPOINT or model_name != self.model_name
        return False


@dataclass(frozen=True)
class Reprocessing:
    """What a re-submission found among the images a collection already had.

    Attributes:
        different: Done images made with other settings than the collection's now.
        redone: Of those, the ones set back to ``pending`` to be made again.
        by_setting: ``different`` per setting (``input_size``, ``model``, ``upsample``,
            ``output_format``); an image may count under several.
        renamed: Images not done yet whose output name changed with the output format.
        same_content: Done images whose source looked changed (time, ETag) but whose bytes
            have the same SHA-256: kept done.
    """

    different: int = 0
    redone: int = 0
    by_setting: Mapping[str, int] = field(default_factory=dict)
    renamed: int = 0
    same_content: int = 0

    def __add__(self, other: Reprocessing) -> Reprocessing:
        return Reprocessing(
            different=self.different + other.different,
            redone=self.redone + other.redone,
            by_setting=dict(Counter(self.by_setting) + Counter(other.by_setting)),
            renamed=self.renamed + other.renamed,
            same_content=self.same_content + other.same_content,
        )


@dataclass(frozen=True)
class Recheck:
    """A done image whose source's change detector changed, to be hashed again.

    Attributes:
        image_id: The image.
        scanned: What the scan found now (its ``source_uri`` is the one to read).
        source_sha256: The SHA-256 of the bytes the image was made from.
        checksum: The change detector stored with them.
    """

    image_id: int
    scanned: ScannedImage
    source_sha256: str
    checksum: str | None


class KnownImages:
    """What the catalog holds of a chunk of scanned images, read before they are registered.

    One query per chunk serves both the recheck of touched sources (before registering)
    and the reconciliation with the collection's settings (after).

    Attributes:
        rows: The stored images, by their stored ``source_uri``.
        scanned: The scanned rows (images only), by their stored ``source_uri``.
    """

    def __init__(self, rows: Mapping[str, Any], scanned: Mapping[str, ScannedImage]) -> None:
        self.rows = rows
        self.scanned = scanned
        self._confirmed: set[int] = set()

    def rechecks(self) -> list[Recheck]:
        """The done images whose change detector differs but whose size does not.

        Returns:
            The images to hash again; one whose size changed is not among them (its
            bytes differ), nor one whose SHA-256 was never recorded.
        """
        found = []
        for uri, row in self.rows.items():
            scanned = self.scanned[uri]
            if (
                row.status is ImageStatus.DONE
                and row.source_sha256 is not None
                and scanned.checksum != row.source_checksum
                and scanned.size is not None
                and scanned.size == row.source_size
            ):
                found.append(Recheck(row.id, scanned, str(row.source_sha256), row.source_checksum))
        return found

    def confirmed(self, image_ids: Iterable[int]) -> None:
        """Note images whose new change detector was recorded (:func:`confirm_sources`)."""
        self._confirmed.update(image_ids)

    def unchanged(self) -> Iterator[tuple[Any, ScannedImage]]:
        """Yield the stored images that registering the chunk left as they were.

        Those whose change detector differs were set back to pending by the
        registration (or are running, and left for the next scan).
        """
        for uri, row in self.rows.items():
            scanned = self.scanned[uri]
            if scanned.checksum == row.source_checksum or row.id in self._confirmed:
                yield row, scanned


@database_errors()
def known_images(db: Session, collection_id: int, rows: Iterable[ScannedImage]) -> KnownImages:
    """Read what the catalog holds of scanned images, before they are registered.

    Args:
        db: The caller's session.
        collection_id: The collection.
        rows: Scanned rows (skipped files are left out).

    Returns:
        The stored images among them.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    scanned = {storable_text(row.source_uri): row for row in rows if row.skipped is None}
    if not scanned:
        return KnownImages({}, {})
    uris = list(scanned)
    # One parameter for the whole chunk: an IN list of thousands is slow to render and parse.
    if db.get_bind().dialect.name == "postgresql":
        among = Image.source_uri == any_(bindparam("uris", uris, type_=postgresql.ARRAY(Text)))
    else:
        listed = func.json_each(json.dumps(uris)).table_valued("value")
        among = Image.source_uri.in_(select(listed.c.value))
    found = db.execute(
        select(
            Image.id,
            Image.source_uri,
            Image.status,
            Image.source_checksum,
            Image.source_size,
            Image.source_sha256,
            Image.output_uri,
            Image.sizes_tried,
            Image.input_size,
            Image.checkpoint_sha256,
            Image.model_name,
            Image.upsample,
        ).where(Image.collection_id == collection_id, among)
    ).all()
    return KnownImages({row.source_uri: row for row in found}, scanned)


@database_errors()
def confirm_sources(db: Session, confirmed: Sequence[Recheck]) -> list[int]:
    """Record the new change detector of done images whose bytes turned out the same.

    Each row changes only if it is still done, with the same SHA-256 and the same old
    detector: a registration or a worker that got there first wins.

    Args:
        db: The caller's session.
        confirmed: Rechecks whose new hash equals ``source_sha256``.

    Returns:
        The images brought up to date.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    updated: list[int] = []
    for recheck in confirmed:
        scanned = recheck.scanned
        updated.extend(
            db.scalars(
                update(Image)
                .where(
                    Image.id == recheck.image_id,
                    Image.status == ImageStatus.DONE,
                    Image.source_sha256 == recheck.source_sha256,
                    Image.source_checksum.is_not_distinct_from(recheck.checksum),
                )
                .values(
                    source_checksum=scanned.checksum,
                    source_checksum_kind=scanned.checksum_kind,
                    source_size=scanned.size,
                )
                .returning(Image.id)
                .execution_options(synchronize_session=False)
            ).all()
        )
    return updated


@database_errors()
def reconcile_images(
    db: Session,
    collection_id: int,
    known: KnownImages,
    target: ProcessingTarget,
    *,
    redo: bool,
) -> Reprocessing:
    """Bring a collection's known images in line with how it is processed now.

    Call it after ``register_images()`` for the same rows, in its transaction. Images
    not done yet (and not running) take the output name planned now. Done images made
    with other settings are counted and, with ``redo``, set back to ``pending`` with the
    planned output name. Done images that recorded no upsampling method are given the
    collection's previous one when it changes, so that they are still recognised later.
    Every change is conditional on the status read, so work done meanwhile is kept.

    Args:
        db: The caller's session.
        collection_id: The collection.
        known: What :func:`known_images` read before the registration.
        target: How the images are to be made now.
        redo: Set done images made otherwise back to ``pending``.

    Returns:
        What was found and done.

    Raises:
        DuplicateOutput: If a new output name is another image's.
        DatabaseUnavailable: If the database cannot be reached.
    """
    renames: list[dict[str, Any]] = []
    redos: list[dict[str, Any]] = []
    unrecorded: list[int] = []
    by_setting: Counter[str] = Counter()
    different = 0
    fill = target.previous_upsample
    fill_upsample = fill is not None and fill != target.upsample
    for row, scanned in known.unchanged():
        output = storable_text(scanned.output_uri)
        if row.status is ImageStatus.DONE:
            settings = target.differences(row, output)
            if settings:
                different += 1
                by_setting.update(settings)
                if redo:
                    redos.append({"b_id": row.id, "b_output": output})
                    continue
            if fill_upsample and row.upsample is None:
                unrecorded.append(row.id)
        elif row.status in RENAMEABLE and row.output_uri != output:
            renames.append({"b_id": row.id, "b_output": output})
    try:
        _rename(db, renames)
        redone = _redo(db, redos)
    except IntegrityError as exc:
        raise DuplicateOutput(
            f"collection {collection_id}: a new output name is already another image's ({exc.orig})"
        ) from exc
    if unrecorded:
        db.execute(
            update(Image)
            .where(Image.id.in_(unrecorded), Image.upsample.is_(None))
            .values(upsample=fill)
            .execution_options(synchronize_session=False)
        )
    if different or renames:
        logger.info(
            "collection %s: %d done images made with other settings (%s), %d redone; "
            "%d outputs renamed",
            collection_id,
            different,
            ", ".join(f"{name} {n}" for name, n in sorted(by_setting.items())),
            redone,
            len(renames),
        )
    return Reprocessing(
        different=different, redone=redone, by_setting=dict(by_setting), renamed=len(renames)
    )


def _images() -> Table:
    table = Image.__table__
    assert isinstance(table, Table)
    return table


def _rename(db: Session, renames: list[dict[str, Any]]) -> None:
    if not renames:
        return
    table = _images()
    db.execute(
        update(table)
        # Equalities, not IN: an executemany takes no expanding parameter.
        .where(table.c.id == bindparam("b_id"), or_(*(table.c.status == s for s in RENAMEABLE)))
        .values(output_uri=bindparam("b_output")),
        renames,
    )


def _redo(db: Session, redos: list[dict[str, Any]]) -> int:
    """Set done images back to ``pending``, as a registration does a changed source."""
    if not redos:
        return 0
    reset = db.scalars(
        update(Image)
        .where(Image.id.in_([redo["b_id"] for redo in redos]), Image.status == ImageStatus.DONE)
        .values(
            status=ImageStatus.PENDING,
            output_sha256=None,
            output_size=None,
            task_id=None,
            queued_at=None,
            started_at=None,
            finished_at=None,
            duration_s=None,
            last_error=None,
            lost_attempts=0,
        )
        .returning(Image.id)
        .execution_options(synchronize_session=False)
    ).all()
    kept = set(reset)
    _rename(db, [redo for redo in redos if redo["b_id"] in kept])
    return len(kept)
