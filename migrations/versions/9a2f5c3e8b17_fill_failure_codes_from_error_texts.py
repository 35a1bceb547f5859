"""Fill the failure codes of failed and skipped images from their error texts.

Images failed or skipped before ``images.failure_code`` was written have only
``last_error``, a sentence that names the file. This revision gives each of them the code
that its sentence matches (best effort: the phrases that versions of panchro wrote), and
``unknown`` where none matches, so that reports group every failure by code. Images that
already have a code are left alone.

The phrases are copied here, not imported: a revision must keep working whatever later
versions of the code say.

Revision ID: 9a2f5c3e8b17
Revises: 7c4e1a9b2d60
Create Date: 2026-12-04 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9a2f5c3e8b17"
down_revision: str | Sequence[str] | None = "7c4e1a9b2d60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Code of an error text that matches no rule.
UNKNOWN = "unknown"
#: Gave up on a failure that may pass, after the task's retries.
_GAVE_UP = "gave up after % retries:%"

#: For failed images: (code, LIKE patterns that must all match), first match wins.
FAILED_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("worker.lost", ("%worker died % times on this image%",)),
    ("time_limit", ("time limit:%",)),
    ("storage.full", (_GAVE_UP, "%no space left%")),
    ("catalog.unavailable", (_GAVE_UP, "%catalog database%")),
    ("storage.unavailable", (_GAVE_UP,)),
    ("storage.not_found", ("the original is missing (%",)),
    ("oom.floor", ("%out of memory on % at every input size tried%",)),
    ("output.conflict", ("%already exists%and is not a file panchro wrote for this image%",)),
    ("output.conflict", ("%exists with other content (sha256%",)),
    ("output.conflict", ("%exists and overwriting is not allowed%",)),
    ("output.unsafe", ("%the scan is never overwritten%",)),
    ("output.unsafe", ("%originals are never overwritten%",)),
    ("output.unsafe", ("%lies outside the collection's output%",)),
    ("size.too_large", ("%megapixels, over the limit of%",)),
    ("size.too_small", ("%the header gives an empty size (%",)),
    ("decode.truncated", ("%: the file is empty (0 bytes)%",)),
    ("decode.truncated", ("%it is truncated or corrupt (%truncated%",)),
    ("decode.truncated", ("%it is truncated or corrupt (%EOF%",)),
    ("decode.corrupt", ("%it is truncated or corrupt (%",)),
    ("decode.unsupported", ("%: this is a GIF image%",)),
    ("decode.unsupported", ("%: this is a Photoshop document%",)),
    ("decode.unsupported", ("%: this is an ISO media file%",)),
    ("decode.not_image", ("%; supported formats are %",)),
    ("decode.unsupported", ("%this installation cannot read % files%",)),
    ("decode.unsupported", ("%floating-point%",)),
    ("decode.unsupported", ("%holds signed %-bit samples%",)),
    ("decode.unsupported", ("%imagecodecs%",)),
    ("decode.unsupported", ("%32-bit integer samples outside%",)),
    ("decode.unsupported", ("% images are not supported; convert to RGB%",)),
    ("decode.unsupported", ("%TIFF is not supported; convert it%",)),
    ("model.precision", ("%bf16 requested but%",)),
    ("model.error", ("%NaN or infinite ab%",)),
    ("encode.failed", ("colorizing and encoding failed:%",)),
    ("storage.error", ("reading the original failed:%",)),
    ("storage.error", ("writing the output failed:%",)),
    ("catalog.error", ("recording the result failed:%",)),
)

#: For skipped images: (code, LIKE pattern) of the scan's sentence for each skip reason.
SKIPPED_RULES: tuple[tuple[str, str], ...] = (
    ("skip.empty", "empty file (0 bytes)%"),
    ("skip.not_image", "not an image panchro reads%"),
    ("skip.unknown_extension", "not an image by its name%"),
    ("skip.unsafe_name", "name with an empty%"),
    ("skip.link_outside", "symbolic link that leads outside%"),
    ("skip.symlink_loop", "symbolic link loop%"),
    ("skip.broken_link", "symbolic link to something that does not exist%"),
    ("skip.unreadable", "cannot be opened or read%"),
    ("skip.not_a_file", "not a regular file%"),
)

_images = sa.table(
    "images",
    sa.column("status", sa.String),
    sa.column("last_error", sa.Text),
    sa.column("failure_code", sa.String),
)


def _code_of_error() -> sa.Case[str]:
    """The CASE expression that maps a row's status and error text to its code."""
    status, error = _images.c.status, _images.c.last_error
    whens: list[tuple[sa.ColumnElement[bool], str]] = [
        (sa.and_(status == "failed", *(error.like(p) for p in patterns)), code)
        for code, patterns in FAILED_RULES
    ]
    whens.extend(
        (sa.and_(status == "skipped", error.like(pattern)), code) for code, pattern in SKIPPED_RULES
    )
    return sa.case(*whens, else_=UNKNOWN)


def upgrade() -> None:
    """Give every failed or skipped image without a code the code its error text matches."""
    op.execute(
        _images.update()
        .where(_images.c.status.in_(["failed", "skipped"]), _images.c.failure_code.is_(None))
        .values(failure_code=_code_of_error())
    )


def downgrade() -> None:
    """Clear every failure code: the previous revision's code writes none."""
    op.execute(
        _images.update().where(_images.c.failure_code.is_not(None)).values(failure_code=None)
    )
