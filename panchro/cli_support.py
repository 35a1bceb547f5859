"""Small helpers shared by the CLI commands: library errors as one-line user errors."""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

#: Errors of the libraries that are a user's to fix, shown without a traceback: their
#: module and class name. Named, not imported, so that ``panchro --help`` imports none of
#: the libraries (``workers.errors`` imports Celery); an error can only be one of them if
#: its module was imported.
USER_ERRORS: tuple[tuple[str, str], ...] = (
    ("catalog.errors", "CatalogError"),
    ("ddcolor.errors", "DDColorError"),
    ("exports.errors", "ExportError"),
    ("scheduler.errors", "SchedulerError"),
    ("storage.errors", "StorageError"),
    ("workers.errors", "WorkerSetupError"),
)


def user_error_types() -> tuple[type[Exception], ...]:
    """The classes of ``USER_ERRORS`` whose module is imported.

    Returns:
        The classes; one whose module was never imported cannot have been raised.
    """
    return tuple(
        getattr(sys.modules[module], name) for module, name in USER_ERRORS if module in sys.modules
    )


#: The start of a URI (``s3://``, ``ftp://``) once ``pathlib`` has folded its ``//``.
_URI_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/")


def local_path_only(_ctx: click.Context, param: click.Parameter, value: Path) -> Path:
    """Click callback: refuse a URI where only a local file or folder will do.

    Raises:
        click.BadParameter: For ``s3://...`` and other ``scheme://`` locations, which
            would otherwise become a local file named ``s3:``.
    """
    if _URI_START.match(str(value)):
        raise click.BadParameter(
            f"{param.human_readable_name} must be a local file or folder, not a URI (for "
            "s3:// use `panchro run SOURCE --output s3://bucket/prefix`)"
        )
    return value


@contextmanager
def fail_on(doing: str) -> Iterator[None]:
    """Show a library error raised inside the block as a one-line CLI error.

    Driver errors (psycopg's "is the server running?") span several lines; a CLI error
    is one line, every run of whitespace made one space.

    Args:
        doing: What the command was doing, for the message ("reading the checkpoint").

    Raises:
        click.ClickException: Wrapping any error listed in ``USER_ERRORS``.
    """
    try:
        yield
    except Exception as exc:
        if not isinstance(exc, user_error_types()):
            raise
        raise click.ClickException(one_line(f"{doing}: {exc}")) from exc


def one_line(text: str) -> str:
    """Return ``text`` on one line: every run of whitespace (newlines too) made one space.

    Args:
        text: A message, perhaps a driver's multi-line one.

    Returns:
        The message on one line.
    """
    return " ".join(text.split())
