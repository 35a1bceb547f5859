"""Record failure codes, warnings, thumbnails, sidecars, derivatives and events.

- ``images.failure_code``: a stable code for why an image failed or was skipped, so that
  failures group by reason (``last_error`` names the file, so it never groups).
- ``images.warnings``: what a person should know about a done image.
- ``images.upsample``: the upsampling method that made the output, per image.
- ``images.source_thumb_uri`` / ``output_thumb_uri``: the small JPEG pair a report shows.
- ``images.sidecar_uri``: the JSON provenance sidecar beside the output, if any.
- ``derivatives``: access copies of an output, each with its URI and SHA-256.
- ``events``: preservation events that are not tries (fixity checks...).

Revision ID: 7c4e1a9b2d60
Revises: 3b7e2c91d5a4
Create Date: 2026-12-03 08:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c4e1a9b2d60"
down_revision: str | Sequence[str] | None = "3b7e2c91d5a4"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Add the image columns and create ``derivatives`` and ``events``."""
    with op.batch_alter_table("images") as batch:
        batch.add_column(sa.Column("failure_code", sa.String(length=48), nullable=True))
        batch.add_column(sa.Column("warnings", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("upsample", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("source_thumb_uri", sa.Text(), nullable=True))
        batch.add_column(sa.Column("output_thumb_uri", sa.Text(), nullable=True))
        batch.add_column(sa.Column("sidecar_uri", sa.Text(), nullable=True))
        batch.create_index(
            "ix_images_collection_id_failure_code", ["collection_id", "failure_code"]
        )
    op.create_table(
        "derivatives",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("long_edge", sa.Integer(), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_derivatives_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_derivatives")),
        sa.UniqueConstraint("image_id", "uri", name=op.f("uq_derivatives_image_id_uri")),
    )
    op.create_index(op.f("ix_derivatives_image_id"), "derivatives", ["image_id"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=True),
        sa.Column("event_type", sa.String(length=32), nullable=False),
        sa.Column("object_role", sa.String(length=16), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("agent", sa.String(length=255), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_events_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_events_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    op.create_index(op.f("ix_events_image_id"), "events", ["image_id"])
    op.create_index(
        "ix_events_collection_id_occurred_at", "events", ["collection_id", "occurred_at"]
    )


def downgrade() -> None:
    """Drop ``events`` and ``derivatives`` and the image columns."""
    op.drop_index("ix_events_collection_id_occurred_at", table_name="events")
    op.drop_index(op.f("ix_events_image_id"), table_name="events")
    op.drop_table("events")
    op.drop_index(op.f("ix_derivatives_image_id"), table_name="derivatives")
    op.drop_table("derivatives")
    with op.batch_alter_table("images") as batch:
        batch.drop_index("ix_images_collection_id_failure_code")
        batch.drop_column("sidecar_uri")
        batch.drop_column("output_thumb_uri")
        batch.drop_column("source_thumb_uri")
        batch.drop_column("upsample")
        batch.drop_column("warnings")
        batch.drop_column("failure_code")
