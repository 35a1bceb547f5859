"""What one call of ``process_image()`` did: its status and the recorded facts of the try.

Kept apart from :mod:`workers.process` so that the embedded worker, the Celery task and the
CLI's summaries can name an outcome without the processing machinery.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Outcome", "ProcessStatus"]


class ProcessStatus(StrEnum):
    """What one call of ``process_image()`` did."""

    #: The output was written and recorded.
    DONE = "done"
    #: The image was recorded as failed, with a reason.
    FAILED = "failed"
    #: The image was recorded as skipped, with a reason (an original in colour, asked for).
    SKIPPED = "skipped"
    #: Nothing: the image was done, cancelled, not queued or held by another try.
    NOT_CLAIMED = "not_claimed"
    #: The try was given up and taken over meanwhile; its result was not recorded.
    DROPPED = "dropped"
    #: Handed back unfinished, to be tried again: its batch stopped at the soft time limit
    #: while another image of it was being processed.
    RELEASED = "released"


@dataclass(frozen=True)
class Outcome:
    """The result of processing one image.

    Attributes:
        image_id: The image.
        status: What was done.
        collection_id: Its collection, when it was claimed.
        reason: Why it failed or was skipped.
        output_uri: Where the output was written.
        input_size: Model input size that produced the output (or the last one tried).
        sizes_tried: Every input size tried, in order.
        precision: Precision actually used.
        out_of_memory_steps: Input sizes that ran out of device memory.
        read_ahead: Whether the original came from the read-ahead.
        seconds: Wall time of the whole call, in seconds.
    """

    image_id: int
    status: ProcessStatus
    collection_id: int | None = None
    reason: str | None = None
    output_uri: str | None = None
    input_size: int | None = None
    sizes_tried: tuple[int, ...] = ()
    precision: str | None = None
    out_of_memory_steps: int = 0
    read_ahead: bool = False
    seconds: float = 0.0
