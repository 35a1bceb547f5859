"""Errors raised by ``catalog``.

::

    CatalogError                  base class of everything below
    ├── CollectionNotFound        no collection has that name or id
    ├── ConflictingCollection     the name is taken by a collection with another source/output
    ├── ImageNotFound             no image has that id
    ├── DuplicateOutput           two sources of one collection would write the same output
    ├── SchemaMismatch            the database schema is not the one the models describe
    └── DatabaseUnavailable       the database cannot be reached or is busy now (retry later)

Only ``DatabaseUnavailable`` is worth retrying; the others need a person to act. Each
class names the failure code (``code``, from ``catalog.reasons``) of an image that fails
with it.
"""

from __future__ import annotations

from typing import ClassVar

from catalog.reasons import FailureCode


class CatalogError(Exception):
    """Base class of every error raised by ``catalog``."""

    #: Failure code of an image that fails with this error.
    code: ClassVar[str] = FailureCode.CATALOG_ERROR


class CollectionNotFound(CatalogError):
    """No collection has the given name or id."""


class ConflictingCollection(CatalogError):
    """A collection of that name exists with a different source or output."""


class ImageNotFound(CatalogError):
    """No image has the given id."""


class DuplicateOutput(CatalogError):
    """Two different sources of one collection map to the same output location."""


class SchemaMismatch(CatalogError):
    """The database is not migrated to the schema that the models describe."""


class DatabaseUnavailable(CatalogError):
    """The database cannot be reached, dropped the connection, or is locked; retry later."""

    code: ClassVar[str] = FailureCode.CATALOG_UNAVAILABLE
