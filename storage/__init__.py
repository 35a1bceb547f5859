"""Where the bytes live: local folders and S3, and the image files themselves.

``open_storage(uri)`` chooses the backend by scheme; ``scan()`` finds the images of a
collection; ``decode_image()`` and ``encode_image()`` turn files into arrays and back.
``S3Storage`` is left out on purpose, so that importing this package never imports boto3.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        ProvenanceStamp,
        decode_image,
        encode_image,
        output_extension,
        sniff_format,
    )
    from storage.local import LocalStorage
    from storage.scan import ScannedObject, ScanReport, scan
    from storage.uri import URI, join, parse_uri

#: The module of each public name: importing ``storage.errors`` (as the CLI does for its
#: error handling) must not import the rest, so the package imports on first use.
_SOURCES = {
    "ObjectInfo": "base",
    "S3Options": "base",
    "Storage": "base",
    "open_storage": "base",
    "AccessDenied": "errors",
    "InvalidImage": "errors",
    "InvalidURI": "errors",
    "ObjectNotFound": "errors",
    "OutputExists": "errors",
    "StorageError": "errors",
    "StorageFull": "errors",
    "StorageMisconfigured": "errors",
    "StorageUnavailable": "errors",
    "UnsupportedImage": "errors",
    "DecodedImage": "imaging",
    "ImageMetadata": "imaging",
    "ProvenanceStamp": "imaging",
    "decode_image": "imaging",
    "encode_image": "imaging",
    "output_extension": "imaging",
    "sniff_format": "imaging",
    "LocalStorage": "local",
    "ScanReport": "scan",
    "ScannedObject": "scan",
    "scan": "scan",
    "URI": "uri",
    "join": "uri",
    "parse_uri": "uri",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    return getattr(import_module(f"storage.{module}"), name)


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
    "ProvenanceStamp",
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
