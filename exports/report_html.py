"""The server-rendered parts of a report: header, numbers, settings, failures, footer.

Every value from the catalog passes through :func:`html.escape` (file names and error
messages come from the outside world); the contact sheet is drawn by the page's script
from JSON (see ``exports.report``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from html import escape
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from catalog.reports import CollectionReport, FailureGroup

__all__ = ["format_duration", "render_footer", "render_header", "render_summary"]

#: Order of the status counts.
COUNT_ORDER: Final = ("done", "failed", "skipped", "cancelled", "running", "queued", "pending")
#: What each grouped status is called in a section title.
GROUP_TITLES: Final = {"failed": "Failures", "skipped": "Skipped files"}


def format_duration(seconds: float | None) -> str:
    """Format a duration compactly: ``45 s``, ``6 min 17 s``, ``2 h 05 min``, ``3 d 04 h``.

    Args:
        seconds: The duration; None when unknown.

    Returns:
        The text, or ``-``.
    """
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f} s"
    whole = round(seconds)
    minutes, secs = divmod(whole, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def _when(value: datetime | None) -> str:
    return "-" if value is None else value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _text(value: Any) -> str:
    if value is None or value == "" or value == {}:
        return "-"
    if isinstance(value, datetime):
        return _when(value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _rows(rows: Iterable[tuple[str, str]]) -> str:
    """Table rows of (label, HTML) pairs."""
    return "".join(f"<tr><th>{escape(label)}</th><td>{cell}</td></tr>" for label, cell in rows)


def render_header(report: CollectionReport, *, generated_at: datetime, software: str) -> str:
    """The page's header: the collection, when the report was made, loud warnings.

    Args:
        report: The collection's aggregates.
        generated_at: When the report was made.
        software: Name and version of what made it.

    Returns:
        HTML.
    """
    parts = [
        f"<header><h1>Collection {escape(report.name)}</h1>",
        f'<div class="muted">Report of {escape(_when(generated_at))} by {escape(software)}; '
        f"collection {escape(str(report.settings['status']))}, "
        f"{report.total:,} images.</div>",
    ]
    if report.untrained:
        parts.append(
            '<div class="warning" id="untrained">Untrained: this collection ran with random '
            "weights. Its colours are meaningless, a demonstration and not a colorization; "
            "its outputs and catalog rows say so.</div>"
        )
    expected = report.settings.get("checkpoint_sha256")
    others = {s.checkpoint_sha256 for s in report.as_run} - {expected}
    if expected and others:
        parts.append(
            '<div class="warning" id="other-weights">Some images were made with other '
            "weights than the collection's checkpoint (see As run).</div>"
        )
    parts.append("</header>")
    return "\n".join(parts)


def _numbers(report: CollectionReport) -> str:
    cells = [f'<div class="number" data-count="total"><b>{report.total:,}</b>images</div>']
    cells += [
        f'<div class="number" data-count="{status}"><b>{report.counts.get(status, 0):,}</b>'
        f"{status}</div>"
        for status in COUNT_ORDER
    ]
    return (
        f'<section id="counts"><h2>Images</h2><div class="numbers">{"".join(cells)}</div></section>'
    )


def _times(report: CollectionReport) -> str:
    elapsed = None
    if report.first_started and report.last_finished:
        elapsed = (report.last_finished - report.first_started).total_seconds()
    rate = "-"
    if elapsed and elapsed > 0 and report.finished:
        per_hour = report.finished / elapsed * 3600.0
        rate = f"{per_hour:,.1f} images per hour ({per_hour / 60.0:,.2f} per minute)"
    done = report.counts.get("done", 0)
    mean = report.busy_seconds / done if report.busy_seconds is not None and done else None
    rows = [
        ("First started", escape(_when(report.first_started))),
        ("Last finished", escape(_when(report.last_finished))),
        ("Elapsed", escape(format_duration(elapsed))),
        ("Throughput (done and failed)", escape(rate)),
        ("Per done image", escape(format_duration(mean))),
        ("Busy time (done images)", escape(format_duration(report.busy_seconds))),
    ]
    return f'<section id="times"><h2>Time</h2><table>{_rows(rows)}</table></section>'


def _settings(report: CollectionReport) -> str:
    s = report.settings
    size = _text(s.get("input_size"))
    if s.get("preset"):
        size += f" (preset {s['preset']})"
    weights = (
        "random, untrained: the colours are meaningless"
        if report.untrained
        else "trained checkpoint"
    )
    rows = [
        ("Source", f"<code>{escape(_text(s.get('source')))}</code>"),
        ("Output", f"<code>{escape(_text(s.get('output')))}</code>"),
        ("Model", escape(_text(s.get("model_name")))),
        (
            "Checkpoint SHA-256",
            f'<span class="hash">{escape(_text(s.get("checkpoint_sha256")))}</span>',
        ),
        ("Weights", escape(weights)),
        ("Input size (px)", escape(size)),
        ("Precision", escape(_text(s.get("precision")))),
        ("Upsampling", escape(_text(s.get("upsample")))),
        ("Options", f"<code>{escape(_text(s.get('options')))}</code>"),
        ("Not before (local time)", escape(_text(s.get("not_before")))),
        ("Priority", escape(_text(s.get("priority")))),
        ("Submitted", escape(_text(s.get("created_at")))),
    ]
    return (
        '<section id="settings"><h2>Settings and checkpoint</h2>'
        f"<table>{_rows(rows)}</table></section>"
    )


def _as_run(report: CollectionReport) -> str:
    if not report.as_run:
        return ""
    head = "<tr><th>Images</th><th>Model</th><th>Checkpoint SHA-256</th><th>Input size</th>"
    head += "<th>Precision</th><th>Upsampling</th></tr>"
    body = "".join(
        f'<tr><td class="num">{shape.count:,}</td><td>{escape(_text(shape.model_name))}</td>'
        f'<td class="hash">{escape(_text(shape.checkpoint_sha256))}</td>'
        f'<td class="num">{escape(_text(shape.input_size))}</td>'
        f"<td>{escape(_text(shape.precision))}</td><td>{escape(_text(shape.upsample))}</td></tr>"
        for shape in report.as_run
    )
    return (
        '<section id="as-run"><h2>As run</h2><p class="muted">How the done images were '
        "actually made (sizes after any out-of-memory retry).</p>"
        f"<table>{head}{body}</table></section>"
    )


def _group_rows(groups: Iterable[FailureGroup]) -> str:
    from catalog.reasons import describe_reason

    rows = []
    for group in groups:
        reason = describe_reason(group.code)
        examples = "".join(
            f'<li><code>{escape(example.relative_path)}</code> <span class="muted">#'
            f"{example.image_id}</span><br>{escape(example.last_error or '')}</li>"
            for example in group.examples
        )
        rows.append(
            f'<tr data-code="{escape(group.code)}"><td><code>{escape(group.code)}</code></td>'
            f'<td class="num">{group.count:,}</td>'
            f"<td>{escape(reason.meaning)}<br>"
            f'<span class="muted">{escape(reason.action)}</span></td>'
            f'<td><ul class="examples">{examples}</ul></td></tr>'
        )
    return "".join(rows)


def _failures(report: CollectionReport) -> str:
    parts = []
    for status, title in GROUP_TITLES.items():
        groups = [group for group in report.failures if group.status == status]
        if not groups:
            continue
        parts.append(
            f'<section id="{status}-groups"><h2>{title} by code</h2><table>'
            "<tr><th>Code</th><th>Images</th><th>What it means, what to do</th>"
            "<th>Examples</th></tr>"
            f"{_group_rows(groups)}</table></section>"
        )
    if report.other_failures:
        parts.append(
            f'<p class="muted">{report.other_failures:,} more images in smaller groups; '
            "<code>panchro list</code> names them all.</p>"
        )
    return "\n".join(parts)


def render_summary(report: CollectionReport) -> str:
    """The numbers, times, settings and failure groups of a collection.

    Args:
        report: The collection's aggregates.

    Returns:
        HTML sections.
    """
    return "\n".join(
        part
        for part in (
            _numbers(report),
            _times(report),
            _settings(report),
            _as_run(report),
            _failures(report),
        )
        if part
    )


def render_footer(notes: Iterable[str]) -> str:
    """The page's footer: how its links work.

    Args:
        notes: Sentences, plain text.

    Returns:
        HTML.
    """
    return " ".join(f"<p>{escape(note)}</p>" for note in notes)
