"""Encoding colorized copies in the original's format family, with its metadata.

Per format (see ``formats.py`` for which format is chosen):

* JPEG: quality 95, 4:4:4 chroma (colour edges of a colorized scan are its whole point, and
  2x2 subsampling would smear them), optimised Huffman tables, a COM note. 8 bits only.
* PNG: 8-bit through Pillow, 16-bit through ``png.py``; tEXt note, iTXt XMP.
* TIFF: 8-bit through Pillow with the original's compression where it still applies
  (CCITT fax codes are bilevel-only, so those become deflate); 16-bit through tifffile.
* WebP: lossless when the original was lossless, else quality 95. 8 bits only.

Every format gets the original's ICC profile when it fits the output's colour space (an
RGB copy of a gray original gets sRGB instead of the gray profile), DPI where the format has
it, EXIF, the IPTC-IIM record, and the XMP packet built by ``storage.metadata``. A TIFF copy
gets the descriptive first-page EXIF tags (Make, Artist, Copyright ...) from Pillow or
tifffile; its Exif and GPS sub-IFDs, its IIM record (tag 33723) and a TIFF original's
further pages are added by ``tiff_carry`` (libtiff rejects an Exif sub-IFD written through
Pillow, and tifffile cannot write one). A JPEG copy gets the IIM record as an APP13 segment;
PNG and WebP copies get its IPTC Core equivalents in their XMP.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, PngImagePlugin, TiffImagePlugin, TiffTags

from storage.codecs import png, tiff, tiff_carry
from storage.codecs.formats import JPEG, PNG, TIFF, WEBP, output_format
from storage.codecs.samples import to_8_bits, to_dtype
from storage.iptc import insert_app13
from storage.metadata import (
    ImageMetadata,
    ProvenanceStamp,
    build_xmp,
    carry_xmp,
    ifd0_text_tags,
    provenance_note,
    srgb_icc,
)

if TYPE_CHECKING:
    from storage.codecs.decode import DecodedImage

logger = logging.getLogger(__name__)

#: JPEG and lossy WebP quality of colorized copies (IJG scale, 1-100).
QUALITY = 95

#: Largest XMP packet one JPEG APP1 segment holds (bytes), after its 29-byte namespace.
JPEG_XMP_LIMIT = 65_504

#: Largest EXIF block one JPEG APP1 segment holds (bytes).
JPEG_EXIF_LIMIT = 65_533

#: PNG text keyword of an XMP packet.
PNG_XMP_KEY = "XML:com.adobe.xmp"

#: Pillow TIFF compression for 8-bit outputs, by the original's compression.
_TIFF_COMPRESSION = {
    "raw": "raw",
    "tiff_lzw": "tiff_lzw",
    "tiff_adobe_deflate": "tiff_adobe_deflate",
    "tiff_deflate": "tiff_adobe_deflate",
    "packbits": "packbits",
    "jpeg": "jpeg",
    "tiff_jpeg": "jpeg",
}

#: Compression for TIFF outputs whose original had none that applies (lossless).
_DEFAULT_TIFF_COMPRESSION = "tiff_adobe_deflate"


def encode_image(
    rgb: NDArray[Any],
    *,
    alpha: NDArray[Any] | None = None,
    source: DecodedImage | None = None,
    format: str | None = None,
    provenance: ProvenanceStamp | None = None,
) -> bytes:
    """Encode a colorized image, carrying over the original's metadata.

    Args:
        rgb: HxWx3 RGB (or HxW gray) samples, uint8 or uint16; 16-bit stays 16-bit in PNG
            and TIFF and is rounded to 8 bits for JPEG and WebP.
        alpha: HxW alpha to attach (converted to the samples' dtype). When None, the
            source's alpha is used, so transparency is never lost by omission.
        source: The decoded original: chooses the format family and supplies ICC, DPI,
            EXIF, XMP, compression and description. None writes PNG without metadata.
        format: Output format or extension (``"png"``, ``".tif"`` ...) instead of the
            original's family.
        provenance: How the image was made; written as XMP and as a short text note.

    Returns:
        The encoded file.

    Raises:
        ValueError: If the arrays have unsupported shapes or dtypes, the format cannot be
            written, or alpha is asked of JPEG.
    """
    samples = _checked(rgb)
    if alpha is None and source is not None:
        alpha = source.alpha
    if alpha is not None:
        if alpha.shape != samples.shape[:2]:
            raise ValueError(f"alpha shape {alpha.shape} does not match {samples.shape[:2]}")
        alpha = to_dtype(alpha, samples.dtype)
    target = output_format(source.format if source else None, format)
    metadata = source.metadata if source else ImageMetadata()
    colour = samples.ndim == 3
    icc = _matching_icc(metadata.icc_profile, colour)
    note = provenance_note(provenance) if provenance else None
    # PNG and WebP cannot hold an IIM record: its IPTC Core equivalents go into the XMP.
    iim_as_xmp = metadata.iptc if target in (PNG, WEBP) else None
    xmp = (
        build_xmp(provenance, base=metadata.xmp, iptc=iim_as_xmp)
        if provenance
        else carry_xmp(metadata.xmp, iptc=iim_as_xmp)
    )
    if target == JPEG and xmp and len(xmp) > JPEG_XMP_LIMIT:
        # Extended XMP (split over several APP1 segments) is not written.
        logger.warning("XMP of %d bytes does not fit a JPEG; the original's is left out", len(xmp))
        xmp = build_xmp(provenance) if provenance else None
    description = "\n".join(text for text in (metadata.description, note) if text) or None
    carried = ImageMetadata(
        icc_profile=icc,
        dpi=metadata.dpi,
        exif=metadata.exif,
        iptc=metadata.iptc,
        extra_pages=metadata.extra_pages,
    )
    software = provenance.software if provenance else None
    logger.debug("encoding %s %s as %s", samples.shape, samples.dtype, target)
    if target == JPEG:
        jpeg = _write_jpeg(samples, alpha, carried, xmp, note)
        return insert_app13(jpeg, carried.iptc) if carried.iptc else jpeg
    if target == PNG:
        return _write_png(samples, alpha, carried, xmp, description, software)
    if target == TIFF:
        compression = metadata.compression if source and source.format == TIFF else None
        written = _write_tiff(samples, alpha, carried, xmp, description, software, compression)
        return tiff_carry.finish_tiff(written, carried)
    assert target == WEBP
    lossless = bool(metadata.lossless)
    return _write_webp(samples, alpha, carried, xmp, lossless)


def _checked(rgb: NDArray[Any]) -> NDArray[Any]:
    if rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"samples must be uint8 or uint16, not {rgb.dtype}")
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = rgb[..., 0]
    if not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"expected HxWx3 RGB or HxW gray samples, got shape {rgb.shape}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError("cannot encode an empty image")
    return rgb


def _matching_icc(icc: bytes | None, colour: bool) -> bytes | None:
    """Keep a profile that fits the output's colour space; sRGB for RGB made from gray."""
    if not icc or len(icc) < 20:
        return None
    space = icc[16:20]
    if colour:
        if space == b"RGB ":
            return icc
        # The colorizer works in sRGB's Lab; a gray profile cannot describe its output.
        return srgb_icc()
    return icc if space == b"GRAY" else None


def _with_alpha(samples: NDArray[Any], alpha: NDArray[Any] | None) -> NDArray[Any]:
    return samples if alpha is None else np.dstack([samples, alpha])


def _write_jpeg(
    samples: NDArray[Any],
    alpha: NDArray[Any] | None,
    carried: ImageMetadata,
    xmp: bytes | None,
    note: str | None,
) -> bytes:
    if alpha is not None:
        raise ValueError("JPEG cannot store alpha; write PNG, TIFF or WebP instead")
    options: dict[str, Any] = {"quality": QUALITY, "subsampling": 0, "optimize": True}
    exif_size = len(carried.exif or b"")
    fits = exif_size <= JPEG_EXIF_LIMIT
    if not fits:
        logger.warning("EXIF block of %d bytes is too large for JPEG; dropped", exif_size)
    options.update(_carried(carried, exif=fits))
    if xmp:
        options["xmp"] = xmp
    if note:
        options["comment"] = note
    return save_jpeg(Image.fromarray(to_8_bits(samples)), options)


def save_jpeg(image: Image.Image, options: dict[str, Any]) -> bytes:
    """Encode a JPEG as asked; baseline and unoptimised when that does not fit Pillow's buffer.

    Pillow gives an optimised or progressive JPEG an output buffer of one or two bytes per
    pixel, which grainy or noisy scans at 4:4:4 and high quality can exceed ("broken data
    stream"); a baseline JPEG is written in pieces and has no such limit.

    Args:
        image: The image to encode.
        options: Pillow's JPEG save options.

    Returns:
        The encoded JPEG.
    """
    try:
        return _save(image, "JPEG", options)
    except OSError as exc:
        logger.info("optimised JPEG does not fit Pillow's buffer (%s); writing baseline", exc)
        return _save(image, "JPEG", {**options, "optimize": False, "progressive": False})


def _write_png(
    samples: NDArray[Any],
    alpha: NDArray[Any] | None,
    carried: ImageMetadata,
    xmp: bytes | None,
    description: str | None,
    software: str | None,
) -> bytes:
    text: dict[str, str] = {}
    if software:
        text["Software"] = software
    if description:
        text["Description"] = description
    if xmp:
        text[PNG_XMP_KEY] = xmp.decode("utf-8")
    if samples.dtype == np.uint16:
        return png.write_png(
            _with_alpha(samples, alpha),
            icc_profile=carried.icc_profile,
            dpi=carried.dpi,
            exif=carried.exif,
            text=text,
        )
    info = PngImagePlugin.PngInfo()
    for keyword, value in text.items():
        if keyword == PNG_XMP_KEY:
            info.add_itxt(keyword, value)
        else:
            info.add_text(keyword, value)
    options: dict[str, Any] = {"pnginfo": info, **_carried(carried)}
    return _save(Image.fromarray(_with_alpha(samples, alpha)), "PNG", options)


def _write_tiff(
    samples: NDArray[Any],
    alpha: NDArray[Any] | None,
    carried: ImageMetadata,
    xmp: bytes | None,
    description: str | None,
    software: str | None,
    compression: str | None,
) -> bytes:
    if samples.dtype == np.uint16:
        return tiff.write_wide_tiff(
            _with_alpha(samples, alpha),
            extra_alpha=alpha is not None,
            metadata=carried,
            compression=compression,
            description=description,
            software=software,
            xmp=xmp,
        )
    codec = _TIFF_COMPRESSION.get(compression or "", _DEFAULT_TIFF_COMPRESSION)
    if codec == "jpeg" and alpha is not None:
        codec = _DEFAULT_TIFF_COMPRESSION  # libtiff's JPEG codec takes no extra samples
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    for code, value in ifd0_text_tags(carried.exif).items():
        tags[code] = value
    if description:
        tags[tiff.TAG_DESCRIPTION] = description
    if software:
        tags[tiff.TAG_SOFTWARE] = software
    if xmp:
        tags[tiff.TAG_XMP] = xmp
        tags.tagtype[tiff.TAG_XMP] = TiffTags.BYTE
    options: dict[str, Any] = {"compression": codec, "tiffinfo": tags}
    if codec == "jpeg":
        options["quality"] = QUALITY
    # The EXIF fields a TIFF keeps are tags of its first IFD (above), not a block.
    options.update(_carried(carried, exif=False))
    return _save(Image.fromarray(_with_alpha(samples, alpha)), "TIFF", options)


def _write_webp(
    samples: NDArray[Any],
    alpha: NDArray[Any] | None,
    carried: ImageMetadata,
    xmp: bytes | None,
    lossless: bool,
) -> bytes:
    image = Image.fromarray(
        _with_alpha(to_8_bits(samples), None if alpha is None else to_8_bits(alpha))
    )
    if image.mode in ("L", "LA"):
        image = image.convert("RGBA" if alpha is not None else "RGB")
    options: dict[str, Any] = {"lossless": lossless, "quality": 100 if lossless else QUALITY}
    if lossless:
        options["exact"] = True  # keep the colour under fully transparent pixels
    options.update(_carried(carried, dpi=False))  # WebP has no resolution field
    if xmp:
        options["xmp"] = xmp
    return _save(image, "WEBP", options)


def _carried(carried: ImageMetadata, *, dpi: bool = True, exif: bool = True) -> dict[str, Any]:
    """Return Pillow's save options for the metadata carried over: ICC profile, DPI, EXIF."""
    options: dict[str, Any] = {}
    if carried.icc_profile:
        options["icc_profile"] = carried.icc_profile
    if dpi and carried.dpi:
        options["dpi"] = carried.dpi
    if exif and carried.exif:
        options["exif"] = carried.exif
    return options


def _save(image: Image.Image, fmt: str, options: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
