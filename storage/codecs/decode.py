"""Decoding and validating originals: file bytes in, upright pixels and metadata out.

What comes out is what the colorizer needs and nothing it would have to second-guess:

* gray stays 2-D (HxW), colour is HxWx3, samples are uint8 or uint16, never clipped:
  16-bit gray keeps all 16 bits (Pillow's ``convert("L")`` would clip it to 255), 16-bit
  colour PNG and TIFF keep all 16 bits (see ``deep.py`` and ``tiff.py``), other depths
  (1-bit, 12-bit, 32-bit) are scaled to the nearest of 8 or 16 bits;
* alpha is set aside (HxW, same dtype) for the encoder to put back;
* palette images become gray when their colours are all gray, else RGB; CMYK becomes RGB
  through its ICC profile when LittleCMS can use it, else by the naive formula;
* the EXIF orientation is applied (as ``ImageOps.exif_transpose`` does) and reset to 1.

Files are opened with the Pillow plugin of the sniffed format directly, so only supported
formats are ever parsed and the size is checked against ``MAX_PIXELS`` before any pixel is
decoded, without touching Pillow's process-wide ``Image.MAX_IMAGE_PIXELS``.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import struct
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import (
    BmpImagePlugin,
    ImageFile,
    Jpeg2KImagePlugin,
    JpegImagePlugin,
    PngImagePlugin,
    TiffImagePlugin,
)

from storage.codecs import deep, tiff, tiff_carry
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
from storage.codecs.pillow import pillow_metadata, pillow_samples
from storage.codecs.samples import (
    MODE_KINDS,
    apply_orientation,
    key_alpha,
    scale_to_16_bits,
    unpremultiply,
)
from storage.errors import (
    ImageTooLarge,
    ImageTooSmall,
    InvalidImage,
    NotAnImage,
    TruncatedImage,
    UnsupportedImage,
)
from storage.metadata import ImageMetadata

logger = logging.getLogger(__name__)

#: Largest image decoded (width x height, pixels). 250 MP admits 100-megapixel scans with
#: room to spare (an 8x10 inch print at 1600 dpi is 205 MP) and refuses headers that claim
#: sizes no worker could hold; 250 MP of 16-bit RGB is 1.5 GB before any processing.
MAX_PIXELS = 250_000_000

#: Human-readable list of the supported formats, for error messages.
SUPPORTED = "JPEG, PNG, TIFF, WebP, BMP and JPEG 2000"

#: What Pillow and tifffile raise on malformed data: SyntaxError for bad headers, OSError
#: for truncated or broken streams; some parsers let struct, zlib, index, key and type
#: errors escape on garbage. Only calls into those libraries are guarded with it.
_DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    zlib.error,
    IndexError,
    KeyError,
    TypeError,
)

_PLUGINS: dict[str, Callable[[io.BytesIO], ImageFile.ImageFile]] = {
    JPEG: JpegImagePlugin.JpegImageFile,
    PNG: PngImagePlugin.PngImageFile,
    TIFF: TiffImagePlugin.TiffImageFile,
    BMP: BmpImagePlugin.BmpImageFile,
    JPEG2000: Jpeg2KImagePlugin.Jpeg2KImageFile,
}
try:
    from PIL import WebPImagePlugin

    _PLUGINS[WEBP] = WebPImagePlugin.WebPImageFile
except ImportError:  # a Pillow built without libwebp
    logger.warning("this Pillow cannot read WebP")


@dataclass(frozen=True, eq=False)
class DecodedImage:
    """A decoded, upright original and what its colorized copy must carry over.

    Attributes:
        pixels: HxW (gray) or HxWx3 (RGB) uint8 or uint16 samples, read-only.
        alpha: HxW alpha of the same dtype (unassociated), read-only, or None.
        mode: The original's mode: Pillow's (``L``, ``I;16B``, ``P``, ``CMYK`` ...) or, for
            16-bit colour, ``RGB;16``, ``RGBA;16``, ``LA;16``.
        bit_depth: Bits per sample in the original (1, 8, 12, 16 ...).
        format: The original's format in Pillow's names (``JPEG``, ``TIFF`` ...).
        metadata: ICC profile, DPI, EXIF, XMP and format details to carry over.
        width: Width in pixels, after orientation.
        height: Height in pixels, after orientation.
        pages: Pages or frames in the file; only the first is decoded.
        notes: What was changed or lost on the way, for logs and the catalog.
    """

    pixels: NDArray[Any]
    alpha: NDArray[Any] | None
    mode: str
    bit_depth: int
    format: str
    metadata: ImageMetadata
    width: int
    height: int
    pages: int = 1
    notes: tuple[str, ...] = ()

    @property
    def is_grayscale(self) -> bool:
        """Whether the pixels are one channel (HxW)."""
        return self.pixels.ndim == 2

    @property
    def mode_description(self) -> str:
        """The original's kind in words, e.g. ``"16-bit grayscale with alpha"``."""
        kind = MODE_KINDS.get(self.mode.split(";")[0], self.mode)
        alpha = " with alpha" if self.alpha is not None else ""
        return f"{self.bit_depth}-bit {kind}{alpha}"


