"""Why a listing or a scan passes over an entry: every skip reason, and what it means.

A backend's listing passes over what cannot be listed (loops, broken links, special files,
S3 folder markers); a scan passes over what is not an image of the collection (hidden,
system, empty, not an image, unsafe names, links leading outside). Reasons in
:data:`IGNORED_REASONS` are not part of a collection: counted, never recorded. The others
are recorded in the catalog with their :data:`SKIP_MESSAGES` sentence and their
:data:`SKIP_CODES` code (the ``skip.*`` codes of ``catalog.reasons``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = [
    "IGNORED_REASONS",
    "SKIP_ALREADY_LISTED",
    "SKIP_BROKEN_LINK",
    "SKIP_CODES",
    "SKIP_EMPTY",
    "SKIP_FOLDER_MARKER",
    "SKIP_HIDDEN",
    "SKIP_LINK_OUTSIDE",
    "SKIP_MESSAGES",
    "SKIP_NOT_AN_IMAGE",
    "SKIP_NOT_A_FILE",
    "SKIP_SYMLINK_LOOP",
    "SKIP_SYSTEM",
    "SKIP_UNKNOWN_EXTENSION",
    "SKIP_UNREADABLE",
    "SKIP_UNSAFE_NAME",
    "SKIP_VANISHED",
]

# Passed over by a backend's listing.
#: Skip reason: a folder that contains itself through a link or bind mount.
SKIP_SYMLINK_LOOP: Final = "symlink-loop"
#: Skip reason: a folder already listed, reached again through another link.
SKIP_ALREADY_LISTED: Final = "already-listed"
#: Skip reason: a symbolic link whose target does not exist.
SKIP_BROKEN_LINK: Final = "broken-link"
#: Skip reason: a folder or file that could not be opened or inspected (permissions, I/O).
SKIP_UNREADABLE: Final = "unreadable"
#: Skip reason: a FIFO, socket or device (reading one could block forever).
SKIP_NOT_A_FILE: Final = "not-a-file"
#: Skip reason: an entry removed between listing it and inspecting it.
SKIP_VANISHED: Final = "vanished"
#: Skip reason: a zero-byte ``folder/`` key that S3 consoles create to show empty folders.
SKIP_FOLDER_MARKER: Final = "folder-marker"

# Passed over by a scan.
#: Skip reason: a name starting with ``.`` (``.DS_Store``, AppleDouble ``._x``, ``.git/``).
SKIP_HIDDEN: Final = "hidden"
#: Skip reason: a system file or folder (``Thumbs.db``, ``desktop.ini``, ``@eaDir/``).
SKIP_SYSTEM: Final = "system"
#: Skip reason: a file of zero bytes.
SKIP_EMPTY: Final = "empty"
#: Skip reason: content that matches no supported image format.
SKIP_NOT_AN_IMAGE: Final = "not-an-image"
#: Skip reason: an extension that is not an image's, in a scan that reads no content.
SKIP_UNKNOWN_EXTENSION: Final = "unknown-extension"
#: Skip reason: a key with empty, ``.`` or ``..`` segments, which cannot be mirrored safely.
SKIP_UNSAFE_NAME: Final = "unsafe-name"
#: Skip reason: a symbolic link whose target lies outside the scanned folder (not followed).
SKIP_LINK_OUTSIDE: Final = "link-outside"

#: Skip reasons of entries that are not part of a collection: counted, never recorded.
IGNORED_REASONS: Final = frozenset(
    {SKIP_HIDDEN, SKIP_SYSTEM, SKIP_FOLDER_MARKER, SKIP_ALREADY_LISTED, SKIP_VANISHED}
)

#: What each recorded skip reason means, in words for the catalog and the summaries.
SKIP_MESSAGES: Final[Mapping[str, str]] = {
    SKIP_EMPTY: "empty file (0 bytes)",
    SKIP_NOT_AN_IMAGE: "not an image panchro reads (JPEG, PNG, TIFF, WebP, BMP, JPEG 2000)",
    SKIP_UNKNOWN_EXTENSION: "not an image by its name (no image extension); not read",
    SKIP_UNSAFE_NAME: "name with an empty, '.' or '..' segment: its output cannot mirror it",
    SKIP_LINK_OUTSIDE: (
        "symbolic link that leads outside the source folder: not followed "
        "(submit its target itself, or copy the files in)"
    ),
    SKIP_SYMLINK_LOOP: "symbolic link loop: the link leads back to itself or a parent folder",
    SKIP_BROKEN_LINK: "symbolic link to something that does not exist",
    SKIP_UNREADABLE: "cannot be opened or read (permissions or an I/O error)",
    SKIP_NOT_A_FILE: "not a regular file (a FIFO, socket or device)",
}

#: The stable failure code of each recorded skip reason, what reports group by.
SKIP_CODES: Final[Mapping[str, str]] = {
    SKIP_EMPTY: "skip.empty",
    SKIP_NOT_AN_IMAGE: "skip.not_image",
    SKIP_UNKNOWN_EXTENSION: "skip.unknown_extension",
    SKIP_UNSAFE_NAME: "skip.unsafe_name",
    SKIP_LINK_OUTSIDE: "skip.link_outside",
    SKIP_SYMLINK_LOOP: "skip.symlink_loop",
    SKIP_BROKEN_LINK: "skip.broken_link",
    SKIP_UNREADABLE: "skip.unreadable",
    SKIP_NOT_A_FILE: "skip.not_a_file",
}
