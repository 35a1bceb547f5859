"""Start-up checks of ``panchro workers``: fail fast, before any worker takes a message.

A worker that cannot work must not take images: each one it took would fail, or at best
go back to the queue. ``panchro workers`` therefore checks, in this order and before it
starts a single worker, that

1. the checkpoint can be loaded: its layout is read without torch (``--untrained``
   skips this);
2. the catalog database answers and holds the schema this panchro needs;
3. the broker answers;
4. the stores of the active collections let this host work: each source can be listed
   and its first object read, each output can be written. On S3 the write check starts
   a multipart upload and aborts it, so nothing becomes visible; on a local disk it
   creates and removes a temporary file.

The first failure ends the command with one line that says what is wrong and how to fix
it (:class:`click.ClickException`, exit status 1).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click

from panchro.cli_support import one_line
from panchro.commands._support import open_catalog
from panchro.settings import Settings, redact_url

__all__ = [
    "BROKER_TIMEOUT_S",
    "StoreLocation",
    "check_broker",
    "check_catalog",
    "check_storage",
    "check_weights",
    "preflight",
]

logger = logging.getLogger(__name__)

#: Seconds the broker may take to answer the start-up check.
BROKER_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True)
class StoreLocation:
    """A source or output the workers will use, and the collection that names it.

    Attributes:
        collection: The collection's name, for messages.
        uri: The source or output location.
        write: Whether workers write there (an output) or only read (a source).
    """

    collection: str
    uri: str
    write: bool


def check_weights(weights: Path | None, *, untrained: bool) -> None:
    """Check that the checkpoint is a DDColor the workers can load, without torch.

    Args:
        weights: The configured checkpoint file.
        untrained: Random weights were asked for: nothing to check.

    Raises:
        click.ClickException: If there is no checkpoint or it cannot be loaded.
    """
    if untrained:
        return
    if weights is None:
        raise click.ClickException(
            "no checkpoint: set PANCHRO_WEIGHTS or --weights (see `panchro doctor`), "
            "or --untrained for random weights"
        )
    from ddcolor.checkpoints import identify_checkpoint
    from ddcolor.errors import CheckpointError

    try:
        identify_checkpoint(weights)
    except (CheckpointError, OSError) as exc:
        raise click.ClickException(
            one_line(f"cannot load the checkpoint: {exc}; fix PANCHRO_WEIGHTS or --weights")
        ) from exc


def check_catalog(database_url: str) -> list[StoreLocation]:
    """Check that the catalog answers and is migrated; list the locations workers will use.

    Args:
        database_url: SQLAlchemy URL of the catalog.

    Returns:
        The source and output of every active collection with images left to colorize.

    Raises:
        click.ClickException: If the catalog cannot be reached or is not at the schema
            this panchro needs.
    """
    from sqlalchemy import exists, select

    from catalog import Collection, CollectionStatus, Image, ImageStatus, transaction
    from panchro.cli_support import fail_on

    # Only collections with images still to colorize: an old finished one whose bucket
    # is gone must not keep the workers from starting.
    open_images = exists().where(
        Image.collection_id == Collection.id,
        Image.status.in_([ImageStatus.PENDING, ImageStatus.QUEUED, ImageStatus.RUNNING]),
    )
    query = select(Collection).where(Collection.status == CollectionStatus.ACTIVE, open_images)
    with open_catalog(database_url) as sessions, fail_on("reading the catalog"):
        with transaction(sessions) as db:
            active = list(db.scalars(query.order_by(Collection.id)))
            return [
                location
                for collection in active
                for location in (
                    StoreLocation(collection.name, collection.source, write=False),
                    StoreLocation(collection.name, collection.output, write=True),
                )
            ]


def check_broker(broker_url: str, *, timeout: float = BROKER_TIMEOUT_S) -> None:
    """Check that the broker accepts a connection.

    Args:
        broker_url: The broker URL.
        timeout: Seconds to wait for it.

    Raises:
        click.ClickException: If it does not answer.
    """
    from kombu.connection import Connection

    shown = redact_url(broker_url)
    try:
        connection = Connection(broker_url, connect_timeout=timeout)  # type: ignore[no-untyped-call]
        with connection:
            connection.ensure_connection(  # type: ignore[no-untyped-call]
                max_retries=1, interval_start=0, timeout=timeout
            )
    except Exception as exc:  # noqa: BLE001 - any transport error means "unusable"; say which
        raise click.ClickException(
            one_line(
                f"the broker {shown} does not answer ({type(exc).__name__}: {exc}); start it, "
                "or fix PANCHRO_BROKER_URL or --broker-url"
            )
        ) from exc


def check_storage(locations: Iterable[StoreLocation], settings: Settings) -> None:
    """Check that this host may read every source and write every output.

    Args:
        locations: What :func:`check_catalog` returned.
        settings: The S3 endpoint, region and addressing style.

    Raises:
        click.ClickException: If a store refuses this host or cannot be reached.
    """
    from storage import StorageError, open_storage, parse_uri

    options = settings.storage_options()
    seen: set[tuple[str, bool]] = set()
    for location in locations:
        if (location.uri, location.write) in seen:
            continue
        seen.add((location.uri, location.write))
        doing = "writing its output" if location.write else "reading its source"
        try:
            uri = parse_uri(location.uri)
            if uri.is_local:
                _check_local(uri.path, write=location.write)
                continue
            store = open_storage(uri, options)
            if location.write:
                from storage.s3 import S3Storage

                if isinstance(store, S3Storage):
                    store.check_writable(uri)
            else:
                first = next(iter(store.list(uri)), None)
                if first is not None:
                    store.read_head(first.uri, 1)
        except (StorageError, OSError) as exc:
            raise click.ClickException(
                one_line(
                    f"this host cannot work on collection {location.collection!r}: {doing} "
                    f"failed: {exc}"
                )
            ) from exc


def preflight(settings: Settings, *, untrained: bool) -> None:
    """Run every start-up check of ``panchro workers``, in order; see the module docstring.

    Args:
        settings: The validated settings.
        untrained: The workers run random weights (no checkpoint to check).

    Raises:
        click.ClickException: At the first failure, with one line.
    """
    check_weights(settings.weights, untrained=untrained)
    locations = check_catalog(settings.database_url)
    check_broker(settings.broker_url)
    check_storage(locations, settings)
    logger.info(
        "start-up checks passed: weights, catalog, broker, %d store location(s)",
        len({location.uri for location in locations}),
    )


def _check_local(path: Path, *, write: bool) -> None:
    """Check a local source folder (listable) or output folder (a file can be created)."""
    if not write:
        if not path.exists():
            raise OSError(f"{path} does not exist on this host (is its disk mounted?)")
        if path.is_dir():
            os.listdir(path)
        else:
            path.open("rb").close()
        return
    folder = path
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OSError(f"{folder} is not a folder, so {path} cannot be created")
    # Creating a file is the only test that holds for root and read-only mounts alike.
    handle, name = tempfile.mkstemp(prefix=".panchro-write-check-", dir=folder)
    os.close(handle)
    os.unlink(name)
