"""Create the catalog tables: collections, images and attempts.

Revision ID: 0cfa6004ef8f
Revises:
Create Date: 2026-11-22 00:19:42.580674
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0cfa6004ef8f"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _status(*values: str, constraint: str) -> sa.Enum:
    # Status columns are strings with a CHECK constraint (no native PostgreSQL enum);
    # the constraint's final name is spelled out so that it never depends on the naming
    # convention of the models at the time the revision runs.
    return sa.Enum(
        *values,
        name=op.f(constraint),
        native_enum=False,
        create_constraint=True,
        length=16,
    )


def upgrade() -> None:
    """Create the three tables with their keys, constraints and indexes."""
    op.create_table(
        "collections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("preset", sa.String(length=32), nullable=True),
        sa.Column("input_size", sa.Integer(), nullable=True),
        sa.Column("model_name", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True),
        sa.Column("precision", sa.String(length=16), nullable=True),
        sa.Column("upsample", sa.String(length=32), nullable=True),
        sa.Column("not_before", sa.String(length=5), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            _status("active", "cancelled", "done", constraint="ck_collections_status"),
            nullable=False,
        ),
        sa.Column("untrained", sa.Boolean(), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collections")),
        sa.UniqueConstraint("name", name=op.f("uq_collections_name")),
    )
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("collection_id", sa.Integer(), nullable=False),
        sa.Column("source_uri", sa.Text(), nullable=False),
        sa.Column("relative_path", sa.Text(), nullable=False),
        sa.Column("output_uri", sa.Text(), nullable=False),
        sa.Column("source_size", sa.BigInteger(), nullable=True),
        sa.Column("source_checksum", sa.String(length=200), nullable=True),
        sa.Column("source_checksum_kind", sa.String(length=16), nullable=True),
        sa.Column("source_sha256", sa.String(length=64), nullable=True),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("mode", sa.String(length=16), nullable=True),
        sa.Column("bit_depth", sa.Integer(), nullable=True),
        sa.Column(
            "status",
            _status(
                "pending",
                "queued",
                "running",
                "done",
                "failed",
                "skipped",
                "cancelled",
                constraint="ck_images_status",
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("lost_attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("output_sha256", sa.String(length=64), nullable=True),
        sa.Column("output_size", sa.BigInteger(), nullable=True),
        sa.Column("input_size", sa.Integer(), nullable=True),
        sa.Column("sizes_tried", sa.JSON(), nullable=True),
        sa.Column("precision", sa.String(length=16), nullable=True),
        sa.Column("backend", sa.String(length=16), nullable=True),
        sa.Column("device", sa.String(length=128), nullable=True),
        sa.Column("worker_host", sa.String(length=255), nullable=True),
        sa.Column("model_name", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_sha256", sa.String(length=64), nullable=True),
        sa.Column("task_id", sa.String(length=64), nullable=True),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_s", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["collection_id"],
            ["collections.id"],
            name=op.f("fk_images_collection_id_collections"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint(
            "collection_id", "output_uri", name=op.f("uq_images_collection_id_output_uri")
        ),
        sa.UniqueConstraint(
            "collection_id", "source_uri", name=op.f("uq_images_collection_id_source_uri")
        ),
    )
    op.create_index(
        op.f("ix_images_collection_id_status_id"), "images", ["collection_id", "status", "id"]
    )
    op.create_index(
        op.f("ix_images_collection_id_finished_at"), "images", ["collection_id", "finished_at"]
    )
    op.create_index(op.f("ix_images_status"), "images", ["status"])
    op.create_table(
        "attempts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=255), nullable=True),
        sa.Column("device", sa.String(length=128), nullable=True),
        sa.Column("input_size", sa.Integer(), nullable=True),
        sa.Column("precision", sa.String(length=16), nullable=True),
        sa.Column(
            "outcome",
            _status("done", "oom_retry", "failed", "lost", constraint="ck_attempts_outcome"),
            nullable=True,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["images.id"],
            name=op.f("fk_attempts_image_id_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("image_id", "number", name=op.f("uq_attempts_image_id_number")),
    )


def downgrade() -> None:
    """Drop the three tables, dependants first (their indexes go with them)."""
    op.drop_table("attempts")
    op.drop_table("images")
    op.drop_table("collections")
