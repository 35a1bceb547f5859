"""Errors raised by ``workers``, and the one list of failures that are worth retrying.

::

    WorkerError                   base class of everything below
    ├── WorkerSetupError          the worker cannot run at all (weights, device, settings):
    │   │                         stop the worker, leave the images queued
    │   └── CheckpointMismatch    the collection was submitted for other weights
    ├── DeviceError               the devices asked for cannot be used or discovered
    ├── OutputIsSource            the output location is an original, or outside the
    │                             collection's output: never written
    ├── ForeignOutput             a file that panchro did not write for the image is where
    │                             its output goes: left untouched
    ├── AccessFileFailed          an access copy or sidecar of the output cannot be made or
    │                             written where it goes: nothing of another's replaced
    └── ImageFailed               raised by the colorize task after the catalog recorded
                                  the image as failed, so that Flower shows the failure

``RETRYABLE`` names the failures that may pass on their own: the catalog database, the
object store or the broker being unreachable for a while. ``workers.tasks`` retries them
with backoff. ``WORKER_FAULTS`` names the failures that are the worker's, not the image's:
its weights, its catalog schema, its storage credentials or endpoint. The image is handed
back, its message returns to the broker and the worker stops, for a person to fix it.
Everything else fails the image once, with a reason a person can act on
(:func:`describe_failure`) and its stable code (:func:`failure_code`, from the ``code`` of
each room's error classes; ``catalog.reasons`` is the vocabulary).
"""

from __future__ import annotations

from typing import ClassVar, Final

from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerUnreachable

from catalog.errors import CatalogError, DatabaseUnavailable, SchemaMismatch
from catalog.reasons import FailureCode
from ddcolor.errors import DDColorError
from storage.errors import (
    InvalidImage,
    ObjectNotFound,
    StorageError,
    StorageMisconfigured,
    StorageUnavailable,
)

__all__ = [
    "EX_CONFIG",
    "RETRYABLE",
    "WORKER_FAULTS",
    "AccessFileFailed",
    "CheckpointMismatch",
    "DeviceError",
    "ForeignOutput",
    "ImageFailed",
    "OutputIsSource",
    "WorkerError",
    "WorkerSetupError",
    "describe_failure",
    "failure_code",
    "is_named_failure",
]

#: Failures that may pass when the same task runs again later: the database, the object
#: store or the broker cannot be reached now.
RETRYABLE: tuple[type[Exception], ...] = (
    DatabaseUnavailable,
    StorageUnavailable,
    BrokerUnreachable,
)


class WorkerError(Exception):
    """Base class of every error raised by ``workers``."""

    #: Failure code of an image that fails with this error.
    code: ClassVar[str] = FailureCode.UNKNOWN


class WorkerSetupError(WorkerError):
    """The worker cannot colorize anything: its weights, device or settings are unusable.

    No image is to blame, so none is failed: the task hands its message back to the
    broker and the worker stops, for a person to fix its configuration.
    """


class DeviceError(WorkerError):
    """The devices asked for cannot be used, or the GPUs cannot be discovered."""


class OutputIsSource(WorkerError):
    """The output location of an image is an original, or not inside its collection's output."""

    code: ClassVar[str] = FailureCode.OUTPUT_UNSAFE


class ForeignOutput(WorkerError):
    """A file is at the image's output location and is not an output panchro wrote for it."""

    code: ClassVar[str] = FailureCode.OUTPUT_CONFLICT


class AccessFileFailed(WorkerError):
    """An access copy or the sidecar of an output cannot be made, or written where it goes.

    Its place is an original, another image's output or a file panchro did not write for
    the image (left untouched), or the collection's options asking for it are unusable.
    """


class CheckpointMismatch(WorkerSetupError):
    """The collection was submitted for a checkpoint other than the one this worker runs.

    Another worker, started with that checkpoint, can colorize the image: this one hands
    it back and stops.
    """


class ImageFailed(WorkerError):
    """The image was recorded as ``failed``; the message is the reason in the catalog."""


#: Exit status of a worker that stopped because it cannot work (``sysexits.h``'s
#: configuration error): its supervisor does not start it again into the same fault.
EX_CONFIG: Final = 78

#: Failures that are the worker's, not the image's: it cannot load its model, its catalog
#: was never migrated, or its store refuses it (credentials, endpoint, a bucket it cannot
#: see). The image goes back to the queue and the worker stops.
WORKER_FAULTS: tuple[type[Exception], ...] = (
    WorkerSetupError,
    SchemaMismatch,
    StorageMisconfigured,
)


def is_named_failure(exc: BaseException) -> bool:
    """Tell whether an error is one of the project's named failures.

    Args:
        exc: The error.

    Returns:
        True for the errors of ``catalog``, ``storage``, ``ddcolor`` and ``workers``, whose
        message says everything; False for anything else (a bug: log its traceback).
    """
    return isinstance(
        exc, StorageError | DDColorError | WorkerError | CatalogError | SoftTimeLimitExceeded
    )


def describe_failure(exc: BaseException, doing: str) -> str:
    """Say why an image failed, in words a person can act on.

    Args:
        exc: The error that ended the try.
        doing: What the worker was doing, e.g. ``"writing the output"``.

    Returns:
        The reason recorded in the catalog.
    """
    if isinstance(exc, ObjectNotFound):
        return (
            f"the original is missing ({exc}); it was moved or deleted after the scan: "
            "restore it, or submit the collection again"
        )
    if isinstance(exc, InvalidImage | DDColorError | WorkerError):
        return str(exc)
    if isinstance(exc, StorageError | CatalogError):
        return f"{doing} failed: {exc}"
    if isinstance(exc, SoftTimeLimitExceeded):
        return (
            f"time limit: the image was stopped at the soft time limit per image while {doing} "
            "(raise PANCHRO_SOFT_TIME_LIMIT or `panchro workers --soft-time-limit`)"
        )
    if isinstance(exc, ValueError):
        return f"{doing} failed: {exc}"
    return f"unexpected error while {doing} ({type(exc).__name__}: {exc})"


def failure_code(exc: BaseException, *, encoding: bool = False) -> str:
    """Return the stable code of why an image failed, for ``images.failure_code``.

    Args:
        exc: The error that ended the try.
        encoding: Whether it happened while colorizing and encoding (a ``ValueError``
            there means the copy cannot be encoded with the collection's options).

    Returns:
        A code of ``catalog.reasons.FailureCode``: the error class's own ``code`` for the
        project's named errors, ``unknown`` for anything unexpected.
    """
    if isinstance(exc, StorageError | DDColorError | WorkerError | CatalogError):
        return exc.code
    if isinstance(exc, SoftTimeLimitExceeded):
        return FailureCode.TIME_LIMIT
    if isinstance(exc, BrokerUnreachable):
        return FailureCode.BROKER_UNAVAILABLE
    if encoding and isinstance(exc, ValueError):
        return FailureCode.ENCODE_FAILED
    return FailureCode.UNKNOWN