def decode_image(data: bytes, *, name: str = "", max_pixels: int = MAX_PIXELS) -> DecodedImage:
    """Validate and decode the bytes of an original.

    Args:
        data: The whole file.
        name: The image's name or URI, used in messages and logs only.
        max_pixels: Largest accepted width x height.

    Returns:
        The decoded image (first page of a multi-page file).

    Raises:
        InvalidImage: If the bytes are empty, not an image, truncated, corrupt, or larger
            than ``max_pixels`` (its subclass says which: ``TruncatedImage``,
            ``NotAnImage``, ``ImageTooSmall``, ``ImageTooLarge``).
        UnsupportedImage: If the image is of a kind that is not colorized (floating-point
            samples, an unsupported format or colour model).
    """
    label = name or "image"
    if not data:
        raise TruncatedImage(f"{label}: the file is empty (0 bytes)")
    fmt = sniff_format(data[:SNIFF_BYTES])
    if fmt is None:
        kind, is_image = describe_unknown(data[:SNIFF_BYTES])
        error = UnsupportedImage if is_image else NotAnImage
        raise error(f"{label}: this is {kind}; supported formats are {SUPPORTED}")
    if fmt == TIFF:
        decoded = _decode_tiff(data, label, max_pixels)
        metadata = tiff_carry.carried_metadata(decoded.metadata, data)
        decoded = dataclasses.replace(decoded, metadata=metadata)
    elif fmt == PNG and _png_is_deep(data):
        decoded = _decode_deep_png(data, label, max_pixels)
    else:
        decoded = _decode_with_pillow(data, fmt, label, max_pixels)
    logger.debug(
        "decoded %s: %s %s, %dx%d",
        label,
        decoded.format,
        decoded.mode,
        decoded.width,
        decoded.height,
    )
    for note in decoded.notes:
        logger.info("%s: %s", label, note)
    return decoded


@contextmanager
def _decoding(label: str, fmt: str) -> Iterator[None]:
    """Turn a decoder's exception into an InvalidImage a person can act on."""
    try:
        yield
    except _DECODE_ERRORS as exc:
        error = TruncatedImage if _is_truncation(exc) else InvalidImage
        raise error(
            f"{label}: cannot decode this {fmt} file; it is truncated or corrupt ({exc}). "
            "Check the original, or export it again"
        ) from exc


def _is_truncation(exc: BaseException) -> bool:
    """Tell whether a decoder's error says the data ended early (Pillow: "truncated")."""
    return isinstance(exc, EOFError) or "truncated" in str(exc).lower()


def _open(data: bytes, fmt: str, label: str) -> ImageFile.ImageFile:
    plugin = _PLUGINS.get(fmt)
    if plugin is None:
        raise UnsupportedImage(f"{label}: this installation cannot read {fmt} files")
    with _decoding(label, fmt):
        return plugin(io.BytesIO(data))


def _check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    if width < 1 or height < 1:
        raise ImageTooSmall(f"{label}: the header gives an empty size ({width}x{height})")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"{label}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the "
            f"limit of {max_pixels / 1e6:.0f}; a damaged or hostile file can claim such a "
            "size. If it is a real scan, split it or raise the limit"
        )


def _decode_with_pillow(
    data: bytes, fmt: str, label: str, max_pixels: int, pages: int | None = None
) -> DecodedImage:
    image = _open(data, fmt, label)
    _check_size(image.width, image.height, label, max_pixels)
    with _decoding(label, fmt):
        if pages is None:
            pages = int(getattr(image, "n_frames", 1))
        image.load()
    metadata, orientation, notes = pillow_metadata(image, fmt, data)
    if pages > 1:
        notes.append(f"only the first of {pages} pages was used")
    pixels, alpha, bit_depth, icc, more_notes = pillow_samples(image, label, metadata)
    if icc is not metadata.icc_profile:
        metadata = dataclasses.replace(metadata, icc_profile=icc)
    if fmt == JPEG2000 and image.mode in ("RGB", "RGBA"):
        depth = _jpeg2000_depth(data)
        if depth and depth > 8:
            bit_depth = depth
            more_notes.append(f"{depth}-bit colour JPEG 2000 was read at 8 bits (Pillow's limit)")
    return _finish(
        pixels,
        alpha,
        image.mode,
        bit_depth,
        fmt,
        metadata,
        orientation,
        pages,
        notes + more_notes,
    )


def _decode_deep_png(data: bytes, label: str, max_pixels: int) -> DecodedImage:
    first = _open(data, PNG, label)
    _check_size(first.width, first.height, label, max_pixels)
    with _decoding(label, PNG):
        samples, image = deep.read_deep(lambda: _open(data, PNG, label))
    metadata, orientation, notes = pillow_metadata(image, PNG, data)
    channels = samples.shape[2]
    alpha = samples[..., -1] if channels in (2, 4) else None
    pixels = samples[..., 0] if channels == 2 else samples[..., :3]
    if alpha is None:
        alpha = key_alpha(pixels, image.info.get("transparency"))
    mode = {2: "LA;16", 3: "RGB;16", 4: "RGBA;16"}[channels]
    return _finish(pixels, alpha, mode, 16, PNG, metadata, orientation, 1, notes)


