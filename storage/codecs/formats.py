"""Image format names: recognising originals by their first bytes, choosing output formats.

Format names are Pillow's (``JPEG``, ``PNG``, ``TIFF``, ``WEBP``, ``BMP``, ``JPEG2000``), so
they can be passed to Pillow unchanged and compared with ``Image.format``.

Each original is written back in its own format family, except where that family cannot hold
the result well:

* BMP becomes PNG. BMP has no compression worth the name, no place for XMP or a
  reliable ICC profile, and no 16-bit colour; PNG is lossless like BMP, keeps alpha and is
  read by everything that reads BMP.
* JPEG 2000 becomes TIFF. Archives use JPEG 2000 as a preservation master, and TIFF
  (deflate-compressed, lossless) is the other preservation master format: it keeps 16-bit
  colour, alpha, ICC, resolution and XMP, all of which Pillow's JPEG 2000 writer does not.
"""

from __future__ import annotations

import struct

#: Largest long edge an access copy may be asked for, in pixels (JPEG's limit is 65,535).
MAX_LONG_EDGE = 65_500

JPEG = "JPEG"
PNG = "PNG"
TIFF = "TIFF"
WEBP = "WEBP"
BMP = "BMP"
JPEG2000 = "JPEG2000"

#: Formats that can be decoded, in Pillow's names.
READABLE_FORMATS = (JPEG, PNG, TIFF, WEBP, BMP, JPEG2000)

#: Formats that colorized copies can be written in.
WRITABLE_FORMATS = (JPEG, PNG, TIFF, WEBP)

#: How many leading bytes ``sniff_format`` needs to see (bytes).
SNIFF_BYTES = 32

#: File extension written for each output format.
EXTENSIONS = {JPEG: ".jpg", PNG: ".png", TIFF: ".tif", WEBP: ".webp"}

#: Output format used for each original format.
_OUTPUT_FOR = {JPEG: JPEG, PNG: PNG, TIFF: TIFF, WEBP: WEBP, BMP: PNG, JPEG2000: TIFF}

#: Names a caller may use for a format (lower case, with or without a leading dot).
_ALIASES = {
    "jpeg": JPEG,
    "jpg": JPEG,
    "jpe": JPEG,
    "png": PNG,
    "tif": TIFF,
    "tiff": TIFF,
    "webp": WEBP,
    "bmp": BMP,
    "jp2": JPEG2000,
    "j2k": JPEG2000,
    "jpf": JPEG2000,
    "jpx": JPEG2000,
    "jpeg2000": JPEG2000,
}

_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"
#: Sizes of the BMP info headers in use (BITMAPCOREHEADER ... BITMAPV5HEADER), bytes.
_BMP_HEADER_SIZES = (12, 16, 40, 52, 56, 64, 108, 124)

#: Leading bytes of common files that are not supported images, for error messages.
_OTHER_KINDS = (
    (b"GIF8", "a GIF image (convert it to PNG)", True),
    (b"8BPS", "a Photoshop document (export it as TIFF)", True),
    (b"%PDF", "a PDF document", False),
    (b"PK\x03\x04", "a ZIP archive", False),
    (b"\x1f\x8b", "a gzip archive", False),
    (b"<!DOCTYPE", "an HTML or XML document", False),
    (b"<html", "an HTML document", False),
    (b"<?xml", "an XML document", False),
    (b"{", "a JSON or text document", False),
)


