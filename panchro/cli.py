"""The ``panchro`` command line: one click group; the commands live in ``panchro.commands``."""

from __future__ import annotations

import logging

import click

from panchro.context import SETTING_OPTIONS
from panchro.logs import configure_logging, log_format_option


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--database-url",
    metavar="URL",
    help="Catalog database (SQLAlchemy URL). Env: PANCHRO_DATABASE_URL. "
    "Default: a SQLite file panchro.sqlite3 in the working directory.",
)
@click.option(
    "--broker-url",
    metavar="URL",
    help="Celery broker (Redis URL). Env: PANCHRO_BROKER_URL. Default: redis://127.0.0.1:6379/0.",
)
@click.option(
    "--s3-endpoint-url",
    metavar="URL",
    help="S3 endpoint for S3-compatible stores (MinIO, Ceph...). Env: PANCHRO_S3_ENDPOINT_URL.",
)
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@log_format_option
@click.version_option(package_name="panchro")
@click.pass_context
def cli(ctx: click.Context, /, verbose: int, **options: str | None) -> None:
    """panchro colorizes collections of black-and-white scans with DDColor.

    \b
    On one machine, no servers:   panchro colorize SCANS/ COLOR/
    A collection on a cluster:    panchro submit s3://bucket/scans --collection NAME --output ...
    What is installed and found:  panchro doctor
    """
    configure_logging(level=logging.WARNING - 10 * min(verbose, 2))
    ctx.obj = {"overrides": {k: v for k, v in options.items() if k in SETTING_OPTIONS and v}}


def _register_commands() -> None:
    from panchro.commands import (
        colorize,
        database,
        doctor,
        exports,
        jobs,
        metrics,
        report,
        run,
        weights,
        workers,
    )

    for module in (
        colorize,
        database,
        doctor,
        exports,
        jobs,
        metrics,
        report,
        run,
        weights,
        workers,
    ):
        module.register(cli)


_register_commands()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="panchro")


if __name__ == "__main__":
    main()
