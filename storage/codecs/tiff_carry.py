"""What a TIFF copy carries beyond what Pillow and tifffile write: Exif, GPS, IPTC, pages.

Reading an original TIFF (:func:`carried_metadata`), byte for byte from its structure:

* the descriptive tags of its first IFD (Make, Model, Artist, Copyright...) with its Exif
  and GPS sub-IFDs, as one EXIF block (``Exif\\0\\0`` and a small TIFF), the form JPEG's
  APP1 and PNG's eXIf take as they are;
* its IPTC-IIM record (tag 33723, else the Photoshop resources of tag 34377);
* its pages after the first, as trees of the original's bytes (``tiff_ifd``).

Finishing a TIFF copy (:func:`finish_tiff`): the Exif and GPS sub-IFDs of the EXIF block,
the IIM record as tag 33723, and the further pages of the original, untouched (the same
entries, the same compressed data), chained after the colorized first page. A page that
cannot be carried (its samples wider than 8 bits in the other byte order, a BigTIFF, a
copy past 4 GiB) leaves all further pages out; the worker then records a ``pages.dropped``
warning.
"""

from __future__ import annotations

import dataclasses
import logging
import struct

from storage.codecs.tiff_ifd import (
    LONG,
    Entry,
    Ifd,
    TiffBuilder,
    read_header,
    read_ifd,
)
from storage.iptc import iim_from_irb, trim_iim
from storage.metadata import DESCRIPTIVE_TAGS, EXIF_SUB_IFDS, ImageMetadata

logger = logging.getLogger(__name__)

__all__ = ["OUTPUT_BYTEORDER", "carried_metadata", "finish_tiff"]

#: Byte order of the TIFF copies Pillow and tifffile write here (little-endian, "II").
OUTPUT_BYTEORDER = "<"
#: TIFF tag of the IPTC-NAA (IIM) record.
TAG_IPTC = 33723
#: TIFF tag of Photoshop's image resources.
TAG_PHOTOSHOP = 34377
#: Most pages carried; a file claiming more is treated as damaged.
MAX_PAGES = 10_000
#: Prefix of an EXIF block as JPEG APP1 and Pillow hold it.
EXIF_PREFIX = b"Exif\x00\x00"

_ERRORS = (ValueError, struct.error)


def carried_metadata(metadata: ImageMetadata, data: bytes) -> ImageMetadata:
    """Add what a TIFF original's structure holds to its decoded metadata.

    Args:
        metadata: The metadata the decoder collected.
        data: The whole TIFF file.

    Returns:
        The metadata with the byte-exact EXIF block (when the first IFD has descriptive
        tags or sub-IFDs), the IIM record, and the further pages (or why they cannot be
        carried, in ``pages_note``).
    """
    try:
        byteorder, first = read_header(data)
        page, next_offset = read_ifd(data, first, byteorder)
    except _ERRORS as exc:
        problem = f"the TIFF structure could not be read for carrying ({exc})"
        logger.debug("%s", problem)
        return dataclasses.replace(metadata, pages_note=problem)
    exif = _exif_block(page) or metadata.exif
    pages, note = _further_pages(data, next_offset, byteorder)
    return dataclasses.replace(
        metadata, exif=exif, iptc=_iim(page), extra_pages=pages, pages_note=note
    )


