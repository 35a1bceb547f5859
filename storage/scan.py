"""Find the images of a collection: list it, drop hidden and system files, keep images.

An image is recognised by its content: the first ``SNIFF_BYTES`` bytes of each candidate are
matched against the magic numbers of the supported formats
(:func:`storage.codecs.formats.sniff_format`, whose Pillow format names a scan reports).
A ``.jpg`` holding text is skipped, and a photograph saved without an extension is found.

Reading a head costs a few microseconds for a local file but one GET request per S3 object, so
the ``by_extension`` fast path trusts well-known image extensions and sniffs only the other
names. It is on by default for S3 and off for local folders. An object it lets through wrongly
still fails cleanly later, when the worker decodes it (``InvalidImage``). S3 heads are read by a
small thread pool, ahead of the consumer but in listing order.

What a scan passes over is counted per reason in a
:class:`~storage.scan_report.ScanReport` (the reasons are listed in
:mod:`storage.scan_report`). A folder pruned by a local walk
(``.git``, ``@eaDir``) counts once, however many files it holds.

Every file accounted for: a skip whose reason is not ignored is also kept as a
:class:`~storage.scan_report.SkippedEntry` with a sentence a person understands (plus
what the content looks like: "a PDF document"), which the scheduler records in the catalog
as a ``skipped`` image. Only what is not part of a collection is ignored, and counted: hidden
and system files, S3 folder markers, a folder already listed through another link, a file
removed while it was scanned.

Symbolic links (local scans): a link whose target lies inside the scanned folder is
followed. A link that leads outside it (``../other``, ``/mnt/elsewhere``) is not followed: it
is reported as ``link-outside`` and recorded, because a collection is what its folder holds
and a link must not silently pull in, or expose, another tree. Submit the target folder
itself, or copy the files in, to colorize them. File names that are not valid UTF-8 are
scanned like any other (their URIs are written percent-encoded, see :mod:`storage.uri`).
"""

from __future__ import annotations

import codecs
import logging
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Final

from storage.base import (
    ObjectInfo,
    Storage,
)
from storage.codecs.formats import (
    BMP,
    JPEG,
    JPEG2000,
    PNG,
    SNIFF_BYTES,
    TIFF,
    WEBP,
    describe_unknown,
    sniff_format,
)
from storage.errors import ObjectNotFound, StorageError, StorageUnavailable
from storage.scan_report import (
    ScannedObject,
    ScanReport,
)
from storage.skips import (
    SKIP_EMPTY,
    SKIP_HIDDEN,
    SKIP_LINK_OUTSIDE,
    SKIP_NOT_AN_IMAGE,
    SKIP_SYSTEM,
    SKIP_UNKNOWN_EXTENSION,
    SKIP_UNREADABLE,
    SKIP_UNSAFE_NAME,
    SKIP_VANISHED,
)
from storage.uri import URI, parse_uri

__all__ = ["IMAGE_EXTENSIONS", "SYSTEM_NAMES", "Sniffer", "scan"]

logger = logging.getLogger(__name__)

#: Threads reading S3 object heads at the same time (each one GET in flight).
S3_SNIFF_WORKERS: Final = 16
#: Objects listed ahead of the consumer per sniffing thread.
_LOOKAHEAD_PER_WORKER: Final = 4

#: Lower-case file extensions trusted by the ``by_extension`` fast path, and their formats.
IMAGE_EXTENSIONS: Final[Mapping[str, str]] = {
    "jpg": JPEG,
    "jpeg": JPEG,
    "jpe": JPEG,
    "jfif": JPEG,
    "png": PNG,
    "tif": TIFF,
    "tiff": TIFF,
    "webp": WEBP,
    "bmp": BMP,
    "dib": BMP,
    "jp2": JPEG2000,
    "j2k": JPEG2000,
    "jpf": JPEG2000,
    "jpx": JPEG2000,
    "j2c": JPEG2000,
}

#: Lower-case names of files and folders that operating systems and NAS boxes leave behind.
SYSTEM_NAMES: Final = frozenset(
    {
        "thumbs.db",
        "ehthumbs.db",
        "ehthumbs_vista.db",
        "desktop.ini",
        "icon\r",
        "@eadir",
        "__macosx",
        "$recycle.bin",
        "system volume information",
        "#recycle",
        "#snapshot",
        "lost+found",
    }
)

#: Recognises a format from an object's first bytes; None when it is not an image.
Sniffer = Callable[[bytes], str | None]


