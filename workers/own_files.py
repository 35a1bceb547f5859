"""Files beside a master: which one already there is panchro's own, and a safe write.

An access copy or a sidecar is written only where nothing is, or over a file that panchro
wrote for the same image. Such a file names the master it was made from (an access copy
in ``panchro:DerivedFromSHA256`` of its XMP, a sidecar in ``output.sha256``), and every
master a try of the image wrote has its SHA-256 recorded in the catalog before it was
written (``catalog.recorded_outputs``). A file that names one of those masters is the
image's own, even when the worker that wrote it died before recording it; any other file
is left untouched, and the image fails with a reason that says so.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from typing import TYPE_CHECKING

from storage.errors import ObjectNotFound, OutputExists
from workers.errors import AccessFileFailed

if TYPE_CHECKING:
    from storage.base import Storage

__all__ = ["MasterOf", "own_digests", "write_beside"]

#: Reads the first bytes of a file and returns the SHA-256 of the master it names, if any.
MasterOf = Callable[[bytes], str | None]


def own_digests(
    storage: Storage, uri: str, masters: Collection[str], master_of: MasterOf, head_bytes: int
) -> tuple[str, ...]:
    """Return the SHA-256 of the file at ``uri`` if it is the image's own, else nothing.

    Args:
        storage: The store of ``uri``.
        uri: Where an access copy or a sidecar is about to be written.
        masters: SHA-256 of every master the image's tries wrote (or set out to write).
        master_of: Reads the master a file names from its first ``head_bytes`` bytes.
        head_bytes: How many bytes ``master_of`` needs.

    Returns:
        ``(digest,)`` to pass as ``replaceable``, or ``()`` when nothing is there or what
        is there is not the image's own.

    Raises:
        StorageError: If the existing file cannot be read.
    """
    try:
        head = storage.read_head(uri, head_bytes)
    except ObjectNotFound:
        return ()
    if master_of(head) not in masters:
        return ()
    return (hashlib.sha256(storage.read(uri)).hexdigest(),)


def write_beside(
    storage: Storage,
    uri: str,
    data: bytes,
    *,
    content_type: str,
    replaceable: Collection[str],
    what: str,
) -> None:
    """Write a file beside a master atomically, replacing only the image's own file.

    Args:
        storage: The store of ``uri``.
        uri: Where to write.
        data: The content.
        content_type: Its MIME type.
        replaceable: Digests of the image's own file there (:func:`own_digests`).
        what: What the file is, for the reason (``"the access copy jpeg:3000"``).

    Raises:
        AccessFileFailed: If another file is there; it is left untouched.
        StorageError: If the write fails; nothing partial is left behind.
    """
    try:
        storage.write(
            uri, data, content_type=content_type, overwrite=False, replaceable=replaceable
        )
    except OutputExists as exc:
        found = f" (sha256 {exc.sha256[:12]}...)" if exc.sha256 else ""
        raise AccessFileFailed(
            f"{what} goes to {uri}, where a file already is{found} that panchro did not "
            "write for this image; left untouched. Move it away (or choose another output "
            "location) and retry the image"
        ) from exc
