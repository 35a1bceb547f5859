"""Record on each try the SHA-256 of the output it writes.

A worker records the digest just before it writes, so that a later try of the same image
recognises a file left by an earlier one (a node killed between the write and the ``done``
record) and replaces only files panchro wrote for that image. Images already done get the
digest of their output on the last try, the one that made it.

Revision ID: 3b7e2c91d5a4
Revises: 0cfa6004ef8f
Create Date: 2026-12-03 01:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3b7e2c91d5a4"
down_revision: str | Sequence[str] | None = "0cfa6004ef8f"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add ``attempts.output_sha256`` and fill it for the tries that made a done output."""
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("output_sha256", sa.String(length=64), nullable=True))
    # The image's output is the one its last try made (images.attempts is that try's number).
    op.execute(
        "UPDATE attempts SET output_sha256 = ("
        "SELECT images.output_sha256 FROM images WHERE images.id = attempts.image_id) "
        "WHERE attempts.outcome = 'done' AND attempts.number = ("
        "SELECT images.attempts FROM images WHERE images.id = attempts.image_id)"
    )


def downgrade() -> None:
    """Drop ``attempts.output_sha256``."""
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("output_sha256")
