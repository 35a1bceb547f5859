"""IPTC-IIM records: found in originals, written into copies, mirrored into XMP.

Archives describe their scans in the IPTC Information Interchange Model (IIM): title
(ObjectName), photographer (By-line), caption (Caption-Abstract), rights (CopyrightNotice),
keywords and more, as datasets of record 2. The whole record is carried byte for byte:

=========  =====================================================================
original   where the IIM record is read from
=========  =====================================================================
TIFF       tag 33723 (IPTC-NAA), else resource 0x0404 of tag 34377 (Photoshop)
JPEG       APP13 ``Photoshop 3.0`` segment(s), image resource 0x0404
PNG        the ``Raw profile type iptc`` text chunk (ImageMagick's and ExifTool's)
=========  =====================================================================

and written into a TIFF copy as tag 33723 (``tiff_carry``) and into a JPEG copy as an APP13
segment (:func:`insert_app13`), with the MD5 digest resource (0x0425) by which Photoshop and
the Metadata Working Group's readers know the IIM is current. PNG and WebP have no place for
IIM; their XMP gets the IPTC Core equivalents instead (``iptc_xmp``).
"""

from __future__ import annotations

import binascii
import hashlib
import logging
import re
import struct

logger = logging.getLogger(__name__)

__all__ = [
    "APP13_HEADER",
    "IRB_IPTC",
    "iim_datasets",
    "iim_from_irb",
    "iim_from_png_profile",
    "iim_text",
    "insert_app13",
    "irb_for_iim",
    "trim_iim",
]

#: Signature at the start of a JPEG APP13 segment that holds Photoshop image resources.
APP13_HEADER = b"Photoshop 3.0\x00"
#: Image resource id of the IPTC-NAA record.
IRB_IPTC = 0x0404
#: Image resource id of the MD5 digest of the IPTC-NAA record.
IRB_IPTC_DIGEST = 0x0425
#: Signatures that start an image resource block.
_IRB_SIGNATURES = (b"8BIM", b"PHUT", b"AgHg", b"DCSR", b"MeSa")
#: Largest payload of one JPEG segment after its length field and the APP13 header (bytes).
_APP13_ROOM = 65_535 - 2 - len(APP13_HEADER)
#: Tag byte that starts every IIM dataset.
_IIM_MARKER = 0x1C
#: Escape sequence of dataset 1:90 (CodedCharacterSet) that declares UTF-8.
_UTF8 = b"\x1b%G"


def iim_datasets(iim: bytes) -> list[tuple[int, int, bytes]]:
    """Split an IIM stream into its datasets.

    Args:
        iim: The stream (records 1, 2 ... as written in files).

    Returns:
        (record, dataset number, value) in file order; parsing stops at the first byte
        that does not start a dataset.
    """
    return [(record, number, iim[start:end]) for record, number, start, end in _walk(iim)]


def trim_iim(iim: bytes) -> bytes:
    """Cut what follows an IIM stream's last dataset (TIFF pads it to 4 bytes).

    Args:
        iim: The stream as stored.

    Returns:
        The datasets only.
    """
    ends = [end for _record, _number, _start, end in _walk(iim)]
    return iim[: ends[-1]] if ends else iim


def iim_text(iim: bytes) -> dict[int, list[str]]:
    """Decode the text datasets of record 2 (the application record).

    Args:
        iim: The IIM stream.

    Returns:
        Text values by dataset number, repeated datasets in order. UTF-8 when record 1
        declares it or the bytes are valid UTF-8, else Latin-1.
    """
    datasets = iim_datasets(iim)
    utf8 = any(r == 1 and n == 90 and v == _UTF8 for r, n, v in datasets)
    texts: dict[int, list[str]] = {}
    for record, number, value in datasets:
        if record != 2 or number == 0:  # 2:00 is the record version, a number
            continue
        texts.setdefault(number, []).append(_decode(value, utf8).strip("\x00 "))
    return texts


def iim_from_irb(irb: bytes) -> bytes | None:
    """Find the IPTC-NAA record among Photoshop image resources.

    Args:
        irb: Image resource blocks (APP13 payload after its header, or TIFF tag 34377).

    Returns:
        The IIM stream, or None when there is none.
    """
    at = 0
    while at + 12 <= len(irb) and irb[at : at + 4] in _IRB_SIGNATURES:
        (resource,) = struct.unpack(">H", irb[at + 4 : at + 6])
        name = 1 + irb[at + 6]
        at += 6 + name + name % 2
        if at + 4 > len(irb):
            break
        (size,) = struct.unpack(">I", irb[at : at + 4])
        at += 4
        if resource == IRB_IPTC:
            return irb[at : at + size] or None
        at += size + size % 2
    return None


