"""Where the bytes live: local folders and S3, and the image files themselves.

``open_storage(uri, options)`` chooses the backend by scheme (``register_backend`` adds
one); ``scan()`` finds the images of a collection; ``decode_image()`` and ``encode_image()``
turn files into arrays and back.
``S3Storage`` is left out on purpose, so that importing this package never imports boto3.
"""

from __future__ import annotations

from storage.base import ObjectInfo, Storage
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
from storage.options import StorageOptions
from storage.registry import open_storage, register_backend
from storage.scan import scan
from storage.scan_report import ScannedObject, ScanReport
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
    "ScanReport",
    "ScannedObject",
    "Storage",
    "StorageOptions",
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
    "register_backend",
    "scan",
    "sniff_format",
]