def scan(
    storage: Storage,
    prefix: URI | str | os.PathLike[str],
    *,
    sniff: bool = True,
    by_extension: bool | None = None,
    report: ScanReport | None = None,
    sniffer: Sniffer | None = None,
    workers: int | None = None,
) -> Iterator[ScannedObject]:
    """Yield the images below ``prefix`` in listing order (code-point order of the keys).

    Args:
        storage: The backend that holds ``prefix``.
        prefix: The collection's folder or S3 prefix.
        sniff: Whether to read object heads at all. False keeps exactly the files with an
            image extension and reads nothing.
        by_extension: Trust the well-known image extensions and sniff only other names.
            None: True on S3 (a GET per object costs), False locally (reading is cheap).
        report: Filled in with counts of what was found and skipped; read it after the scan.
        sniffer: Recognises a format from the first ``SNIFF_BYTES`` bytes; None uses
            :func:`storage.codecs.formats.sniff_format`.
        workers: Threads reading heads; None: :data:`S3_SNIFF_WORKERS` on S3, else 1.

    Returns:
        An iterator of :class:`ScannedObject`.

    Raises:
        ValueError: If ``workers`` is less than 1.
        ObjectNotFound: If a local ``prefix`` does not exist.
        StorageUnavailable: If the store cannot be reached; worth retrying.
        StorageError: If the listing fails otherwise.
    """
    location = parse_uri(prefix)
    if report is None:
        report = ScanReport()
    if by_extension is None:
        by_extension = location.is_s3
    if workers is None:
        workers = S3_SNIFF_WORKERS if location.is_s3 else 1
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if sniffer is None:
        sniffer = sniff_format
    outside = _outside_links(location)
    prune = _prune_reason if outside is None else outside.prune
    listing = storage.list(location, on_skip=report.skip, prune=prune)
    if outside is not None:
        listing = outside.files(listing, report)
    candidates = _candidates(listing, report, trust_extension=by_extension or not sniff)
    if not sniff:
        found = _by_extension_only(candidates, report)
    else:
        found = _sniffed(candidates, storage, sniffer, report, workers)
    return _counted(found, report, location)


def _prune_reason(relative: str) -> str | None:
    name = relative.rsplit("/", 1)[-1]
    if name.startswith("."):
        return SKIP_HIDDEN
    if name.lower() in SYSTEM_NAMES:
        return SKIP_SYSTEM
    return None


class _OutsideLinks:
    """Keeps a local scan inside its folder: links that lead out of it are not followed."""

    def __init__(self, root: str, real_root: str) -> None:
        self._base = root.rstrip(os.sep) + os.sep
        self._inside = real_root.rstrip(os.sep) + os.sep

    def _leads_outside(self, relative: str) -> bool:
        target = os.path.realpath(self._base + relative)
        return not (target + os.sep).startswith(self._inside)

    def prune(self, relative: str) -> str | None:
        """The walk's prune: hidden and system folders, and links to folders outside."""
        reason = _prune_reason(relative)
        if reason is None and self._leads_outside(relative):
            logger.warning("not following %s%s/: it leads outside the source", self._base, relative)
            return SKIP_LINK_OUTSIDE
        return reason

    def files(self, listing: Iterable[ObjectInfo], report: ScanReport) -> Iterator[ObjectInfo]:
        """Pass the listed files on, except links to files outside (reported)."""
        for info in listing:
            # The folders walked are all inside, so only a file that is a link can lead out.
            if os.path.islink(self._base + info.relative) and self._leads_outside(info.relative):
                report.skip(info.relative, SKIP_LINK_OUTSIDE, detail=_link_target(info))
                continue
            yield info


def _outside_links(location: URI) -> _OutsideLinks | None:
    """The link policy of a local folder scan; None for S3 or a single file."""
    if not location.is_local or not os.path.isdir(location.key):
        return None
    return _OutsideLinks(location.key, os.path.realpath(location.key))


def _link_target(info: ObjectInfo) -> str | None:
    try:
        return f"it points to {os.readlink(info.uri.key)}"
    except OSError:
        return None


def _name_reason(relative: str) -> str | None:
    """Why a listed key is not a candidate (checking every segment), or None."""
    for segment in relative.split("/"):
        if segment in ("", ".", ".."):
            return SKIP_UNSAFE_NAME
        if segment.startswith("."):
            return SKIP_HIDDEN
        if segment.lower() in SYSTEM_NAMES:
            return SKIP_SYSTEM
    return None


def _extension_format(relative: str) -> str | None:
    name = relative.rsplit("/", 1)[-1]
    _, dot, extension = name.rpartition(".")
    return IMAGE_EXTENSIONS.get(extension.lower()) if dot else None


