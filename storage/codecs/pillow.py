"""Pixels and metadata from images Pillow has decoded, whatever their mode.

``pillow_samples`` maps every Pillow mode an archive's file can open in onto the array
contract of ``DecodedImage`` (gray HxW or RGB HxWx3, uint8 or uint16, alpha apart);
``pillow_metadata`` collects what the colorized copy should carry over.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageCms, ImageFile, TiffImagePlugin

from storage.codecs import tiff
from storage.codecs.formats import JPEG, TIFF, WEBP, webp_is_lossless
from storage.codecs.jpeg import estimate_quality
from storage.codecs.samples import key_alpha
from storage.errors import UnsupportedImage
from storage.iptc import IRB_IPTC, iim_from_png_profile
from storage.metadata import (
    EXIF_ORIENTATION,
    ImageMetadata,
    descriptive_exif,
    reset_orientation,
    srgb_icc,
)

#: Errors Pillow's EXIF parser raises on damaged EXIF blocks.
_EXIF_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, TypeError)


def pillow_metadata(
    image: ImageFile.ImageFile, fmt: str, data: bytes
) -> tuple[ImageMetadata, int, list[str]]:
    """Collect the metadata of a loaded Pillow image.

    Args:
        image: The loaded image (PNG's eXIf may follow the pixel data).
        fmt: Its format in Pillow's names.
        data: The whole file (WebP's lossless flag is read from it).

    Returns:
        The metadata, the EXIF orientation (1 when absent) and notes on anything dropped.
    """
    info = image.info
    notes: list[str] = []
    exif: bytes | None = None
    orientation = 1
    try:
        tags = image.getexif()
        orientation = int(tags.get(EXIF_ORIENTATION) or 1)
        exif = descriptive_exif(tags) if fmt == TIFF else reset_orientation(tags)
    except _EXIF_ERRORS as exc:
        notes.append(f"dropped unreadable EXIF ({exc})")
    xmp: Any = info.get("xmp")
    description: Any = info.get("Description")
    if isinstance(image, TiffImagePlugin.TiffImageFile):
        xmp = image.tag_v2.get(tiff.TAG_XMP)
        description = image.tag_v2.get(tiff.TAG_DESCRIPTION)
    if isinstance(xmp, str):
        xmp = xmp.encode()
    metadata = ImageMetadata(
        icc_profile=info.get("icc_profile") or None,
        dpi=_dpi(info.get("dpi")),
        exif=exif,
        xmp=bytes(xmp) if isinstance(xmp, bytes | bytearray) and xmp else None,
        description=description if isinstance(description, str) and description else None,
        compression=info.get("compression") if fmt == TIFF else None,
        jpeg_quality=estimate_quality(getattr(image, "quantization", None))
        if fmt == JPEG
        else None,
        lossless=webp_is_lossless(data) if fmt == WEBP else None,
        iptc=_iim(info),
    )
    return metadata, orientation, notes


def _iim(info: dict[str | tuple[int, int], Any]) -> bytes | None:
    """The IPTC-IIM record of a JPEG (APP13 resources) or a PNG (raw profile text)."""
    resources = info.get("photoshop")
    if isinstance(resources, dict):
        record = resources.get(IRB_IPTC)
        return bytes(record) if isinstance(record, bytes | bytearray) and record else None
    profile = info.get("Raw profile type iptc")
    return iim_from_png_profile(profile) if isinstance(profile, str) else None


def pillow_samples(
    image: Image.Image, label: str, metadata: ImageMetadata
) -> tuple[NDArray[Any], NDArray[Any] | None, int, bytes | None, list[str]]:
    """Split a loaded Pillow image into pixels and alpha.

    Args:
        image: The loaded image, in any mode Pillow opens archive formats in.
        label: The image's name, for messages.
        metadata: Its metadata (the ICC profile is used to convert CMYK).

    Returns:
        Pixels (HxW gray or HxWx3 RGB, uint8 or uint16), alpha (HxW or None), the bit
        depth of the original, the ICC profile that now describes the pixels (sRGB after
        a CMYK conversion through a profile, None after a naive one) and notes.

    Raises:
        UnsupportedImage: For floating-point samples, 32-bit values beyond 16 bits, and
            modes such as LAB.
    """
    mode = image.mode
    icc = metadata.icc_profile
    key = image.info.get("transparency")
    if mode == "1":
        return np.asarray(image.convert("L")), None, 1, icc, []
    if mode in ("L", "I;16", "I;16L", "I;16B", "I;16N"):
        gray = np.asarray(image).astype(np.uint8 if mode == "L" else np.uint16)
        return gray, key_alpha(gray, key), 8 if mode == "L" else 16, icc, []
    if mode == "I":
        wide = np.asarray(image)
        if wide.size and (wide.min() < 0 or wide.max() > 0xFFFF):
            raise UnsupportedImage(
                f"{label}: 32-bit integer samples outside 0-65535; export as 16-bit"
            )
        gray = wide.astype(np.uint16)
        return gray, key_alpha(gray, key), 32, icc, []
    if mode in ("LA", "La"):
        pair = np.asarray(image.convert("LA"))
        return pair[..., 0], pair[..., 1], 8, icc, []
    if mode in ("P", "PA"):
        has_alpha = mode == "PA" or key is not None
        rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
        colour = rgba[..., :3]
        is_gray = bool((colour[..., 0] == colour[..., 1]).all()) and bool(
            (colour[..., 1] == colour[..., 2]).all()
        )
        pixels = colour[..., 0] if is_gray else colour
        return pixels, rgba[..., 3] if has_alpha else None, 8, icc, []
    if mode in ("RGB", "RGBX", "YCbCr"):
        rgb = np.asarray(image.convert("RGB"))
        return rgb, key_alpha(rgb, key), 8, icc, []
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"))
        return rgba[..., :3], rgba[..., 3], 8, icc, []
    if mode == "CMYK":
        rgb_image, icc, notes = _cmyk_to_rgb(image, icc)
        return np.asarray(rgb_image), None, 8, icc, notes
    if mode == "F":
        raise UnsupportedImage(
            f"{label}: floating-point samples are not supported; export as 8 or 16 bits"
        )
    raise UnsupportedImage(f"{label}: {mode} images are not supported; convert to RGB")


def _cmyk_to_rgb(
    image: Image.Image, icc: bytes | None
) -> tuple[Image.Image, bytes | None, list[str]]:
    """Convert CMYK to RGB, through the embedded profile when LittleCMS accepts it."""
    if icc:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
            converted = ImageCms.profileToProfile(
                image,
                source,
                ImageCms.ImageCmsProfile(io.BytesIO(srgb_icc())),
                renderingIntent=ImageCms.Intent.PERCEPTUAL,
                outputMode="RGB",
            )
        except (ImageCms.PyCMSError, OSError, ValueError) as exc:
            note = f"CMYK converted by the naive formula: its ICC profile is unusable ({exc})"
        else:
            assert converted is not None  # None only when converting in place
            return converted, srgb_icc(), ["CMYK converted to sRGB through its ICC profile"]
    else:
        note = "CMYK converted by the naive formula: there is no ICC profile"
    return image.convert("RGB"), None, [note]


def _dpi(value: Any) -> tuple[float, float] | None:
    if not isinstance(value, tuple) or len(value) != 2:
        return None
    try:
        x, y = float(value[0]), float(value[1])
    except (TypeError, ValueError):
        return None
    return (x, y) if x > 0 and y > 0 else None
