"""The job commands of the CLI: submit, status, list, retry, cancel and scheduler.

``panchro.cli`` loads them by name. ``submit``, ``status`` and ``list``
live in their own modules; ``retry``, ``cancel`` and ``scheduler`` are small enough to live
here. Every command parses its input, opens the catalog with
:func:`panchro.commands._support.open_catalog` and calls the plain functions of ``catalog``
and ``scheduler``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import click

from catalog.states import ImageStatus
from panchro.cli_support import fail_on
from panchro.commands._support import open_catalog
from panchro.logs import configure_logging, log_format_option, loglevel_option

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)


@click.command("retry")
@click.argument("name")
@click.option("--failed", is_flag=True, help="Retry the failed images (the default).")
@click.option("--skipped", is_flag=True, help="Retry the skipped images.")
@click.option("--cancelled", is_flag=True, help="Retry the cancelled images.")
@click.option(
    "--stale",
    is_flag=True,
    help="Hand back the running images that no live worker holds (their worker died or "
    "was cut off): the workers are asked over the broker, and the images they do not "
    "report go back to pending. Images a live worker is processing are left alone.",
)
@click.pass_context
def retry_command(
    ctx: click.Context, name: str, failed: bool, skipped: bool, cancelled: bool, stale: bool
) -> None:
    """Send images of collection NAME back to pending, so they are processed again.

    Without a flag, the failed images are retried. Their last error is cleared (each try
    stays in the provenance trail) and the collection becomes active again; the scheduler
    (`panchro scheduler`) sends them to the workers at its next round. With --stale alone,
    only running images that no live worker holds are handed back (the scheduler does
    this by itself too, within seconds, while it runs).

    \b
    Examples:
      panchro retry 1920s --failed
      panchro retry 1920s --failed --cancelled
      panchro retry 1920s --stale
    """
    from catalog import retry_images, transaction
    from panchro.context import load_settings

    statuses = [
        status
        for status, wanted in (
            (ImageStatus.FAILED, failed),
            (ImageStatus.SKIPPED, skipped),
            (ImageStatus.CANCELLED, cancelled),
        )
        if wanted
    ]
    if not statuses and not stale:
        statuses = [ImageStatus.FAILED]
    settings = load_settings(ctx)
    with open_catalog(settings.database_url) as sessions, fail_on("retrying"):
        if stale:
            _retry_stale(settings.broker_url, sessions, name)
        if not statuses:
            return
        with transaction(sessions) as db:
            count = retry_images(db, name, statuses=statuses)
    which = " or ".join(status.value for status in statuses)
    if count:
        click.echo(
            f"collection {name}: {count} {which} images back to pending; "
            "the scheduler sends them to the workers"
        )
    else:
        click.echo(f"collection {name}: no {which} images to retry")


def _retry_stale(broker_url: str, sessions: sessionmaker[Session], name: str) -> None:
    """``retry --stale``: ask the workers, hand back what none holds, and say so."""
    from scheduler import release_stale
    from workers.app import create_app

    outcome = release_stale(create_app(broker_url=broker_url), sessions, name)
    released = outcome.released
    answered = (
        f"{len(outcome.answered)} worker(s) answered" if outcome.answered else "no worker answered"
    )
    click.echo(
        f"collection {name}: {released.requeued} running images no live worker holds back "
        f"to pending, {released.failed} failed after too many lost tries, {outcome.held} "
        f"held by live workers left alone ({answered})"
    )


@click.command("cancel")
@click.argument("name")
@click.pass_context
def cancel_command(ctx: click.Context, name: str) -> None:
    """Cancel collection NAME: its pending and queued images are not processed.

    Images already running finish and are recorded. Messages still in the broker find
    their image cancelled and do nothing. Submitting the collection again resumes it.

    \b
    Example:
      panchro cancel 1920s
    """
    from catalog import cancel_collection, transaction
    from panchro.context import load_settings

    settings = load_settings(ctx)
    with open_catalog(settings.database_url) as sessions, fail_on("cancelling"):
        with transaction(sessions) as db:
            count = cancel_collection(db, name)
    click.echo(
        f"collection {name} cancelled: {count} pending or queued images will not be "
        "processed; running ones finish. Submit it again to resume."
    )


@click.command("scheduler")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between two dispatch passes.",
)
@click.option(
    "--max-in-flight",
    type=click.IntRange(min=1),
    metavar="N",
    help="Most tasks waiting in the broker at once, over all collections. "
    "Env: PANCHRO_MAX_IN_FLIGHT (default 200).",
)
@click.option(
    "--heartbeat-file",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Touch this file after every pass, for a health check that tests its age "
    "(e.g. find PATH -mmin -2).",
)
@loglevel_option(help_text="Log level of the dispatcher.")
@log_format_option
@click.pass_context
def scheduler_command(
    ctx: click.Context,
    interval: float,
    max_in_flight: int | None,
    heartbeat_file: Path | None,
    loglevel: str,
) -> None:
    """Run the dispatcher: keep the broker topped up with tasks until stopped.

    Every interval, one pass hands back what lost workers held, then sends pending
    images to the workers, highest priority first, honouring each collection's
    --not-before window, and keeping at most --max-in-flight tasks in the broker. The
    passes run in this process: it is not a Celery worker, and Flower shows only the
    colorize tasks it sends. Run one per cluster (a second one is safe, just useless);
    stop it with Ctrl-C or SIGTERM (the running pass finishes first).

    \b
    Example:
      PANCHRO_DATABASE_URL=postgresql+psycopg://panchro@db/panchro \\
      PANCHRO_BROKER_URL=redis://broker:6379/0  panchro scheduler --interval 5
    """
    from panchro.context import load_settings
    from scheduler import run_scheduler
    from workers.app import create_app

    settings = load_settings(ctx, max_in_flight=max_in_flight)
    # Fail now, with a clear message, rather than at every pass.
    with open_catalog(settings.database_url):
        pass
    configure_logging(level=loglevel)
    app = create_app(broker_url=settings.broker_url, **settings.celery_limits())
    try:
        run_scheduler(
            app,
            database_url=settings.database_url,
            max_in_flight=settings.max_in_flight,
            interval=interval,
            after_pass=None if heartbeat_file is None else lambda _sent: heartbeat_file.touch(),
        )
    finally:
        app.close()
