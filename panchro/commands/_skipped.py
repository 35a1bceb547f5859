"""The lines of ``panchro run``'s and ``panchro submit``'s summaries that name skipped files.

Every file of a source is accounted for: a file that is not colorized is named with its
reason (all of them when few, the first ones and the command that lists the rest when
many), and what the scan ignored as not part of the collection (hidden and system files) is
counted with the reason it was ignored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from storage.skips import (
    SKIP_ALREADY_LISTED,
    SKIP_FOLDER_MARKER,
    SKIP_HIDDEN,
    SKIP_SYSTEM,
    SKIP_VANISHED,
)

#: What each ignored skip reason (``storage.skips.IGNORED_REASONS``) means, for the summary.
IGNORED_WORDS: Final[Mapping[str, str]] = {
    SKIP_HIDDEN: "hidden (name starts with '.': .DS_Store, ._*, .git)",
    SKIP_SYSTEM: "system files (Thumbs.db, desktop.ini, __MACOSX, @eaDir)",
    SKIP_FOLDER_MARKER: "S3 folder markers",
    SKIP_ALREADY_LISTED: "folders reached a second time through a link (listed once)",
    SKIP_VANISHED: "removed while the scan ran",
}


def skipped_lines(
    total: int,
    files: Sequence[tuple[str, str]],
    ignored: Mapping[str, int],
    *,
    list_command: str,
) -> list[str]:
    """Describe a collection's skipped files and the entries its scan ignored.

    Args:
        total: How many of the collection's files are recorded as skipped.
        files: The first of them, as (relative path, reason).
        ignored: Entries not recorded, per scan skip reason (hidden, system...).
        list_command: The command that lists every skipped file.

    Returns:
        Lines without newlines; none when nothing was skipped or ignored.
    """
    lines = []
    if total:
        lines.append(f"skipped   {total} {'file' if total == 1 else 'files'}, not colorized:")
        lines.extend(f"  {path}: {' '.join(reason.split())}" for path, reason in files)
        if total > len(files):
            lines.append(f"  ... and {total - len(files)} more: {list_command}")
    count = sum(ignored.values())
    if count:
        why = "; ".join(
            f"{n} {IGNORED_WORDS.get(reason, reason)}" for reason, n in sorted(ignored.items())
        )
        lines.append(f"ignored   {count} not part of the collection: {why}")
    return lines
