"""Why an image failed or was skipped: the stable codes, what each means, what to do.

``images.last_error`` says why in a sentence that names the file, so it never groups;
``images.failure_code`` holds one of the codes below, which ``panchro status``,
``panchro list --code``, the metrics and SQL reports group by::

    SELECT failure_code, count(*) FROM images WHERE status = 'failed' GROUP BY 1;

Each room names the codes of its own errors (``storage`` and ``ddcolor`` without importing
this module): a ``code`` class attribute on every error class of ``storage.errors``,
``ddcolor.errors``, ``catalog.errors`` and ``workers.errors``, ``storage.skips.SKIP_CODES``
for the reasons a scan passes a file over, and ``workers.source_checks`` for an original a
worker skips. This module is the one vocabulary they must all come from (a test checks
it), with a meaning and an action per code; ``docs/failures.md`` holds
:func:`reasons_table` (checked by a test too). A code is never renamed: reports and
dashboards keep it.

Plain values with no SQLAlchemy import, so that the command line can offer the codes as
choices without loading the database layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from catalog.states import ImageStatus

__all__ = [
    "REASONS",
    "FailureCode",
    "Reason",
    "describe_reason",
    "reasons_table",
]


class FailureCode(StrEnum):
    """The stable code of why an image failed (``area.what``) or was skipped (``skip.*``)."""

    DECODE_TRUNCATED = "decode.truncated"
    DECODE_CORRUPT = "decode.corrupt"
    DECODE_NOT_IMAGE = "decode.not_image"
    DECODE_UNSUPPORTED = "decode.unsupported"
    SIZE_TOO_SMALL = "size.too_small"
    SIZE_TOO_LARGE = "size.too_large"
    OOM_FLOOR = "oom.floor"
    MODEL_PRECISION = "model.precision"
    MODEL_ERROR = "model.error"
    ENCODE_FAILED = "encode.failed"
    TIME_LIMIT = "time_limit"
    WORKER_LOST = "worker.lost"
    STORAGE_NOT_FOUND = "storage.not_found"
    STORAGE_UNAVAILABLE = "storage.unavailable"
    STORAGE_FULL = "storage.full"
    STORAGE_ERROR = "storage.error"
    OUTPUT_CONFLICT = "output.conflict"
    OUTPUT_UNSAFE = "output.unsafe"
    CATALOG_UNAVAILABLE = "catalog.unavailable"
    CATALOG_ERROR = "catalog.error"
    BROKER_UNAVAILABLE = "broker.unavailable"
    UNKNOWN = "unknown"
    SKIP_EMPTY = "skip.empty"
    SKIP_NOT_IMAGE = "skip.not_image"
    SKIP_UNKNOWN_EXTENSION = "skip.unknown_extension"
    SKIP_UNSAFE_NAME = "skip.unsafe_name"
    SKIP_LINK_OUTSIDE = "skip.link_outside"
    SKIP_SYMLINK_LOOP = "skip.symlink_loop"
    SKIP_BROKEN_LINK = "skip.broken_link"
    SKIP_UNREADABLE = "skip.unreadable"
    SKIP_NOT_A_FILE = "skip.not_a_file"
    SKIP_COLOUR = "skip.colour"


@dataclass(frozen=True)
class Reason:
    """What one code means, for people.

    Attributes:
        code: The code.
        statuses: The statuses of the images that carry it: ``failed`` or ``skipped``
            (``unknown`` both).
        meaning: What happened, in a sentence.
        action: What to do about it, in a sentence.
    """

    code: FailureCode
    statuses: tuple[ImageStatus, ...]
    meaning: str
    action: str

    @property
    def description(self) -> str:
        """The meaning and the action together."""
        return f"{self.meaning} {self.action}"


_FAILED = (ImageStatus.FAILED,)
_SKIPPED = (ImageStatus.SKIPPED,)
_RETRY = "then `panchro retry NAME --failed`."

#: Every code with its meaning and action, in the order reports list them.
REASONS: Final[Mapping[FailureCode, Reason]] = {
    reason.code: reason
    for reason in (
        Reason(
            FailureCode.DECODE_TRUNCATED,
            _FAILED,
            "The file ends before its image does (an interrupted copy, upload or export), "
            "or it is empty.",
            f"Copy or export the original again, {_RETRY}",
        ),
        Reason(
            FailureCode.DECODE_CORRUPT,
            _FAILED,
            "The file is damaged: its image data cannot be decoded.",
            f"Export it again from the scanner's master or restore it from a backup, {_RETRY}",
        ),
        Reason(
            FailureCode.DECODE_NOT_IMAGE,
            _FAILED,
            "The content is not an image (a PDF, text, an archive...) although it was "
            "listed as one.",
            "Move it out of the source, or put the image it should be in its place.",
        ),
        Reason(
            FailureCode.DECODE_UNSUPPORTED,
            _FAILED,
            "An image of a kind panchro does not colorize: floating-point or signed samples, "
            "a colour model such as LAB, a GIF or HEIC, or a compression that needs the "
            "optional imagecodecs package.",
            f"Export it as an 8- or 16-bit grayscale or RGB TIFF or PNG (the reason says "
            f"what to change), {_RETRY}",
        ),
        Reason(
            FailureCode.SIZE_TOO_SMALL,
            _FAILED,
            "The header gives a width or height of 0: there are no pixels to colorize.",
            "The file is damaged; export it again.",
        ),
        Reason(
            FailureCode.SIZE_TOO_LARGE,
            _FAILED,
            "The header claims more pixels than the decoding limit (250 megapixels): a "
            "damaged or hostile file, or a truly huge scan.",
            "Check the file; split a real scan of that size into parts.",
        ),
        Reason(
            FailureCode.OOM_FLOOR,
            _FAILED,
            "Out of device memory at every input size of the ladder, down to the smallest "
            "(256 px).",
            f"Free the GPU of other processes, or run it on a GPU with more memory or on a "
            f"CPU worker, {_RETRY}",
        ),
        Reason(
            FailureCode.MODEL_PRECISION,
            _FAILED,
            "The collection asks for a precision that this worker's device cannot run (bf16 "
            "on a device without it).",
            "Submit the collection with PANCHRO_PRECISION=auto or fp32, or run it on devices "
            "with bf16.",
        ),
        Reason(
            FailureCode.MODEL_ERROR,
            _FAILED,
            "The network failed on this image (for example NaN or infinite colour in fp32).",
            f"Check the weights with `panchro doctor`, {_RETRY}",
        ),
        Reason(
            FailureCode.ENCODE_FAILED,
            _FAILED,
            "The colorized copy could not be encoded with the collection's options (for "
            "example alpha in a JPEG output).",
            "Choose an --output-format that can hold the image (PNG or TIFF keep alpha).",
        ),
        Reason(
            FailureCode.TIME_LIMIT,
            _FAILED,
            "The image was still being processed at the time limit per image (soft or hard).",
            f"Raise PANCHRO_TIME_LIMIT (or `panchro workers --time-limit`) for very large "
            f"images, or use a faster device, {_RETRY}",
        ),
        Reason(
            FailureCode.WORKER_LOST,
            _FAILED,
            "The workers processing it died or vanished as many times as the catalog allows "
            "(a decoder crash, the host's out-of-memory killer, a node lost).",
            f"Read the worker logs and the host's kernel log from those times, {_RETRY}",
        ),
        Reason(
            FailureCode.STORAGE_NOT_FOUND,
            _FAILED,
            "The original was moved or deleted after the scan.",
            "Restore it and retry, or submit the collection again.",
        ),
        Reason(
            FailureCode.STORAGE_UNAVAILABLE,
            _FAILED,
            "The store (S3 or the file system) could not be reached through every retry.",
            f"Check the store and the network, {_RETRY}",
        ),
        Reason(
            FailureCode.STORAGE_FULL,
            _FAILED,
            "The output location had no space left (or its quota was used up) through every retry.",
            f"Free space there, {_RETRY}",
        ),
        Reason(
            FailureCode.STORAGE_ERROR,
            _FAILED,
            "Reading the original or writing the output failed otherwise (the error says "
            "which and why).",
            f"Fix what the error names (a path, a permission), {_RETRY}",
        ),
        Reason(
            FailureCode.OUTPUT_CONFLICT,
            _FAILED,
            "A file that panchro did not write for this image is at its output location; it "
            "was left untouched.",
            f"Move that file away or choose another output location, {_RETRY}",
        ),
        Reason(
            FailureCode.OUTPUT_UNSAFE,
            _FAILED,
            "The planned output is an original, or lies outside the collection's output; "
            "nothing was written.",
            "Submit the collection again with an output location that holds no originals.",
        ),
        Reason(
            FailureCode.CATALOG_UNAVAILABLE,
            _FAILED,
            "The catalog database could not be reached through every retry.",
            f"Check the database, {_RETRY}",
        ),
        Reason(
            FailureCode.CATALOG_ERROR,
            _FAILED,
            "The catalog refused to record the result (the error says why).",
            f"Fix what the error names, {_RETRY}",
        ),
        Reason(
            FailureCode.BROKER_UNAVAILABLE,
            _FAILED,
            "The broker (Redis) could not be reached through every retry.",
            f"Check Redis, {_RETRY}",
        ),
        Reason(
            FailureCode.UNKNOWN,
            (*_FAILED, *_SKIPPED),
            "An unexpected error (a bug), or a reason recorded before codes existed that "
            "matches none of them.",
            "Read last_error and the worker's log, which has the traceback; report a bug.",
        ),
        Reason(
            FailureCode.SKIP_EMPTY,
            _SKIPPED,
            "An empty file (0 bytes).",
            "Copy the original again if it should be an image.",
        ),
        Reason(
            FailureCode.SKIP_NOT_IMAGE,
            _SKIPPED,
            "Its content is not an image panchro reads (JPEG, PNG, TIFF, WebP, BMP, "
            "JPEG 2000): text, a PDF, a GIF...",
            "Nothing, unless it is an image: convert it to one of those formats.",
        ),
        Reason(
            FailureCode.SKIP_UNKNOWN_EXTENSION,
            _SKIPPED,
            "Not an image by its name, in a scan that reads no content.",
            "Give it an image extension if it is one.",
        ),
        Reason(
            FailureCode.SKIP_UNSAFE_NAME,
            _SKIPPED,
            "A name with an empty, '.' or '..' segment, which an output cannot mirror.",
            "Rename the object.",
        ),
        Reason(
            FailureCode.SKIP_LINK_OUTSIDE,
            _SKIPPED,
            "A symbolic link that leads outside the source folder; not followed.",
            "Submit its target itself, or copy the files in.",
        ),
        Reason(
            FailureCode.SKIP_SYMLINK_LOOP,
            _SKIPPED,
            "A symbolic link that leads back to itself or a parent folder.",
            "Remove the link.",
        ),
        Reason(
            FailureCode.SKIP_BROKEN_LINK,
            _SKIPPED,
            "A symbolic link to something that does not exist.",
            "Restore its target or remove the link.",
        ),
        Reason(
            FailureCode.SKIP_UNREADABLE,
            _SKIPPED,
            "A file or folder that could not be opened or read (permissions, an I/O error).",
            "Fix its permissions or the disk, then submit again.",
        ),
        Reason(
            FailureCode.SKIP_NOT_A_FILE,
            _SKIPPED,
            "Not a regular file: a FIFO, socket or device.",
            "Nothing; remove it from the source if it should not be there.",
        ),
        Reason(
            FailureCode.SKIP_COLOUR,
            _SKIPPED,
            "An original already in colour, in a collection submitted with --skip-colour.",
            "Nothing, or submit the collection again with --no-skip-colour to colorize it.",
        ),
    )
}


def describe_reason(code: str | None) -> Reason:
    """Return what a code means; a missing or unknown code means ``unknown``.

    Args:
        code: A value of ``images.failure_code``.

    Returns:
        Its reason.
    """
    try:
        return REASONS[FailureCode(code or FailureCode.UNKNOWN)]
    except ValueError:
        return REASONS[FailureCode.UNKNOWN]


def reasons_table() -> str:
    """Return every code as a Markdown table, the one ``docs/failures.md`` holds.

    Returns:
        The table, one row per code in :data:`REASONS` order, with a trailing newline.
    """
    lines = ["| code | status | what it means | what to do |", "|---|---|---|---|"]
    lines.extend(
        f"| `{r.code.value}` | {' or '.join(r.statuses)} | {r.meaning} | {r.action} |"
        for r in REASONS.values()
    )
    return "\n".join(lines) + "\n"
