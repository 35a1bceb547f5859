"""Errors raised by ``storage``.

::

    StorageError                  base class of everything below
    ├── InvalidURI                a location that is neither a local path nor s3://bucket/key
    ├── ObjectNotFound            the object or file does not exist
    ├── StorageUnavailable        the backend cannot be reached now (retry later)
    │   └── StorageFull           the destination has no space left (retry once freed)
    ├── StorageMisconfigured      this process cannot use the store: no or invalid
    │   │                         credentials, a wrong endpoint, a bucket it cannot see
    │   └── AccessDenied          the credentials are refused for the bucket or key, or
    │                             a local output folder may not be written
    ├── OutputExists              refusing to replace an existing object (left untouched)
    └── InvalidImage              the bytes are not an image this project can read
        ├── TruncatedImage        the file ends before its image does (or is empty)
        ├── NotAnImage            the content is not an image at all (a PDF, text...)
        ├── ImageTooSmall         the header gives a width or height of 0
        ├── ImageTooLarge         the header claims more pixels than the decoding limit
        └── UnsupportedImage      a readable image of a kind that is not supported

Each class names the stable failure code (``code``) recorded on an image that fails with
it; ``catalog.reasons`` is the vocabulary these codes come from.
"""

from __future__ import annotations

from typing import ClassVar


class StorageError(Exception):
    """Base class of every error raised by ``storage``."""

    #: Failure code of an image that fails with this error (``catalog.reasons``).
    code: ClassVar[str] = "storage.error"


class InvalidURI(StorageError):
    """A location that is neither a local path nor an ``s3://bucket/key`` URI."""


class ObjectNotFound(StorageError):
    """The object or file does not exist."""

    code: ClassVar[str] = "storage.not_found"


class StorageUnavailable(StorageError):
    """The backend cannot be reached now; the operation may succeed if retried."""

    code: ClassVar[str] = "storage.unavailable"


class StorageFull(StorageUnavailable):
    """The destination file system has no space left (or the quota is used up).

    Like an outage, it passes once a person (or a clean-up job) frees space, so the write
    is retried with backoff instead of failing every image that meets it overnight.
    """

    code: ClassVar[str] = "storage.full"


class StorageMisconfigured(StorageError):
    """This process cannot use the store as configured; no object is to blame.

    Missing or invalid credentials, a wrong endpoint (TLS errors, a bucket that does not
    exist there): the same request fails for every object until a person fixes the
    configuration, so a worker that meets it hands its work back instead of failing it.
    """


class AccessDenied(StorageMisconfigured):
    """The store refuses this process access to a bucket, a key or a local output folder.

    S3 credentials denied, unknown or expired; a local output folder it may not write
    (permissions, a read-only mount).
    """


class OutputExists(StorageError):
    """An object already exists where replacing it was not allowed; it was left untouched.

    Attributes:
        sha256: SHA-256 of the existing content when it was read to decide (a write with
            ``replaceable`` digests), else None.
    """

    code: ClassVar[str] = "output.conflict"

    def __init__(self, message: str, *, sha256: str | None = None) -> None:
        """Create the error.

        Args:
            message: What exists where, for a person.
            sha256: SHA-256 of the existing content, if it was read.
        """
        super().__init__(message)
        self.sha256 = sha256


class InvalidImage(StorageError):
    """The bytes are not an image that can be decoded (corrupt, truncated, empty)."""

    code: ClassVar[str] = "decode.corrupt"


class TruncatedImage(InvalidImage):
    """The file ends before its image does (an interrupted copy or upload), or is empty."""

    code: ClassVar[str] = "decode.truncated"


class NotAnImage(InvalidImage):
    """The content is not an image at all (a PDF, text, an archive)."""

    code: ClassVar[str] = "decode.not_image"


class ImageTooSmall(InvalidImage):
    """The header gives a width or height of 0: there is nothing to colorize."""

    code: ClassVar[str] = "size.too_small"


class ImageTooLarge(InvalidImage):
    """The header claims more pixels than the decoding limit (damaged, hostile or huge)."""

    code: ClassVar[str] = "size.too_large"


class UnsupportedImage(InvalidImage):
    """A readable image of a kind this project does not colorize."""

    code: ClassVar[str] = "decode.unsupported"
