"""``panchro db``: create or upgrade the catalog schema through Alembic."""

from __future__ import annotations

import click

from panchro.cli_support import fail_on


@click.group("db")
def db() -> None:
    """Manage the catalog database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True, help="Alembic revision to reach.")
@click.pass_context
def upgrade_command(ctx: click.Context, revision: str) -> None:
    """Create the catalog tables, or migrate them to the newest schema (alembic upgrade head)."""
    from migrations.runner import upgrade
    from panchro.context import load_settings
    from panchro.settings import redact_url

    settings = load_settings(ctx)
    with fail_on("upgrading the database"):
        upgrade(settings.database_url, revision=revision)
    click.echo(f"database at {redact_url(settings.database_url)} is at revision {revision}")
