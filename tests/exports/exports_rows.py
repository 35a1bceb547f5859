"""A small collection as workers leave it: real files in a store, rows in the catalog.

Four images: ``a.png`` done after an out-of-memory retry, with an access copy, a sidecar
and a fixity check on record; ``b.png`` failed with a code; ``notes.txt`` skipped; ``d.png``
pending. The files are written through a ``Storage`` (a folder or an S3 bucket).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session, sessionmaker

from catalog import Attempt, Derivative, Event, Image, create_or_get_collection, transaction
from catalog.models import AttemptOutcome, ImageStatus, utcnow
from storage import Storage

#: sha256 recorded as the collection's (untrained) checkpoint.
CHECKPOINT = "c0ffee" + "0" * 58
#: Name of the collection the tests export.
NAME = "1920s"
#: Code of the failed image's failure.
FAILURE_CODE = "decode.truncated"


@dataclass(frozen=True)
class Built:
    """What the tests check against: locations and contents of every file."""

    source: str
    output: str
    files: dict[str, bytes]

    def uri(self, root: str, relative: str) -> str:
        """The location of ``relative`` below the source or output root."""
        return f"{root}/{relative}"


def sha(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def build(sessions: sessionmaker[Session], storage: Storage, source: str, output: str) -> Built:
    """Write the files and the rows of the collection NAME; return what was written."""
    files = {
        f"{source}/a.png": b"a-original" * 50,
        f"{source}/b.png": b"b-truncated",
        f"{source}/notes.txt": b"scanned in 1998\n",
        f"{source}/d.png": b"d-original",
        f"{output}/a.png": b"a-colour" * 80,
        f"{output}/access/a.jpg": b"a-access-copy",
        f"{output}/a.png.json": b'{"model": "ddcolor_paper_tiny"}',
    }
    for uri, data in files.items():
        storage.write(uri, data)
    now = utcnow()
    with transaction(sessions) as db:
        collection, _ = create_or_get_collection(
            db,
            NAME,
            source,
            output,
            input_size=1024,
            model_name="ddcolor_paper_tiny",
            checkpoint_sha256=CHECKPOINT,
            precision="fp32",
            upsample="guided",
            untrained=True,
        )
        _images(db, collection.id, source, output, files, now)
    return Built(source, output, files)


def _image(collection_id: int, source: str, output: str, name: str, data: bytes) -> Image:
    return Image(
        collection_id=collection_id,
        source_uri=f"{source}/{name}",
        relative_path=name,
        output_uri=f"{output}/{name}",
        source_size=len(data),
        source_checksum="1+1",
        source_checksum_kind="mtime-size",
    )


def _images(
    db: Session, collection_id: int, source: str, output: str, files: dict[str, bytes], now: object
) -> None:
    started = utcnow() - timedelta(minutes=5)
    done = _image(collection_id, source, output, "a.png", files[f"{source}/a.png"])
    colour = files[f"{output}/a.png"]
    done.status = ImageStatus.DONE
    done.source_sha256 = sha(files[f"{source}/a.png"])
    done.output_sha256, done.output_size = sha(colour), len(colour)
    done.input_size, done.sizes_tried, done.precision, done.upsample = (
        768,
        [1024, 768],
        "fp32",
        "guided",
    )
    done.device, done.worker_host, done.attempts = "cpu", "cpu0@host-a", 2
    done.model_name, done.checkpoint_sha256 = "ddcolor_paper_tiny", CHECKPOINT
    done.sidecar_uri = f"{output}/a.png.json"
    done.started_at, done.finished_at = started, started + timedelta(seconds=9)
    failed = _image(collection_id, source, output, "b.png", files[f"{source}/b.png"])
    failed.status, failed.attempts = ImageStatus.FAILED, 1
    failed.source_sha256 = sha(files[f"{source}/b.png"])
    failed.last_error, failed.failure_code = "b.png is truncated", FAILURE_CODE
    skipped = _image(collection_id, source, output, "notes.txt", files[f"{source}/notes.txt"])
    skipped.status, skipped.last_error, skipped.failure_code = (
        ImageStatus.SKIPPED,
        "not an image: text",
        "skip.not-image",
    )
    pending = _image(collection_id, source, output, "d.png", files[f"{source}/d.png"])
    db.add_all([done, failed, skipped, pending])
    db.flush()
    copy = files[f"{output}/access/a.jpg"]
    db.add_all(
        [
            Attempt(
                image_id=done.id,
                number=1,
                worker="cpu0@host-a",
                device="cpu",
                input_size=1024,
                precision="fp32",
                outcome=AttemptOutcome.OOM_RETRY,
                started_at=started,
            ),
            Attempt(
                image_id=done.id,
                number=2,
                worker="cpu0@host-a",
                device="cpu",
                input_size=768,
                precision="fp32",
                outcome=AttemptOutcome.DONE,
                output_sha256=sha(colour),
                started_at=started + timedelta(seconds=3),
                finished_at=started + timedelta(seconds=9),
            ),
            Attempt(
                image_id=failed.id,
                number=1,
                worker="cpu1@host-b",
                device="cpu",
                input_size=1024,
                precision="fp32",
                outcome=AttemptOutcome.FAILED,
                error="truncated file",
                started_at=started,
                finished_at=started + timedelta(seconds=1),
            ),
            Derivative(
                image_id=done.id,
                kind="jpeg",
                long_edge=64,
                uri=f"{output}/access/a.jpg",
                sha256=sha(copy),
                size=len(copy),
                width=64,
                height=48,
            ),
            Event(
                collection_id=collection_id,
                image_id=done.id,
                event_type="fixity check",
                object_role="source",
                outcome="ok",
                detail=f"{source}/a.png: sha256 matches",
                agent="host-a panchro 0.0.9",
            ),
        ]
    )
