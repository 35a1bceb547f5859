"""Where the bytes live: local folders and S3, and the image files themselves.

``open_storage(uri)`` chooses the backend by scheme; ``scan()`` finds the images of a
collection; ``decode_image()`` and ``encode_image()`` turn files into arrays and back.
``S3Storage`` is left out on purpose, so that importing this package never imports boto3.
"""

from __future__ import annotations

from storage.base import ObjectInfo, S3Options, Storage, open_storage
from storage.errors import (
    AccessDenied,
    InvalidImage,
    InvalidURI,
    ObjectNotFound,
    OutputExists,
    StorageError,
    StorageFull,
    StorageMisconfigured,
    StorageUnavailable,
    UnsupportedImage,
)
from storage.imaging import (
    DecodedImage,
    ImageMetadata,
    Provenance,
    decode_image,
    encode_image,
    output_extension,
    sniff_format,
)
from storage.local import LocalStorage
from storage.scan import ScannedObject, ScanReport, scan
from storage.uri import URI, join, parse_uri

__all__ = [
    "URI",
    "AccessDenied",
    "DecodedImage",
    "ImageMetadata",
    "InvalidImage",
    "InvalidURI",
    "LocalStorage",
    "ObjectInfo",
    "ObjectNotFound",
    "OutputExists",
    "Provenance",
    "S3Options",
    "ScanReport",
    "ScannedObject",
    "Storage",
    "StorageError",
    "StorageFull",
    "StorageMisconfigured",
    "StorageUnavailable",
    "UnsupportedImage",
    "decode_image",
    "encode_image",
    "join",
    "open_storage",
    "output_extension",
    "parse_uri",
    "scan",
    "sniff_format",
]
