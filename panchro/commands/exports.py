"""``panchro export`` (PREMIS, BagIt) and ``panchro verify`` (fixity check) of a collection.

The commands parse their options and call the plain functions of ``exports``; the heavy
libraries (lxml, bagit, SQLAlchemy, boto3) are imported only when a command runs.
"""

from __future__ import annotations

import socket
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING

import click

from panchro.cli_support import fail_on, local_path_only
from panchro.commands._support import open_catalog

if TYPE_CHECKING:
    from exports.fixity import Check
    from exports.objects import Agent

#: Files read, hashed or copied at once unless --jobs says otherwise.
DEFAULT_JOBS = 4

_jobs_option = click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1, max=64),
    default=DEFAULT_JOBS,
    show_default=True,
    help="Files read and hashed at once (threads; also the processes bagit hashes with).",
)


def _agent() -> Agent:
    from exports.objects import Agent

    try:
        installed = version("panchro")
    except PackageNotFoundError:
        installed = "unknown"
    return Agent(installed, socket.gethostname())


@click.command("export")
@click.argument("name")
@click.option(
    "--premis",
    "premis_file",
    type=click.Path(dir_okay=False, path_type=Path),
    callback=local_path_only,
    help="Write the collection's PREMIS 3 XML record to this new file.",
)
@click.option(
    "--bagit",
    "bag_dir",
    type=click.Path(file_okay=False, path_type=Path),
    callback=local_path_only,
    help="Make a BagIt bag of the outputs in this new or empty folder.",
)
@_jobs_option
@click.pass_context
def export_command(
    ctx: click.Context, name: str, premis_file: Path | None, bag_dir: Path | None, jobs: int
) -> None:
    """Export collection NAME for an archive: a PREMIS record, a BagIt bag, or both.

    --premis writes PREMIS 3 XML: every source, output and access copy (sha256, size,
    format, location); every registration, colorization try (model, checkpoint, input
    size, precision, device, host, upsampling, failure and its code), access copy and
    fixity check; and the agents (panchro, the DDColor checkpoint, each worker). It is
    written as a stream, so collections of any size fit in memory.

    --bagit makes a BagIt bag (RFC 8493) of the done images' outputs, access copies and
    sidecars, with sha256 and sha512 manifests, the collection's provenance in
    bag-info.txt and the PREMIS record as the tag file metadata/premis.xml. Outputs on S3
    are downloaded into it; each file is checked against the catalog's sha256 on the way.

    Neither overwrites anything: an existing file, or a folder that is not empty, is
    refused.

    \b
    Examples:
      panchro export 1920s --premis 1920s-premis.xml
      panchro export 1920s --bagit /archive/bags/1920s --jobs 8
    """
    from exports.objects import Stores
    from panchro.context import load_settings

    if premis_file is None and bag_dir is None:
        raise click.UsageError("say what to export: --premis FILE, --bagit DIR, or both")
    settings = load_settings(ctx)
    agent = _agent()
    with open_catalog(settings.database_url) as sessions, fail_on("exporting"):
        if premis_file is not None:
            from exports.premis import export_premis

            counts = export_premis(sessions, name, agent, premis_file)
            click.echo(
                f"collection {name}: PREMIS record in {premis_file} ({counts.objects} objects, "
                f"{counts.events} events, {counts.agents} agents)"
            )
        if bag_dir is not None:
            from exports.bag import export_bag

            made = export_bag(
                sessions, name, agent, bag_dir, Stores(settings.storage_options()), jobs=jobs
            )
            click.echo(
                f"collection {name}: bag in {bag_dir} ({made.files} files, {made.bytes} bytes, "
                f"{made.outputs} outputs)"
            )


@click.command("verify")
@click.argument("name")
@_jobs_option
@click.pass_context
def verify_command(ctx: click.Context, name: str, jobs: int) -> None:
    """Check every file of collection NAME against the sha256 the catalog recorded.

    Sources, outputs and access copies are read back from their stores (local or S3) in
    pieces, --jobs at a time, and hashed. Each check is recorded in the catalog's events
    table (event type "fixity check", the outcome ok, changed, missing or error, both
    digests, this host and panchro version) and appears in the PREMIS export. Changed,
    missing and unreadable files are printed; the exit status is 1 if there is any.

    \b
    Examples:
      panchro verify 1920s
      panchro verify 1920s --jobs 16 || mail -s "1920s failed its fixity check" archive@...
    """
    from tqdm import tqdm

    from exports.fixity import OK, count_checks, verify_collection
    from exports.objects import Stores
    from panchro.context import load_settings

    settings = load_settings(ctx)
    agent = _agent()
    with open_catalog(settings.database_url) as sessions, fail_on("verifying"):
        total = count_checks(sessions, name)
        with tqdm(
            total=total, unit="file", desc=f"verify {name}", file=sys.stderr, disable=None
        ) as bar:

            def show(check: Check) -> None:
                bar.update(1)
                if check.outcome != OK:
                    bar.write(f"{check.outcome}: {check.item.role} {check.detail}")

            report = verify_collection(
                sessions, name, agent, Stores(settings.storage_options()), jobs=jobs, on_check=show
            )
    counts = ", ".join(f"{count} {outcome}" for outcome, count in report.outcomes.items())
    click.echo(
        f"collection {name}: {report.checked} files checked ({counts}); "
        f"{report.without_digest} without a recorded digest (never read)"
    )
    if report.problems:
        ctx.exit(1)
