"""Links of a report to thumbnails and outputs, in a compact form its script expands.

Local files are linked by their path relative to the report's folder (percent-encoded),
so the links work when the report is opened where it was written, and keep working when
the report and the output folder move together (write the report into the output folder
for that). S3 objects are linked by presigned URLs (``storage.s3_presign``) that any
browser opens without credentials until they expire.

A collection may hold a million images, so each link is stored as a short list that the
page's script turns back into the exact URL::

    [p, name]              PREFIXES[p] + name
    [p, name, q, sig]      PREFIXES[p] + name + "?" + QUERIES[q][0] + sig + QUERIES[q][1]

``PREFIXES`` (folders) and ``QUERIES`` (a presigned query around its signature: the same
for every link signed in the same second) are shared tables, so a link costs its file
name and, on S3, its signature.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

from storage.uri import parse_uri

__all__ = ["LinkTable"]

#: Query parameters that carry a presigned URL's signature, tried in this order.
SIGNATURE_PARAMETERS: Final = ("X-Amz-Signature=", "Signature=")


class LinkTable:
    """Turns locations into compact link entries, collecting the shared tables.

    Args:
        report_folder: The folder the report is written to (local links are relative
            to it).
        presign: Returns a presigned URL of an ``s3://`` object (or None when it cannot);
            None when S3 objects are not to be linked.
    """

    def __init__(self, report_folder: Path, presign: Callable[[str], str | None] | None) -> None:
        self._folder = os.path.realpath(report_folder)
        self._presign = presign
        self._prefixes: dict[str, int] = {}
        self._queries: dict[tuple[str, str], int] = {}
        # Links share a few folders: each is resolved (links followed) once.
        self._local_folders: dict[str, int] = {}

    def _prefix(self, prefix: str) -> int:
        index = self._prefixes.get(prefix)
        if index is None:
            index = self._prefixes[prefix] = len(self._prefixes)
        return index

    def entry(self, uri: str | None) -> list[Any] | None:
        """Return the compact link to a location.

        Args:
            uri: A local path or ``s3://`` object, or None.

        Returns:
            The entry, or None when there is nothing to link (no location, or S3
            without a way to sign).

        Raises:
            InvalidURI: If ``uri`` is not a location.
            StorageError: If signing an S3 link fails.
        """
        if uri is None:
            return None
        # The catalog holds local paths absolute and normalised; anything else is parsed.
        location = parse_uri(uri) if not uri.startswith("/") else None
        if location is None or location.is_local:
            path = uri if location is None else location.key
            folder, _, name = path.rpartition("/")
            return [self._local_folder(folder or "/"), quote(os.fsencode(name), safe="")]
        if self._presign is None:
            return None
        url = self._presign(str(location))
        if url is None:
            return None
        base, _, query = url.partition("?")
        folder, _, name = base.rpartition("/")
        entry: list[Any] = [self._prefix(folder + "/"), name]
        split = _around_signature(query)
        if split is None:
            entry[1] = f"{name}?{query}" if query else name
            return entry
        before, signature, after = split
        key = (before, after)
        index = self._queries.get(key)
        if index is None:
            index = self._queries[key] = len(self._queries)
        return [*entry, index, signature]

    def _local_folder(self, folder: str) -> int:
        index = self._local_folders.get(folder)
        if index is None:
            relative = os.path.relpath(os.path.realpath(folder), self._folder)
            href = "" if relative == "." else quote(os.fsencode(relative), safe="/") + "/"
            index = self._local_folders[folder] = self._prefix(href)
        return index

    def tables(self) -> dict[str, list[Any]]:
        """Return the shared tables the entries refer to.

        Returns:
            ``{"prefixes": [...], "queries": [[before, after], ...]}``.
        """
        return {
            "prefixes": list(self._prefixes),
            "queries": [list(pair) for pair in self._queries],
        }


def _around_signature(query: str) -> tuple[str, str, str] | None:
    """Split a query string around its signature's value; None if it has none."""
    for parameter in SIGNATURE_PARAMETERS:
        at = query.find(parameter)
        while at > 0 and query[at - 1] != "&":
            at = query.find(parameter, at + 1)
        if at < 0:
            continue
        start = at + len(parameter)
        end = query.find("&", start)
        end = len(query) if end < 0 else end
        return query[:start], query[start:end], query[end:]
    return None