def finish_tiff(data: bytes, carried: ImageMetadata) -> bytes:
    """Add the Exif and GPS sub-IFDs, the IIM record and the further pages to a TIFF copy.

    Args:
        data: The copy as Pillow or tifffile wrote it (one page).
        carried: Its carried metadata: ``exif``, ``iptc`` and ``extra_pages`` are used.

    Returns:
        The finished copy; ``data`` itself when there is nothing to add or it cannot be
        extended (logged).
    """
    if not (carried.exif or carried.iptc or carried.extra_pages):
        return data
    try:
        builder = TiffBuilder(data)
    except ValueError as exc:
        logger.warning("cannot add metadata to the TIFF copy: %s", exc)
        return data
    added: list[Entry] = []
    if carried.exif:
        added.extend(_sub_ifds(builder, carried.exif))
    if carried.iptc:
        record = carried.iptc + b"\x00" * (-len(carried.iptc) % 4)
        added.append(Entry(TAG_IPTC, LONG, len(record) // 4, record))
    chain = _write_pages(builder, carried.extra_pages, len(data))
    if not added and chain is None:
        return data
    try:
        builder.rewrite_first_ifd(added, chain)
    except ValueError as exc:
        logger.warning("cannot add metadata to the TIFF copy: %s", exc)
        return data
    return builder.getvalue()


def _exif_block(page: Ifd) -> bytes | None:
    """The descriptive tags and the Exif/GPS sub-IFDs of a first IFD, as an EXIF block."""
    entries = [entry for entry in page.entries if entry.tag in DESCRIPTIVE_TAGS]
    children = {tag: kids for tag, kids in page.children.items() if tag in EXIF_SUB_IFDS}
    if not entries and not children:
        return None
    header = (b"II" if page.byteorder == "<" else b"MM") + struct.pack(f"{page.byteorder}HI", 42, 0)
    builder = TiffBuilder(header)
    for tag, kids in children.items():
        entries.append(builder.long_entry(tag, [builder.write_tree(kid) for kid in kids]))
    builder.rewrite_first_ifd(entries, 0)
    return EXIF_PREFIX + builder.getvalue()


def _iim(page: Ifd) -> bytes | None:
    """The IIM record of a first IFD: tag 33723, else Photoshop's resource 0x0404."""
    entry = page.entry(TAG_IPTC)
    if entry is not None and entry.value:
        return trim_iim(entry.value) or None
    resources = page.entry(TAG_PHOTOSHOP)
    return iim_from_irb(resources.value) if resources is not None else None


def _further_pages(data: bytes, offset: int, byteorder: str) -> tuple[tuple[Ifd, ...], str | None]:
    """The pages after the first, or none and the reason they cannot be carried."""
    pages: list[Ifd] = []
    seen: set[int] = set()
    try:
        while offset and offset not in seen and len(pages) < MAX_PAGES:
            seen.add(offset)
            page, offset = read_ifd(data, offset, byteorder)
            pages.append(page)
    except _ERRORS as exc:
        return (), f"page {len(pages) + 2} could not be read ({exc})"
    if byteorder != OUTPUT_BYTEORDER and any(page.wide_samples for page in pages):
        return (), "their samples are wider than 8 bits and stored big-endian"
    return tuple(pages), None


def _sub_ifds(builder: TiffBuilder, exif: bytes) -> list[Entry]:
    """Write the Exif and GPS sub-IFDs of an EXIF block; return the entries that point to them."""
    block = exif.removeprefix(EXIF_PREFIX)
    try:
        byteorder, first = read_header(block)
        ifd0 = read_ifd(block, first, byteorder)[0]
        return [
            builder.long_entry(tag, [builder.write_tree(kid) for kid in ifd0.children[tag]])
            for tag in EXIF_SUB_IFDS
            if ifd0.children.get(tag)
        ]
    except _ERRORS as exc:
        logger.warning("the Exif and GPS sub-IFDs are left out of the TIFF copy: %s", exc)
        return []


def _write_pages(builder: TiffBuilder, pages: tuple[Ifd, ...], size: int) -> int | None:
    """Chain the further pages after the first; their first offset, or None if none."""
    if not pages:
        return None
    if size + sum(page.size for page in pages) >= 2**32 - 2**20:
        logger.warning("the further pages are left out: the copy would pass 4 GiB")
        return None
    chain = 0
    try:
        for page in reversed(pages):
            chain = builder.write_tree(page, chain)
    except ValueError as exc:
        logger.warning("the further pages are left out of the TIFF copy: %s", exc)
        return None
    return chain
