"""Access copies: small sRGB JPEGs made beside a colorized master, for viewing and the web.

A master keeps the original's format family, bit depth and colour space; an access copy is
what a catalogue page or an image viewer wants instead::

    copies = encode_access_copies(rgb, [3000, 1024], source=decoded, provenance=stamp,
                                  derived_from=master_sha256)

Each copy is:

* at most ``long_edge`` pixels on its longer side, never enlarged (a copy of a smaller
  image keeps the image's size), resized with Lanczos;
* 8-bit sRGB with the sRGB ICC profile embedded: pixels tagged with another RGB profile
  (the original's, which the master keeps) are converted to sRGB, since web browsers and
  many viewers ignore or mishandle other profiles;
* flattened onto white where the image has alpha (JPEG has no transparency);
* a progressive JPEG (baseline for very grainy images, see ``encode.save_jpeg``) at quality 90
  with 4:4:4 chroma (the colours are what the copy is for, and 2x2 subsampling smears
  colour edges);
* carrying the master's metadata: the original's EXIF and IPTC-IIM record (APP13), the
  resolution scaled with the pixels (so the printed size stays the same), and the
  provenance XMP of the master with the AI-generated label
  (``Iptc4xmpExt:DigitalSourceType``), plus ``panchro:DerivedFromSHA256`` naming the master
  it was made from, and the provenance note as a JPEG comment.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms, UnidentifiedImageError

from storage.codecs.encode import JPEG_EXIF_LIMIT, JPEG_XMP_LIMIT, save_jpeg
from storage.codecs.formats import MAX_LONG_EDGE
from storage.codecs.samples import to_8_bits
from storage.iptc import insert_app13
from storage.metadata import (
    ProvenanceStamp,
    build_xmp,
    carry_xmp,
    derived_from_sha256,
    provenance_note,
    srgb_icc,
)

if TYPE_CHECKING:
    from storage.codecs.decode import DecodedImage

__all__ = [
    "ACCESS_QUALITY",
    "MAX_LONG_EDGE",
    "AccessCopy",
    "access_copy_master",
    "encode_access_copies",
]

logger = logging.getLogger(__name__)

#: JPEG quality of access copies (IJG scale, 1-100).
ACCESS_QUALITY = 90

#: Pillow's resizing does a box reduction first for large factors (much faster, and
#: indistinguishable from plain Lanczos at this gap; see ``Image.resize``).
_REDUCING_GAP = 3.0


@dataclass(frozen=True)
class AccessCopy:
    """One encoded access copy.

    Attributes:
        data: The JPEG file.
        long_edge: The long edge asked for, in pixels.
        width: Its width in pixels.
        height: Its height in pixels.
    """

    data: bytes
    long_edge: int
    width: int
    height: int


def encode_access_copies(
    rgb: NDArray[Any],
    long_edges: Sequence[int],
    *,
    source: DecodedImage | None = None,
    provenance: ProvenanceStamp | None = None,
    derived_from: str | None = None,
    quality: int = ACCESS_QUALITY,
) -> list[AccessCopy]:
    """Encode sRGB JPEG access copies of a colorized image, one per long edge.

    Args:
        rgb: HxWx3 RGB (or HxW gray) samples, uint8 or uint16, as the master holds them.
        long_edges: Longest side of each copy in pixels (1 to ``MAX_LONG_EDGE``); an image
            already smaller keeps its size.
        source: The decoded original: its ICC profile (what the samples are in), alpha,
            EXIF, XMP and resolution. None writes sRGB samples without metadata.
        provenance: How the master was made; written as XMP (with the AI-generated label)
            and as a JPEG comment.
        derived_from: Hex SHA-256 of the master, written as ``panchro:DerivedFromSHA256``.
        quality: JPEG quality (IJG scale).

    Returns:
        One copy per long edge, in the order given.

    Raises:
        ValueError: If the samples have an unsupported shape or dtype, or a long edge is
            out of range.
    """
    for edge in long_edges:
        if not 1 <= edge <= MAX_LONG_EDGE:
            raise ValueError(f"long edge {edge} px is outside 1-{MAX_LONG_EDGE}")
    full = _prepared(rgb, source.alpha if source is not None else None)
    metadata = source.metadata if source is not None else None
    profile = _source_profile(metadata.icc_profile if metadata else None)
    xmp = _xmp(provenance, metadata.xmp if metadata else None, derived_from)
    exif = metadata.exif if metadata else None
    if exif and len(exif) > JPEG_EXIF_LIMIT:
        logger.warning("EXIF block of %d bytes is too large for JPEG; dropped", len(exif))
        exif = None
    copies = []
    for edge in long_edges:
        image, scale = _resized(full, edge)
        image = _flattened(image)
        if profile is not None:
            image = _to_srgb(image, profile)
        options: dict[str, Any] = {
            "quality": quality,
            "subsampling": 0,
            "optimize": True,
            "progressive": True,
            "icc_profile": srgb_icc(),
        }
        if metadata is not None and metadata.dpi:
            options["dpi"] = tuple(max(1, round(value * scale)) for value in metadata.dpi)
        if exif:
            options["exif"] = exif
        if xmp:
            options["xmp"] = xmp
        if provenance is not None:
            options["comment"] = provenance_note(provenance)
        data = save_jpeg(image, options)
        if metadata is not None and metadata.iptc:
            data = insert_app13(data, metadata.iptc)
        copies.append(AccessCopy(data, edge, image.width, image.height))
    return copies


def access_copy_master(head: bytes) -> str | None:
    """Return the SHA-256 of the master an access copy names, from its first bytes.

    Args:
        head: The first bytes of a file, enough to hold its metadata segments (a copy's
            EXIF and XMP are at most 64 KiB each), or all of it.

    Returns:
        ``panchro:DerivedFromSHA256`` of a JPEG's XMP, or None for anything else.
    """
    try:
        with Image.open(io.BytesIO(head), formats=["JPEG"]) as image:
            xmp = image.info.get("xmp")
    except (OSError, SyntaxError, ValueError, UnidentifiedImageError, Image.DecompressionBombError):
        return None
    return derived_from_sha256(xmp) if isinstance(xmp, bytes) else None


def _prepared(rgb: NDArray[Any], alpha: NDArray[Any] | None) -> Image.Image:
    """Return the samples as an 8-bit RGB image, or RGBA where there is alpha."""
    if rgb.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"samples must be uint8 or uint16, not {rgb.dtype}")
    if rgb.ndim == 3 and rgb.shape[2] == 1:
        rgb = rgb[..., 0]
    if rgb.ndim == 2:
        rgb = np.repeat(rgb[..., None], 3, axis=2)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or min(rgb.shape[:2]) < 1:
        raise ValueError(f"expected HxWx3 RGB or HxW gray samples, got shape {rgb.shape}")
    samples = to_8_bits(rgb)
    if alpha is None:
        return Image.fromarray(np.ascontiguousarray(samples), mode="RGB")
    if alpha.shape != samples.shape[:2]:
        raise ValueError(f"alpha shape {alpha.shape} does not match {samples.shape[:2]}")
    # Flattened after resizing, which is cheaper and correct: Pillow resizes RGBA with
    # premultiplied alpha, so transparent pixels lend no colour to their neighbours.
    return Image.fromarray(np.dstack([samples, to_8_bits(alpha)]), mode="RGBA")


def _flattened(image: Image.Image) -> Image.Image:
    """Composite an RGBA image onto white; RGB passes through."""
    if image.mode != "RGBA":
        return image
    white = Image.new("RGBA", image.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, image).convert("RGB")


def _resized(image: Image.Image, long_edge: int) -> tuple[Image.Image, float]:
    """Shrink so the longer side is ``long_edge``; never enlarge. Returns the scale too."""
    longest = max(image.size)
    if longest <= long_edge:
        return image, 1.0
    scale = long_edge / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    resized = image.resize(size, Image.Resampling.LANCZOS, reducing_gap=_REDUCING_GAP)
    return resized, scale


def _source_profile(icc: bytes | None) -> ImageCms.ImageCmsProfile | None:
    """The RGB profile the samples are in; None when they are in sRGB already (or untagged).

    The master carries the original's RGB profile, or sRGB for anything else (see
    ``encode._matching_icc``). A profile is converted from whatever its name says: one
    called sRGB may still differ (other primaries, another white point), and converting
    between two sRGB profiles leaves the colours as they are.
    """
    if not icc or len(icc) < 20 or icc[16:20] != b"RGB " or icc == srgb_icc():
        return None
    try:
        return ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError) as exc:
        logger.warning("unreadable ICC profile (%s); the samples are taken as sRGB", exc)
        return None


def _to_srgb(image: Image.Image, profile: ImageCms.ImageCmsProfile) -> Image.Image:
    srgb = ImageCms.ImageCmsProfile(io.BytesIO(srgb_icc()))
    try:
        converted = ImageCms.profileToProfile(image, profile, srgb, outputMode="RGB")
    except ImageCms.PyCMSError as exc:
        logger.warning("cannot convert from the ICC profile (%s); the samples are kept", exc)
        return image
    assert converted is not None
    return converted


def _xmp(
    provenance: ProvenanceStamp | None, base: bytes | None, derived_from: str | None
) -> bytes | None:
    if provenance is None:
        return carry_xmp(base)
    xmp = build_xmp(provenance, base=base, derived_from=derived_from)
    if len(xmp) > JPEG_XMP_LIMIT:
        # Extended XMP (split over several APP1 segments) is not written.
        logger.warning("XMP of %d bytes does not fit a JPEG; the original's is left out", len(xmp))
        xmp = build_xmp(provenance, derived_from=derived_from)
    return xmp
