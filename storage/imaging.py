"""Image decoding, validation and encoding for archives' scans.

The worker's view of an image file::

    decoded = decode_image(data, name=uri)          # validate, decode, turn upright
    rgb = colorize(decoded.pixels)                  # HxW or HxWx3 -> HxWx3, same dtype
    out = encode_image(rgb, source=decoded, provenance=provenance)
    name = stem + output_extension(decoded.format)  # ".tif", ".jpg", ".png", ".webp"

``decode_image`` reads JPEG, PNG, TIFF (first page; any compression Pillow or tifffile
reads), WebP, BMP and JPEG 2000, keeps 16-bit samples whole, sets alpha aside and collects
the metadata to carry over. ``encode_image`` writes the same format family with that
metadata plus a provenance record. ``sniff_format`` recognises the formats from a file's
first ``SNIFF_BYTES`` bytes, for scanning a collection without downloading it.
"""

from __future__ import annotations

from storage.codecs.access import (
    ACCESS_QUALITY,
    AccessCopy,
    access_copy_master,
    encode_access_copies,
)
from storage.codecs.decode import MAX_PIXELS, DecodedImage, decode_image
from storage.codecs.encode import encode_image
from storage.codecs.formats import (
    READABLE_FORMATS,
    SNIFF_BYTES,
    WRITABLE_FORMATS,
    output_extension,
    output_format,
    sniff_format,
)
from storage.metadata import DIGITAL_SOURCE_TYPE, ImageMetadata, ProvenanceStamp

__all__ = [
    "ACCESS_QUALITY",
    "DIGITAL_SOURCE_TYPE",
    "MAX_PIXELS",
    "READABLE_FORMATS",
    "SNIFF_BYTES",
    "WRITABLE_FORMATS",
    "AccessCopy",
    "DecodedImage",
    "ImageMetadata",
    "ProvenanceStamp",
    "access_copy_master",
    "decode_image",
    "encode_access_copies",
    "encode_image",
    "output_extension",
    "output_format",
    "sniff_format",
]
