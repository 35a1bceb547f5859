"""Claiming the images of a batch: the claim's transaction, and the next batch of a run.

:func:`claim_batch` claims the images named (and, for a message of the Celery task, more
queued images of their collection, ``catalog.claim_more``) in the caller's transaction,
reads what each try needs (:class:`~workers.steps.Job`), and tells the read-ahead what to
read next, looked up in the same transaction. :class:`Handover` is the next batch of
``panchro run``, claimed by :func:`hand_over` in the transaction that records the
current batch done (``workers.finishing.record_done``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog import Claim, claim_image, claim_more, take_over
from workers.steps import Job, load_job

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from workers.readahead import ReadAhead

__all__ = ["Handover", "claim_batch", "hand_over"]


def claim_batch(
    db: Session,
    *,
    image_ids: Sequence[int],
    worker: str,
    device: str,
    task_id: str | None,
    more: int,
    read_ahead: ReadAhead | None,
    read_ids: Sequence[int] = (),
) -> list[tuple[int, tuple[Claim, Job] | None]]:
    """Claim the images (and ``more``) in the caller's transaction; read each one's job.

    The read-ahead is told of the claim in the same transaction, where it looks up the
    images it should read next (``read_ids``, or its guess of the next queued ones): the
    claim is the image's only catalog round trip before its copy is written.
    """
    if read_ahead is not None and read_ids:
        read_ahead.prefetch_in(db, read_ids)
    claims: list[tuple[int, Claim | None]] = [
        (
            image_id,
            claim_image(db, image_id, worker=worker, device=device[:128], task_id=task_id),
        )
        for image_id in image_ids
    ]
    first = claims[0][1] if claims else None
    if more > 0 and task_id is not None:
        if first is not None:
            extra = claim_more(
                db,
                first,
                more,
                worker=worker,
                task_id=task_id,
                device=device[:128],
                prefer=read_ahead.waiting() if read_ahead is not None else (),
            )
        else:
            # A message that came again after its own image was finished: the rest
            # of its batch still runs under it, held by no one.
            extra = take_over(db, task_id, more, worker=worker, device=device[:128])
        claims += [(claim.image_id, claim) for claim in extra]
    found: list[tuple[int, tuple[Claim, Job] | None]] = [
        (image_id, None if claim is None else (claim, load_job(db, claim, worker)))
        for image_id, claim in claims
    ]
    held = [claim for _, claim in claims if claim is not None]
    if read_ahead is not None and held:
        read_ahead.after_claim(db, held[0].collection_id, count=len(held))
    return found


@dataclass
class Handover:
    """The next batch of a run, claimed in the transaction that records this one done.

    ``workers.embedded.process_many`` knows which images come next: the transaction that
    records a batch done also claims the next batch and looks up the images to read after
    it, so a batch costs the catalog two transactions (the intents to write; done and the
    next claim) instead of three.

    Attributes:
        image_ids: The next batch's images.
        read_ids: Images the read-ahead starts on, looked up in the same transaction.
        claims: Each image's claim and job (None where it could not be claimed), once
            claimed; None until then (the next call then claims them itself).
        taken: A call took the claims over (it hands back what it does not finish).
    """

    image_ids: Sequence[int]
    read_ids: Sequence[int] = ()
    claims: list[tuple[int, tuple[Claim, Job] | None]] | None = None
    taken: bool = False

    def held(self) -> list[Claim]:
        """The claims made and not used: what to hand back if no call takes them."""
        return [found[0] for _, found in self.claims or () if found is not None]


def hand_over(
    handover: Handover,
    db: Session,
    *,
    worker: str,
    device: str,
    read_ahead: ReadAhead | None,
) -> None:
    """Claim the next batch in the caller's transaction (that of this batch's done)."""
    if handover.claims is not None or not handover.image_ids:
        return
    handover.claims = claim_batch(
        db,
        image_ids=handover.image_ids,
        worker=worker,
        device=device,
        task_id=None,
        more=0,
        read_ahead=read_ahead,
        read_ids=handover.read_ids,
    )