def irb_for_iim(iim: bytes) -> bytes:
    """Build the image resources that hold an IIM record and its MD5 digest.

    Args:
        iim: The IIM stream.

    Returns:
        Two resource blocks (0x0404 and 0x0425).
    """
    digest = hashlib.md5(iim, usedforsecurity=False).digest()
    return _resource(IRB_IPTC, iim) + _resource(IRB_IPTC_DIGEST, digest)


def insert_app13(jpeg: bytes, iim: bytes) -> bytes:
    """Insert an IIM record into a JPEG file as APP13 segment(s) after its APPn segments.

    The image resources are split over as many segments as they need, each with the
    ``Photoshop 3.0`` header, as Photoshop writes a record over 64 KiB.

    Args:
        jpeg: A JPEG file without APP13 (as Pillow writes them).
        iim: The IIM stream.

    Returns:
        The file with the segment(s).

    Raises:
        ValueError: If ``jpeg`` does not start with SOI and well-formed segments.
    """
    if jpeg[:2] != b"\xff\xd8":
        raise ValueError("not a JPEG file")
    at = insert_at = 2
    while at + 4 <= len(jpeg) and jpeg[at] == 0xFF:
        marker = jpeg[at + 1]
        if not (0xE0 <= marker <= 0xEF or marker == 0xFE):
            break
        (length,) = struct.unpack(">H", jpeg[at + 2 : at + 4])
        at += 2 + length
        if marker != 0xFE:
            insert_at = at
    if at > len(jpeg):
        raise ValueError("a JPEG segment runs past the end of the file")
    resources = irb_for_iim(iim)
    segments = b"".join(
        b"\xff\xed" + struct.pack(">H", 2 + len(APP13_HEADER) + len(part)) + APP13_HEADER + part
        for part in (resources[i : i + _APP13_ROOM] for i in range(0, len(resources), _APP13_ROOM))
    )
    return jpeg[:insert_at] + segments + jpeg[insert_at:]


def iim_from_png_profile(text: str) -> bytes | None:
    """Read the IIM record of a PNG ``Raw profile type iptc`` text chunk.

    Its text is a newline, the profile name, a newline, the length in bytes, then the
    bytes in hexadecimal over several lines (ImageMagick's layout). The bytes are either
    Photoshop image resources (ImageMagick) or the bare IIM stream.

    Args:
        text: The chunk's text.

    Returns:
        The IIM stream, or None when the text is not such a profile.
    """
    lines = text.strip().split("\n", 2)
    if len(lines) < 3 or not lines[1].strip().isdigit():
        return None
    try:
        data = binascii.unhexlify(re.sub(r"\s+", "", lines[2]))
    except (binascii.Error, ValueError):
        logger.warning("ignoring a PNG IPTC profile that is not hexadecimal")
        return None
    if data[:4] in _IRB_SIGNATURES:
        return iim_from_irb(data)
    return data if data[:1] == bytes([_IIM_MARKER]) else None


def _walk(iim: bytes) -> list[tuple[int, int, int, int]]:
    """(record, dataset number, value start, value end) of each dataset, in order."""
    found = []
    at = 0
    while at + 5 <= len(iim) and iim[at] == _IIM_MARKER:
        record, number = iim[at + 1], iim[at + 2]
        (length,) = struct.unpack(">H", iim[at + 3 : at + 5])
        at += 5
        if length & 0x8000:  # extended dataset: the low bits count the length's bytes
            size = length & 0x7FFF
            if size > 4 or at + size > len(iim):
                break
            length = int.from_bytes(iim[at : at + size], "big")
            at += size
        if at + length > len(iim):
            break
        found.append((record, number, at, at + length))
        at += length
    return found


def _resource(resource: int, data: bytes) -> bytes:
    """One 8BIM resource block with an empty name, padded to an even length."""
    block = b"8BIM" + struct.pack(">H", resource) + b"\x00\x00" + struct.pack(">I", len(data))
    return block + data + b"\x00" * (len(data) % 2)


def _decode(value: bytes, utf8: bool) -> str:
    if utf8:
        return value.decode("utf-8", errors="replace")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")
