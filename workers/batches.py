"""Colorizing several queued images of a collection together: one claim, one forward.

Images of one collection share one input size, so a worker can run the network once for
several of them (:mod:`ddcolor.batching`). :func:`process_batch` claims the images it is
given (and, for a message of the Celery task, up to ``more`` further queued images of the
same collection, held under the message's task id: ``catalog.claim_more``) in one
transaction, then takes every image through the steps of :mod:`workers.steps`::

    claim      queued -> running and a new attempts row for each image, one transaction
    read       each original (or the read-ahead's), decoded; an original in colour may
               be skipped
    colorize   ONE forward for the images still going (split in halves, then down the
               size ladder per image, when the device runs out of memory)
    encode     each image: its ``oom_retry`` attempts, its copy encoded
    finish     the SHA-256 of every copy recorded (one transaction), each copy, its access
               files and thumbnails written, all of them done (one transaction):
               :mod:`workers.finishing`

Each image keeps its own attempt, its own outcome and its own failure: a corrupt original
fails alone and the others go on. What is the *worker's* or may pass stops the whole
batch, as it stops a single image: a failure that may pass (``RETRYABLE``) or that is the
worker's (``WORKER_FAULTS``), or an interrupt, hands back every image of the batch not
finished yet, then propagates. The image named in the message goes back to ``release_to``
(``queued``: its message is retried), the others to ``pending``: their own messages may be
gone, so the dispatcher sends them again.

This is the one place where broad exceptions are caught (``process_image`` is a batch of
one). The lines of each image are logged on the ``workers.process`` logger, whichever
module runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Final, TypeVar

from celery.exceptions import SoftTimeLimitExceeded

from catalog import ImageStatus, transaction
from ddcolor.batching import colorize_images
from ddcolor.device import describe_device
from workers.claiming import Handover, claim_batch, hand_over
from workers.errors import (
    RETRYABLE,
    WORKER_FAULTS,
    describe_failure,
    failure_code,
    is_named_failure,
)
from workers.finishing import Finishing, done_step, record_done, record_intents, write_step
from workers.image_log import ImageLog
from workers.outcomes import Outcome, ProcessStatus
from workers.steps import (
    DOING,
    ImageWork,
    Try,
    colorize_step,
    fail,
    hand_back,
    read_step,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ddcolor.pipeline import Colorizer, ColorizeResult
    from workers.readahead import ReadAhead, StorageFor

__all__ = ["IMAGE_LOGGER", "AtWork", "OnOutcome", "process_batch"]

#: The logger of every image's lines (its name is part of the log's contract).
IMAGE_LOGGER: Final = "workers.process"

logger = logging.getLogger(IMAGE_LOGGER)

#: Told each image's outcome as soon as it is known (a progress bar).
OnOutcome = Callable[[Outcome], None]
#: Told the ids of the images at work.
AtWork = Callable[[Sequence[int]], None]


def _nobody(image_ids: Sequence[int]) -> None:
    """Tell no one what is at work."""


_T = TypeVar("_T")


def process_batch(
    image_ids: Sequence[int],
    *,
    sessions: sessionmaker[Session],
    storage_for: StorageFor,
    colorizer: Colorizer,
    worker: str,
    more: int = 0,
    task_id: str | None = None,
    device: str | None = None,
    untrained: bool = False,
    read_ahead: ReadAhead | None = None,
    retries: int = 0,
    give_up: bool = False,
    release_to: ImageStatus = ImageStatus.QUEUED,
    on_outcome: OnOutcome | None = None,
    at_work: AtWork | None = None,
    read_ids: Sequence[int] = (),
    claimed: Handover | None = None,
    handover: Handover | None = None,
) -> list[Outcome]:
    """Colorize queued images of one collection together and record each one's result.

    Idempotent, as ``process_image``: an image already finished or held by another try is
    ``NOT_CLAIMED``; a redelivered message (same ``task_id``) takes over the images its
    dead worker held, the ones claimed with it included.

    Args:
        image_ids: The images to claim, of one collection (one for a message).
        sessions: The catalog's session factory.
        storage_for: Returns the store of a location.
        colorizer: The loaded model.
        worker: Host or node name, recorded on each attempt and image.
        more: Further queued images of the first image's collection to claim and colorize
            with it (needs ``task_id``; none when giving up).
        task_id: Id of the broker message; every image is held under it.
        device: Device description recorded at claim time; None for the model's.
        untrained: The weights are random: said loudly in the outputs and the catalog.
        read_ahead: Where prefetched originals may be waiting; it is also told to start
            on the probable next images.
        retries: Retries of the message so far, for the reason when giving up.
        give_up: Record a failure of the named images that may pass as ``failed`` ("gave
            up after N retries") instead of handing them back.
        release_to: Status the named images are handed back in: ``queued`` when a retry
            of the message will come, ``pending`` when none will.
        on_outcome: Told each image's outcome as soon as it is known.
        at_work: Told the ids of the images each step works on (empty between steps),
            so that a process killed at the hard time limit can be told about.
        read_ids: Images the read-ahead starts on, looked up in the claim's transaction.
        claimed: ``image_ids`` as the previous call claimed them (its ``handover``);
            None claims them here.
        handover: The next batch of a run: claimed (and its ``read_ids`` looked up) in
            the transaction that records this batch done, for the next call's
            ``claimed``. The caller hands its claims back if no call takes them.

    Returns:
        The outcome of every named image in order, then of the further ones.

    Raises:
        DatabaseUnavailable: If the catalog cannot be reached (retry later).
        StorageUnavailable: If a store cannot be reached (retry later); the unfinished
            images were handed back.
        SchemaMismatch: If the catalog database was never migrated.
        WorkerSetupError: If this worker cannot colorize the images (other weights than
            the collection's); the unfinished images were handed back.
        StorageMisconfigured: If a store refuses this worker; the unfinished images were
            handed back.
        KeyboardInterrupt: If interrupted; the unfinished images were handed back.
    """
    began = time.perf_counter()
    if device is None:
        device = str(describe_device(colorizer.device))
    if claimed is not None and claimed.claims is not None:
        claims, claimed.taken = claimed.claims, True
    else:
        with transaction(sessions) as db:
            claims = claim_batch(
                db,
                image_ids=image_ids,
                worker=worker,
                device=device,
                task_id=task_id,
                more=0 if give_up or task_id is None else more,
                read_ahead=read_ahead,
                read_ids=read_ids,
            )
    batch = _Batch(sessions, retries, on_outcome, at_work or _nobody)
    if handover is not None:
        batch.claim_next = partial(
            hand_over, handover, worker=worker, device=device, read_ahead=read_ahead
        )
    outcomes: dict[int, Outcome] = {}
    works: list[ImageWork] = []
    for index, (image_id, found) in enumerate(claims):
        log = ImageLog(logger, image_id, device)
        if found is None:
            log.info("not claimed by %s: finished, cancelled or held by another try", worker)
            outcome = Outcome(
                image_id, ProcessStatus.NOT_CLAIMED, seconds=time.perf_counter() - began
            )
            outcomes[image_id] = batch.settle(outcome)
            continue
        claim, job = found
        log.claimed(job.collection, claim.collection_id)
        log.changed(
            logging.INFO,
            "running",
            "running: claimed by %s on %s (try %d)",
            worker,
            device,
            claim.attempt_number,
        )
        named = index < len(image_ids)
        works.append(
            ImageWork(
                job,
                Try(claim.attempt_id),
                log,
                began,
                release_to=release_to if named else ImageStatus.PENDING,
                give_up=give_up and named,
            )
        )
    if works:
        batch.run(works, storage_for, colorizer, untrained, read_ahead)
    for work in works:
        assert work.outcome is not None
        outcomes[work.image_id] = work.outcome
    return [outcomes[image_id] for image_id, _ in claims]


@dataclass
class _Batch:
    """The images of one call on their way, and what an error means for all of them."""

    sessions: sessionmaker[Session]
    retries: int
    on_outcome: OnOutcome | None
    at_work: AtWork
    works: Sequence[ImageWork] = ()
    #: An image reached the soft time limit: the rest of the batch is handed back.
    time_up: bool = False
    #: Claims the next batch of a run in the caller's transaction (done's).
    claim_next: Callable[[Session], None] | None = None

    def settle(self, outcome: Outcome) -> Outcome:
        """Tell the caller an image is finished."""
        if self.on_outcome is not None:
            self.on_outcome(outcome)
        return outcome

    def run(
        self,
        works: Sequence[ImageWork],
        storage_for: StorageFor,
        colorizer: Colorizer,
        untrained: bool,
        read_ahead: ReadAhead | None,
    ) -> None:
        """Take the images through read, colorize (one forward) and record."""
        self.works = works
        sessions = self.sessions
        for work in works:
            if self.time_up:
                break
            self._step(
                work,
                partial(read_step, work, sessions, storage_for, colorizer, untrained, read_ahead),
            )
        groups: dict[tuple[int, str, str | None], list[ImageWork]] = {}
        for work in works:
            if work.outcome is None and not self.time_up:
                groups.setdefault(work.settings(colorizer), []).append(work)
        for (size, precision, upsample), group in groups.items():
            if self.time_up:
                break
            ids = [work.image_id for work in group]
            if len(group) > 1:
                logger.info(
                    "collection %s: images %s in one forward at %d px",
                    group[0].job.collection,
                    ids,
                    size,
                    extra={"collection": group[0].job.collection, "batch": len(group)},
                )
            self.at_work(ids)
            computing = _computing(read_ahead, colorizer)
            entries, shared = _colorize(colorizer, group, size, precision, upsample, computing)
            finishing: list[Finishing] = []
            for work, entry in zip(group, entries, strict=True):
                if self.time_up and not shared:
                    break
                copy = self._step(
                    work, partial(colorize_step, work, sessions, colorizer, untrained, entry)
                )
                if copy is not None and not isinstance(copy, Outcome):
                    finishing.append(Finishing(work, copy))
            if finishing and not self.time_up:
                self._finish(finishing, storage_for, colorizer, untrained)
        if self.time_up:
            self._release_rest()

    def _step(self, work: ImageWork, step: Callable[[], _T]) -> _T | None:
        """Run one step of one image, and settle what its error means (module docstring)."""
        self.at_work([work.image_id])
        try:
            result = step()
        except WORKER_FAULTS as exc:
            work.log.warning("this worker cannot work (%s); handing the image back", exc)
            self._stop(f"handed back: {exc}")
            raise
        except RETRYABLE as exc:
            if work.give_up:
                reason = f"gave up after {self.retries} retries: {exc}"
                self.settle(fail(self.sessions, work, reason, failure_code(exc)))
                return None
            work.log.warning("%s; handing the image back for a retry", exc)
            self._stop(f"will retry: {exc}")
            raise
        except Exception as exc:
            doing = DOING[work.attempt.phase]
            if not is_named_failure(exc):
                work.log.exception("unexpected error while %s", doing)
            code = failure_code(exc, encoding=work.attempt.phase == "colorize")
            self.settle(fail(self.sessions, work, describe_failure(exc, doing), code))
            self.time_up = self.time_up or isinstance(exc, SoftTimeLimitExceeded)
            return None
        except KeyboardInterrupt:
            self._stop("interrupted before it finished")
            raise
        finally:
            self.at_work(())
        if isinstance(result, Outcome):
            self.settle(result)
        return result

    def _finish(
        self,
        finishing: Sequence[Finishing],
        storage_for: StorageFor,
        colorizer: Colorizer,
        untrained: bool,
    ) -> None:
        """Write the encoded copies and record them done: two transactions in all."""
        sessions = self.sessions
        if not self._all(finishing, partial(record_intents, sessions, finishing)):
            return
        written: list[Finishing] = []
        for item in finishing:
            if self.time_up:
                break
            result = self._step(
                item.work, partial(write_step, item, sessions, storage_for, colorizer, untrained)
            )
            if isinstance(result, Finishing):
                written.append(result)
        if not written or self.time_up:
            return
        self.at_work([item.work.image_id for item in written])
        recorded = self._all(written, partial(record_done, sessions, written, also=self.claim_next))
        self.at_work(())
        if recorded:
            for item in written:
                self.settle(done_step(item))

    def _all(self, finishing: Sequence[Finishing], step: Callable[[], object]) -> bool:
        """Run a step of several images at once; its error is each image's error.

        Returns:
            Whether it succeeded (if not, each image was settled as its own step's
            error would settle it, or the error propagates for all).
        """
        try:
            step()
        except BaseException as exc:  # noqa: BLE001 - each image's step settles it
            for item in finishing:
                self._step(item.work, _giving(exc))
            return False
        return True

    def _stop(self, reason: str) -> None:
        """Hand back every image of the batch that is not finished."""
        for work in self.works:
            if work.outcome is None:
                hand_back(self.sessions, work, reason)

    def _release_rest(self) -> None:
        """After a soft time limit: hand back, to be sent again, what was not reached."""
        reason = "handed back unfinished: its batch stopped at the soft time limit"
        for work in self.works:
            if work.outcome is None:
                # Its message is acknowledged now: the dispatcher sends it again.
                work.release_to = ImageStatus.PENDING
                hand_back(self.sessions, work, reason)
                self.settle(work.finished(ProcessStatus.RELEASED, reason=reason))


def _computing(
    read_ahead: ReadAhead | None, colorizer: Colorizer
) -> Callable[[], AbstractContextManager[None]]:
    """What a colorization runs in: the read-ahead's decoding held if the model is on a CPU."""
    if read_ahead is None:
        return nullcontext
    on_cpu = colorizer.device.type == "cpu"
    return partial(read_ahead.model_computing, on_cpu)


def _colorize(
    colorizer: Colorizer,
    group: Sequence[ImageWork],
    size: int,
    precision: str,
    upsample: str | None,
    computing: Callable[[], AbstractContextManager[None]],
) -> tuple[list[Callable[[], ColorizeResult]], bool]:
    """Colorize a group of images in one forward; return what gives each image's result.

    A single image is colorized when its step asks (as ``process_image`` always did). A
    batch runs now; an error of the whole batch (an interrupt, a time limit, a bug) is
    raised again by each image's step, so each is settled as a single image would be.
    Either runs inside ``computing()`` (:func:`_computing`).

    Returns:
        Per image, a callable that returns its result or raises its error; and whether
        one error of the whole batch is what they all raise.
    """
    pixels = [work.original.decoded.pixels for work in group if work.original is not None]
    if len(group) == 1:

        def single() -> ColorizeResult:
            with computing():
                return colorizer.colorize(
                    pixels[0], size=size, upsample=upsample, precision=precision
                )

        return [single], False
    try:
        with computing():
            entries: Sequence[ColorizeResult | BaseException] = colorize_images(
                colorizer, pixels, size=size, upsample=upsample, precision=precision
            )
    except BaseException as exc:  # noqa: BLE001 - each image's step settles it
        return [_giving(exc) for _ in group], True
    return [_giving(entry) for entry in entries], False


def _giving(entry: ColorizeResult | BaseException) -> Callable[[], ColorizeResult]:
    """Return a callable that returns a result or raises an error."""

    def give() -> ColorizeResult:
        if isinstance(entry, BaseException):
            raise entry
        return entry

    return give
