"""``panchro status``: how far collections are, once or live with a progress bar.

The numbers come from ``catalog.collection_status()``; this module only formats them. The
``--json`` output is that function's ``StatusReport.to_dict()``, whose shape is stable::

    {"generated_at": "2024-05-01T06:00:00+00:00", "window_s": 900.0,
     "collections": [{"id": 1, "name": "1920s", "status": "active", "priority": 0,
                      "not_before": null, "untrained": false, "source": "...",
                      "output": "...", "created_at": "...",
                      "counts": {"pending": 10, "queued": 2, "running": 1, "done": 100,
                                 "failed": 5, "skipped": 2, "cancelled": 0},
                      "total": 120, "remaining": 13, "done_in_window": 30,
                      "finished_in_window": 31, "throughput_per_min": 2.07,
                      "eta_s": 377.4,
                      "top_failures": [{"code": "decode.truncated", "count": 5,
                                        "reason": "The file ends before ...",
                                        "action": "Copy or export ...",
                                        "example": {"id": 7, "path": "box1/a.tif",
                                                    "error": "box1/a.tif: cannot ..."}}]}]}

Failures are grouped by their stable code; ``docs/failures.md`` lists every code.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import click

from panchro.cli_support import fail_on
from panchro.commands._support import INTERRUPTED_EXIT, open_catalog
from panchro.options import json_options, wants_json

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker
    from tqdm import tqdm

    from catalog.status import CollectionProgress, StatusReport

logger = logging.getLogger(__name__)

#: Seconds between two refreshes of ``--watch`` unless ``--interval`` says otherwise.
DEFAULT_INTERVAL_S = 5.0
#: Shortest refresh interval accepted, in seconds.
MIN_INTERVAL_S = 0.1
#: Throughput, in images per minute, from which it is shown per second instead.
PER_SECOND_FROM = 120.0
#: Layout of the ``--watch`` progress bar; throughput and ETA come from the catalog.
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]"
#: Seconds past the task time limit after which a running image counts as having no
#: live worker, for ``--watch`` to end.
STALE_MARGIN_S = 60.0
#: Order in which image counts are listed.
COUNT_ORDER = ("done", "failed", "skipped", "cancelled", "running", "queued", "pending")


def format_duration(seconds: float | None) -> str:
    """Format a duration compactly: ``45s``, ``6m17s``, ``2h05m``, ``3d04h``.

    Args:
        seconds: The duration; None when it is unknown.

    Returns:
        The text, or ``-`` for an unknown duration.
    """
    if seconds is None:
        return "-"
    whole = max(0, round(seconds))
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def format_rate(per_min: float | None) -> str:
    """Format a throughput: images per minute, or per second when that reads better.

    Args:
        per_min: Images per minute; None when nothing finished lately.

    Returns:
        The text, e.g. ``2.1 img/min`` or ``35.0 img/s``, or ``-``.
    """
    if per_min is None:
        return "-"
    if per_min >= PER_SECOND_FROM:
        return f"{per_min / 60.0:.1f} img/s"
    return f"{per_min:.1f} img/min"


def _window_text(seconds: float) -> str:
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min" if minutes and not rest else format_duration(seconds)


def _counts_text(progress: CollectionProgress) -> str:
    parts = [f"{progress.counts[key]} {key}" for key in COUNT_ORDER if progress.counts.get(key)]
    return f"{progress.total}" + (": " + ", ".join(parts) if parts else "")


def render_collection(progress: CollectionProgress, window_s: float) -> str:
    """Describe one collection in a few aligned lines.

    Args:
        progress: The collection's progress.
        window_s: Span over which its throughput was measured, in seconds.

    Returns:
        The text, without a trailing newline.
    """
    finished = progress.total - progress.remaining
    share = f" ({100.0 * finished / progress.total:.0f}%)" if progress.total else ""
    lines = [
        f"{progress.name}: {progress.status}, priority {progress.priority}",
        f"  source    {progress.source}",
        f"  output    {progress.output}",
        f"  images    {_counts_text(progress)}",
        f"  finished  {finished} of {progress.total}{share}",
        f"  speed     {format_rate(progress.throughput_per_min)} over the last "
        f"{_window_text(window_s)}, ETA {format_duration(progress.eta_s)}",
    ]
    if progress.not_before:
        lines.append(f"  window    nothing is sent before {progress.not_before} local time")
    if progress.untrained:
        lines.append("  WARNING   random weights: a demonstration, the colours are meaningless")
    skipped = progress.counts.get("skipped", 0)
    if skipped:
        lines.append(
            f"  skipped   {skipped} not colorized (empty, not an image...): "
            f"panchro list {progress.name} --status skipped"
        )
    if progress.top_failures:
        lines.extend(_failures_lines(progress))
    return "\n".join(lines)


def _failures_lines(progress: CollectionProgress) -> list[str]:
    """The most common failure codes: count, code, meaning, action and an example."""
    lines = [f"  failures  by code; panchro list {progress.name} --code CODE lists them"]
    failures = progress.top_failures
    width = len(str(failures[0].count))
    code_width = max(len(f.code) for f in failures)
    indent = " " * (4 + width + 2 + code_width + 2)
    for f in failures:
        action = f.action.replace("NAME", progress.name)
        lines.append(f"    {f.count:>{width}}  {f.code:<{code_width}}  {f.reason}")
        lines.append(f"{indent}{action}")
        lines.append(f"{indent}e.g. {' '.join(f.example.path.split())}")
    return lines


def render_table(report: StatusReport) -> str:
    """Describe every collection, one row each.

    Args:
        report: Progress of all collections.

    Returns:
        An aligned table with a header row, without a trailing newline.
    """
    header = ("COLLECTION", "STATUS", "IMAGES", "DONE", "FAILED", "OPEN", "SPEED", "ETA")
    rows = [header] + [
        (
            p.name,
            p.status,
            str(p.total),
            str(p.counts.get("done", 0)),
            str(p.counts.get("failed", 0)),
            str(p.remaining),
            format_rate(p.throughput_per_min),
            format_duration(p.eta_s),
        )
        for p in report.collections
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if column < 2 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def render_report(report: StatusReport, *, detailed: bool) -> str:
    """Describe a status report as text.

    Args:
        report: The report.
        detailed: Describe each collection in full rather than one row each.

    Returns:
        The text, without a trailing newline.
    """
    if not report.collections:
        return "no collections yet: submit one with `panchro submit`"
    if detailed:
        return "\n\n".join(render_collection(p, report.window_s) for p in report.collections)
    return render_table(report)


def _read_report(sessions: sessionmaker[Session], name: str | None) -> StatusReport:
    from catalog import collection_status, transaction

    with transaction(sessions) as db:
        return collection_status(db, name)


def _is_finished(report: StatusReport) -> bool:
    return all(progress.remaining == 0 for progress in report.collections)


def _is_stalled(
    sessions: sessionmaker[Session], name: str | None, report: StatusReport, stale_after: float
) -> bool:
    """Tell whether nothing left can change: only running images, all past the time limit."""
    from catalog import count_progressing, transaction

    if any(p.counts.get("pending") or p.counts.get("queued") for p in report.collections):
        return False
    since = datetime.now(UTC) - timedelta(seconds=stale_after)
    with transaction(sessions) as db:
        return count_progressing(db, name, running_since=since) == 0


def _postfix(report: StatusReport) -> str:
    collections = report.collections
    remaining = sum(p.remaining for p in collections)
    rates = [p.throughput_per_min for p in collections if p.throughput_per_min]
    rate = sum(rates) if rates else None
    eta = 0.0 if remaining == 0 else (remaining / rate * 60.0 if rate else None)
    parts = [format_rate(rate), f"ETA {format_duration(eta)}"]
    failed = sum(p.counts.get("failed", 0) for p in collections)
    if failed:
        parts.append(f"{failed} failed")
    held = sorted({p.not_before for p in collections if p.not_before and p.remaining})
    if held:
        parts.append(f"window {', '.join(held)}")
    return ", ".join(parts)


def _draw(bar: tqdm[None] | None, report: StatusReport, name: str | None) -> tqdm[None]:
    from tqdm import tqdm

    total = sum(p.total for p in report.collections)
    finished = total - sum(p.remaining for p in report.collections)
    if bar is None:
        desc = name or f"{len(report.collections)} collections"
        bar = tqdm(
            total=total,
            initial=finished,
            desc=desc,
            unit="img",
            bar_format=BAR_FORMAT,
            file=sys.stderr,
            dynamic_ncols=True,
        )
    # Totals move: a new scan adds images, a retry sends finished ones back.
    bar.total = total
    bar.n = finished
    bar.set_postfix_str(_postfix(report), refresh=False)
    bar.refresh()
    return bar


def _watch(
    sessions: sessionmaker[Session],
    name: str | None,
    *,
    interval: float,
    as_json: bool,
    stale_after: float,
) -> StatusReport:
    """Poll until nothing is pending, queued or running, or nothing can change any more.

    Images still ``running`` after ``stale_after`` seconds (more than the task time
    limit) have no live worker; the watch ends with a hint instead of waiting for them.

    Returns:
        The last report.
    """
    from catalog.errors import DatabaseUnavailable

    bar: tqdm[None] | None = None
    report = _read_report(sessions, name)
    try:
        while True:
            if as_json:
                click.echo(json.dumps(report.to_dict()))
            else:
                bar = _draw(bar, report, name)
            if _is_finished(report):
                return report
            if _is_stalled(sessions, name, report, stale_after):
                # The last images may have finished since the report was read: then
                # nothing is stalled, and the finished report is shown.
                report = _read_report(sessions, name)
                if _is_finished(report):
                    continue
                running = sum(p.counts.get("running", 0) for p in report.collections)
                click.echo(
                    f"nothing can progress: {running} image(s) still running, each for longer "
                    f"than the time limit ({stale_after:g} s) with no live worker; "
                    f"`panchro retry {name or 'NAME'} --stale` hands them back",
                    err=True,
                )
                return report
            time.sleep(interval)
            try:
                report = _read_report(sessions, name)
            except DatabaseUnavailable as exc:
                # A watch runs for hours; a database restart should not end it.
                logger.warning("collection %s: status not refreshed: %s", name or "*", exc)
    finally:
        if bar is not None:
            bar.close()


@click.command("status")
@click.argument("name", required=False)
@click.option(
    "--watch",
    is_flag=True,
    help="Show a live progress bar (throughput, ETA) until nothing is pending, queued or "
    "running, or only images running for longer than the time limit (no live worker) are "
    "left; Ctrl-C stops watching, not the work.",
)
@json_options(
    "Print the report as JSON (shape below); with --watch, one JSON object per line "
    "at every refresh."
)
@click.option(
    "--interval",
    type=click.FloatRange(min=MIN_INTERVAL_S),
    default=DEFAULT_INTERVAL_S,
    show_default=True,
    metavar="SECONDS",
    help="Time between two refreshes of --watch.",
)
@click.pass_context
def status_command(
    ctx: click.Context,
    name: str | None,
    watch: bool,
    as_json: bool,
    report_format: str | None,
    interval: float,
) -> None:
    """Show how far collection NAME is, or every collection without NAME.

    Counts per status, throughput over the last 15 minutes, ETA and the most common failure
    reasons. With --watch a progress bar follows the collection until nothing is left to do,
    then the final report is printed.

    \b
    Examples:
      panchro status                      every collection, one line each
      panchro status 1920s --watch        follow one collection live
      panchro status 1920s --json | jq '.collections[0].counts'

    \b
    JSON shape (stable; times in ISO 8601 UTC, speeds in images per minute):
      {"generated_at": str, "window_s": float,
       "collections": [{"id": int, "name": str, "status": "active|cancelled|done",
         "priority": int, "not_before": "HH:MM"|null, "untrained": bool,
         "source": str, "output": str, "created_at": str,
         "counts": {"pending": int, "queued": int, "running": int, "done": int,
                    "failed": int, "skipped": int, "cancelled": int},
         "total": int, "remaining": int, "done_in_window": int,
         "finished_in_window": int, "throughput_per_min": float|null,
         "eta_s": float|null,
         "top_failures": [{"code": str, "count": int, "reason": str, "action": str,
                           "example": {"id": int, "path": str, "error": str}}]}]}

    Failures are grouped by code (docs/failures.md lists them), most frequent first.

    Exit status: 0, or 130 when Ctrl-C stopped --watch.
    """
    from panchro.context import load_settings

    settings = load_settings(ctx)
    as_json = wants_json(as_json, report_format)
    with open_catalog(settings.database_url) as sessions, fail_on("reading the status"):
        try:
            if watch:
                stale_after = settings.time_limit + STALE_MARGIN_S
                report = _watch(
                    sessions, name, interval=interval, as_json=as_json, stale_after=stale_after
                )
            else:
                report = _read_report(sessions, name)
        except KeyboardInterrupt:
            click.echo("stopped watching; the work goes on", err=True)
            ctx.exit(INTERRUPTED_EXIT)
    if as_json and not watch:
        click.echo(json.dumps(report.to_dict(), indent=2))
    elif not as_json:
        click.echo(render_report(report, detailed=name is not None))
