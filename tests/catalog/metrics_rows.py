"""A catalog with known numbers for the metrics tests (a uniquely named module).

Collection ``1920s`` holds ten images: four done (three at 512 px on the CPU in fp32,
0.3 s, 0.8 s and 1.5 s, finished a minute ago; one at 768 px on a GPU in fp16, 40 s,
finished an hour ago, after running out of memory at 1024 px), two failed (one after
running out of memory at 1024, 768 and 512 px: ``oom.floor``; one with no code, as before
codes existed), one running (its first try lost), one queued,
two pending (one with a lost try). Collection ``empty`` holds no image.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from catalog.models import Attempt, AttemptOutcome, Image, ImageStatus, utcnow
from catalog.registration import register_images
from catalog.submission import create_or_get_collection
from tests.catalog.catalog_rows import scanned

#: Device label of the GPU image.
GPU = "cuda:0 (NVIDIA H200)"


@dataclass(frozen=True)
class Seeded:
    """Ids of the seeded images, by what they are.

    Attributes:
        ids: Every image of ``1920s``, in scan order.
        queued: The queued image.
        pending: The two pending images.
    """

    ids: list[int]
    queued: int
    pending: list[int]


def seed_metrics_rows(sessions: sessionmaker[Session]) -> Seeded:
    """Write the rows the module's text describes; return the image ids.

    Args:
        sessions: An empty, migrated catalog.

    Returns:
        The ids.
    """
    now = utcnow()
    recent, old = now - timedelta(minutes=1), now - timedelta(hours=1)
    with sessions.begin() as db:
        collection, _ = create_or_get_collection(db, "1920s", "s3://scans", "s3://colour")
        create_or_get_collection(db, "empty", "s3://scans/empty", "s3://colour/empty")
        register_images(db, collection.id, scanned(10))
        ids = list(db.scalars(select(Image.id).order_by(Image.id)))
        cpu: dict[str, Any] = {"input_size": 512, "device": "cpu", "precision": "fp32"}
        rows: list[tuple[int, ImageStatus, dict[str, Any]]] = [
            (ids[0], ImageStatus.DONE, {**cpu, "duration_s": 0.3, "finished_at": recent}),
            (ids[1], ImageStatus.DONE, {**cpu, "duration_s": 0.8, "finished_at": recent}),
            (ids[2], ImageStatus.DONE, {**cpu, "duration_s": 1.5, "finished_at": recent}),
            (
                ids[3],
                ImageStatus.DONE,
                {
                    "input_size": 768,
                    "device": GPU,
                    "precision": "fp16",
                    "duration_s": 40.0,
                    "finished_at": old,
                },
            ),
            (ids[4], ImageStatus.FAILED, {"finished_at": recent, "failure_code": "oom.floor"}),
            (ids[5], ImageStatus.FAILED, {"finished_at": recent}),
            (ids[6], ImageStatus.RUNNING, {"lost_attempts": 1}),
            (ids[7], ImageStatus.QUEUED, {}),
            (ids[8], ImageStatus.PENDING, {"lost_attempts": 1}),
        ]
        for image_id, status, values in rows:
            db.execute(update(Image).where(Image.id == image_id).values(status=status, **values))
        tries = [
            (ids[3], [(1024, AttemptOutcome.OOM_RETRY), (768, AttemptOutcome.DONE)]),
            (
                ids[4],
                [
                    (1024, AttemptOutcome.OOM_RETRY),
                    (768, AttemptOutcome.OOM_RETRY),
                    (512, AttemptOutcome.FAILED),
                ],
            ),
            (ids[6], [(512, AttemptOutcome.LOST), (512, None)]),
            (ids[8], [(512, AttemptOutcome.LOST)]),
        ]
        for image_id, outcomes in tries:
            for number, (size, outcome) in enumerate(outcomes, start=1):
                db.add(
                    Attempt(
                        image_id=image_id,
                        number=number,
                        input_size=size,
                        outcome=outcome,
                        started_at=old,
                    )
                )
    return Seeded(ids=ids, queued=ids[7], pending=[ids[8], ids[9]])
