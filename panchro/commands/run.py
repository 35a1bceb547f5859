"""``panchro run``: the whole pipeline on one machine, with no servers.

The embedded default: a SQLite catalog under DEST, the same ``scheduler.submit()`` (register
only, no broker), and the embedded worker (``workers.embedded.EmbeddedWorker``) running the
same ``process_image()`` as the Celery workers, in this process on the available device.
This command parses its input, builds those parts, shows a progress bar and a summary.
Stopping with Ctrl-C hands the current image back; running the same command again resumes
and never redoes a finished image.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from panchro.cli_support import fail_on
from panchro.commands._resubmit import (
    check_same_checkpoint,
    given_settings,
    kept_for_run,
    redo_changed_option,
    resubmission_lines,
    stored_settings,
)
from panchro.derivative_options import access_file_options, collection_options_for
from panchro.logs import log_format_option
from panchro.options import (
    batch_option,
    chosen_output_format,
    chosen_weights,
    model_options,
    output_format_options,
    size_from,
    size_options,
    skip_colour_option,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from panchro.settings import Settings
    from scheduler import SubmitSummary
    from workers.access_options import DerivativeSpec
    from workers.embedded import EmbeddedWorker
    from workers.process import Outcome
    from workers.runtime import WorkerRuntime

logger = logging.getLogger(__name__)

#: Most failure reasons listed in the summary.
SUMMARY_REASONS = 5


@dataclass
class RunTally:
    """Outcomes of this run, for the progress bar and the summary."""

    done: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: Outcome) -> None:
        """Count one outcome.

        Args:
            outcome: What ``process_image()`` did.
        """
        from workers.process import ProcessStatus

        if outcome.status is ProcessStatus.DONE:
            self.done += 1
        elif outcome.status is ProcessStatus.FAILED:
            self.failed += 1
            self.reasons[(outcome.reason or "unknown").splitlines()[0][:160]] += 1


def catalog_url_for(output: str) -> str:
    """The SQLite catalog of an embedded run: a file under a local DEST, else here.

    Args:
        output: The run's output location.

    Returns:
        A SQLAlchemy URL.
    """
    from catalog import sqlite_url_for

    if output.startswith("s3://"):
        return sqlite_url_for(Path.cwd())
    return sqlite_url_for(Path(output))


def _runtime(
    settings: Settings,
    *,
    database_url: str,
    model: str | None,
    untrained: bool,
    size: int | None,
    upsample: str,
) -> WorkerRuntime:
    from workers.runtime import WorkerConfig, WorkerRuntime

    weights = chosen_weights(settings, model=model, untrained=untrained)
    config = WorkerConfig(
        database_url=database_url,
        weights=str(weights) if weights else None,
        untrained=untrained,
        model_name=model,
        device=settings.device,
        precision=settings.precision,
        backend=settings.backend,
        size=size,
        upsample=upsample,
        storage=settings.storage_options(),
        node_name=f"run@{socket.gethostname()}",
        read_ahead=False,
        batch_size=settings.batch_size,
    )
    return WorkerRuntime(config)


def _colorize(worker: EmbeddedWorker, collection_id: int, *, total: int) -> RunTally:
    """Run the embedded worker on the collection, with a progress bar."""
    from tqdm import tqdm

    tally = RunTally()
    with tqdm(total=total, unit="img", dynamic_ncols=True, desc="colorizing") as bar:

        def seen(outcome: Outcome) -> None:
            tally.add(outcome)
            bar.set_postfix(done=tally.done, failed=tally.failed, refresh=False)
            bar.update(1)

        worker.work(collection_id, on_outcome=seen)
    return tally


@click.command("run")
@click.argument("source")
@click.option(
    "--output",
    "-o",
    required=True,
    help="Folder or s3://bucket/prefix for the colorized copies (mirrors SOURCE's sub-folders). "
    "The run's catalog is kept in DEST/.panchro/.",
)
@model_options
@size_options
@output_format_options
@access_file_options
@skip_colour_option
@click.option(
    "--collection",
    help="Name of the collection in the run's catalog (default: the SOURCE folder's name).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Accept an output that contains SOURCE or overlaps another collection of the run's "
    "catalog; even then no file is replaced that panchro did not write for the same image.",
)
@click.option(
    "--prefetch",
    type=click.IntRange(0, 16),
    default=2,
    show_default=True,
    help="Images read and decoded ahead while the model runs.",
)
@batch_option
@redo_changed_option
@log_format_option
@click.pass_context
def run(
    ctx: click.Context,
    source: str,
    output: str,
    weights: Path | None,
    model: str | None,
    untrained: bool,
    precision: str | None,
    device: str | None,
    upsample: str,
    preset: str | None,
    size: int | None,
    output_format: str | None,
    format_alias: str | None,
    derivatives: tuple[DerivativeSpec, ...],
    sidecars: bool,
    skip_colour: bool | None,
    collection: str | None,
    force: bool,
    prefetch: int,
    batch: int | None,
    redo_changed: bool,
) -> None:
    """Colorize every image under SOURCE into --output, on this machine, with no servers.

    SOURCE is a folder or an s3://bucket/prefix. Images are found by content; originals
    are only ever read; every copy is written atomically. A SQLite catalog under the
    output folder records each image's status and provenance (query it with
    `panchro --database-url sqlite:///DEST/.panchro/catalog.sqlite3 status`). Press
    Ctrl-C to stop: the same command resumes where it stopped, and finished images are
    never redone. Failed images are listed at the end; `panchro retry` re-queues them.
    Files that are not images (empty, text, a PDF, a link out of SOURCE...) are recorded
    as skipped and named at the end with the reason; hidden and system files are counted.
    One run at a time per output: a second one is refused, naming the first.
    Running it again keeps the collection's settings (model, size, --upsample, output
    format) unless given again; what changed applies to images not done yet, and with
    --redo-changed also to the done ones, colorized again.

    \b
    Examples:
      panchro run scans/ --output colour/ --weights ddcolor_modelscope.pth
      panchro run s3://archive/scans/1920s --output colour/ --preset landscape
      panchro run examples --output colorized --untrained     # demo, random weights
      panchro run scans/ --output colour/ --skip-colour       # leave colour originals alone
      panchro run scans/ --output colour/ --batch 8           # 8 images per forward (GPU)
    """
    from sqlalchemy.engine import make_url

    from catalog import SKIP_COLOUR_OPTION, make_sessionmaker
    from migrations.runner import upgrade
    from panchro.context import load_settings
    from panchro.preflight import check_weights
    from panchro.run_lock import hold_run_lock
    from scheduler import CollectionSettings, check_locations, submit
    from storage.registry import open_storage
    from storage.uri import parse_uri
    from workers.embedded import EmbeddedWorker

    settings = load_settings(
        ctx, weights=weights, precision=precision, device=device, batch_size=batch
    )
    output_format = chosen_output_format(output_format, format_alias)
    chosen_size = size_from(preset, size)
    with fail_on("reading the locations"):
        parse_uri(source)
        output_uri = parse_uri(output)
    database_url = catalog_url_for(output)
    name = collection or _default_name(source)
    with fail_on("checking the output"):
        check_locations(source, output, force=force)  # before the catalog is made there
    # Held until the command ends: a second run on this output is refused at once. A
    # catalog that exists is read only under it (the run holding it may be writing to it,
    # and a reader would wait for that); with none yet, it is taken once the weights are
    # known to be there, so that a run that cannot start leaves nothing behind.
    catalog_file = Path(str(make_url(database_url).database))
    run_lock = hold_run_lock(catalog_file.parent, str(output_uri))
    locked = catalog_file.is_file()
    if locked:
        ctx.with_resource(run_lock)
    # Settings not given keep the collection's: the model too, found again by its name.
    given = given_settings(ctx, settings, always=("precision",))
    stored = stored_settings(database_url, name)
    if stored is not None:
        model, untrained, chosen_size, upsample = kept_for_run(
            stored, given, model=model, untrained=untrained, size=chosen_size, upsample=upsample
        )
    runtime = _runtime(
        settings,
        database_url=database_url,
        model=model,
        untrained=untrained,
        size=chosen_size,
        upsample=upsample,
    )
    weights_file = runtime.config.weights
    check_weights(None if weights_file is None else Path(weights_file), untrained=untrained)
    if not locked:
        ctx.with_resource(run_lock)
    with fail_on("preparing the catalog"):
        upgrade(database_url)
    sessions = make_sessionmaker(database_url)
    if untrained:
        click.secho(
            "WARNING: untrained random weights; the colours are meaningless. Outputs and the "
            "catalog say so.",
            fg="yellow",
            err=True,
        )
    with fail_on("loading the model"):
        colorizer = runtime.colorizer()
    checkpoint = colorizer.checkpoint
    if stored is not None and "model" not in given:
        check_same_checkpoint(stored, checkpoint.sha256 if checkpoint else None)
    with fail_on(f"scanning {source}"):
        summary = submit(
            sessions,
            name=name,
            source=source,
            output=output,
            storage=open_storage(source, runtime.config.storage),
            send=None,
            max_in_flight=1,
            settings=CollectionSettings(
                preset=preset,
                input_size=chosen_size,
                model_name=colorizer.model_name,
                checkpoint_sha256=checkpoint.sha256 if checkpoint else None,
                precision=colorizer.precision,
                upsample=upsample,
                untrained=untrained,
                output_format=output_format,
                options={
                    **collection_options_for(derivatives, sidecars),
                    **({} if skip_colour is None else {SKIP_COLOUR_OPTION: skip_colour}),
                },
                given=given,
            ),
            force=force,
            redo_changed=redo_changed,
        )
    worker = EmbeddedWorker(runtime, prefetch=prefetch)
    with fail_on("resuming"):
        worker.recover(summary.collection_id)
    remaining = _count_pending(sessions, summary.collection_id)
    click.echo(
        f"{summary.registered} images in {source} ({summary.new} new, {summary.changed} "
        f"changed; {summary.skipped_total} other files skipped, "
        f"{sum(summary.ignored.values())} hidden or system files ignored); {remaining} to "
        f"colorize with {colorizer!r}{' (UNTRAINED random weights)' if untrained else ''}",
        err=True,
    )
    for line in resubmission_lines(summary, redo=redo_changed):
        click.echo(line, err=True)
    try:
        with fail_on("colorizing"):
            tally = _colorize(worker, summary.collection_id, total=remaining)
    except KeyboardInterrupt:
        click.echo("\ninterrupted: run the same command again to resume", err=True)
        ctx.exit(130)
    finally:
        runtime.close()
    _summarise(sessions, summary, tally, output, database_url)
    if tally.failed:
        ctx.exit(1)


def _default_name(source: str) -> str:
    stripped = source.rstrip("/")
    return stripped.rsplit("/", 1)[-1] or "collection"


def _count_pending(sessions: sessionmaker[Session], collection_id: int) -> int:
    from catalog import collection_status, get_collection, transaction

    with transaction(sessions) as db:
        name = get_collection(db, collection_id).name
        report = collection_status(db, name)
    return report.collections[0].remaining


def _summarise(
    sessions: sessionmaker[Session],
    summary: SubmitSummary,
    tally: RunTally,
    output: str,
    database_url: str,
) -> None:
    from catalog import collection_status, complete_collection, skipped_images, transaction
    from panchro.commands._skipped import skipped_lines

    name = summary.name
    with transaction(sessions) as db:
        # Everything done, failed or skipped: the collection is done.
        complete_collection(db, summary.collection_id)
        progress = collection_status(db, name).collections[0]
        skipped_total, skipped_files = skipped_images(db, summary.collection_id)
    counts = ", ".join(
        f"{count} {status}" for status, count in sorted(progress.counts.items()) if count
    )
    click.echo(f"this run: {tally.done} colorized, {tally.failed} failed")
    click.echo(f"collection {name} {progress.status}: {counts}; outputs in {output}")
    for reason, count in tally.reasons.most_common(SUMMARY_REASONS):
        click.secho(f"  failed x{count}: {reason}", fg="red")
    if tally.failed:
        click.echo(f"list them: panchro --database-url {database_url} list {name} --status failed")
    click.echo(f"report: panchro --database-url {database_url} report {name}")
    for line in skipped_lines(
        skipped_total,
        skipped_files,
        summary.ignored,
        list_command=f"panchro --database-url {database_url} list {name} --status skipped",
    ):
        click.echo(line)
