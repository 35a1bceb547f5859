"""A collection's morning report: one self-contained HTML file that opens offline.

``write_report(sessions, "1920s", "1920s-report.html")`` writes, from the catalog alone
(never a master image), a page with the collection's counts by status, its time range and
throughput, its settings and checkpoint (untrained weights said loudly), its failures
grouped by ``images.failure_code`` with a few examples each, and a before/after contact
sheet of every image: the thumbnails the workers wrote (``workers.thumbnails``), its
status, a link to its output.

The page inlines its style and script and loads nothing from the network. The contact
sheet is data, not markup: every image is one compact JSON list in a
``<script type="application/json">`` block, and the page's script draws 100 of them at a
time, with lazily loaded ``<img>`` elements, so a collection of 100,000 images is a page
of a few megabytes with a few hundred elements. Links are relative paths for local
outputs and presigned URLs for S3 ones (``exports.report_links``).

The file is written under a temporary name and renamed, and never replaces a file that is
not a panchro report.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from catalog.engine import transaction
from catalog.reports import collection_report, report_rows
from catalog.states import ImageStatus
from exports.report_html import render_footer, render_header, render_summary
from exports.report_links import LinkTable
from storage.errors import OutputExists, StorageError
from storage.uri import parse_uri

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from catalog.reports import ReportRow
    from storage.options import StorageOptions
    from storage.s3_presign import Presigner

__all__ = ["DEFAULT_LINK_EXPIRY_S", "PER_PAGE", "ReportFile", "default_report_name", "write_report"]

logger = logging.getLogger(__name__)

#: Life of presigned S3 links, in seconds: 7 days, the longest Signature Version 4 allows.
DEFAULT_LINK_EXPIRY_S: Final = 7 * 24 * 3600
#: Images drawn per page of the contact sheet.
PER_PAGE: Final = 100
#: Images read from the catalog per query (and per transaction).
READ_ROWS: Final = 5_000
#: What the first bytes of a file panchro may replace say (the template's first lines).
REPORT_MARKER: Final = b"<!-- panchro report"
#: Bytes read from an existing file to find :data:`REPORT_MARKER`.
MARKER_WINDOW: Final = 256
#: The template's placeholders: ``@@NAME@@``.
_PLACEHOLDER: Final = re.compile(r"@@([A-Z]+)@@")
#: Characters escaped in JSON inside a script element (``</script>``, ``<!--``...).
_SCRIPT_ESCAPES: Final = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026"}


@dataclass(frozen=True)
class ReportFile:
    """A written report.

    Attributes:
        path: Where it was written.
        images: Images on its contact sheet.
        size: Its size in bytes.
        seconds: Time it took to write, in seconds.
        links_expire_at: When its presigned S3 links stop working; None without any.
    """

    path: Path
    images: int
    size: int
    seconds: float
    links_expire_at: datetime | None


def default_report_name(collection: str) -> str:
    """Return the default file name of a collection's report: ``NAME-report.html``.

    Args:
        collection: The collection's name.

    Returns:
        A file name, with characters that cannot be in one replaced by ``_``.
    """
    return re.sub(r'[/\\\x00-\x1f<>:"|?*]', "_", collection).lstrip(".") + "-report.html"


def _software() -> str:
    try:
        return f"panchro {version('panchro')}"
    except PackageNotFoundError:
        return "panchro"


def _script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element, whatever the strings hold."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.translate(_SCRIPT_ESCAPES)


def _check_target(path: Path) -> None:
    """Refuse to replace a file that is not a panchro report."""
    if not os.path.lexists(path):
        return
    if not path.is_file() or path.is_symlink():
        raise OutputExists(f"{path} exists and is not a panchro report; left untouched")
    with path.open("rb") as existing:
        head = existing.read(MARKER_WINDOW)
    if REPORT_MARKER not in head:
        raise OutputExists(
            f"{path} exists and is not a panchro report; left untouched (choose another "
            "file, or move that one away)"
        )


class _Signer:
    """Presigns S3 links; after the first failure it links no more S3 objects."""

    def __init__(self, options: StorageOptions | None, expires_s: int) -> None:
        self.options = options
        self.expires_s = expires_s
        self.failure: str | None = None
        self._presigner: Presigner | None = None

    def __call__(self, uri: str) -> str | None:
        if self.failure is not None:
            return None
        try:
            if self._presigner is None:
                from storage.s3_presign import Presigner

                self._presigner = Presigner(self.options, expires_s=self.expires_s)
            return self._presigner.url(uri)
        except StorageError as exc:
            self.failure = str(exc)
            logger.warning("S3 objects are not linked in the report: %s", exc)
            return None


class _Rows:
    """Streams the contact sheet's rows as JSON, building the tables they refer to."""

    def __init__(self, links: LinkTable) -> None:
        self.links = links
        self.statuses = [status.value for status in ImageStatus]
        self._status_index = {name: index for index, name in enumerate(self.statuses)}
        self.codes: dict[str, int] = {}
        self.count = 0

    def _row(self, row: ReportRow) -> list[Any]:
        code = None
        if row.failure_code is not None:
            code = self.codes.setdefault(row.failure_code, len(self.codes))
        done = row.status == ImageStatus.DONE.value
        return [
            row.id,
            row.relative_path,
            self._status_index[row.status],
            code,
            self.links.entry(row.source_thumb_uri),
            self.links.entry(row.output_thumb_uri),
            self.links.entry(row.output_uri) if done else None,
        ]

    def write(self, out: IO[str], sessions: sessionmaker[Session], collection_id: int) -> None:
        out.write("[")
        after = 0
        while True:
            with transaction(sessions) as db:
                page = report_rows(db, collection_id, after_id=after, limit=READ_ROWS)
            if not page:
                break
            for row in page:
                out.write(("," if self.count else "") + _script_json(self._row(row)))
                self.count += 1
            after = page[-1].id
        out.write("]")

    def tables(self) -> dict[str, Any]:
        return {
            "per_page": PER_PAGE,
            "statuses": self.statuses,
            "codes": list(self.codes),
            **self.links.tables(),
        }