def _candidates(
    listing: Iterable[ObjectInfo], report: ScanReport, *, trust_extension: bool
) -> Iterator[tuple[ObjectInfo, str | None]]:
    """Yield listed objects worth a look, with their format if the extension is trusted."""
    for info in listing:
        reason = _name_reason(info.relative)
        if reason is None and info.size == 0:
            reason = SKIP_EMPTY
        if reason is not None:
            report.skip(info.relative, reason, info=info)
            continue
        yield info, _extension_format(info.relative) if trust_extension else None


def _by_extension_only(
    candidates: Iterable[tuple[ObjectInfo, str | None]], report: ScanReport
) -> Iterator[ScannedObject]:
    for info, image_format in candidates:
        if image_format is None:
            report.skip(info.relative, SKIP_UNKNOWN_EXTENSION, info=info)
        else:
            yield _scanned(info, image_format, sniffed=False)


def _sniffed(
    candidates: Iterable[tuple[ObjectInfo, str | None]],
    storage: Storage,
    sniffer: Sniffer,
    report: ScanReport,
    workers: int,
) -> Iterator[ScannedObject]:
    if workers == 1:
        for info, image_format in candidates:
            if image_format is not None:
                yield _scanned(info, image_format, sniffed=False)
                continue
            found = _recognise(info, _read_head(storage, info), sniffer, report)
            if found is not None:
                yield found
        return
    # Heads are read by the pool ahead of the consumer; results are taken in listing order,
    # so the order of the scan does not depend on the timing of the requests.
    window: deque[tuple[ObjectInfo, str | None, Future[bytes | str] | None]] = deque()
    limit = workers * _LOOKAHEAD_PER_WORKER
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scan-head")
    try:
        for info, image_format in candidates:
            if image_format is not None and not window:
                yield _scanned(info, image_format, sniffed=False)
                continue
            pending = None if image_format is not None else pool.submit(_read_head, storage, info)
            window.append((info, image_format, pending))
            while len(window) >= limit:
                found = _resolve(window.popleft(), sniffer, report)
                if found is not None:
                    yield found
        while window:
            found = _resolve(window.popleft(), sniffer, report)
            if found is not None:
                yield found
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _resolve(
    item: tuple[ObjectInfo, str | None, Future[bytes | str] | None],
    sniffer: Sniffer,
    report: ScanReport,
) -> ScannedObject | None:
    info, image_format, pending = item
    if pending is None:
        assert image_format is not None
        return _scanned(info, image_format, sniffed=False)
    return _recognise(info, pending.result(), sniffer, report)


def _read_head(storage: Storage, info: ObjectInfo) -> bytes | str:
    """Return the head of an object, or the skip reason if it cannot be read.

    StorageUnavailable propagates: a scan that cannot reach its store must fail, not shrink.
    """
    try:
        return storage.read_head(info.uri, SNIFF_BYTES)
    except ObjectNotFound:
        return SKIP_VANISHED
    except StorageUnavailable:
        raise
    except StorageError as exc:
        logger.warning("cannot read %s: %s", info.uri, exc)
        return SKIP_UNREADABLE


def _recognise(
    info: ObjectInfo, head: bytes | str, sniffer: Sniffer, report: ScanReport
) -> ScannedObject | None:
    if isinstance(head, str):
        report.skip(info.relative, head, info=info)
        return None
    image_format = sniffer(head)
    if image_format is None:
        report.skip(info.relative, SKIP_NOT_AN_IMAGE, info=info, detail=_looks_like(head))
        return None
    return _scanned(info, image_format, sniffed=True)


def _looks_like(head: bytes) -> str:
    """What a file that is not a supported image seems to be: "it is a PDF document"."""
    kind, _ = describe_unknown(head)
    if not kind.startswith("not a recognised"):
        return f"it is {kind}"
    try:
        # Incremental: a character cut in two by the end of the head is not an error.
        text = codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return kind
    if all(char.isprintable() or char.isspace() for char in text):
        return "it is text"
    return kind


def _scanned(info: ObjectInfo, image_format: str, *, sniffed: bool) -> ScannedObject:
    return ScannedObject(
        uri=info.uri,
        relative=info.relative,
        size=info.size,
        checksum=info.checksum,
        checksum_kind=info.checksum_kind,
        last_modified=info.last_modified,
        format=image_format,
        sniffed=sniffed,
    )


def _counted(
    found: Iterable[ScannedObject], report: ScanReport, location: URI
) -> Iterator[ScannedObject]:
    for item in found:
        report.found += 1
        report.found_bytes += item.size
        yield item
    logger.info(
        "scanned %s: %d images (%d bytes), %d entries skipped %s",
        location,
        report.found,
        report.found_bytes,
        report.total_skipped,
        dict(report.skipped),
    )
