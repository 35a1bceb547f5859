"""The files an export or a check is about, and reading them back in pieces.

Every image has a source; a done image also has its output, and any access copies
(``derivatives``) and sidecar it was given. :func:`image_objects` lists them with what the
catalog recorded of each (sha256, size, format); :func:`records` walks a collection page by
page so that no export holds more than one page of rows; :class:`Stores` opens each backend
once for all threads, and :func:`digest_object` / :func:`copy_object` read an object in
pieces, hashing it on the way, so that no file is ever held whole in memory.
"""

from __future__ import annotations

import hashlib
import mimetypes
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from catalog.engine import transaction
from catalog.models import Collection, ImageStatus
from catalog.preservation import PAGE_IMAGES, ImageRecord, image_records
from storage.base import Storage
from storage.chunks import read_chunks
from storage.options import StorageOptions
from storage.registry import open_storage
from storage.uri import parse_uri

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "ROLE_DERIVATIVE",
    "ROLE_OUTPUT",
    "ROLE_SIDECAR",
    "ROLE_SOURCE",
    "Agent",
    "Digest",
    "PreservedObject",
    "Stores",
    "copy_object",
    "digest_object",
    "image_objects",
    "mime_type",
    "records",
]

#: Role of an image's original scan.
ROLE_SOURCE: Final = "source"
#: Role of an image's colorized master copy.
ROLE_OUTPUT: Final = "output"
#: Role of an access copy of the output (a row of ``derivatives``).
ROLE_DERIVATIVE: Final = "derivative"
#: Role of the JSON sidecar beside an output (no digest is recorded for it).
ROLE_SIDECAR: Final = "sidecar"

#: MIME types by lower-case file extension, for the formats panchro reads and writes.
_MIME_TYPES: Final = {
    ".tif": "image/tiff",
    ".tiff": "image/tiff",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".jpe": "image/jpeg",
    ".png": "image/png",
    ".webp": "image/webp",
    ".bmp": "image/bmp",
    ".jp2": "image/jp2",
    ".j2k": "image/jp2",
    ".jpf": "image/jpx",
    ".jpx": "image/jpx",
    ".json": "application/json",
}
#: MIME type of an object whose format the name does not tell.
UNKNOWN_MIME_TYPE: Final = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class Agent:
    """Who makes an export or a check: this panchro, on this host.

    Attributes:
        version: The installed panchro version.
        host: The host name.
    """

    version: str
    host: str

    @property
    def software(self) -> str:
        """``panchro VERSION``."""
        return f"panchro {self.version}"

    @property
    def label(self) -> str:
        """``HOST panchro VERSION``: the ``agent`` of the events it records (255 at most)."""
        return f"{self.host} {self.software}"[:255]


@dataclass(frozen=True, slots=True)
class PreservedObject:
    """One file of an image and what the catalog recorded of it.

    Attributes:
        role: ``source``, ``output``, ``derivative`` or ``sidecar``.
        uri: Where it is stored.
        sha256: Its recorded hex SHA-256; None where none was recorded.
        size: Its recorded size in bytes; None where unknown.
        mime_type: Its format, from its name.
        image_id: The image it belongs to.
    """

    role: str
    uri: str
    sha256: str | None
    size: int | None
    mime_type: str
    image_id: int


@dataclass(frozen=True, slots=True)
class Digest:
    """SHA-256 and size of bytes actually read.

    Attributes:
        sha256: 64 lower-case hex digits.
        size: Bytes read.
    """

    sha256: str
    size: int


def mime_type(uri: str) -> str:
    """Return the MIME type of an object from the extension of its name.

    Args:
        uri: The object's location.

    Returns:
        ``image/tiff`` and the like; ``application/octet-stream`` when the name does not tell.
    """
    name = uri.rsplit("/", 1)[-1]
    suffix = Path(name).suffix.lower()
    return _MIME_TYPES.get(suffix) or mimetypes.guess_type(name)[0] or UNKNOWN_MIME_TYPE