def _notes(signer: _Signer | None, expires_at: datetime | None) -> list[str]:
    notes = [
        "Thumbnails are written by the workers when an image is done (images done by an "
        "older panchro have none); this report reads only the catalog and never a master."
    ]
    if signer is None:
        notes.append(
            "Links to thumbnails and outputs are relative to this file's folder: keep the "
            "report where it was written, or write it into the output folder to move both "
            "together."
        )
    elif signer.failure is not None:
        notes.append(f"S3 objects are not linked: {signer.failure}")
    elif expires_at is not None:
        notes.append(
            f"Links to S3 are presigned and stop working at "
            f"{expires_at:%Y-%m-%d %H:%M} UTC; write the report again for fresh ones."
        )
    return notes


def write_report(
    sessions: sessionmaker[Session],
    name: str,
    path: str | os.PathLike[str],
    *,
    storage_options: StorageOptions | None = None,
    expires_s: int = DEFAULT_LINK_EXPIRY_S,
) -> ReportFile:
    """Write a collection's report as one HTML file.

    Args:
        sessions: The catalog's session factory.
        name: The collection's name.
        path: The HTML file to write; an earlier report there is replaced.
        storage_options: How to reach S3, for presigned links of an S3 output.
        expires_s: Life of presigned S3 links, in seconds (at most 7 days).

    Returns:
        What was written.

    Raises:
        CollectionNotFound: If no collection has that name.
        DatabaseUnavailable: If the catalog cannot be reached.
        OutputExists: If ``path`` holds something that is not a panchro report.
        OSError: If the file cannot be written.
    """
    began = time.perf_counter()
    target = Path(path)
    _check_target(target)
    generated_at = datetime.now(UTC)
    with transaction(sessions) as db:
        report = collection_report(db, name)
    signer = None
    expires_at = None
    if parse_uri(str(report.settings["output"])).is_s3:
        signer = _Signer(storage_options, expires_s)
        expires_at = generated_at + timedelta(seconds=expires_s)
    rows = _Rows(LinkTable(target.parent, signer))
    template = resources.files("exports").joinpath("report_template.html").read_text("utf-8")
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("w", encoding="utf-8") as out:
            pieces = _PLACEHOLDER.split(template)
            # Placeholders sit at odd indexes, in the template's order: the rows before
            # the tables they refer to, the footer last (it tells how linking went).
            for index, piece in enumerate(pieces):
                if index % 2 == 0:
                    out.write(piece)
                elif piece == "TITLE":
                    out.write(f"panchro report: {escape(report.name)}")
                elif piece == "HEADER":
                    out.write(
                        render_header(report, generated_at=generated_at, software=_software())
                    )
                elif piece == "SUMMARY":
                    out.write(render_summary(report))
                elif piece == "FOOTER":
                    out.write(render_footer(_notes(signer, expires_at)))
                elif piece == "ROWS":
                    rows.write(out, sessions, report.id)
                elif piece == "TABLES":
                    out.write(_script_json(rows.tables()))
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)
    seconds = time.perf_counter() - began
    logger.info(
        "collection %s: report of %d images written to %s in %.2f s",
        name,
        rows.count,
        target,
        seconds,
    )
    links_expire = expires_at if signer is not None and signer.failure is None else None
    return ReportFile(target, rows.count, target.stat().st_size, seconds, links_expire)
