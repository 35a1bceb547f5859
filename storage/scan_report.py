"""What a scan found and what it passed over: the report, the skipped entry, the found image.

A skip whose reason (:mod:`storage.skips`) is not ignored is kept as a :class:`SkippedEntry`
with a sentence a person understands, which the scheduler records in the catalog as a
``skipped`` image.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from storage.base import ObjectInfo
from storage.skips import IGNORED_REASONS, SKIP_CODES, SKIP_MESSAGES
from storage.uri import URI

__all__ = ["EXAMPLES_PER_REASON", "ScanReport", "ScannedObject", "SkippedEntry"]

#: Example paths kept per skip reason in a ScanReport.
EXAMPLES_PER_REASON: Final = 5


@dataclass(frozen=True, slots=True)
class SkippedEntry:
    """One entry a scan passed over that belongs to the collection and must be recorded.

    Attributes:
        relative: Its ``/``-separated key below the scanned prefix (no trailing ``/``, also
            for a folder: a link to a folder outside, a loop, an unreadable folder).
        reason: The skip reason (``empty``, ``not-an-image``...).
        message: Why, in words a person understands.
        code: The stable code of the reason (``skip.empty``...), for the catalog.
        size: Size in bytes, when it was known.
        checksum: The S3 ETag or the local ``"<st_mtime_ns>+<st_size>"``, when known.
        checksum_kind: ``"etag"`` or ``"mtime-size"``, when known.
        uri: Where it is, when the listing said so (else it is ``relative`` below the
            scanned prefix).
    """

    relative: str
    reason: str
    message: str
    code: str = "unknown"
    uri: URI | None = None
    size: int | None = None
    checksum: str | None = None
    checksum_kind: str | None = None


@dataclass(frozen=True, slots=True)
class ScannedObject(ObjectInfo):
    """One image found by :func:`~storage.scan.scan`: a listed object, and its format.

    Its ``relative`` key is below the scanned prefix; the output mirrors it.

    Attributes:
        format: Pillow's name of the format: ``JPEG``, ``PNG``, ``TIFF``, ``WEBP``, ``BMP`` or
            ``JPEG2000`` (or what a custom ``sniffer`` returns).
        sniffed: True if ``format`` was read from the content, False if it was taken from the
            extension.
    """

    format: str
    sniffed: bool


@dataclass
class ScanReport:
    """What a scan found and what it passed over, filled in while the scan is consumed.

    Attributes:
        found: Images yielded so far.
        found_bytes: Their total size in bytes.
        skipped: Entries passed over, per reason.
        examples: Up to :data:`EXAMPLES_PER_REASON` relative paths per reason.
        on_skip: Optionally also told ``(relative path, reason)`` of every skip, as it happens.
        recorded: Skipped entries to record in the catalog (reasons not in
            :data:`IGNORED_REASONS`) not yet taken by :meth:`take_recorded`.
    """

    found: int = 0
    found_bytes: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    on_skip: Callable[[str, str], None] | None = None
    recorded: list[SkippedEntry] = field(default_factory=list)

    @property
    def total_ignored(self) -> int:
        """Entries passed over and not recorded (hidden, system...), all reasons together."""
        return sum(count for reason, count in self.skipped.items() if reason in IGNORED_REASONS)

    def take_recorded(self) -> list[SkippedEntry]:
        """Return the skipped entries to record so far, and forget them.

        Returns:
            The entries, in the order they were passed over.
        """
        taken, self.recorded = self.recorded, []
        return taken

    @property
    def total_skipped(self) -> int:
        """Entries passed over, all reasons together."""
        return sum(self.skipped.values())

    def skip(
        self,
        relative: str,
        reason: str,
        *,
        info: ObjectInfo | None = None,
        detail: str | None = None,
    ) -> None:
        """Count one entry passed over, and keep it for the catalog unless it is ignored.

        Args:
            relative: Its relative path (a folder's ends with ``/``).
            reason: Why it was passed over.
            info: What the listing knew of it (size, checksum), if anything.
            detail: What the content looks like ("a PDF document"), added to the message.
        """
        self.skipped[reason] += 1
        examples = self.examples.setdefault(reason, [])
        if len(examples) < EXAMPLES_PER_REASON:
            examples.append(relative)
        if reason not in IGNORED_REASONS:
            message = SKIP_MESSAGES.get(reason, reason)
            self.recorded.append(
                SkippedEntry(
                    relative=relative.rstrip("/"),
                    reason=reason,
                    message=f"{message}: {detail}" if detail else message,
                    code=SKIP_CODES.get(reason, "unknown"),
                    uri=info.uri if info is not None else None,
                    size=info.size if info is not None else None,
                    checksum=info.checksum if info is not None else None,
                    checksum_kind=info.checksum_kind if info is not None else None,
                )
            )
        if self.on_skip is not None:
            self.on_skip(relative, reason)
