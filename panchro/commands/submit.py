"""``panchro submit``: register a collection's images in the catalog and send the first tasks.

The work is ``scheduler.submit()``: scan the source, register every image (idempotently)
and run one dispatch pass. This module validates the options, records which checkpoint
the collection is meant for, shows a progress bar while the source is scanned, and
prints a summary.
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from panchro.cli_support import fail_on
from panchro.commands._resubmit import given_settings, redo_changed_option, resubmission_lines
from panchro.commands._skipped import skipped_lines
from panchro.commands._support import INTERRUPTED_EXIT, open_catalog
from panchro.derivative_options import access_file_options, collection_options_for
from panchro.options import (
    chosen_output_format,
    model_option,
    output_format_options,
    size_from,
    size_options,
    skip_colour_option,
    untrained_option,
    upsample_option,
)

if TYPE_CHECKING:
    from tqdm import tqdm

    from scheduler import SubmitProgress, SubmitSummary
    from workers.access_options import DerivativeSpec

logger = logging.getLogger(__name__)

#: ``--not-before`` value that removes a collection's start time.
NO_START_TIME = "none"
#: Progress bar of the scan; the total is unknown until the listing ends.
BAR_FORMAT = "{desc}: {n_fmt} images [{elapsed}, {rate_fmt}{postfix}]"


def _check_not_before(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    if value is None or value.lower() == NO_START_TIME:
        return None
    from scheduler.windows import parse_not_before

    try:
        parse_not_before(value)
    except ValueError as exc:
        raise click.BadParameter(f"{value!r} is not a 24-hour local time HH:MM") from exc
    return value


def _checkpoint(
    weights: Path | None, *, model: str | None, untrained: bool
) -> tuple[str | None, str | None]:
    """Return the model name and SHA-256 the collection is meant for, after validating them.

    The file's layout is checked without loading its weights (nor, for the official
    formats, importing torch): the workers load it. Without a file, ``--model`` alone
    names the model the workers must run; with ``--untrained``, the random-weights model.

    Raises:
        click.ClickException: If the checkpoint is not a DDColor one, or holds another
            model than ``--model``.
    """
    if weights is None or untrained:
        return model, None
    from ddcolor.checkpoints import identify_checkpoint

    with fail_on("reading the checkpoint"):
        info = identify_checkpoint(weights)
    if model is not None and info.model_name != model:
        raise click.ClickException(
            f"the checkpoint {weights} holds {info.model_name}, not --model {model}"
        )
    return info.model_name, info.sha256


def format_bytes(count: int) -> str:
    """Format a size in bytes with a decimal unit: ``512 B``, ``3.4 MB``, ``1.2 TB``.

    Args:
        count: Bytes.

    Returns:
        The text.
    """
    if count < 1000:
        return f"{count} B"
    value = count / 1000.0
    for unit in ("kB", "MB", "GB"):
        if value < 1000.0:
            return f"{value:.1f} {unit}"
        value /= 1000.0
    return f"{value:.1f} TB"


def format_local_time(moment: datetime, now: datetime | None = None) -> str:
    """Format an aware moment as local ``HH:MM``, with the date when it is not today.

    Args:
        moment: The moment (aware).
        now: The present (aware); None means the current time.

    Returns:
        ``"22:00"`` or ``"2024-05-02 06:00"``.
    """
    local = moment.astimezone()
    today = (now or datetime.now().astimezone()).astimezone().date()
    return local.strftime("%H:%M" if local.date() == today else "%Y-%m-%d %H:%M")


def render_summary(
    summary: SubmitSummary, *, model: str | None, dispatching: bool, redo: bool = False
) -> str:
    """Describe what a submission did, in a few aligned lines.

    Args:
        summary: What ``scheduler.submit()`` returned.
        model: The model the collection records ("ddcolor_paper, sha256 ..."), or None.
        dispatching: Whether a dispatch pass was asked for.
        redo: Whether ``--redo-changed`` was given.

    Returns:
        The text, without a trailing newline.
    """
    state = "created" if summary.created else "resubmitted"
    lines = [
        f"collection {summary.name} {state}: {summary.source} -> {summary.output}",
        f"  images    {summary.registered} found ({format_bytes(summary.found_bytes)}): "
        f"{summary.new} new, {summary.changed} changed, {summary.unchanged} unchanged",
    ]
    lines.extend(resubmission_lines(summary, redo=redo))
    lines.extend(
        "  " + line
        for line in skipped_lines(
            summary.skipped_total,
            summary.skipped_files,
            summary.ignored,
            list_command=f"panchro list {summary.name} --status skipped",
        )
    )
    lines.append(
        f"  model     {model or 'the weights the workers are configured with (no --weights given)'}"
    )
    if summary.opens_at is not None:
        lines.append(
            f"  dispatch  held until {format_local_time(summary.opens_at)}: "
            f"{summary.pending} images wait for the start window"
        )
    elif dispatching and summary.dispatch_error is None:
        rest = (
            f"; {summary.pending} pending, sent by `panchro scheduler` as workers free up"
            if summary.pending
            else ""
        )
        lines.append(f"  dispatch  {summary.dispatched} sent to the workers{rest}")
    elif not dispatching:
        lines.append(
            f"  dispatch  none now; `panchro scheduler` sends the {summary.pending} pending"
        )
    return "\n".join(lines)


class _ScanBar:
    """The progress bar of a submission: images found and registered so far."""

    def __init__(self, source: str) -> None:
        from tqdm import tqdm

        self.bar: tqdm[None] = tqdm(
            desc=f"scanning {source}",
            unit="img",
            bar_format=BAR_FORMAT,
            file=sys.stderr,
            dynamic_ncols=True,
        )

    def update(self, progress: SubmitProgress) -> None:
        self.bar.n = progress.scanned
        self.bar.set_postfix_str(
            f"{progress.skipped} skipped, {progress.registered} registered", refresh=False
        )
        self.bar.refresh()

    def close(self, *, keep: bool = True) -> None:
        # A failed submission's bar is wiped, so the error message stands alone.
        self.bar.leave = keep
        self.bar.close()


def _sender(broker_url: str) -> tuple[Any, Any]:
    """Return the Celery app and the ``send`` callable of a dispatch pass."""
    from scheduler import celery_sender
    from workers.app import create_app

    app = create_app(broker_url=broker_url)
    return app, celery_sender(app)


@click.command("submit")
@click.argument("source")
@click.option(
    "--collection",
    "name",
    required=True,
    metavar="NAME",
    help="Unique name of the collection; submit the same name again to add new or changed "
    "images, resume a cancelled collection or change its settings.",
)
@click.option(
    "--output",
    required=True,
    metavar="DEST",
    help="Folder or s3://bucket/prefix for the colorized copies; the source tree is mirrored "
    "there. Must not be SOURCE or lie inside it, nor (without --force) contain it or overlap "
    "another collection's source or output.",
)
@size_options
@click.option(
    "--weights",
    type=click.Path(dir_okay=False, path_type=Path),
    help="DDColor checkpoint the collection is meant for; its model name and SHA-256 are "
    "recorded, and only workers running it colorize the collection. Env: PANCHRO_WEIGHTS.",
)
@model_option
@untrained_option
@upsample_option
@output_format_options
@access_file_options
@skip_colour_option
@click.option(
    "--not-before",
    metavar="HH:MM",
    callback=_check_not_before,
    help="Send nothing before this local time on the day of submission (e.g. 22:00 for a "
    "night run); from then on the work goes on until done. `none` removes a stored one.",
)
@click.option(
    "--priority",
    type=int,
    default=0,
    show_default=True,
    metavar="N",
    help="Collections with a higher priority are sent to the workers first, ahead of the "
    "tasks of lower ones already queued (0 to 9; others count as 0 or 9).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Accept an output that contains SOURCE, or overlaps another collection's source or "
    "output; even then no file is replaced that panchro did not write for the same image.",
)
@redo_changed_option
@click.option(
    "--dispatch/--no-dispatch",
    default=True,
    show_default=True,
    help="Send the first tasks to the broker now; with --no-dispatch only `panchro scheduler` "
    "sends them (for a machine that cannot reach the broker).",
)
@click.pass_context
def submit_command(
    ctx: click.Context,
    source: str,
    name: str,
    output: str,
    preset: str | None,
    size: int | None,
    weights: Path | None,
    model: str | None,
    untrained: bool,
    upsample: str,
    output_format: str | None,
    format_alias: str | None,
    derivatives: tuple[DerivativeSpec, ...],
    sidecars: bool,
    skip_colour: bool | None,
    not_before: str | None,
    priority: int,
    force: bool,
    redo_changed: bool,
    dispatch: bool,
) -> None:
    """Register the images of SOURCE (a folder or s3://bucket/prefix) as collection NAME.

    The source is scanned and every file is recorded in the catalog: images as pending,
    other files (empty, not an image, a link out of SOURCE...) as skipped with the reason,
    which the summary names; hidden and system files are only counted. One dispatch pass
    sends the first tasks to the broker; `panchro scheduler` sends the rest as workers free
    up. Running it again is safe: unchanged files are left alone (a file only touched,
    with the same sha256, too), and a skipped file that was fixed (replaced by a valid
    image) is colorized. Settings not given again keep the collection's stored values;
    the summary names each one that changed, old -> new. Changed settings apply to images
    not done yet; --redo-changed also colorizes again the done ones made otherwise.

    On SQLite the catalog schema is created on first use; a PostgreSQL catalog must be
    created with `panchro db upgrade` first.

    \b
    Examples:
      panchro submit s3://archive/scans/1920s --collection 1920s \\
          --output s3://archive/colour/1920s --preset portrait --not-before 22:00
      panchro submit ./scans --collection family --output ./colour --size 768
      panchro submit ./scans --collection demo --output ./colour --untrained \\
          --upsample nearest --output-format png

    Workers colorize the collection as recorded here: with its checkpoint (--weights; or
    --model, the model they must run; --untrained: only `panchro workers --untrained`),
    input size, --upsample and --output-format.

    Exit status: 0; 1 on an error (also when the images were registered but the broker
    could not be reached); 2 on a bad option; 130 when Ctrl-C interrupted the scan.
    """
    from catalog import SKIP_COLOUR_OPTION
    from panchro.context import load_settings
    from scheduler import CollectionSettings, check_locations, shared_max_in_flight
    from scheduler import submit as submit_collection
    from storage.registry import open_storage

    input_size = size_from(preset, size)
    if untrained and weights is not None:
        raise click.UsageError("--untrained and --weights exclude each other: give one of them")
    settings = load_settings(ctx, weights=weights)
    model_name, sha256 = _checkpoint(settings.weights, model=model, untrained=untrained)
    collection_settings = CollectionSettings(
        preset=preset,
        input_size=input_size,
        model_name=model_name,
        checkpoint_sha256=sha256,
        precision=settings.precision,
        upsample=upsample,
        untrained=untrained,
        output_format=chosen_output_format(output_format, format_alias),
        not_before=not_before,
        priority=priority,
        options={
            **collection_options_for(derivatives, sidecars),
            **({} if skip_colour is None else {SKIP_COLOUR_OPTION: skip_colour}),
        },
        given=given_settings(ctx, settings),
    )
    with fail_on("opening the source"):
        storage = open_storage(source, settings.storage_options())
    with fail_on("checking the output"):
        check_locations(source, output, force=force)
    app, send = _sender(settings.broker_url) if dispatch else (None, None)
    bar: _ScanBar | None = None
    try:
        with open_catalog(settings.database_url, create=True) as sessions:
            bar = _ScanBar(source)
            with fail_on(f"submitting {source}"):
                summary = submit_collection(
                    sessions,
                    name=name,
                    source=source,
                    output=output,
                    storage=storage,
                    send=send,
                    # The running scheduler's limit, so both keep to one.
                    max_in_flight=shared_max_in_flight(app, settings.max_in_flight),
                    settings=collection_settings,
                    on_progress=bar.update,
                    force=force,
                    redo_changed=redo_changed,
                )
        bar.close()
    except KeyboardInterrupt:
        if bar is not None:
            bar.close(keep=False)
        click.echo(
            "interrupted: the images registered so far stay registered; submit again to finish",
            err=True,
        )
        ctx.exit(INTERRUPTED_EXIT)
    except BaseException:
        if bar is not None:
            bar.close(keep=False)
        raise
    finally:
        if app is not None:
            app.close()
    if summary.settings is not None:  # what the collection holds, given now or kept
        stored = summary.settings
        model_name, sha256, untrained = (
            stored.model_name,
            stored.checkpoint_sha256,
            stored.untrained,
        )
    described = model_name or "any"
    if sha256:
        described += f", sha256 {sha256}"
    elif untrained:
        described += ", UNTRAINED random weights"
    click.echo(
        render_summary(
            summary,
            model=described if model_name or untrained else None,
            dispatching=dispatch,
            redo=redo_changed,
        )
    )
    if summary.dispatch_error is not None:
        raise click.ClickException(
            f"dispatching failed: {summary.dispatch_error.rstrip('.')}. The images stay "
            "registered as pending: `panchro scheduler` (or submitting again) sends them once "
            "the broker is reachable"
        )