def image_objects(record: ImageRecord, *, sidecars: bool = False) -> list[PreservedObject]:
    """List the files of one image: its source, and if done its output and copies.

    Args:
        record: The image, with its derivatives loaded.
        sidecars: Include the sidecar of a done image, where it has one.

    Returns:
        The objects, source first.
    """
    image = record.image
    found = [
        PreservedObject(
            ROLE_SOURCE,
            image.source_uri,
            image.source_sha256,
            image.source_size,
            mime_type(image.source_uri),
            image.id,
        )
    ]
    if image.status is not ImageStatus.DONE or image.output_sha256 is None:
        return found
    found.append(
        PreservedObject(
            ROLE_OUTPUT,
            image.output_uri,
            image.output_sha256,
            image.output_size,
            mime_type(image.output_uri),
            image.id,
        )
    )
    found.extend(
        PreservedObject(
            ROLE_DERIVATIVE, copy.uri, copy.sha256, copy.size, mime_type(copy.uri), image.id
        )
        for copy in record.derivatives
    )
    if sidecars and image.sidecar_uri:
        found.append(
            PreservedObject(
                ROLE_SIDECAR, image.sidecar_uri, None, None, mime_type(image.sidecar_uri), image.id
            )
        )
    return found


def records(
    sessions: sessionmaker[Session],
    collection: Collection,
    *,
    page_size: int = PAGE_IMAGES,
    **load: Any,
) -> Iterator[list[ImageRecord]]:
    """Yield a collection's images page by page, each page read in its own short transaction.

    Args:
        sessions: The catalog's session factory.
        collection: The collection.
        page_size: Images per page.
        **load: What to load with each image and which images
            (see :func:`catalog.preservation.image_records`).

    Returns:
        An iterator of non-empty pages, in image id order.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    last_id: int | None = None
    while True:
        with transaction(sessions) as db:
            page = image_records(db, collection.id, after_id=last_id, limit=page_size, **load)
        if page:
            yield page
        if len(page) < page_size:
            return
        last_id = page[-1].image.id


class Stores:
    """One backend per URI scheme, opened on first use and shared by every thread.

    Args:
        options: How to reach the stores (S3 endpoint, region...).
    """

    def __init__(self, options: StorageOptions | None = None) -> None:
        self.options = options if options is not None else StorageOptions()
        self._lock = threading.Lock()
        self._opened: dict[str, Storage] = {}

    def for_uri(self, uri: str) -> Storage:
        """Return the backend that holds ``uri``.

        Args:
            uri: Any object's location.

        Returns:
            The backend of its scheme.

        Raises:
            InvalidURI: If ``uri`` is not a location a backend serves.
        """
        scheme = parse_uri(uri).scheme
        with self._lock:
            storage = self._opened.get(scheme)
            if storage is None:
                storage = self._opened[scheme] = open_storage(uri, self.options)
            return storage


def digest_object(storage: Storage, uri: str) -> Digest:
    """Hash an object read in pieces.

    Args:
        storage: Its backend.
        uri: The object.

    Returns:
        Its SHA-256 and size.

    Raises:
        ObjectNotFound: If it does not exist.
        StorageError: If it cannot be read.
    """
    digest = hashlib.sha256()
    size = 0
    for chunk in read_chunks(storage, uri):
        digest.update(chunk)
        size += len(chunk)
    return Digest(digest.hexdigest(), size)


def copy_object(storage: Storage, uri: str, target: Path) -> Digest:
    """Copy an object into a new local file, in pieces, hashing what was copied.

    Args:
        storage: Its backend.
        uri: The object.
        target: The file to create (its folder is created); it must not exist.

    Returns:
        The SHA-256 and size of the copied bytes.

    Raises:
        FileExistsError: If ``target`` exists.
        ObjectNotFound: If the object does not exist.
        StorageError: If it cannot be read.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with open(target, "xb") as file:
        for chunk in read_chunks(storage, uri):
            file.write(chunk)
            digest.update(chunk)
            size += len(chunk)
    return Digest(digest.hexdigest(), size)
