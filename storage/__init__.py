"""Where the bytes live: local folders and S3, and the image files themselves.

``open_storage(uri, options)`` chooses the backend by scheme (``register_backend`` adds
one); ``scan()`` finds the images of a collection; ``decode_image()`` and ``encode_image()``
turn files into arrays and back.
``S3Storage`` is left out on purpose, so that importing this package never imports boto3.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from storage.base import ObjectInfo, Storage
    from storage.chunks import read_chunks
    from storage.errors import (
        AccessDenied,
        ImageTooLarge,
        ImageTooSmall,
        InvalidImage,
        InvalidURI,
        NotAnImage,
        ObjectNotFound,
        OutputExists,
        StorageError,
        StorageFull,
        StorageMisconfigured,
        StorageUnavailable,
        TruncatedImage,
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
    from storage.options import StorageOptions
    from storage.registry import open_storage, register_backend
    from storage.scan import scan
    from storage.scan_report import ScannedObject, ScanReport
    from storage.uri import URI, join, parse_uri

#: The module of each public name: importing one module (``storage.errors``, as the CLI
#: does for its error handling) must not import the rest, so names load on first use.
_SOURCES = {
    "ObjectInfo": "storage.base",
    "Storage": "storage.base",
    "read_chunks": "storage.chunks",
    "AccessDenied": "storage.errors",
    "ImageTooLarge": "storage.errors",
    "ImageTooSmall": "storage.errors",
    "InvalidImage": "storage.errors",
    "InvalidURI": "storage.errors",
    "NotAnImage": "storage.errors",
    "ObjectNotFound": "storage.errors",
    "OutputExists": "storage.errors",
    "StorageError": "storage.errors",
    "StorageFull": "storage.errors",
    "StorageMisconfigured": "storage.errors",
    "StorageUnavailable": "storage.errors",
    "TruncatedImage": "storage.errors",
    "UnsupportedImage": "storage.errors",
    "DecodedImage": "storage.imaging",
    "ImageMetadata": "storage.imaging",
    "ProvenanceStamp": "storage.imaging",
    "decode_image": "storage.imaging",
    "encode_image": "storage.imaging",
    "output_extension": "storage.imaging",
    "sniff_format": "storage.imaging",
    "LocalStorage": "storage.local",
    "StorageOptions": "storage.options",
    "open_storage": "storage.registry",
    "register_backend": "storage.registry",
    "scan": "storage.scan",
    "ScannedObject": "storage.scan_report",
    "ScanReport": "storage.scan_report",
    "URI": "storage.uri",
    "join": "storage.uri",
    "parse_uri": "storage.uri",
}


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562)."""
    module = _SOURCES.get(name)
    if module is None:
        raise AttributeError(f"module 'storage' has no attribute {name!r}")
    return getattr(import_module(module), name)


__all__ = [
    "URI",
    "AccessDenied",
    "DecodedImage",
    "ImageMetadata",
    "ImageTooLarge",
    "ImageTooSmall",
    "InvalidImage",
    "InvalidURI",
    "LocalStorage",
    "NotAnImage",
    "ObjectInfo",
    "ObjectNotFound",
    "OutputExists",
    "ProvenanceStamp",
    "ScanReport",
    "ScannedObject",
    "Storage",
    "StorageOptions",
    "StorageError",
    "StorageFull",
    "StorageMisconfigured",
    "StorageUnavailable",
    "TruncatedImage",
    "UnsupportedImage",
    "decode_image",
    "encode_image",
    "join",
    "open_storage",
    "output_extension",
    "parse_uri",
    "read_chunks",
    "register_backend",
    "scan",
    "sniff_format",
]
