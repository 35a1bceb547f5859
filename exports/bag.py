"""``panchro export NAME --bagit DIR``: a BagIt bag (RFC 8493) of a collection's outputs.

The payload is every done image's output, with its access copies and sidecar where the
catalog has them, at their paths below the collection's output (``data/album/p001.tif``);
a file stored elsewhere goes under ``data/elsewhere/``. Each file is copied in pieces from
its store (a local folder or S3), hashed on the way and checked against the sha256 the
catalog recorded, so a bag never carries a copy that differs from what the catalog vouches
for. The ``bagit`` package then writes the sha256 and sha512 manifests; ``bag-info.txt``
carries the collection's provenance, and ``metadata/premis.xml`` (a tag file, in the tag
manifests) its PREMIS record.

The bag is built in a hidden folder beside DIR and renamed to DIR when complete; a
failure removes it. DIR itself may not exist yet or be an empty folder: anything else is
refused and left untouched.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import bagit

from catalog.engine import transaction
from catalog.models import Collection, ImageStatus
from catalog.preservation import count_images
from catalog.queries import get_collection
from exports.errors import ContentMismatch, ExportError, TargetExists
from exports.objects import (
    ROLE_OUTPUT,
    ROLE_SOURCE,
    Agent,
    PreservedObject,
    Stores,
    copy_object,
    image_objects,
    records,
)
from exports.premis import write_premis
from storage.errors import StorageError
from storage.uri import contains, parse_uri

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

__all__ = ["BAG_CHECKSUMS", "PREMIS_TAG_FILE", "BagCounts", "export_bag"]

logger = logging.getLogger(__name__)

#: Manifest algorithms of every bag, strongest last.
BAG_CHECKSUMS: Final = ("sha256", "sha512")
#: Where the PREMIS record goes in the bag (a tag file, outside the payload).
PREMIS_TAG_FILE: Final = "metadata/premis.xml"
#: First line of ``bagit.txt``: RFC 8493 is BagIt 1.0 (the package writes 0.97).
_BAGIT_TXT: Final = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
#: Payload folder of files stored outside the collection's output.
_ELSEWHERE: Final = "elsewhere"


@dataclass(frozen=True, slots=True)
class BagCounts:
    """What a bag holds.

    Attributes:
        files: Payload files.
        bytes: Payload bytes.
        outputs: Colorized masters among the files.
    """

    files: int
    bytes: int
    outputs: int


def _check_target(target: Path) -> None:
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise TargetExists(f"{target} exists and is not a folder: choose another place")
    if any(target.iterdir()):
        raise TargetExists(f"{target} is not empty: give a new or empty folder for the bag")


def _payload_path(item: PreservedObject, output: str) -> str:
    """The bag-relative path of one payload file (before ``data/`` is prepended)."""
    location, root = parse_uri(item.uri), parse_uri(output)
    if location != root and contains(root, location):
        return location.relative_to(root)
    where = f"{location.bucket}/{location.key}" if location.is_s3 else location.key
    return f"{_ELSEWHERE}/{location.scheme}/{where.lstrip('/')}"


def _payload(
    sessions: sessionmaker[Session], collection: Collection
) -> Iterator[list[PreservedObject]]:
    statuses = [ImageStatus.DONE]
    for page in records(sessions, collection, statuses=statuses, derivatives=True):
        yield [
            item
            for record in page
            for item in image_objects(record, sidecars=True)
            if item.role != ROLE_SOURCE
        ]


def _fetch(stores: Stores, item: PreservedObject, path: str, staging: Path) -> int:
    """Copy one payload file into the staging folder; return its size."""
    target = staging / path
    try:
        digest = copy_object(stores.for_uri(item.uri), item.uri, target)
    except FileExistsError as exc:
        raise ExportError(f"two files of the bag would both be {path}") from exc
    except StorageError as exc:
        raise ExportError(
            f"cannot put {item.uri} into the bag: {exc} (`panchro verify` checks every file)"
        ) from exc
    if item.sha256 is not None and digest.sha256 != item.sha256:
        raise ContentMismatch(
            f"{item.uri} changed since the catalog recorded it (sha256 {item.sha256}, now "
            f"{digest.sha256}); the bag was not made (`panchro verify` checks every file)"
        )
    return digest.size


def _bag_info(collection: Collection, counts: dict[str, int], agent: Agent) -> dict[str, str]:
    images = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    model = collection.model_name or "unknown"
    return {
        "External-Identifier": collection.name,
        "External-Description": (
            f"Colorized copies of the scans of collection {collection.name} ({collection.source}), "
            f"made by panchro with the DDColor model {model}"
            + (
                " with untrained weights: the colours are not a colorization"
                if collection.untrained
                else ""
            )
        ),
        "Bag-Software-Agent": f"{agent.software} (bagit.py {bagit.VERSION})",
        "Panchro-Version": agent.version,
        "Panchro-Collection": collection.name,
        "Panchro-Source": collection.source,
        "Panchro-Output": collection.output,
        "Panchro-Model": model,
        "Panchro-Checkpoint-SHA256": collection.checkpoint_sha256 or "unknown",
        "Panchro-Untrained": "yes" if collection.untrained else "no",
        "Panchro-Input-Size": str(collection.input_size or collection.preset or "default"),
        "Panchro-Precision": collection.precision or "auto",
        "Panchro-Upsample": collection.upsample or "default",
        "Panchro-Images": images or "none",
        "Panchro-Images-Done": str(counts.get(ImageStatus.DONE.value, 0)),
    }


def export_bag(
    sessions: sessionmaker[Session],
    name: str,
    agent: Agent,
    target: Path,
    stores: Stores,
    *,
    jobs: int = 4,
    on_file: Callable[[int], None] | None = None,
) -> BagCounts:
    """Make a BagIt bag of a collection's outputs in a new or empty folder.

    Args:
        sessions: The catalog's session factory.
        name: The collection's name.
        agent: This panchro and host (``bag-info.txt`` and the PREMIS record name it).
        target: The bag's folder: it must not exist or be empty.
        stores: Where the outputs are read from.
        jobs: Files copied at once.
        on_file: Called with the size of each payload file once copied (a progress bar).

    Returns:
        What the bag holds.

    Raises:
        TargetExists: If ``target`` is a file or a folder that is not empty.
        CollectionNotFound: If there is no collection of that name.
        ContentMismatch: If a file's bytes differ from the catalog's sha256.
        ExportError: If a file cannot be read or two files would share a path.
        OSError: If the bag cannot be written.
    """
    _check_target(target)
    with transaction(sessions) as db:
        collection = get_collection(db, name)
        counts = count_images(db, collection.id)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(
        tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    )
    try:
        made = _fill(sessions, collection, stores, staging, jobs, on_file)
        # Hashed in this process: bagit's processes are forked, and a child forked from a
        # process with live threads and connections (boto3's pools, a broker client) can
        # hang for ever in their after-fork clean-up. Hashing is not what takes the time.
        bagit.make_bag(
            str(staging),
            _bag_info(collection, counts, agent),
            processes=1,
            checksums=list(BAG_CHECKSUMS),
        )
        premis = staging / PREMIS_TAG_FILE
        premis.parent.mkdir()
        with open(premis, "xb") as out:
            write_premis(sessions, name, agent, out)
        (staging / "bagit.txt").write_text(_BAGIT_TXT, encoding="utf-8")
        bagit.Bag(str(staging)).save()  # tag manifests now cover bagit.txt and premis.xml
        _check_target(target)
        if target.is_dir():
            target.rmdir()
        os.rename(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("bag of collection %s in %s: %s files", name, target, made.files)
    return made


def _fill(
    sessions: sessionmaker[Session],
    collection: Collection,
    stores: Stores,
    staging: Path,
    jobs: int,
    on_file: Callable[[int], None] | None,
) -> BagCounts:
    """Copy every payload file into the staging folder, page by page, ``jobs`` at a time."""
    files = size = outputs = 0
    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="bag") as pool:
        for items in _payload(sessions, collection):
            sizes = pool.map(
                lambda item: _fetch(stores, item, _payload_path(item, collection.output), staging),
                items,
            )
            for item, copied in zip(items, sizes, strict=True):
                files += 1
                size += copied
                outputs += item.role == ROLE_OUTPUT
                if on_file is not None:
                    on_file(copied)
    return BagCounts(files, size, outputs)
