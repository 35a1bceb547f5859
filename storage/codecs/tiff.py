"""TIFF files with more than 8 bits per colour sample, read and written with tifffile.

Pillow opens 48-bit RGB and 64-bit RGBA TIFFs as 8-bit images without a word, and cannot
open 16-bit gray+alpha or 12-bit TIFFs at all. tifffile reads and writes them with every bit.
Without the optional ``imagecodecs`` package tifffile handles uncompressed, deflate, LZMA and
PackBits data but not LZW or JPEG; LZW 16-bit colour is then decoded through Pillow's libtiff
by ``deep.py``, and 16-bit outputs are written with deflate (lossless, like LZW) instead.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import tifffile
from numpy.typing import NDArray
from PIL import Image, TiffImagePlugin

from storage.errors import UnsupportedImage
from storage.metadata import DESCRIPTIVE_TAGS, ImageMetadata, ifd0_text_tags

logger = logging.getLogger(__name__)

#: TIFF tag ids used here.
TAG_DESCRIPTION = 270
TAG_ORIENTATION = 274
TAG_X_RESOLUTION = 282
TAG_Y_RESOLUTION = 283
TAG_RESOLUTION_UNIT = 296
TAG_SOFTWARE = 305
TAG_XMP = 700
TAG_ICC = 34675

#: Centimetres per inch, to turn TIFF's pixels-per-centimetre into dots per inch.
_CM_PER_INCH = 2.54

#: tifffile compression for 16-bit outputs, by the original's compression (Pillow's names).
#: Codecs tifffile lacks without imagecodecs fall back to "zlib" (Adobe deflate) in
#: ``_writable``.
_WIDE_COMPRESSION = {
    "raw": None,
    "tiff_lzw": "lzw",
    "tiff_adobe_deflate": "zlib",
    "tiff_deflate": "zlib",
    "packbits": "packbits",
    "lzma": "lzma",
}


@dataclass(frozen=True)
class TiffLayout:
    """What the first page of a TIFF holds, read from its tags without decoding pixels.

    Attributes:
        width: Width in pixels.
        height: Height in pixels.
        bits: Bits per sample (the largest when samples differ).
        samples: Samples per pixel, extra samples included.
        photometric: PhotometricInterpretation tag value.
        sample_format: SampleFormat tag value (1 unsigned, 2 signed, 3 float ...).
        compression: Compression in Pillow's names, e.g. ``"tiff_lzw"``.
        compression_code: Compression tag value.
        extra_samples: ExtraSamples tag values (1 associated alpha, 2 unassociated alpha).
        pages: Number of pages in the file.
    """

    width: int
    height: int
    bits: int
    samples: int
    photometric: int
    sample_format: int
    compression: str
    compression_code: int
    extra_samples: tuple[int, ...]
    pages: int

    @property
    def is_wide(self) -> bool:
        """Whether Pillow cannot keep every bit (more than 8 bits, other than 16-bit gray)."""
        return self.bits > 8 and not (self.samples == 1 and self.bits == 16)

    @property
    def tifffile_can_decode(self) -> bool:
        """Whether tifffile has a decoder for the compression (some need imagecodecs)."""
        return bool(self.compression_code in tifffile.TIFF.DECOMPRESSORS)


def inspect_tiff(data: bytes) -> TiffLayout | None:
    """Read the layout of a TIFF's first page.

    Args:
        data: The whole file.

    Returns:
        The layout, or None when tifffile cannot parse the header (Pillow then gets to try).
    """
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = tif.pages.first
            bits = page.bitspersample
            return TiffLayout(
                width=int(page.imagewidth),
                height=int(page.imagelength),
                bits=int(max(bits) if isinstance(bits, tuple) else bits),
                samples=int(page.samplesperpixel),
                photometric=int(page.photometric),
                sample_format=int(page.sampleformat),
                compression=_compression_name(int(page.compression)),
                compression_code=int(page.compression),
                extra_samples=tuple(int(v) for v in page.extrasamples),
                pages=len(tif.pages),
            )
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError, OSError) as exc:
        logger.debug("tifffile cannot parse the TIFF header: %s", exc)
        return None


def read_wide_tiff(data: bytes, layout: TiffLayout, label: str) -> NDArray[Any]:
    """Decode the first page of a TIFF with tifffile.

    Args:
        data: The whole file.
        layout: Its layout from ``inspect_tiff``.
        label: The image's name, for messages.

    Returns:
        HxW or HxWxS samples as stored (S samples per pixel, extra samples included),
        minimum-is-black.

    Raises:
        KeyError: If tifffile needs ``imagecodecs`` for this compression.
        UnsupportedImage: If the photometric interpretation is not gray or RGB.
    """
    photometric = tifffile.PHOTOMETRIC
    if layout.photometric not in (photometric.MINISBLACK, photometric.MINISWHITE, photometric.RGB):
        kind = _enum_name(tifffile.PHOTOMETRIC, layout.photometric)
        raise UnsupportedImage(
            f"{label}: {layout.bits}-bit {kind} TIFF is not supported; "
            "convert it to 16-bit grayscale or RGB"
        )
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        samples = page.asarray()
        axes = page.axes
    if "S" in axes and axes.index("S") != len(axes) - 1:
        samples = np.moveaxis(samples, axes.index("S"), -1)
    samples = samples.reshape(layout.height, layout.width, -1)
    if samples.shape[2] == 1:
        samples = samples[..., 0]
    if layout.photometric == photometric.MINISWHITE:
        top = np.iinfo(samples.dtype).max
        if samples.ndim == 2:
            samples = top - samples
        else:
            samples = samples.copy()
            samples[..., 0] = top - samples[..., 0]  # gray only; extra samples are alpha
    return np.ascontiguousarray(samples)


def tiff_metadata(data: bytes) -> tuple[ImageMetadata, int]:
    """Read the metadata of a TIFF's first page with tifffile.

    Args:
        data: The whole file.

    Returns:
        The metadata (the EXIF block holds the descriptive first-page tags only) and the
        orientation tag value (1 when absent).
    """
    with tifffile.TiffFile(io.BytesIO(data)) as tif:
        page = tif.pages.first
        tags = page.tags
        icc = tags.valueof(TAG_ICC)
        xmp = tags.valueof(TAG_XMP)
        description = tags.valueof(TAG_DESCRIPTION)
        orientation = int(tags.valueof(TAG_ORIENTATION, 1))
        dpi = _dpi(
            tags.valueof(TAG_X_RESOLUTION),
            tags.valueof(TAG_Y_RESOLUTION),
            int(tags.valueof(TAG_RESOLUTION_UNIT, 2)),
        )
        exif = Image.Exif()
        for code in DESCRIPTIVE_TAGS:
            value = tags.valueof(code)
            if isinstance(value, str) and value:
                exif[code] = value
        compression = _compression_name(int(page.compression))
    if isinstance(description, str) and description.startswith('{"shape"'):
        description = None  # tifffile's own note of the array shape, not a caption
    metadata = ImageMetadata(
        icc_profile=bytes(icc) if isinstance(icc, bytes | bytearray) and icc else None,
        dpi=dpi,
        exif=exif.tobytes() if len(exif) else None,
        xmp=bytes(xmp) if isinstance(xmp, bytes | bytearray) and xmp else None,
        description=description if isinstance(description, str) and description else None,
        compression=compression,
    )
    return metadata, orientation


def write_wide_tiff(
    samples: NDArray[Any],
    *,
    extra_alpha: bool,
    metadata: ImageMetadata,
    compression: str | None,
    description: str | None,
    software: str | None,
    xmp: bytes | None,
) -> bytes:
    """Write a 16-bit gray or RGB(A) TIFF with tifffile.

    Args:
        samples: HxW, HxWx2 (gray+alpha), HxWx3 or HxWx4 (RGBA) uint16.
        extra_alpha: Whether the last channel is unassociated alpha.
        metadata: ICC profile, DPI and EXIF to carry (only the descriptive first-page EXIF
            tags are written; tifffile cannot write an Exif sub-IFD).
        compression: The original's compression in Pillow's names, or None for deflate.
        description: ImageDescription text, or None.
        software: Software tag text, or None.
        xmp: XMP packet for tag 700, or None.

    Returns:
        The TIFF file.
    """
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    colour = channels - int(extra_alpha)
    extratags: list[tuple[int, int | str, int, Any, bool]] = []
    if xmp:
        extratags.append((TAG_XMP, 1, len(xmp), xmp, True))
    for code, value in ifd0_text_tags(metadata.exif).items():
        if code != TAG_SOFTWARE:
            extratags.append((code, "s", 0, value, True))
    codec = _writable(compression)
    buffer = io.BytesIO()
    tifffile.imwrite(
        buffer,
        samples,
        photometric="rgb" if colour == 3 else "minisblack",
        planarconfig="contig",
        extrasamples=("unassalpha",) if extra_alpha else None,
        compression=codec,
        predictor=codec is not None,
        iccprofile=metadata.icc_profile,
        resolution=metadata.dpi,
        resolutionunit="inch" if metadata.dpi else None,
        description=description,
        software=software if software else False,
        metadata=None,
        extratags=extratags,
    )
    return buffer.getvalue()


def _writable(compression: str | None) -> str | None:
    """Map an original's compression to one tifffile can write here, deflate by default."""
    if compression == "raw":
        return None
    codec = _WIDE_COMPRESSION.get(compression or "", "zlib") or "zlib"
    if codec in ("lzw", "packbits") and not _has_imagecodecs():
        logger.info("writing 16-bit TIFF with deflate: %s needs imagecodecs", codec)
        return "zlib"
    return codec


def _has_imagecodecs() -> bool:
    try:
        import imagecodecs  # noqa: F401
    except ImportError:
        return False
    return True


def _compression_name(code: int) -> str:
    """Pillow's name of a TIFF compression code (``tiff_lzw`` ...), or ``"code N"``."""
    return TiffImagePlugin.COMPRESSION_INFO.get(code, f"code {code}")


def _enum_name(enum: Any, value: int) -> str:
    try:
        return str(enum(value).name).lower()
    except ValueError:
        return f"photometric {value}"


def _dpi(x: Any, y: Any, unit: int) -> tuple[float, float] | None:
    """Turn TIFF resolution tags (rationals as (numerator, denominator)) into DPI."""
    values = []
    for value in (x, y):
        if isinstance(value, tuple) and len(value) == 2 and value[1]:
            values.append(value[0] / value[1])
        elif isinstance(value, int | float):
            values.append(float(value))
        else:
            return None
    if unit == 3:
        values = [v * _CM_PER_INCH for v in values]
    elif unit != 2:
        return None
    if min(values) <= 0:
        return None
    return float(values[0]), float(values[1])
