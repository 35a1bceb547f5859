"""``open_storage()``: the backend of a location, looked up by its URI scheme.

Backends register under a scheme (:func:`register_backend`), as a factory that takes the
:class:`~storage.options.StorageOptions`, or as the ``"module:name"`` of one, imported on
first use. The built-in ones are registered by name, so that a local-only process never
imports boto3: ``file`` is :class:`~storage.local.LocalStorage`, ``s3`` is
:class:`~storage.s3.S3Storage`.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from typing import TypeAlias, cast

from storage.base import Storage
from storage.errors import InvalidURI
from storage.options import StorageOptions
from storage.uri import LOCAL, S3, URI, parse_uri

__all__ = ["BackendFactory", "open_storage", "register_backend", "registered_schemes"]

#: Builds a backend from the options; a backend class whose constructor takes them is one.
BackendFactory: TypeAlias = Callable[[StorageOptions], Storage]

_lock = threading.Lock()
_backends: dict[str, BackendFactory | str] = {
    LOCAL: "storage.local:LocalStorage",
    S3: "storage.s3:S3Storage",
}


def register_backend(scheme: str, factory: BackendFactory | str) -> None:
    """Make :func:`open_storage` use ``factory`` for locations of ``scheme``.

    Args:
        scheme: A URI scheme that :func:`~storage.uri.parse_uri` produces, e.g. ``"s3"``.
        factory: A callable that takes the options and returns a :class:`Storage`, or the
            ``"module:name"`` of one, imported when the scheme is first opened.
    """
    with _lock:
        _backends[scheme] = factory


def registered_schemes() -> tuple[str, ...]:
    """Return the schemes that have a backend, sorted.

    Returns:
        The scheme names.
    """
    with _lock:
        return tuple(sorted(_backends))


def _factory(scheme: str) -> BackendFactory:
    with _lock:
        entry = _backends.get(scheme)
        if entry is None:
            raise InvalidURI(f"no storage backend for {scheme}:// locations")
        if isinstance(entry, str):
            module, _, name = entry.partition(":")
            entry = cast(BackendFactory, getattr(importlib.import_module(module), name))
            _backends[scheme] = entry
        return entry


def open_storage(
    uri: URI | str | os.PathLike[str], options: StorageOptions | None = None
) -> Storage:
    """Return a backend for the scheme of ``uri``, built from ``options``.

    Args:
        uri: Any location of the store, e.g. the collection's source or output.
        options: How to reach the store; None for the defaults (AWS for S3).

    Returns:
        A :class:`Storage`.

    Raises:
        InvalidURI: If ``uri`` is not a location or no backend serves its scheme.
        ValueError: If an option is out of the backend's range.
    """
    location = parse_uri(uri)
    return _factory(location.scheme)(options if options is not None else StorageOptions())