def _decode_tiff(data: bytes, label: str, max_pixels: int) -> DecodedImage:
    layout = tiff.inspect_tiff(data)
    if layout is None:
        return _decode_with_pillow(data, TIFF, label, max_pixels)
    _check_size(layout.width, layout.height, label, max_pixels)
    if layout.sample_format in (3, 5, 6):
        raise UnsupportedImage(
            f"{label}: the TIFF holds floating-point or complex samples (scientific data, "
            "not a photograph); export it as an 8- or 16-bit integer TIFF"
        )
    if layout.sample_format == 2 and layout.bits > 8:
        raise UnsupportedImage(
            f"{label}: the TIFF holds signed {layout.bits}-bit samples; export it as an "
            "unsigned 8- or 16-bit TIFF"
        )
    if not layout.is_wide:
        return _decode_with_pillow(data, TIFF, label, max_pixels, pages=layout.pages)
    with _decoding(label, TIFF):
        metadata, orientation = tiff.tiff_metadata(data)
    if layout.tifffile_can_decode:
        with _decoding(label, TIFF):
            samples = tiff.read_wide_tiff(data, layout, label)
    else:
        samples = _read_wide_tiff_with_pillow(data, layout, label)
    channels = 1 if samples.ndim == 2 else samples.shape[2]
    colour = 3 if layout.photometric == 2 else 1
    has_alpha = (
        channels > colour and bool(layout.extra_samples) and layout.extra_samples[0] in (1, 2)
    )
    pixels = scale_to_16_bits(
        samples[..., :colour] if colour == 3 else _first(samples), layout.bits
    )
    alpha = scale_to_16_bits(samples[..., colour], layout.bits) if has_alpha else None
    if alpha is not None and layout.extra_samples[0] == 1:
        pixels = unpremultiply(pixels, alpha)
    mode = ("RGB" if colour == 3 else "L") + ("A" if has_alpha else "") + f";{layout.bits}"
    notes = [f"only the first of {layout.pages} pages was used"] if layout.pages > 1 else []
    return _finish(
        pixels, alpha, mode, layout.bits, TIFF, metadata, orientation, layout.pages, notes
    )


def _read_wide_tiff_with_pillow(
    data: bytes, layout: tiff.TiffLayout, label: str
) -> NDArray[np.uint16]:
    """Decode 16-bit colour through libtiff when tifffile lacks the codec (LZW, JPEG)."""
    image = _open(data, TIFF, label)
    if layout.bits != 16 or deep.deep_rawmode(image) is None:
        raise UnsupportedImage(
            f"{label}: reading a {layout.bits}-bit TIFF with {layout.compression} compression "
            "needs the optional 'imagecodecs' package; install it, or save the file "
            "uncompressed or with ZIP compression"
        )
    with _decoding(label, TIFF):
        samples, _image = deep.read_deep(lambda: _open(data, TIFF, label))
    return samples


def _first(samples: NDArray[Any]) -> NDArray[Any]:
    return samples if samples.ndim == 2 else samples[..., 0]


def _finish(
    pixels: NDArray[Any],
    alpha: NDArray[Any] | None,
    mode: str,
    bit_depth: int,
    fmt: str,
    metadata: ImageMetadata,
    orientation: int,
    pages: int,
    notes: list[str],
) -> DecodedImage:
    if orientation not in range(1, 9):
        notes.append(f"ignored an invalid EXIF orientation ({orientation})")
        orientation = 1
    pixels = np.ascontiguousarray(apply_orientation(pixels, orientation))
    pixels.flags.writeable = False
    if alpha is not None:
        alpha = np.ascontiguousarray(apply_orientation(alpha, orientation))
        alpha.flags.writeable = False
    return DecodedImage(
        pixels=pixels,
        alpha=alpha,
        mode=mode,
        bit_depth=bit_depth,
        format=fmt,
        metadata=metadata,
        width=int(pixels.shape[1]),
        height=int(pixels.shape[0]),
        pages=pages,
        notes=tuple(notes),
    )


def _png_is_deep(data: bytes) -> bool:
    """Whether a PNG has 16-bit colour or gray+alpha samples (IHDR bit depth and type)."""
    return len(data) > 25 and data[24] == 16 and data[25] in (2, 4, 6)


def _jpeg2000_depth(data: bytes) -> int | None:
    """Largest component precision in a JPEG 2000 SIZ segment, in bits."""
    start = data.find(b"\xff\x4f\xff\x51")
    if start < 0 or len(data) < start + 44:
        return None
    siz = start + 2
    (components,) = struct.unpack(">H", data[siz + 38 : siz + 40])
    if len(data) < siz + 40 + 3 * components:
        return None
    depths = [(data[siz + 40 + 3 * i] & 0x7F) + 1 for i in range(components)]
    return max(depths) if depths else None
