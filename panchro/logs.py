"""How every panchro command logs: plain text or one JSON object per line.

The ``panchro`` group configures logging once for every command (:func:`configure_logging`);
``--log-format`` and ``--loglevel`` are also options of the long-running commands
(``workers``, ``scheduler``, ``run``), so that ``panchro workers --log-format json`` works
as well as ``panchro --log-format json workers`` and ``PANCHRO_LOG_FORMAT=json``.

A JSON line holds ``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, and
the structured fields that a log call passes with ``extra=`` (:data:`FIELDS`)::

    logger.info("collection %s image %s: done", name, image_id,
                extra={"collection": name, "image_id": image_id, "duration_s": 1.2})
    {"timestamp": "2026-12-03T04:31:07.412+00:00", "level": "INFO",
     "logger": "workers.process", "message": "collection 1920s image 7: done",
     "collection": "1920s", "image_id": 7, "duration_s": 1.2}

Celery replaces the root logger's handlers in a worker (``worker_hijack_root_logger``),
and again in each pool process it forks. :func:`json_in_celery` connects to the
``after_setup_logger`` and ``after_setup_task_logger`` signals, which Celery sends after
each of those set-ups, and puts the JSON formatter on the handlers it installed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

import click

#: Formats ``--log-format`` accepts; ``text`` is the default.
LOG_FORMATS = ("text", "json")
#: Level names ``--loglevel`` accepts, in any case.
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
#: Line format of ``text`` logging.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Fields of a log record (passed with ``extra=``) that a JSON line carries as its own keys.
FIELDS = (
    "collection",
    "collection_id",
    "image_id",
    "status",
    "device",
    "duration_s",
    "input_size",
    "worker",
    "task_id",
)
#: Marks the handler that :func:`configure_logging` installed, to reconfigure it later.
_OWN_HANDLER = "_panchro_handler"
#: The format this process logs in, for the processes it starts.
_CURRENT = {"format": "text"}

F = TypeVar("F", bound=Callable[..., Any])


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object on one line (see the module's text)."""

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        """Build the formatter.

        Args:
            static: Fields added to every line, e.g. ``{"worker": "gpu0@render-07"}``.
        """
        super().__init__()
        self._static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object.

        Args:
            record: The log record.

        Returns:
            One line of JSON, without the newline.
        """
        entry: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.processName,
        }
        entry.update(self._static)
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def make_formatter(
    log_format: str, *, text_format: str = TEXT_FORMAT, static: Mapping[str, Any] | None = None
) -> logging.Formatter:
    """Return the formatter of a ``--log-format``.

    Args:
        log_format: ``text`` or ``json``.
        text_format: The ``logging`` format string of ``text``.
        static: Fields added to every JSON line.

    Returns:
        The formatter.

    Raises:
        ValueError: For an unknown format.
    """
    if log_format == "json":
        return JsonFormatter(static)
    if log_format == "text":
        return logging.Formatter(text_format)
    raise ValueError(f"unknown log format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")


def configure_logging(*, level: int | str | None = None, log_format: str | None = None) -> None:
    """Configure the root logger of a command: one handler on stderr.

    The handler is added only where the root logger has none (a test runner may have
    its own); later calls change its level or format.

    Args:
        level: Level of the root logger (a number or a name in any case); None keeps it.
        log_format: ``text`` or ``json``; None keeps the current one (text at first).

    Raises:
        ValueError: For an unknown format.
    """
    root = logging.getLogger()
    if not root.handlers:
        stream = logging.StreamHandler(sys.stderr)
        stream.setFormatter(make_formatter("text"))
        setattr(stream, _OWN_HANDLER, True)
        root.addHandler(stream)
    if log_format is not None:
        formatter = make_formatter(log_format)
        _CURRENT["format"] = log_format
        # Python's warnings go to stderr unformatted; as log records they are JSON too.
        logging.captureWarnings(log_format == "json")
        for handler in root.handlers:
            if getattr(handler, _OWN_HANDLER, False):
                handler.setFormatter(formatter)
    if level is not None:
        root.setLevel(level.upper() if isinstance(level, str) else level)


def current_log_format() -> str:
    """Return the format this process logs in (``text`` unless configured otherwise)."""
    return _CURRENT["format"]


def json_in_celery(static: Mapping[str, Any] | None = None) -> None:
    """Make a Celery worker, and every pool process it forks, log JSON lines.

    Call it before ``app.worker_main()``; the pool processes inherit the connection.

    Args:
        static: Fields added to every line, e.g. the worker's node name.
    """
    from celery import signals

    def use_json(logger: logging.Logger | None = None, **_: Any) -> None:
        for handler in [] if logger is None else logger.handlers:
            handler.setFormatter(JsonFormatter(static))

    # weak=False: the receiver is a closure that nothing else keeps alive.
    signals.after_setup_logger.connect(use_json, weak=False)
    signals.after_setup_task_logger.connect(use_json, weak=False)
    _celery_notices_as_json(static)


def _celery_notices_as_json(static: Mapping[str, Any] | None) -> None:
    """Turn the notices a Celery worker writes from its signal handlers into JSON lines.

    ``celery.apps.worker.safe_say`` writes "worker: Warm shutdown (MainProcess)" and the
    like straight to a file descriptor, bypassing logging (a signal handler must not take
    logging's locks). Its replacement keeps to one ``os.write`` of an already built line.
    """
    from celery.apps import worker as celery_worker

    if not callable(getattr(celery_worker, "safe_say", None)):
        return
    formatter = JsonFormatter(static)

    def say(msg: str, f: Any = sys.__stderr__) -> None:
        record = logging.LogRecord("celery.apps.worker", logging.WARNING, "", 0, msg, (), None)
        if f is not None and hasattr(f, "fileno"):
            with contextlib.suppress(OSError):  # a lost notice must not stop the shutdown
                os.write(f.fileno(), f"{formatter.format(record)}\n".encode())

    celery_worker.safe_say = say


def _set_format(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not ctx.resilient_parsing:
        configure_logging(log_format=value.lower())
    return value.lower() if value is not None else None


def log_format_option(function: F) -> F:
    """Click option ``--log-format text|json`` (env ``PANCHRO_LOG_FORMAT``), applied at once."""
    option = click.option(
        "--log-format",
        type=click.Choice(LOG_FORMATS, case_sensitive=False),
        envvar="PANCHRO_LOG_FORMAT",
        callback=_set_format,
        expose_value=False,
        is_eager=True,
        help="Log lines as text, or as one JSON object per line (timestamp, level, logger, "
        "message, collection, image_id, device, duration_s). Env: PANCHRO_LOG_FORMAT.",
    )
    return option(function)


def loglevel_option(default: str = "INFO", help_text: str = "Log level.") -> Callable[[F], F]:
    """Click option ``--loglevel`` that accepts any case and passes on upper case.

    Args:
        default: The default level name.
        help_text: The option's help.

    Returns:
        The decorator.
    """
    return click.option(
        "--loglevel",
        type=click.Choice(LOG_LEVELS, case_sensitive=False),
        callback=lambda _ctx, _param, value: value.upper(),
        default=default,
        show_default=True,
        help=f"{help_text} One of {', '.join(LOG_LEVELS)} (any case).",
    )
