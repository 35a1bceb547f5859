"""Errors of the exports, each one a user's to act on.

::

    ExportError                  an export or a check cannot be made
     +-- TargetExists            the file or folder to write exists (and is not empty)
     +-- ContentMismatch         stored bytes differ from what the catalog recorded
"""

from __future__ import annotations

__all__ = ["ContentMismatch", "ExportError", "TargetExists"]


class ExportError(Exception):
    """An export or a check of a collection cannot be made."""


class TargetExists(ExportError):
    """The file or folder an export would write already exists; it is left untouched."""


class ContentMismatch(ExportError):
    """An object's bytes do not match the sha256 the catalog recorded for it."""