def sniff_format(head: bytes) -> str | None:
    """Recognise a supported image format from the first bytes of a file.

    Args:
        head: The first bytes of the file; ``SNIFF_BYTES`` of them are enough.

    Returns:
        The format in Pillow's name (``JPEG``, ``PNG``, ``TIFF``, ``WEBP``, ``BMP``,
        ``JPEG2000``), or None when the bytes are not the start of one of those.
    """
    if head.startswith(b"\xff\xd8\xff"):
        return JPEG
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return PNG
    # Classic TIFF has version 42, BigTIFF version 43, in either byte order.
    if head[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return TIFF
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return WEBP
    if head.startswith(_JP2_SIGNATURE) or head.startswith(b"\xff\x4f\xff\x51"):
        return JPEG2000
    if head.startswith(b"BM") and _looks_like_bmp(head):
        return BMP
    return None


def describe_unknown(head: bytes) -> tuple[str, bool]:
    """Say what a file that is not a supported image seems to be, for an error message.

    Args:
        head: The first bytes of the file.

    Returns:
        A phrase such as ``"a PDF document"``, and whether the file is an image in a format
        this project does not read (rather than not an image at all).
    """
    stripped = head.lstrip()
    for magic, kind, is_image in _OTHER_KINDS:
        if stripped[: len(magic)].lower() == magic.lower():
            return kind, is_image
    if head[4:8] == b"ftyp":
        return "an ISO media file (HEIC, AVIF or video; convert it to TIFF)", True
    return f"not a recognised image format (it starts with {head[:8].hex(' ')})", False


def normalize_format(name: str) -> str:
    """Turn a format name or file extension into Pillow's format name.

    Args:
        name: ``"jpg"``, ``".tiff"``, ``"PNG"`` and so on.

    Returns:
        One of ``READABLE_FORMATS``.

    Raises:
        ValueError: If the name is not a known format.
    """
    key = name.strip().lower().lstrip(".")
    try:
        return _ALIASES[key]
    except KeyError:
        known = ", ".join(sorted(_ALIASES))
        raise ValueError(f"unknown image format {name!r}; known: {known}") from None


def output_format(source_format: str | None, requested: str | None = None) -> str:
    """Choose the format a colorized copy is written in.

    Args:
        source_format: The original's format (any name ``normalize_format`` accepts), or
            None when unknown.
        requested: A format the caller asks for, or None to follow the original.

    Returns:
        One of ``WRITABLE_FORMATS``: the requested one, else the original's family (see the
        module docstring for BMP and JPEG 2000), else PNG.

    Raises:
        ValueError: If ``requested`` is unknown or cannot be written.
    """
    if requested is not None:
        chosen = normalize_format(requested)
        if chosen not in WRITABLE_FORMATS:
            writable = ", ".join(WRITABLE_FORMATS)
            raise ValueError(f"cannot write {chosen} images; choose one of {writable}")
        return chosen
    if source_format is None:
        return PNG
    return _OUTPUT_FOR[normalize_format(source_format)]


def output_extension(source_format: str | None, requested: str | None = None) -> str:
    """Return the file extension for a colorized copy, to name output files.

    Args:
        source_format: The original's format, or None when unknown.
        requested: A format the caller asks for, or None to follow the original.

    Returns:
        ``".jpg"``, ``".png"``, ``".tif"`` or ``".webp"``, matching what ``encode_image``
        writes for the same arguments.

    Raises:
        ValueError: If ``requested`` is unknown or cannot be written.
    """
    return EXTENSIONS[output_format(source_format, requested)]


def webp_is_lossless(data: bytes) -> bool | None:
    """Tell whether a WebP file holds lossless (VP8L) or lossy (VP8) image data.

    Args:
        data: The whole WebP file.

    Returns:
        True for lossless, False for lossy, None when no image chunk is found.
    """
    offset = 12
    while offset + 8 <= len(data):
        fourcc = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        if fourcc == b"VP8L":
            return True
        if fourcc == b"VP8 ":
            return False
        if fourcc == b"ANMF":
            # An animation frame: a 16-byte frame header, then the frame's own chunks.
            return webp_is_lossless(b"\x00" * 12 + data[offset + 24 : offset + 8 + size])
        offset += 8 + size + (size & 1)
    return None


def _looks_like_bmp(head: bytes) -> bool:
    """Check the BMP info-header size, since two magic bytes alone match text files."""
    if len(head) < 18:
        return len(head) >= 2
    (info_size,) = struct.unpack("<I", head[14:18])
    return info_size in _BMP_HEADER_SIZES
