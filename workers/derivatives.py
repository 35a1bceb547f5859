"""Access copies of a master: encoded from the colorized pixels, written beside the master.

For ``--derivative jpeg:3000`` the worker writes ``<master name>.3000.jpg`` next to the
master (``a.tif -> a.tif.3000.jpg``): an sRGB JPEG at quality 90 whose long edge is 3000
px or the image's own, whichever is smaller, with the master's metadata and AI-generated
label (``storage.codecs.access``). It is made from the colorized pixels before encoding,
not from the master file, so a JPEG master is not compressed twice.

The copy names its master's SHA-256 in its XMP; a file already at its place is replaced
only when it names a master of the same image (``workers.own_files``). Any failure to
make or write one fails the image, since the collection asked for it.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from catalog.derivatives import DerivativeRecord
from storage.imaging import AccessCopy, access_copy_master, encode_access_copies
from workers.errors import AccessFileFailed
from workers.own_files import own_digests, write_beside

if TYPE_CHECKING:
    from storage.base import Storage
    from workers.access_options import DerivativeSpec
    from workers.colorizing import ColorizedCopy, Original

__all__ = [
    "HEAD_BYTES",
    "encode_derivatives",
    "write_derivatives",
    "write_local_derivatives",
]

#: Bytes read from an existing file to find the master it names (bytes): a JPEG's
#: metadata segments (EXIF and XMP of up to 64 KiB each, the ICC profile) come first.
HEAD_BYTES = 256 * 1024

#: MIME type of each kind of copy.
_CONTENT_TYPES = {"jpeg": "image/jpeg"}


def encode_derivatives(
    specs: Sequence[DerivativeSpec],
    copy: ColorizedCopy,
    original: Original,
    master_sha256: str,
) -> list[AccessCopy]:
    """Encode the access copies of a colorized image.

    Args:
        specs: The copies asked for.
        copy: The colorized master (its pixels and provenance stamp).
        original: The original (its alpha, ICC profile, EXIF, XMP, resolution).
        master_sha256: SHA-256 of the master as written.

    Returns:
        One encoded copy per spec, in order.

    Raises:
        AccessFileFailed: If a copy cannot be encoded.
    """
    try:
        return encode_access_copies(
            copy.result.image,
            [spec.long_edge for spec in specs],
            source=original.decoded,
            provenance=copy.stamp,
            derived_from=master_sha256,
        )
    except (ValueError, OSError, MemoryError) as exc:
        names = ", ".join(str(spec) for spec in specs)
        raise AccessFileFailed(f"the access copies {names} could not be made: {exc}") from exc


def write_derivatives(
    storage: Storage,
    output_uri: str,
    specs: Sequence[DerivativeSpec],
    copy: ColorizedCopy,
    original: Original,
    *,
    master_sha256: str,
    masters: Collection[str],
) -> list[DerivativeRecord]:
    """Encode the access copies of a master and write each beside it.

    The caller has checked that their places are no original and no other image's
    output (``workers.access_files``).

    Args:
        storage: The store of the master.
        output_uri: Where the master was written.
        specs: The copies asked for.
        copy: The colorized master.
        original: Its original.
        master_sha256: SHA-256 of the master as written.
        masters: SHA-256 of every master of this image (its own files name one).

    Returns:
        What was written, for the catalog.

    Raises:
        AccessFileFailed: If a copy cannot be made, or a file that is not the image's
            own is where it goes (left untouched).
        StorageError: If a write fails; nothing partial is left behind.
    """
    if not specs:
        return []
    records = []
    for spec, access in zip(
        specs, encode_derivatives(specs, copy, original, master_sha256), strict=True
    ):
        uri = spec.uri_beside(output_uri)
        replaceable = own_digests(storage, uri, masters, access_copy_master, HEAD_BYTES)
        write_beside(
            storage,
            uri,
            access.data,
            content_type=_CONTENT_TYPES[spec.kind],
            replaceable=replaceable,
            what=f"the access copy {spec}",
        )
        records.append(
            DerivativeRecord(
                kind=spec.kind,
                long_edge=spec.long_edge,
                uri=uri,
                sha256=hashlib.sha256(access.data).hexdigest(),
                size=len(access.data),
                width=access.width,
                height=access.height,
            )
        )
    return records


def write_local_derivatives(
    storage: Storage,
    output: str,
    specs: Sequence[DerivativeSpec],
    copy: ColorizedCopy,
    original: Original,
    *,
    replaced: Collection[str] = (),
    reserved: Collection[str] = (),
) -> list[DerivativeRecord]:
    """Write the access copies of a master that ``panchro colorize`` wrote (no catalog).

    Without a catalog, the image's own masters are the one just written and the one it
    replaced; its own copies are those that name either.

    Args:
        storage: Local storage.
        output: The master's path.
        specs: The copies asked for.
        copy: The colorized master, as written.
        original: Its original.
        replaced: SHA-256 of the earlier master that was replaced, if any.
        reserved: Resolved paths of every original and output of the run: never a copy's.

    Returns:
        What was written.

    Raises:
        AccessFileFailed: If a copy cannot be made, or its place is reserved or holds a
            file that is not the image's own (left untouched).
        StorageError: If a write fails; nothing partial is left behind.
    """
    for spec in specs:
        place = spec.uri_beside(output)
        if os.path.realpath(place) in reserved:
            raise AccessFileFailed(
                f"the access copy {spec} would go to {place}, an original or another output "
                "of this run; rename one of the two files, or ask for another size"
            )
    master_sha256 = hashlib.sha256(copy.data).hexdigest()
    return write_derivatives(
        storage,
        output,
        specs,
        copy,
        original,
        master_sha256=master_sha256,
        masters={master_sha256, *replaced},
    )
