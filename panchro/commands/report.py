"""``panchro report``: a collection's morning report, one HTML file that opens offline.

The page is written by ``exports.write_report`` from the catalog alone; this module
parses the options and says where the file went.
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from panchro.cli_support import fail_on, local_path_only
from panchro.commands._support import open_catalog

logger = logging.getLogger(__name__)

#: Longest life of a presigned S3 link, in seconds (7 days, Signature Version 4's limit).
MAX_EXPIRY_S = 7 * 24 * 3600


@click.command("report")
@click.argument("name")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=local_path_only,
    help="The HTML file to write (default: NAME-report.html in the current folder). An "
    "earlier report there is replaced; any other file is left alone and refused.",
)
@click.option(
    "--expires",
    type=click.IntRange(1, MAX_EXPIRY_S),
    default=MAX_EXPIRY_S,
    show_default=True,
    metavar="SECONDS",
    help="S3 outputs only: life of the presigned links to thumbnails and outputs.",
)
@click.pass_context
def report_command(ctx: click.Context, name: str, output: Path | None, expires: int) -> None:
    """Write the morning report of collection NAME: one HTML file that opens offline.

    It shows counts by status, time range and throughput, the collection's settings and
    checkpoint (untrained weights said loudly), failures grouped by code with examples,
    and a before/after contact sheet of every image, 100 per page, from the thumbnails
    the workers wrote when each image was done. Only the catalog is read, never a master.
    Local thumbnails and outputs are linked relative to the report's folder; S3 ones by
    presigned URLs that stop working after --expires seconds.

    \b
    Examples:
      panchro report 1920s                          writes 1920s-report.html here
      panchro report 1920s -o /srv/reports/1920s.html
      panchro --database-url sqlite:///colour/.panchro/catalog.sqlite3 report colour \\
          -o colour/report.html                     a `panchro run`, kept beside its output
    """
    from exports.report import default_report_name, write_report
    from panchro.context import load_settings

    settings = load_settings(ctx)
    target = output if output is not None else Path(default_report_name(name))
    with open_catalog(settings.database_url) as sessions, fail_on("writing the report"):
        try:
            written = write_report(
                sessions,
                name,
                target,
                storage_options=settings.storage_options(),
                expires_s=expires,
            )
        except OSError as exc:
            raise click.ClickException(f"writing the report: cannot write {target}: {exc}") from exc
    expiry = ""
    if written.links_expire_at is not None:
        expiry = f"; S3 links work until {written.links_expire_at:%Y-%m-%d %H:%M} UTC"
    click.echo(
        f"report of {name} ({written.images:,} images, {written.size / 1e6:.1f} MB) written "
        f"to {written.path}{expiry}"
    )
